//! `cuvidGetDecoderCaps`: what this GPU's NVDEC can decode, per codec, chroma
//! format and bit depth. Checked before any decode so that an unsupported
//! stream stops with a sentence instead of a failed decoder.
//! API: <https://docs.nvidia.com/video-technologies/video-codec-sdk/13.0/nvdec-video-decoder-api-prog-guide/>

use crate::codec_sys::bindings::{cudaError_enum, cudaVideoChromaFormat_enum, cudaVideoCodec_enum, CUVIDDECODECAPS};
use crate::codec_sys::{nvcuvid, CodecLibraryError};
use crate::gpu::{Gpu, GpuError};

#[derive(Debug, thiserror::Error)]
pub enum NvdecError {
    #[error(transparent)]
    Library(#[from] CodecLibraryError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{call} failed with CUDA status {status}{context}")]
    Call { call: &'static str, status: u32, context: String },
    #[error("{what}; {way_out}")]
    Unsupported { what: String, way_out: String },
    #[error("{label}: writing frame {frame} failed: {reason}")]
    Output { label: String, frame: u64, reason: String },
}

/// One row of the capability table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecoderCaps {
    /// "h264", "hevc", "vp9", "av1".
    pub codec: &'static str,
    /// "420", "422", "444".
    pub chroma: &'static str,
    pub bit_depth: u8,
    pub supported: bool,
    pub max_width: u32,
    pub max_height: u32,
    /// Largest picture in 16×16 macroblocks (width·height/256).
    pub max_macroblocks: u32,
    pub min_width: u16,
    pub min_height: u16,
    /// NVDEC engines on this GPU, as the driver reports them.
    pub engines: u8,
    /// Surface formats the decoder can write: "nv12", "p016", "yuv444", "yuv444_16bit".
    pub output_formats: Vec<&'static str>,
}

/// The codecs vrseg decodes, with their NVDEC enum and the bit depths users bring.
pub const VRSEG_CODECS: &[(&str, cudaVideoCodec_enum::Type, &[u8])] = &[
    ("h264", cudaVideoCodec_enum::cudaVideoCodec_H264, &[8]),
    ("hevc", cudaVideoCodec_enum::cudaVideoCodec_HEVC, &[8, 10]),
    ("vp9", cudaVideoCodec_enum::cudaVideoCodec_VP9, &[8, 10]),
    ("av1", cudaVideoCodec_enum::cudaVideoCodec_AV1, &[8, 10]),
];

fn output_formats(mask: u16) -> Vec<&'static str> {
    // Bit i set means cudaVideoSurfaceFormat i is supported (NV12=0, P016=1,
    // YUV444=2, YUV444_16Bit=3).
    ["nv12", "p016", "yuv444", "yuv444_16bit"]
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// Asks the driver what it can decode for one codec at 4:2:0 and `bit_depth`.
pub fn query_caps(
    gpu: &Gpu,
    codec_name: &'static str,
    codec: cudaVideoCodec_enum::Type,
    bit_depth: u8,
) -> Result<DecoderCaps, NvdecError> {
    let api = nvcuvid()?;
    gpu.bind_to_thread()?;
    // SAFETY: CUVIDDECODECAPS is plain old data; all-zero is its documented
    // initial state before the three input fields are set.
    let mut caps: CUVIDDECODECAPS = unsafe { std::mem::zeroed() };
    caps.eCodecType = codec;
    caps.eChromaFormat = cudaVideoChromaFormat_enum::cudaVideoChromaFormat_420;
    caps.nBitDepthMinus8 = u32::from(bit_depth.saturating_sub(8));
    // SAFETY: `caps` is a valid, initialised CUVIDDECODECAPS for the whole
    // call, and this GPU's context is current on the thread (bound above).
    let status = unsafe { (api.cuvidGetDecoderCaps)(&mut caps) };
    if status != cudaError_enum::CUDA_SUCCESS {
        return Err(NvdecError::Call {
            call: "cuvidGetDecoderCaps",
            status,
            context: format!(" ({codec_name} {bit_depth}-bit 4:2:0)"),
        });
    }
    Ok(DecoderCaps {
        codec: codec_name,
        chroma: "420",
        bit_depth,
        supported: caps.bIsSupported != 0,
        max_width: caps.nMaxWidth,
        max_height: caps.nMaxHeight,
        max_macroblocks: caps.nMaxMBCount,
        min_width: caps.nMinWidth,
        min_height: caps.nMinHeight,
        engines: caps.nNumNVDECs,
        output_formats: output_formats(caps.nOutputFormatMask),
    })
}

/// Capabilities for every codec and bit depth vrseg decodes.
pub fn standard_caps_table(gpu: &Gpu) -> Result<Vec<DecoderCaps>, NvdecError> {
    let mut rows = Vec::new();
    for &(name, codec, depths) in VRSEG_CODECS {
        for &depth in depths {
            rows.push(query_caps(gpu, name, codec, depth)?);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_format_mask_bits_map_to_names() {
        assert_eq!(output_formats(0b0011), vec!["nv12", "p016"]);
        assert_eq!(output_formats(0), Vec::<&str>::new());
        assert_eq!(output_formats(0b1101), vec!["nv12", "yuv444", "yuv444_16bit"]);
    }
}
