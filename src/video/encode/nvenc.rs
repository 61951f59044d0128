//! NVENC: HEVC (or H.264 up to 4096 wide) from NV12 frames in device memory, following
//! NVIDIA's NVENC Video Encoder API Programming Guide, section by section:
//! <https://docs.nvidia.com/video-technologies/video-codec-sdk/13.0/nvenc-video-encoder-api-prog-guide/>
//!
//! 1. *Opening an encode session*: load libnvidia-encode, check the API version, fill the
//!    function list, `nvEncOpenEncodeSessionEx` on our CUDA context (`video::nvenc`). A GPU
//!    without NVENC (H100, A100) fails here with `NV_ENC_ERR_UNSUPPORTED_DEVICE` /
//!    `NV_ENC_ERR_NO_ENCODE_DEVICE`, which becomes [`EncodeError::NvencUnavailable`].
//! 2. *Selecting the codec*: `nvEncGetEncodeGUIDs` must list it; `nvEncGetEncodeCaps` gives the
//!    largest frame.
//! 3. *Presets and tuning*: `nvEncGetEncodePresetConfigEx` with preset P1–P7 and
//!    `NV_ENC_TUNING_INFO_HIGH_QUALITY`, then our changes: no B-frames
//!    (`frameIntervalP = 1`), a GOP of `keyframe_interval` with an IDR at each (closed GOPs),
//!    constant quality (`NV_ENC_PARAMS_RC_VBR`, `averageBitRate = 0`, `targetQuality`), no
//!    lookahead and zero reorder delay (each picture comes out as soon as it is encoded),
//!    SPS/PPS repeated at every IDR, 4:2:0 8-bit, the full-range flag in the VUI.
//! 4. *Initializing*: `nvEncInitializeEncoder` with picture-type decision by the encoder
//!    (`enablePTD = 1`) and synchronous mode (`enableEncodeAsync = 0`: Linux has no async).
//! 5. *Sequence parameters*: `nvEncGetSequenceParams`, handed to the muxer up front.
//! 6. *Input/output resources*: each device buffer is registered once
//!    (`nvEncRegisterResource`, `NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR`, NV12, its pitch),
//!    one bitstream buffer (`nvEncCreateBitstreamBuffer`).
//! 7. *Encoding a frame*: wait for the frame's stream, `nvEncMapInputResource`,
//!    `nvEncEncodePicture`, `nvEncLockBitstream` (blocks until the picture is done), copy the
//!    bits, `nvEncUnlockBitstream`, `nvEncUnmapInputResource`. When `encode` returns, NVENC
//!    no longer reads the buffer.
//! 8. *End of stream*: `nvEncEncodePicture` with `NV_ENC_PIC_FLAG_EOS` and nothing else.
//! 9. *Releasing*: unregister every resource, destroy the bitstream buffer and the session.
//!
//! Every call's status is checked; failures name the call, the status and the driver's
//! `nvEncGetLastErrorString`. None of this can run on the H100 this project is tested on (it
//! has no NVENC); the GPU test checks the failure there and the whole round trip on GPUs
//! that have one.
//!
//! The encode is synchronous per frame (map → encode → lock), trading some overlap for a
//! simple contract with the pipeline: a slot is free when `encode` returns.

use std::ffi::{c_void, CStr};

use cudarc::driver::sys;

use super::{EncodeError, EncoderSettings, FrameData, FrameEncoder, InputFrame, PixelFormat};
use crate::codec_sys::bindings::*;
use crate::gpu::error::CheckDriver;
use crate::gpu::Gpu;
use crate::video::chunk::VideoCodec;
use crate::video::mux::EncodedPacket;
use crate::video::nvenc::{load_functions, nvenc_status_name, nvenc_struct_version, open_session};

// The SDK defines its GUIDs as `static const` in nvEncodeAPI.h; bindgen can only declare
// them as extern statics, which no library exports, so they are restated here from the
// header (values checked by `guids_match_the_header` against the installed header when
// present).
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> GUID {
    GUID { Data1: d1, Data2: d2, Data3: d3, Data4: d4 }
}
pub const NV_ENC_CODEC_H264_GUID: GUID =
    guid(0x6bc82762, 0x4e63, 0x4ca4, [0xaa, 0x85, 0x1e, 0x50, 0xf3, 0x21, 0xf6, 0xbf]);
