//! Where TensorRT's libraries are looked for. One list serves `vrseg info`
//! (`engine::tensorrt_probe`), the runtime and the builder, so that what
//! `vrseg info` reports is what the backend loads.

use std::ffi::OsString;
use std::path::PathBuf;

/// Directories under `$TENSORRT_ROOT` that hold the libraries: the tarball's
/// `lib/`, some distributions' `lib64/`, the CUDA-style `targets/` layout, and
/// the root itself (pip's `tensorrt_libs/` directory).
const ROOT_SUBDIRS: &[&str] = &["lib", "lib64", "targets/x86_64-linux-gnu/lib", ""];

/// The majors vrseg's shim supports, newest first.
const MAJORS: &[u32] = &[11, 10];

/// How to look for TensorRT's libraries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibrarySearch {
    /// `$TENSORRT_ROOT`, searched first.
    pub root: Option<PathBuf>,
    /// Then the bare sonames, which the dynamic loader resolves through
    /// LD_LIBRARY_PATH and its cache. Tests turn this off so that a TensorRT
    /// installed on the test machine cannot change their outcome.
    pub system: bool,
    /// The major version the shim was compiled against: its sonames are
    /// tried first, so a machine with both 10 and 11 loads the usable one.
    pub preferred_major: Option<u32>,
    /// `$LD_LIBRARY_PATH`, for the error message only.
    pub ld_library_path: Option<OsString>,
}

impl LibrarySearch {
    /// TENSORRT_ROOT and LD_LIBRARY_PATH from the environment, the shim's major first.
    pub fn from_env() -> LibrarySearch {
        LibrarySearch {
            root: std::env::var_os("TENSORRT_ROOT").filter(|r| !r.is_empty()).map(PathBuf::from),
            system: true,
            preferred_major: super::header_version().map(|v| v.major),
            ld_library_path: std::env::var_os("LD_LIBRARY_PATH"),
        }
    }

    /// `libBASE.so.11`, `libBASE.so.10`, `libBASE.so`, the preferred major first.
    pub fn sonames(&self, base: &str) -> Vec<String> {
        let mut majors: Vec<u32> = MAJORS.to_vec();
        if let Some(p) = self.preferred_major {
            majors.retain(|&m| m != p);
            majors.insert(0, p);
        }
        let mut names: Vec<String> = majors.iter().map(|m| format!("lib{base}.so.{m}")).collect();
        names.push(format!("lib{base}.so"));
        names
    }

    /// Every candidate for library `base` ("nvinfer", "nvonnxparser"), in order.
    pub fn candidates(&self, base: &str) -> Vec<String> {
        let sonames = self.sonames(base);
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            for sub in ROOT_SUBDIRS {
                let dir = if sub.is_empty() { root.clone() } else { root.join(sub) };
                out.extend(sonames.iter().map(|n| dir.join(n).to_string_lossy().into_owned()));
            }
        }
        if self.system {
            out.extend(sonames);
        }
        out
    }

    /// The search in words, for "TensorRT not found (searched: …)".
    pub fn describe(&self, base: &str) -> String {
        let sonames = self.sonames(base).join(", ");
        let root = match &self.root {
            Some(root) => {
                let subs: Vec<String> = ROOT_SUBDIRS
                    .iter()
                    .map(|s| if s.is_empty() { "./".to_string() } else { format!("{s}/") })
                    .collect();
                format!("TENSORRT_ROOT={} ({}) for {sonames}", root.display(), subs.join(", "))
            }
            None => "TENSORRT_ROOT (unset)".to_string(),
        };
        if !self.system {
            return root;
        }
        let ld = match &self.ld_library_path {
            Some(p) if !p.is_empty() => p.to_string_lossy().into_owned(),
            _ => "unset".to_string(),
        };
        format!("{root}; then {sonames} through LD_LIBRARY_PATH ({ld}) and the system library cache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(root: Option<&str>, system: bool, preferred_major: Option<u32>) -> LibrarySearch {
        LibrarySearch { root: root.map(PathBuf::from), system, preferred_major, ld_library_path: None }
    }

    #[test]
    fn root_first_then_sonames_with_the_shims_major_first() {
        let s = search(Some("/opt/trt"), true, Some(10));
        let c = s.candidates("nvinfer");
        assert_eq!(c.first().map(String::as_str), Some("/opt/trt/lib/libnvinfer.so.10"));
        assert_eq!(c[1], "/opt/trt/lib/libnvinfer.so.11");
        assert!(c.contains(&"/opt/trt/libnvinfer.so.10".to_string()), "pip layout: {c:?}");
        assert_eq!(&c[c.len() - 3..], ["libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so"]);
        assert_eq!(search(None, true, Some(11)).candidates("nvonnxparser")[0], "libnvonnxparser.so.11");
    }

    #[test]
    fn without_system_search_only_the_root_is_tried() {
        let s = search(Some("/nowhere"), false, None);
        assert!(s.candidates("nvinfer").iter().all(|c| c.starts_with("/nowhere/")));
        assert!(search(None, false, None).candidates("nvinfer").is_empty());
    }

    #[test]
    fn description_names_root_sonames_and_ld_library_path() {
        let mut s = search(Some("/opt/trt"), true, Some(11));
        s.ld_library_path = Some("/usr/local/lib".into());
        let text = s.describe("nvinfer");
        assert_eq!(
            text,
            "TENSORRT_ROOT=/opt/trt (lib/, lib64/, targets/x86_64-linux-gnu/lib/, ./) for libnvinfer.so.11, \
             libnvinfer.so.10, libnvinfer.so; then libnvinfer.so.11, libnvinfer.so.10, libnvinfer.so through \
             LD_LIBRARY_PATH (/usr/local/lib) and the system library cache"
        );
        assert!(search(None, true, None).describe("nvinfer").starts_with("TENSORRT_ROOT (unset); then"));
    }
}
