//! NVENC through libnvidia-encode: whether an encode session opens on this GPU
//! ([`probe`]), and the steps every session starts with (shared with the encoder in
//! `video::encode::nvenc`). Follows NVIDIA's NVENC programming guide: load the library,
//! check `NvEncodeAPIGetMaxSupportedVersion` against the API we were built
//! for, fill the function list, open a session on our CUDA context.
//! <https://docs.nvidia.com/video-technologies/video-codec-sdk/13.0/nvenc-video-encoder-api-prog-guide/>

use crate::codec_sys::bindings::*;
use crate::codec_sys::nvencode;
use crate::gpu::Gpu;

/// `NVENCAPI_STRUCT_VERSION(ver)` from nvEncodeAPI.h (a C macro bindgen cannot translate).
pub const fn nvenc_struct_version(ver: u32) -> u32 {
    NVENCAPI_VERSION | (ver << 16) | (0x7 << 28)
}

/// `NVENCAPI_VERSION` is `major | minor << 24`.
pub const fn header_api_version() -> (u32, u32) {
    (NVENCAPI_MAJOR_VERSION, NVENCAPI_MINOR_VERSION)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NvencProbe {
    /// Whether libnvidia-encode loaded.
    pub library_loaded: bool,
    /// The newest NVENC API the driver serves, "major.minor".
    pub driver_api: Option<String>,
    /// Whether an encode session opened (and was closed again).
    pub session_opens: bool,
    /// Why not, in one sentence, when it did not.
    pub reason: Option<String>,
}

/// Name of an NVENCSTATUS, for messages.
pub fn nvenc_status_name(status: NVENCSTATUS) -> String {
    use _NVENCSTATUS::*;
    let name = match status {
        NV_ENC_SUCCESS => "NV_ENC_SUCCESS",
        NV_ENC_ERR_NO_ENCODE_DEVICE => "NV_ENC_ERR_NO_ENCODE_DEVICE",
        NV_ENC_ERR_UNSUPPORTED_DEVICE => "NV_ENC_ERR_UNSUPPORTED_DEVICE",
        NV_ENC_ERR_INVALID_ENCODERDEVICE => "NV_ENC_ERR_INVALID_ENCODERDEVICE",
        NV_ENC_ERR_INVALID_DEVICE => "NV_ENC_ERR_INVALID_DEVICE",
        NV_ENC_ERR_DEVICE_NOT_EXIST => "NV_ENC_ERR_DEVICE_NOT_EXIST",
        NV_ENC_ERR_INVALID_PTR => "NV_ENC_ERR_INVALID_PTR",
        NV_ENC_ERR_INVALID_EVENT => "NV_ENC_ERR_INVALID_EVENT",
        NV_ENC_ERR_INVALID_PARAM => "NV_ENC_ERR_INVALID_PARAM",
        NV_ENC_ERR_INVALID_CALL => "NV_ENC_ERR_INVALID_CALL",
        NV_ENC_ERR_OUT_OF_MEMORY => "NV_ENC_ERR_OUT_OF_MEMORY",
        NV_ENC_ERR_ENCODER_NOT_INITIALIZED => "NV_ENC_ERR_ENCODER_NOT_INITIALIZED",
        NV_ENC_ERR_UNSUPPORTED_PARAM => "NV_ENC_ERR_UNSUPPORTED_PARAM",
        NV_ENC_ERR_LOCK_BUSY => "NV_ENC_ERR_LOCK_BUSY",
        NV_ENC_ERR_NOT_ENOUGH_BUFFER => "NV_ENC_ERR_NOT_ENOUGH_BUFFER",
        NV_ENC_ERR_INVALID_VERSION => "NV_ENC_ERR_INVALID_VERSION",
        NV_ENC_ERR_MAP_FAILED => "NV_ENC_ERR_MAP_FAILED",
        NV_ENC_ERR_NEED_MORE_INPUT => "NV_ENC_ERR_NEED_MORE_INPUT",
        NV_ENC_ERR_ENCODER_BUSY => "NV_ENC_ERR_ENCODER_BUSY",
        NV_ENC_ERR_EVENT_NOT_REGISTERD => "NV_ENC_ERR_EVENT_NOT_REGISTERD",
        NV_ENC_ERR_GENERIC => "NV_ENC_ERR_GENERIC",
        NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY => "NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY",
        NV_ENC_ERR_UNIMPLEMENTED => "NV_ENC_ERR_UNIMPLEMENTED",
        NV_ENC_ERR_RESOURCE_REGISTER_FAILED => "NV_ENC_ERR_RESOURCE_REGISTER_FAILED",
        NV_ENC_ERR_RESOURCE_NOT_REGISTERED => "NV_ENC_ERR_RESOURCE_NOT_REGISTERED",
        NV_ENC_ERR_RESOURCE_NOT_MAPPED => "NV_ENC_ERR_RESOURCE_NOT_MAPPED",
        _ => return format!("NVENCSTATUS {status}"),
    };
    name.to_string()
}

/// Why NVENC could not be reached: whether the library loaded, the driver's API version, and
/// one sentence.
#[derive(Debug, Clone)]
pub struct NvencUnavailable {
    pub library_loaded: bool,
    pub driver_api: Option<String>,
    pub reason: String,
    /// The status of the failing call, when one failed.
    pub status: Option<NVENCSTATUS>,
}

/// Loads libnvidia-encode, checks the driver serves the API vrseg was built for, and fills
/// the function list (the guide's "Initializing the NVENC API" steps).
pub(crate) fn load_functions() -> Result<(NV_ENCODE_API_FUNCTION_LIST, String), NvencUnavailable> {
    let unavailable = |library_loaded, driver_api, reason: String, status| NvencUnavailable {
        library_loaded,
        driver_api,
        reason,
        status,
    };
    let api = match nvencode() {
        Ok(api) => api,
        Err(e) => return Err(unavailable(false, None, e.to_string(), None)),
    };
    let mut max_version = 0u32;
    // SAFETY: `max_version` is a valid out-pointer for the call.
    let status = unsafe { (api.NvEncodeAPIGetMaxSupportedVersion)(&mut max_version) };
    if status != _NVENCSTATUS::NV_ENC_SUCCESS {
        return Err(unavailable(
            true,
            None,
            format!("NvEncodeAPIGetMaxSupportedVersion failed: {}", nvenc_status_name(status)),
            Some(status),
        ));
    }
    // The driver packs the version as (major << 4) | minor.
    let (drv_major, drv_minor) = (max_version >> 4, max_version & 0xf);
    let driver_api = format!("{drv_major}.{drv_minor}");
    let (major, minor) = header_api_version();
    if (drv_major, drv_minor) < (major, minor) {
        return Err(unavailable(
            true,
            Some(driver_api),
            format!(
                "the driver serves NVENC API {drv_major}.{drv_minor}, vrseg needs {major}.{minor}; update the driver"
            ),
            None,
        ));
    }

    // SAFETY: NV_ENCODE_API_FUNCTION_LIST is plain data (a version and
    // nullable function pointers); zero is its documented initial state.
    let mut functions: NV_ENCODE_API_FUNCTION_LIST = unsafe { std::mem::zeroed() };
    functions.version = nvenc_struct_version(2);
    // SAFETY: `functions` is a zeroed list with its version set, as the API requires.
    let status = unsafe { (api.NvEncodeAPICreateInstance)(&mut functions) };
    if status != _NVENCSTATUS::NV_ENC_SUCCESS {
        return Err(unavailable(
            true,
            Some(driver_api),
            format!("NvEncodeAPICreateInstance failed: {}", nvenc_status_name(status)),
            Some(status),
        ));
    }
    Ok((functions, driver_api))
}

/// A hint for the statuses a failed `nvEncOpenEncodeSessionEx` commonly returns.
pub(crate) fn open_failure_hint(status: NVENCSTATUS) -> &'static str {
    if status == _NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE || status == _NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_DEVICE {
        " (this GPU has no NVENC hardware, e.g. an H100 or A100)"
    } else if status == _NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY {
        " (all NVENC sessions may be in use: consumer GPUs allow a limited number at once)"
    } else {
        ""
    }
}