pub const NV_ENC_CODEC_HEVC_GUID: GUID =
    guid(0x790cdc88, 0x4522, 0x4d7b, [0x94, 0x25, 0xbd, 0xa9, 0x97, 0x5f, 0x76, 0x03]);
pub const NV_ENC_H264_PROFILE_HIGH_GUID: GUID =
    guid(0xe7cbc309, 0x4f7a, 0x4b89, [0xaf, 0x2a, 0xd5, 0x37, 0xc9, 0x2b, 0xe3, 0x10]);
pub const NV_ENC_HEVC_PROFILE_MAIN_GUID: GUID =
    guid(0xb514c39a, 0xb55b, 0x40fa, [0x87, 0x8f, 0xf1, 0x25, 0x3b, 0x4d, 0xfd, 0xec]);
/// NV_ENC_PRESET_P1_GUID … NV_ENC_PRESET_P7_GUID.
pub const NV_ENC_PRESET_GUIDS: [GUID; 7] = [
    guid(0xfc0a8d3e, 0x45f8, 0x4cf8, [0x80, 0xc7, 0x29, 0x88, 0x71, 0x59, 0x0e, 0xbf]),
    guid(0xf581cfb8, 0x88d6, 0x4381, [0x93, 0xf0, 0xdf, 0x13, 0xf9, 0xc2, 0x7d, 0xab]),
    guid(0x36850110, 0x3a07, 0x441f, [0x94, 0xd5, 0x36, 0x70, 0x63, 0x1f, 0x91, 0xf6]),
    guid(0x90a7b826, 0xdf06, 0x4862, [0xb9, 0xd2, 0xcd, 0x6d, 0x73, 0xa0, 0x86, 0x81]),
    guid(0x21c6e6b4, 0x297a, 0x4cba, [0x99, 0x8f, 0xb6, 0xcb, 0xde, 0x72, 0xad, 0xe3]),
    guid(0x8e75c279, 0x6299, 0x4ab6, [0x83, 0x02, 0x0b, 0x21, 0x5a, 0x33, 0x5c, 0xf5]),
    guid(0x84848c12, 0x6f71, 0x4c13, [0x93, 0x1b, 0x53, 0xe2, 0x83, 0xf5, 0x79, 0x74]),
];

fn same_guid(a: &GUID, b: &GUID) -> bool {
    (a.Data1, a.Data2, a.Data3, a.Data4) == (b.Data1, b.Data2, b.Data3, b.Data4)
}

// Struct versions from nvEncodeAPI.h (the `| 1u << 31` ones are marked so there).
const NV_ENC_CAPS_PARAM_VER: u32 = nvenc_struct_version(1);
const NV_ENC_CONFIG_VER: u32 = nvenc_struct_version(7) | (1 << 31);
const NV_ENC_INITIALIZE_PARAMS_VER: u32 = nvenc_struct_version(5) | (1 << 31);
const NV_ENC_PRESET_CONFIG_VER: u32 = nvenc_struct_version(4) | (1 << 31);
const NV_ENC_PIC_PARAMS_VER: u32 = nvenc_struct_version(4) | (1 << 31);
const NV_ENC_LOCK_BITSTREAM_VER: u32 = nvenc_struct_version(1);
const NV_ENC_MAP_INPUT_RESOURCE_VER: u32 = nvenc_struct_version(4);
const NV_ENC_REGISTER_RESOURCE_VER: u32 = nvenc_struct_version(3);
const NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER: u32 = nvenc_struct_version(1);
const NV_ENC_CREATE_BITSTREAM_BUFFER_VER: u32 = nvenc_struct_version(1);

/// The most distinct input buffers registered at once (pool slots: a handful).
const MAX_REGISTERED: usize = 64;

struct Registered {
    ptr: sys::CUdeviceptr,
    pitch: usize,
    handle: NV_ENC_REGISTERED_PTR,
}

/// An NVENC session encoding NV12 device frames; see the module docs.
pub struct NvencEncoder {
    gpu: Gpu,
    functions: NV_ENCODE_API_FUNCTION_LIST,
    encoder: *mut c_void,
    bitstream: NV_ENC_OUTPUT_PTR,
    registered: Vec<Registered>,
    settings: EncoderSettings,
    coded: (u32, u32),
    parameter_sets: Vec<Vec<u8>>,
    frames: u64,
    finished: bool,
}

