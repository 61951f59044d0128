//! Run-time loading of libnvcuvid and libnvidia-encode, which ship with the
//! NVIDIA driver (not the CUDA toolkit). Each is opened at most once per
//! process; the result, success or the reason for failure, is cached.

use std::sync::OnceLock;

use libloading::Library;

use super::bindings::*;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecLibraryError {
    #[error("{library} could not be loaded (tried {tried}): {reason}; it ships with the NVIDIA driver, so install or repair the driver")]
    NotFound { library: &'static str, tried: String, reason: String },
    #[error("{library} lacks {symbol}: the NVIDIA driver is too old for vrseg; update it")]
    MissingSymbol { library: &'static str, symbol: &'static str },
}

fn open_first(library: &'static str, names: &[&str]) -> Result<Library, CodecLibraryError> {
    let mut last = String::new();
    for name in names {
        // SAFETY: loading a driver library runs its initialisers; these are
        // NVIDIA's own libraries, which are built to be dlopen'ed this way.
        match unsafe { Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => last = e.to_string(),
        }
    }
    Err(CodecLibraryError::NotFound { library, tried: names.join(", "), reason: last })
}

/// Resolves `symbol` as the function-pointer type `T` (an `Option<fn>` from
/// the bindings) and unwraps it.
macro_rules! resolve {
    ($lib:expr, $library:expr, $ty:ty, $symbol:literal) => {{
        // SAFETY: `$ty` is the bindgen translation of the SDK's typedef for
        // this very symbol, so the pointer is called with the right ABI.
        let sym: Option<libloading::Symbol<$ty>> = unsafe { $lib.get(concat!($symbol, "\0").as_bytes()).ok() };
        match sym.and_then(|s| *s) {
            Some(f) => f,
            None => return Err(CodecLibraryError::MissingSymbol { library: $library, symbol: $symbol }),
        }
    }};
}

type Fn<T> = <T as FnPointer>::Pointer;

/// Strips the `Option` that bindgen puts around C function pointers.
pub trait FnPointer {
    type Pointer: Copy;
}
impl<F: Copy> FnPointer for Option<F> {
    type Pointer = F;
}

/// The NVDEC entry points vrseg uses.
#[allow(non_snake_case)]
pub struct NvcuvidApi {
    _library: Library,
    pub cuvidGetDecoderCaps: Fn<tcuvidGetDecoderCaps>,
    pub cuvidCreateDecoder: Fn<tcuvidCreateDecoder>,
    pub cuvidDestroyDecoder: Fn<tcuvidDestroyDecoder>,
    pub cuvidDecodePicture: Fn<tcuvidDecodePicture>,
    pub cuvidGetDecodeStatus: Fn<tcuvidGetDecodeStatus>,
    pub cuvidReconfigureDecoder: Fn<tcuvidReconfigureDecoder>,
    pub cuvidMapVideoFrame64: Fn<tcuvidMapVideoFrame64>,
    pub cuvidUnmapVideoFrame64: Fn<tcuvidUnmapVideoFrame64>,
    pub cuvidCtxLockCreate: Fn<tcuvidCtxLockCreate>,
    pub cuvidCtxLockDestroy: Fn<tcuvidCtxLockDestroy>,
    pub cuvidCreateVideoParser: Fn<tcuvidCreateVideoParser>,
    pub cuvidParseVideoData: Fn<tcuvidParseVideoData>,
    pub cuvidDestroyVideoParser: Fn<tcuvidDestroyVideoParser>,
}

const NVCUVID: &str = "libnvcuvid";

impl NvcuvidApi {
    fn load() -> Result<NvcuvidApi, CodecLibraryError> {
        let lib = open_first(NVCUVID, &["libnvcuvid.so.1", "libnvcuvid.so"])?;
        Ok(NvcuvidApi {
            cuvidGetDecoderCaps: resolve!(lib, NVCUVID, tcuvidGetDecoderCaps, "cuvidGetDecoderCaps"),
            cuvidCreateDecoder: resolve!(lib, NVCUVID, tcuvidCreateDecoder, "cuvidCreateDecoder"),
            cuvidDestroyDecoder: resolve!(lib, NVCUVID, tcuvidDestroyDecoder, "cuvidDestroyDecoder"),
            cuvidDecodePicture: resolve!(lib, NVCUVID, tcuvidDecodePicture, "cuvidDecodePicture"),
            cuvidGetDecodeStatus: resolve!(lib, NVCUVID, tcuvidGetDecodeStatus, "cuvidGetDecodeStatus"),
            cuvidReconfigureDecoder: resolve!(lib, NVCUVID, tcuvidReconfigureDecoder, "cuvidReconfigureDecoder"),
            cuvidMapVideoFrame64: resolve!(lib, NVCUVID, tcuvidMapVideoFrame64, "cuvidMapVideoFrame64"),
            cuvidUnmapVideoFrame64: resolve!(lib, NVCUVID, tcuvidUnmapVideoFrame64, "cuvidUnmapVideoFrame64"),
            cuvidCtxLockCreate: resolve!(lib, NVCUVID, tcuvidCtxLockCreate, "cuvidCtxLockCreate"),
            cuvidCtxLockDestroy: resolve!(lib, NVCUVID, tcuvidCtxLockDestroy, "cuvidCtxLockDestroy"),
            cuvidCreateVideoParser: resolve!(lib, NVCUVID, tcuvidCreateVideoParser, "cuvidCreateVideoParser"),
            cuvidParseVideoData: resolve!(lib, NVCUVID, tcuvidParseVideoData, "cuvidParseVideoData"),
            cuvidDestroyVideoParser: resolve!(lib, NVCUVID, tcuvidDestroyVideoParser, "cuvidDestroyVideoParser"),
            _library: lib,
        })
    }
}

/// libnvcuvid, loaded once.
pub fn nvcuvid() -> Result<&'static NvcuvidApi, CodecLibraryError> {
    static API: OnceLock<Result<NvcuvidApi, CodecLibraryError>> = OnceLock::new();
    API.get_or_init(NvcuvidApi::load).as_ref().map_err(Clone::clone)
}