/// Opens an encode session on `gpu`'s context (the guide's "Opening an Encode Session").
/// The caller owns the returned handle and must destroy it with `nvEncDestroyEncoder`.
pub(crate) fn open_session(
    gpu: &Gpu,
    functions: &NV_ENCODE_API_FUNCTION_LIST,
    driver_api: &str,
) -> Result<*mut std::ffi::c_void, NvencUnavailable> {
    let unavailable = |reason: String, status| NvencUnavailable {
        library_loaded: true,
        driver_api: Some(driver_api.to_string()),
        reason,
        status,
    };
    let Some(open) = functions.nvEncOpenEncodeSessionEx else {
        return Err(unavailable("the NVENC function list lacks nvEncOpenEncodeSessionEx".into(), None));
    };
    if let Err(e) = gpu.bind_to_thread() {
        return Err(unavailable(e.to_string(), None));
    }
    // SAFETY: as above, zero is the documented initial state of the params.
    let mut params: NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS = unsafe { std::mem::zeroed() };
    params.version = nvenc_struct_version(1);
    params.deviceType = _NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA;
    params.device = gpu.cu_context() as *mut std::ffi::c_void;
    params.apiVersion = NVENCAPI_VERSION;
    let mut encoder: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: `params` is initialised with a live CUDA context that the caller keeps alive
    // for the session (it holds the Gpu); `encoder` is a valid out-pointer.
    let status = unsafe { open(&mut params, &mut encoder) };
    if status != _NVENCSTATUS::NV_ENC_SUCCESS || encoder.is_null() {
        return Err(unavailable(
            format!("nvEncOpenEncodeSessionEx failed: {}{}", nvenc_status_name(status), open_failure_hint(status)),
            Some(status),
        ));
    }
    Ok(encoder)
}