// SAFETY: the session handle, the bitstream buffer and the registered pointers are only
// used through `&mut self` (one thread at a time), and every call binds the GPU's context
// on the calling thread first; NVENC does not tie a session to the thread that opened it.
unsafe impl Send for NvencEncoder {}

impl std::fmt::Debug for NvencEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvencEncoder")
            .field("codec", &self.settings.codec)
            .field("coded", &self.coded)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

/// Unwraps a function pointer from the list, or names the missing entry.
fn entry<T>(f: Option<T>, name: &'static str) -> Result<T, EncodeError> {
    f.ok_or_else(|| EncodeError::NvencUnavailable { reason: format!("the NVENC function list lacks {name}") })
}

impl NvencEncoder {
    /// Opens and configures a session for `settings` (input must be NV12 in device memory).
    pub fn open(gpu: &Gpu, settings: &EncoderSettings) -> Result<NvencEncoder, EncodeError> {
        settings.validate()?;
        if settings.input != PixelFormat::Nv12 {
            return Err(EncodeError::Settings {
                reason: "NVENC reads NV12 from device memory; lay the matte slot out as NV12 (luma rows, then chroma rows set to 128 once with encode::fill_neutral_chroma) and pass PixelFormat::Nv12".into(),
            });
        }
        let (functions, driver_api) =
            load_functions().map_err(|u| EncodeError::NvencUnavailable { reason: u.reason })?;
        let encoder = open_session(gpu, &functions, &driver_api)
            .map_err(|u| EncodeError::NvencUnavailable { reason: u.reason })?;
        // From here on Drop releases what exists.
        let mut this = NvencEncoder {
            gpu: gpu.clone(),
            functions,
            encoder,
            bitstream: std::ptr::null_mut(),
            registered: Vec::new(),
            settings: settings.clone(),
            coded: settings.coded_size(),
            parameter_sets: Vec::new(),
            frames: 0,
            finished: false,
        };
        this.configure()?;
        Ok(this)
    }

    /// The error for a failed call: its name, status and the driver's last error text.
    fn failed(&self, call: &'static str, status: NVENCSTATUS) -> EncodeError {
        let mut detail = String::new();
        if let Some(last_error) = self.functions.nvEncGetLastErrorString {
            // SAFETY: the session is open; the driver returns a NUL-terminated string it
            // owns (or null), valid until the next call on this session.
            let text = unsafe { last_error(self.encoder) };
            if !text.is_null() {
                // SAFETY: non-null and NUL-terminated, per the API.
                let s = unsafe { CStr::from_ptr(text) }.to_string_lossy().trim().to_string();
                if !s.is_empty() {
                    detail = format!(" ({s})");
                }
            }
        }
        EncodeError::Nvenc { call, status: nvenc_status_name(status), detail }
    }

    fn check(&self, call: &'static str, status: NVENCSTATUS) -> Result<(), EncodeError> {
        if status == _NVENCSTATUS::NV_ENC_SUCCESS {
            Ok(())
        } else {
            Err(self.failed(call, status))
        }
    }

    fn codec_guid(&self) -> GUID {
        match self.settings.codec {
            VideoCodec::H264 => NV_ENC_CODEC_H264_GUID,
            _ => NV_ENC_CODEC_HEVC_GUID,
        }
    }

