//! Where TensorRT's libraries are, if anywhere, for `vrseg info`. vrseg
//! never links TensorRT: it loads it at run time, and this probe searches
//! exactly where the backend does (`tensorrt::search::LibrarySearch`).

use crate::engine::tensorrt::{self, LibrarySearch, TrtVersion};

/// Library base names, as `LibrarySearch` takes them.
const LIBRARIES: &[&str] = &["nvinfer", "nvonnxparser"];

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
    /// `getInferLibVersion()` of the libnvinfer that loaded.
    pub version: Option<TrtVersion>,
    /// The TensorRT headers vrseg's backend was compiled against, or why it has none.
    pub backend_headers: &'static str,
    /// Whether vrseg's backend can drive the TensorRT found.
    pub backend_usable: bool,
}

/// Candidate paths for `base`, as the backend searches them (TENSORRT_ROOT
/// first, then bare sonames for LD_LIBRARY_PATH and the loader's cache).
pub fn candidates(base: &str) -> Vec<String> {
    LibrarySearch::from_env().candidates(base)
}

/// `getInferLibVersion()` through a handle that libloading opened.
fn library_version(library: &libloading::Library) -> Option<TrtVersion> {
    // SAFETY: TensorRT declares `extern "C" int32_t getInferLibVersion() noexcept`
    // (NvInferRuntimeBase.h); the signature matches and it has no preconditions.
    let version = unsafe { library.get::<unsafe extern "C" fn() -> i32>(b"getInferLibVersion\0") }.ok()?;
    // SAFETY: as above.
    TrtVersion::from_encoded(unsafe { version() })
}

/// Tries to load each TensorRT library and unloads it again.
pub fn probe() -> TensorRtProbe {
    let mut libraries = Vec::new();
    let mut searched = Vec::new();
    let mut version = None;
    for &name in LIBRARIES {
        let mut loaded_from = None;
        for candidate in candidates(name) {
            searched.push(candidate.clone());
            // SAFETY: loading runs the library's initialisers; TensorRT's are
            // built for dlopen. The handle is dropped (dlclose) at once.
            if let Ok(library) = unsafe { libloading::Library::new(&candidate) } {
                if name == "nvinfer" {
                    version = library_version(&library);
                }
                loaded_from = Some(candidate);
                break;
            }
        }
        libraries.push(TensorRtLibrary { name, loaded_from });
    }
    TensorRtProbe {
        available: libraries.iter().all(|l| l.loaded_from.is_some()),
        libraries,
        searched,
        version,
        backend_headers: tensorrt::headers_description(),
        backend_usable: version.is_some_and(tensorrt::library_compatible),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_searches_where_the_backend_does() {
        // No environment is changed here: the list must simply be the backend's.
        assert_eq!(candidates("nvinfer"), LibrarySearch::from_env().candidates("nvinfer"));
        let p = probe();
        assert_eq!(p.libraries.len(), 2);
        assert!(!p.searched.is_empty());
        assert!(!p.backend_headers.is_empty());
        if p.version.is_none() {
            assert!(!p.backend_usable);
        }
    }
}