/// Tries to open (and then closes) one NVENC session on `gpu`.
pub fn probe(gpu: &Gpu) -> NvencProbe {
    let as_probe = |u: NvencUnavailable| NvencProbe {
        library_loaded: u.library_loaded,
        driver_api: u.driver_api,
        session_opens: false,
        reason: Some(u.reason),
    };
    let (functions, driver_api) = match load_functions() {
        Ok(f) => f,
        Err(u) => return as_probe(u),
    };
    let Some(destroy) = functions.nvEncDestroyEncoder else {
        return as_probe(NvencUnavailable {
            library_loaded: true,
            driver_api: Some(driver_api),
            reason: "the NVENC function list lacks nvEncDestroyEncoder".into(),
            status: None,
        });
    };
    let encoder = match open_session(gpu, &functions, &driver_api) {
        Ok(e) => e,
        Err(u) => return as_probe(u),
    };
    // SAFETY: `encoder` is the session opened just above and is destroyed once.
    let status = unsafe { destroy(encoder) };
    NvencProbe {
        library_loaded: true,
        driver_api: Some(driver_api),
        session_opens: true,
        reason: (status != _NVENCSTATUS::NV_ENC_SUCCESS)
            .then(|| format!("nvEncDestroyEncoder returned {}", nvenc_status_name(status))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_versions_match_the_header_macros() {
        // NVENCAPI_VERSION for 11.1 is 11 | 1 << 24.
        assert_eq!(NVENCAPI_VERSION, 11 | (1 << 24));
        assert_eq!(nvenc_struct_version(1), NVENCAPI_VERSION | (1 << 16) | (7 << 28));
        assert_eq!((nvenc_struct_version(2) >> 16) & 0xff, 2);
    }

    #[test]
    fn status_names_are_readable() {
        assert_eq!(nvenc_status_name(_NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE), "NV_ENC_ERR_NO_ENCODE_DEVICE");
        assert_eq!(nvenc_status_name(9999), "NVENCSTATUS 9999");
    }
}