    /// Steps 2–6 of the module docs.
    fn configure(&mut self) -> Result<(), EncodeError> {
        let f = self.functions;
        let codec_guid = self.codec_guid();
        let codec_name = if self.settings.codec == VideoCodec::H264 { "H.264" } else { "HEVC" };

        // 2. The codec and the largest frame.
        let guid_count = entry(f.nvEncGetEncodeGUIDCount, "nvEncGetEncodeGUIDCount")?;
        let guids = entry(f.nvEncGetEncodeGUIDs, "nvEncGetEncodeGUIDs")?;
        let mut count = 0u32;
        // SAFETY: open session; `count` is a valid out-pointer.
        let status = unsafe { guid_count(self.encoder, &mut count) };
        self.check("nvEncGetEncodeGUIDCount", status)?;
        let mut list = vec![guid(0, 0, 0, [0; 8]); count as usize];
        let mut got = 0u32;
        // SAFETY: `list` holds `count` GUIDs, the size we pass; `got` is a valid out-pointer.
        let status = unsafe { guids(self.encoder, list.as_mut_ptr(), count, &mut got) };
        self.check("nvEncGetEncodeGUIDs", status)?;
        if !list.iter().take(got as usize).any(|g| same_guid(g, &codec_guid)) {
            return Err(EncodeError::NvencUnavailable {
                reason: format!("this GPU's NVENC does not encode {codec_name}"),
            });
        }
        let caps = entry(f.nvEncGetEncodeCaps, "nvEncGetEncodeCaps")?;
        let limit = |query: NV_ENC_CAPS| -> Result<i32, EncodeError> {
            // SAFETY: zero is the documented initial state of this plain struct.
            let mut param: NV_ENC_CAPS_PARAM = unsafe { std::mem::zeroed() };
            param.version = NV_ENC_CAPS_PARAM_VER;
            param.capsToQuery = query;
            let mut value = 0i32;
            // SAFETY: open session; `param` and `value` are valid for the call.
            let status = unsafe { caps(self.encoder, codec_guid, &mut param, &mut value) };
            self.check("nvEncGetEncodeCaps", status)?;
            Ok(value)
        };
        let max_w = limit(_NV_ENC_CAPS::NV_ENC_CAPS_WIDTH_MAX)?;
        let max_h = limit(_NV_ENC_CAPS::NV_ENC_CAPS_HEIGHT_MAX)?;
        let (w, h) = self.coded;
        if i64::from(w) > i64::from(max_w) || i64::from(h) > i64::from(max_h) {
            return Err(EncodeError::Settings {
                reason: format!(
                    "this GPU's NVENC encodes {codec_name} up to {max_w} × {max_h}; the frame is {w} × {h}"
                ),
            });
        }

        // 3. Preset, tuning and our changes.
        let preset_guid = NV_ENC_PRESET_GUIDS[usize::from(self.settings.nvenc_preset - 1)];
        let get_preset = entry(f.nvEncGetEncodePresetConfigEx, "nvEncGetEncodePresetConfigEx")?;
        // SAFETY: zero is the documented initial state; boxed because the struct is large.
        let mut preset: Box<NV_ENC_PRESET_CONFIG> = Box::new(unsafe { std::mem::zeroed() });
        preset.version = NV_ENC_PRESET_CONFIG_VER;
        preset.presetCfg.version = NV_ENC_CONFIG_VER;
        let tuning = NV_ENC_TUNING_INFO::NV_ENC_TUNING_INFO_HIGH_QUALITY;
        // SAFETY: open session; `preset` is valid and versioned as the API requires.
        let status = unsafe { get_preset(self.encoder, codec_guid, preset_guid, tuning, &mut *preset) };
        self.check("nvEncGetEncodePresetConfigEx", status)?;
        let mut config: Box<NV_ENC_CONFIG> = Box::new(preset.presetCfg);
        config.version = NV_ENC_CONFIG_VER;
        let keyint = self.settings.keyframe_interval;
        config.gopLength = keyint;
        config.frameIntervalP = 1; // I and P pictures only: no reordering
        config.rcParams.rateControlMode = _NV_ENC_PARAMS_RC_MODE::NV_ENC_PARAMS_RC_VBR;
        config.rcParams.averageBitRate = 0;
        config.rcParams.maxBitRate = 0;
        config.rcParams.targetQuality = self.settings.quality;
        config.rcParams.targetQualityLSB = 0;
        config.rcParams.set_enableLookahead(0);
        config.rcParams.lookaheadDepth = 0;
        config.rcParams.set_zeroReorderDelay(1);
        let full_range = u32::from(self.settings.full_range);
        match self.settings.codec {
            VideoCodec::H264 => {
                config.profileGUID = NV_ENC_H264_PROFILE_HIGH_GUID;
                // SAFETY: the codec config union holds the H.264 variant for an H.264 session
                // (the preset filled it as such).
                let h264 = unsafe { &mut config.encodeCodecConfig.h264Config };
                h264.idrPeriod = keyint;
                h264.set_repeatSPSPPS(1);
                h264.set_outputAUD(0);
                h264.chromaFormatIDC = 1;
                h264.h264VUIParameters.videoSignalTypePresentFlag = 1;
                h264.h264VUIParameters.videoFormat = 5; // unspecified
                h264.h264VUIParameters.videoFullRangeFlag = full_range;
                h264.h264VUIParameters.colourDescriptionPresentFlag = 0;
            }
            _ => {
                config.profileGUID = NV_ENC_HEVC_PROFILE_MAIN_GUID;
                // SAFETY: as above, the HEVC variant for an HEVC session.
                let hevc = unsafe { &mut config.encodeCodecConfig.hevcConfig };
                hevc.idrPeriod = keyint;
                hevc.set_repeatSPSPPS(1);
                hevc.set_outputAUD(0);
                hevc.set_chromaFormatIDC(1);
                hevc.set_pixelBitDepthMinus8(0);
                hevc.hevcVUIParameters.videoSignalTypePresentFlag = 1;
                hevc.hevcVUIParameters.videoFormat = 5;
                hevc.hevcVUIParameters.videoFullRangeFlag = full_range;
                hevc.hevcVUIParameters.colourDescriptionPresentFlag = 0;
            }
        }

        // 4. Initialise.
        let initialize = entry(f.nvEncInitializeEncoder, "nvEncInitializeEncoder")?;
        // SAFETY: zero is the documented initial state; boxed because the struct is large.
        let mut init: Box<NV_ENC_INITIALIZE_PARAMS> = Box::new(unsafe { std::mem::zeroed() });
        init.version = NV_ENC_INITIALIZE_PARAMS_VER;
        init.encodeGUID = codec_guid;
        init.presetGUID = preset_guid;
        init.encodeWidth = w;
        init.encodeHeight = h;
        init.darWidth = w;
        init.darHeight = h;
        init.frameRateNum = self.settings.frame_rate.0;
        init.frameRateDen = self.settings.frame_rate.1;
        init.enableEncodeAsync = 0;
        init.enablePTD = 1;
        init.encodeConfig = &mut *config;
        init.maxEncodeWidth = w;
        init.maxEncodeHeight = h;
        init.tuningInfo = tuning;
        // SAFETY: open session; `init` and the config it points to live for the call.
        let status = unsafe { initialize(self.encoder, &mut *init) };
        self.check("nvEncInitializeEncoder", status)?;

        // 5. Parameter sets for the muxer.
        let get_sequence = entry(f.nvEncGetSequenceParams, "nvEncGetSequenceParams")?;
        let mut buffer = vec![0u8; 4096];
        let mut size = 0u32;
        // SAFETY: zero is the documented initial state.
        let mut payload: NV_ENC_SEQUENCE_PARAM_PAYLOAD = unsafe { std::mem::zeroed() };
        payload.version = NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER;
        payload.inBufferSize = buffer.len() as u32;
        payload.spsppsBuffer = buffer.as_mut_ptr().cast();
        payload.outSPSPPSPayloadSize = &mut size;
        // SAFETY: open, initialised session; the buffer holds `inBufferSize` bytes and
        // `size` is a valid out-pointer, both live for the call.
        let status = unsafe { get_sequence(self.encoder, &mut payload) };
        self.check("nvEncGetSequenceParams", status)?;
        buffer.truncate((size as usize).min(buffer.len()));
        self.parameter_sets =
            crate::video::demux::nal::AnnexBNals::new(&buffer).filter(|n| !n.is_empty()).map(|n| n.to_vec()).collect();

        // 6. The output buffer.
        let create = entry(f.nvEncCreateBitstreamBuffer, "nvEncCreateBitstreamBuffer")?;
        // SAFETY: zero is the documented initial state.
        let mut create_params: NV_ENC_CREATE_BITSTREAM_BUFFER = unsafe { std::mem::zeroed() };
        create_params.version = NV_ENC_CREATE_BITSTREAM_BUFFER_VER;
        // SAFETY: open, initialised session; the params live for the call.
        let status = unsafe { create(self.encoder, &mut create_params) };
        self.check("nvEncCreateBitstreamBuffer", status)?;
        self.bitstream = create_params.bitstreamBuffer;
        Ok(())
    }