pub type NvEncodeApiCreateInstanceFn = unsafe extern "C" fn(*mut NV_ENCODE_API_FUNCTION_LIST) -> NVENCSTATUS;
pub type NvEncodeApiGetMaxSupportedVersionFn = unsafe extern "C" fn(*mut u32) -> NVENCSTATUS;

/// The two exported NVENC entry points; everything else comes through the
/// function list that `NvEncodeAPICreateInstance` fills.
#[allow(non_snake_case)]
pub struct NvencodeApi {
    _library: Library,
    pub NvEncodeAPICreateInstance: NvEncodeApiCreateInstanceFn,
    pub NvEncodeAPIGetMaxSupportedVersion: NvEncodeApiGetMaxSupportedVersionFn,
}

const NVENCODE: &str = "libnvidia-encode";

impl NvencodeApi {
    fn load() -> Result<NvencodeApi, CodecLibraryError> {
        let lib = open_first(NVENCODE, &["libnvidia-encode.so.1", "libnvidia-encode.so"])?;
        Ok(NvencodeApi {
            NvEncodeAPICreateInstance: resolve!(
                lib,
                NVENCODE,
                Option<NvEncodeApiCreateInstanceFn>,
                "NvEncodeAPICreateInstance"
            ),
            NvEncodeAPIGetMaxSupportedVersion: resolve!(
                lib,
                NVENCODE,
                Option<NvEncodeApiGetMaxSupportedVersionFn>,
                "NvEncodeAPIGetMaxSupportedVersion"
            ),
            _library: lib,
        })
    }
}

/// libnvidia-encode, loaded once.
pub fn nvencode() -> Result<&'static NvencodeApi, CodecLibraryError> {
    static API: OnceLock<Result<NvencodeApi, CodecLibraryError>> = OnceLock::new();
    API.get_or_init(NvencodeApi::load).as_ref().map_err(Clone::clone)
}
