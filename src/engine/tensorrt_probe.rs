//! Where TensorRT's libraries are, if anywhere. vrseg never links TensorRT: it
//! loads it at run time, so this search is also the one the backend will use.

use std::path::PathBuf;

/// Library base names and the sonames tried for each, newest first.
const LIBRARIES: &[(&str, &[&str])] = &[
    ("nvinfer", &["libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer.so"]),
    ("nvonnxparser", &["libnvonnxparser.so.11", "libnvonnxparser.so.10", "libnvonnxparser.so"]),
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorRtLibrary {
    pub name: &'static str,
    /// The file or soname that loaded, when one did.
    pub loaded_from: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorRtProbe {
    pub available: bool,
    pub libraries: Vec<TensorRtLibrary>,
    /// Everything tried, in order, for the error message.
    pub searched: Vec<String>,
}

/// Candidate paths: `$TENSORRT_ROOT/lib{,64}/NAME` first, then the bare
/// soname, which the dynamic loader resolves through LD_LIBRARY_PATH and the
/// system's library cache.
pub fn candidates(sonames: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(root) = std::env::var_os("TENSORRT_ROOT") {
        for sub in ["lib", "lib64", "targets/x86_64-linux-gnu/lib"] {
            for name in sonames {
                out.push(PathBuf::from(&root).join(sub).join(name).to_string_lossy().into_owned());
            }
        }
    }
    out.extend(sonames.iter().map(|s| s.to_string()));
    out
}

/// Tries to load each TensorRT library and unloads it again.
pub fn probe() -> TensorRtProbe {
    let mut libraries = Vec::new();
    let mut searched = Vec::new();
    for &(name, sonames) in LIBRARIES {
        let mut loaded_from = None;
        for candidate in candidates(sonames) {
            searched.push(candidate.clone());
            // SAFETY: loading runs the library's initialisers; TensorRT's are
            // built for dlopen. The handle is dropped (dlclose) at once.
            if unsafe { libloading::Library::new(&candidate) }.is_ok() {
                loaded_from = Some(candidate);
                break;
            }
        }
        libraries.push(TensorRtLibrary { name, loaded_from });
    }
    TensorRtProbe { available: libraries.iter().all(|l| l.loaded_from.is_some()), libraries, searched }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_put_tensorrt_root_first() {
        // Only this test touches TENSORRT_ROOT in this binary.
        std::env::set_var("TENSORRT_ROOT", "/opt/trt");
        let c = candidates(&["libnvinfer.so.10"]);
        std::env::remove_var("TENSORRT_ROOT");
        assert_eq!(c.first().map(String::as_str), Some("/opt/trt/lib/libnvinfer.so.10"));
        assert_eq!(c.last().map(String::as_str), Some("libnvinfer.so.10"));
    }
}