    /// The registration of a device buffer, made on first use.
    fn registration(&mut self, ptr: sys::CUdeviceptr, pitch: usize) -> Result<NV_ENC_REGISTERED_PTR, EncodeError> {
        if let Some(r) = self.registered.iter().find(|r| r.ptr == ptr && r.pitch == pitch) {
            return Ok(r.handle);
        }
        if self.registered.len() >= MAX_REGISTERED {
            return Err(EncodeError::BadFrame {
                frame: self.frames,
                reason: format!(
                    "more than {MAX_REGISTERED} distinct input buffers; NVENC expects frames from a fixed set of pool slots"
                ),
            });
        }
        let register = entry(self.functions.nvEncRegisterResource, "nvEncRegisterResource")?;
        // SAFETY: zero is the documented initial state.
        let mut params: NV_ENC_REGISTER_RESOURCE = unsafe { std::mem::zeroed() };
        params.version = NV_ENC_REGISTER_RESOURCE_VER;
        params.resourceType = _NV_ENC_INPUT_RESOURCE_TYPE::NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR;
        params.width = self.coded.0;
        params.height = self.coded.1;
        params.pitch = u32::try_from(pitch).map_err(|_| EncodeError::BadFrame {
            frame: self.frames,
            reason: format!("row pitch {pitch} does not fit NVENC's 32-bit field"),
        })?;
        params.subResourceIndex = 0;
        params.resourceToRegister = ptr as *mut c_void;
        params.bufferFormat = _NV_ENC_BUFFER_FORMAT::NV_ENC_BUFFER_FORMAT_NV12;
        params.bufferUsage = _NV_ENC_BUFFER_USAGE::NV_ENC_INPUT_IMAGE;
        // SAFETY: open session; `ptr` is device memory holding an NV12 frame of the coded
        // size at `pitch` (the FrameData contract), which the pool keeps allocated for the
        // session's life; the registration is undone in Drop.
        let status = unsafe { register(self.encoder, &mut params) };
        self.check("nvEncRegisterResource", status)?;
        self.registered.push(Registered { ptr, pitch, handle: params.registeredResource });
        Ok(params.registeredResource)
    }
}

