//! NVENC through libnvidia-encode: for now, whether an encode session opens on
//! this GPU. Follows NVIDIA's NVENC programming guide: load the library,
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
        NV_ENC_ERR_INVALID_PARAM => "NV_ENC_ERR_INVALID_PARAM",
        NV_ENC_ERR_INVALID_VERSION => "NV_ENC_ERR_INVALID_VERSION",
        NV_ENC_ERR_OUT_OF_MEMORY => "NV_ENC_ERR_OUT_OF_MEMORY",
        NV_ENC_ERR_ENCODER_NOT_INITIALIZED => "NV_ENC_ERR_ENCODER_NOT_INITIALIZED",
        NV_ENC_ERR_UNSUPPORTED_PARAM => "NV_ENC_ERR_UNSUPPORTED_PARAM",
        NV_ENC_ERR_GENERIC => "NV_ENC_ERR_GENERIC",
        NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY => "NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY",
        NV_ENC_ERR_UNIMPLEMENTED => "NV_ENC_ERR_UNIMPLEMENTED",
        _ => return format!("NVENCSTATUS {status}"),
    };
    name.to_string()
}

/// Tries to open (and then closes) one NVENC session on `gpu`.
pub fn probe(gpu: &Gpu) -> NvencProbe {
    let unavailable = |library_loaded, driver_api, reason: String| NvencProbe {
        library_loaded,
        driver_api,
        session_opens: false,
        reason: Some(reason),
    };
    let api = match nvencode() {
        Ok(api) => api,
        Err(e) => return unavailable(false, None, e.to_string()),
    };
    let mut max_version = 0u32;
    // SAFETY: `max_version` is a valid out-pointer for the call.
    let status = unsafe { (api.NvEncodeAPIGetMaxSupportedVersion)(&mut max_version) };
    if status != _NVENCSTATUS::NV_ENC_SUCCESS {
        return unavailable(
            true,
            None,
            format!("NvEncodeAPIGetMaxSupportedVersion failed: {}", nvenc_status_name(status)),
        );
    }
    // The driver packs the version as (major << 4) | minor.
    let (drv_major, drv_minor) = (max_version >> 4, max_version & 0xf);
    let driver_api = Some(format!("{drv_major}.{drv_minor}"));
    let (major, minor) = header_api_version();
    if (drv_major, drv_minor) < (major, minor) {
        return unavailable(
            true,
            driver_api,
            format!(
                "the driver serves NVENC API {drv_major}.{drv_minor}, vrseg needs {major}.{minor}; update the driver"
            ),
        );
    }

    // SAFETY: NV_ENCODE_API_FUNCTION_LIST is plain data (a version and
    // nullable function pointers); zero is its documented initial state.
    let mut functions: NV_ENCODE_API_FUNCTION_LIST = unsafe { std::mem::zeroed() };
    functions.version = nvenc_struct_version(2);
    // SAFETY: `functions` is a zeroed list with its version set, as the API requires.
    let status = unsafe { (api.NvEncodeAPICreateInstance)(&mut functions) };
    if status != _NVENCSTATUS::NV_ENC_SUCCESS {
        return unavailable(
            true,
            driver_api,
            format!("NvEncodeAPICreateInstance failed: {}", nvenc_status_name(status)),
        );
    }
    let (Some(open), Some(destroy)) = (functions.nvEncOpenEncodeSessionEx, functions.nvEncDestroyEncoder) else {
        return unavailable(true, driver_api, "the NVENC function list lacks nvEncOpenEncodeSessionEx".into());
    };
    if let Err(e) = gpu.bind_to_thread() {
        return unavailable(true, driver_api, e.to_string());
    }

    // SAFETY: as above, zero is the documented initial state of the params.
    let mut params: NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS = unsafe { std::mem::zeroed() };
    params.version = nvenc_struct_version(1);
    params.deviceType = _NV_ENC_DEVICE_TYPE::NV_ENC_DEVICE_TYPE_CUDA;
    params.device = gpu.cu_context() as *mut std::ffi::c_void;
    params.apiVersion = NVENCAPI_VERSION;
    let mut encoder: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: `params` is initialised with a live CUDA context that stays
    // alive for the session (the Gpu is borrowed for this whole function);
    // `encoder` is a valid out-pointer.
    let status = unsafe { open(&mut params, &mut encoder) };
    if status != _NVENCSTATUS::NV_ENC_SUCCESS || encoder.is_null() {
        let hint = if status == _NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE
            || status == _NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_DEVICE
        {
            " (this GPU has no NVENC hardware, e.g. an H100 or A100)"
        } else if status == _NVENCSTATUS::NV_ENC_ERR_OUT_OF_MEMORY {
            " (all NVENC sessions may be in use: consumer GPUs allow a limited number at once)"
        } else {
            ""
        };
        return unavailable(
            true,
            driver_api,
            format!("nvEncOpenEncodeSessionEx failed: {}{hint}", nvenc_status_name(status)),
        );
    }
    // SAFETY: `encoder` is the session opened just above and is destroyed once.
    let status = unsafe { destroy(encoder) };
    NvencProbe {
        library_loaded: true,
        driver_api,
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