impl FrameEncoder for NvencEncoder {
    fn name(&self) -> String {
        format!("NVENC {}", if self.settings.codec == VideoCodec::H264 { "H.264" } else { "HEVC" })
    }

    fn codec(&self) -> VideoCodec {
        self.settings.codec
    }

    fn coded_size(&self) -> (u32, u32) {
        self.coded
    }

    fn parameter_sets(&self) -> Vec<Vec<u8>> {
        self.parameter_sets.clone()
    }

    fn encode(&mut self, frame: &InputFrame, out: &mut Vec<EncodedPacket>) -> Result<(), EncodeError> {
        let index = self.frames;
        let FrameData::Device { ptr, pitch, stream } = frame.data else {
            return Err(EncodeError::BadFrame {
                frame: index,
                reason: "NVENC encodes frames in device memory; host frames go to the ffmpeg fallback".into(),
            });
        };
        if pitch < self.coded.0 as usize {
            return Err(EncodeError::BadFrame {
                frame: index,
                reason: format!("row pitch {pitch} is narrower than the coded width {}", self.coded.0),
            });
        }
        self.gpu.bind_to_thread()?;
        // The frame is written by work on `stream`; NVENC reads it outside any stream.
        stream.synchronize().check_with("cuStreamSynchronize", || format!("before encoding frame {index}"))?;
        let registered = self.registration(ptr, pitch)?;
        let f = self.functions;
        let map = entry(f.nvEncMapInputResource, "nvEncMapInputResource")?;
        let unmap = entry(f.nvEncUnmapInputResource, "nvEncUnmapInputResource")?;
        let encode = entry(f.nvEncEncodePicture, "nvEncEncodePicture")?;
        let lock = entry(f.nvEncLockBitstream, "nvEncLockBitstream")?;
        let unlock = entry(f.nvEncUnlockBitstream, "nvEncUnlockBitstream")?;

        // SAFETY: zero is the documented initial state.
        let mut mapping: NV_ENC_MAP_INPUT_RESOURCE = unsafe { std::mem::zeroed() };
        mapping.version = NV_ENC_MAP_INPUT_RESOURCE_VER;
        mapping.registeredResource = registered;
        // SAFETY: open session; `registered` came from nvEncRegisterResource on it.
        let status = unsafe { map(self.encoder, &mut mapping) };
        self.check("nvEncMapInputResource", status)?;

        let result = (|| -> Result<EncodedPacket, EncodeError> {
            // SAFETY: zero is the documented initial state; boxed because it is large.
            let mut pic: Box<NV_ENC_PIC_PARAMS> = Box::new(unsafe { std::mem::zeroed() });
            pic.version = NV_ENC_PIC_PARAMS_VER;
            pic.inputWidth = self.coded.0;
            pic.inputHeight = self.coded.1;
            pic.inputPitch = pitch as u32;
            pic.inputBuffer = mapping.mappedResource;
            pic.outputBitstream = self.bitstream;
            pic.bufferFmt = mapping.mappedBufferFmt;
            pic.pictureStruct = _NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME;
            pic.inputTimeStamp = index;
            // SAFETY: open, initialised session; input mapped above, output created in
            // configure; the params live for the call.
            let status = unsafe { encode(self.encoder, &mut *pic) };
            if status == _NVENCSTATUS::NV_ENC_ERR_NEED_MORE_INPUT {
                return Err(EncodeError::Nvenc {
                    call: "nvEncEncodePicture",
                    status: nvenc_status_name(status),
                    detail: " (NVENC held the picture back although B-frames and lookahead are off)".into(),
                });
            }
            self.check("nvEncEncodePicture", status)?;
            // SAFETY: zero is the documented initial state (doNotWait = 0: block until done).
            let mut locked: NV_ENC_LOCK_BITSTREAM = unsafe { std::mem::zeroed() };
            locked.version = NV_ENC_LOCK_BITSTREAM_VER;
            locked.outputBitstream = self.bitstream;
            // SAFETY: the bitstream buffer belongs to this session and holds this picture.
            let status = unsafe { lock(self.encoder, &mut locked) };
            self.check("nvEncLockBitstream", status)?;
            let size = locked.bitstreamSizeInBytes as usize;
            let data = if size == 0 || locked.bitstreamBufferPtr.is_null() {
                Vec::new()
            } else {
                // SAFETY: while locked, the driver guarantees `size` readable bytes at
                // bitstreamBufferPtr; they are copied before the unlock below.
                unsafe { std::slice::from_raw_parts(locked.bitstreamBufferPtr as *const u8, size) }.to_vec()
            };
            let keyframe = locked.pictureType == _NV_ENC_PIC_TYPE::NV_ENC_PIC_TYPE_IDR;
            // SAFETY: locked just above on this session.
            let status = unsafe { unlock(self.encoder, self.bitstream) };
            self.check("nvEncUnlockBitstream", status)?;
            if data.is_empty() {
                return Err(EncodeError::BadFrame { frame: index, reason: "NVENC returned an empty picture".into() });
            }
            Ok(EncodedPacket { data, pts: frame.pts, keyframe })
        })();
        // SAFETY: mapped above on this session; the encode has completed (locked) or failed.
        let status = unsafe { unmap(self.encoder, mapping.mappedResource) };
        let packet = result?;
        self.check("nvEncUnmapInputResource", status)?;
        out.push(packet);
        self.frames += 1;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<EncodedPacket>) -> Result<(), EncodeError> {
        if self.finished {
            return Ok(());
        }
        self.gpu.bind_to_thread()?;
        let encode = entry(self.functions.nvEncEncodePicture, "nvEncEncodePicture")?;
        // SAFETY: zero is the documented initial state; EOS with every other field zero, as
        // the guide asks.
        let mut pic: Box<NV_ENC_PIC_PARAMS> = Box::new(unsafe { std::mem::zeroed() });
        pic.version = NV_ENC_PIC_PARAMS_VER;
        pic.encodePicFlags = _NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_EOS;
        // SAFETY: open, initialised session; the params live for the call.
        let status = unsafe { encode(self.encoder, &mut *pic) };
        self.check("nvEncEncodePicture (end of stream)", status)?;
        // Synchronous mode without reordering: every picture was returned by its encode call.
        self.finished = true;
        Ok(())
    }
}

impl Drop for NvencEncoder {
    fn drop(&mut self) {
        // Errors cannot be returned from Drop; they are printed, never ignored silently.
        let report = |what: &str, status: NVENCSTATUS| {
            if status != _NVENCSTATUS::NV_ENC_SUCCESS {
                eprintln!("vrseg: while closing NVENC: {what} returned {}", nvenc_status_name(status));
            }
        };
        if let Err(e) = self.gpu.bind_to_thread() {
            eprintln!("vrseg: while closing NVENC: {e}");
        }
        if let Some(unregister) = self.functions.nvEncUnregisterResource {
            for r in self.registered.drain(..) {
                // SAFETY: registered on this session and unregistered once.
                report("nvEncUnregisterResource", unsafe { unregister(self.encoder, r.handle) });
            }
        }
        if !self.bitstream.is_null() {
            if let Some(destroy) = self.functions.nvEncDestroyBitstreamBuffer {
                // SAFETY: created on this session and destroyed once.
                report("nvEncDestroyBitstreamBuffer", unsafe { destroy(self.encoder, self.bitstream) });
            }
        }
        if let Some(destroy) = self.functions.nvEncDestroyEncoder {
            // SAFETY: the session opened in `open`, destroyed once, after its resources.
            report("nvEncDestroyEncoder", unsafe { destroy(self.encoder) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The restated GUIDs against the installed nvEncodeAPI.h (libffmpeg-nvenc-dev), where
    /// present; the struct versions against the header's macros.
    #[test]
    fn guids_match_the_header() {
        let Ok(header) = std::fs::read_to_string("/usr/include/ffnvcodec/nvEncodeAPI.h") else {
            eprintln!("guids_match_the_header: skipped: /usr/include/ffnvcodec/nvEncodeAPI.h not installed");
            return;
        };
        let text = |g: &GUID| {
            format!(
                "{{ 0x{:x}, 0x{:x}, 0x{:x}, {{ {} }} }}",
                g.Data1,
                g.Data2,
                g.Data3,
                g.Data4.iter().map(|b| format!("0x{b:x}")).collect::<Vec<_>>().join(", ")
            )
        };
        let normalise = |s: &str| s.split_whitespace().collect::<String>().to_ascii_lowercase().replace("0x0", "0x");
        let mut named = vec![
            ("NV_ENC_CODEC_H264_GUID", NV_ENC_CODEC_H264_GUID),
            ("NV_ENC_CODEC_HEVC_GUID", NV_ENC_CODEC_HEVC_GUID),
            ("NV_ENC_H264_PROFILE_HIGH_GUID", NV_ENC_H264_PROFILE_HIGH_GUID),
            ("NV_ENC_HEVC_PROFILE_MAIN_GUID", NV_ENC_HEVC_PROFILE_MAIN_GUID),
        ];
        let preset_names = ["P1", "P2", "P3", "P4", "P5", "P6", "P7"].map(|p| format!("NV_ENC_PRESET_{p}_GUID"));
        for (name, g) in preset_names.iter().zip(NV_ENC_PRESET_GUIDS) {
            named.push((name.as_str(), g));
        }
        for (name, g) in named {
            let at = header.find(&format!("{name} ")).unwrap_or_else(|| panic!("{name} not in the header"));
            let rest = &header[at..];
            let value = &rest[rest.find('{').unwrap()..rest.find("};").unwrap() + 1];
            assert_eq!(normalise(value), normalise(&text(&g)), "{name}");
        }
        for (name, ours) in [
            ("NV_ENC_CONFIG_VER", NV_ENC_CONFIG_VER),
            ("NV_ENC_INITIALIZE_PARAMS_VER", NV_ENC_INITIALIZE_PARAMS_VER),
            ("NV_ENC_PRESET_CONFIG_VER", NV_ENC_PRESET_CONFIG_VER),
            ("NV_ENC_PIC_PARAMS_VER", NV_ENC_PIC_PARAMS_VER),
            ("NV_ENC_LOCK_BITSTREAM_VER", NV_ENC_LOCK_BITSTREAM_VER),
            ("NV_ENC_MAP_INPUT_RESOURCE_VER", NV_ENC_MAP_INPUT_RESOURCE_VER),
            ("NV_ENC_REGISTER_RESOURCE_VER", NV_ENC_REGISTER_RESOURCE_VER),
            ("NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER", NV_ENC_SEQUENCE_PARAM_PAYLOAD_VER),
            ("NV_ENC_CREATE_BITSTREAM_BUFFER_VER", NV_ENC_CREATE_BITSTREAM_BUFFER_VER),
            ("NV_ENC_CAPS_PARAM_VER", NV_ENC_CAPS_PARAM_VER),
        ] {
            let line = header
                .lines()
                .find(|l| l.starts_with(&format!("#define {name} ")))
                .unwrap_or_else(|| panic!("{name} not defined in the header"));
            let ver: u32 =
                line.split("NVENCAPI_STRUCT_VERSION(").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
            let high = line.contains("1u<<31") || line.contains("1u << 31") || line.contains("1<<31");
            assert_eq!(ours, nvenc_struct_version(ver) | if high { 1 << 31 } else { 0 }, "{name}");
        }
    }
}
