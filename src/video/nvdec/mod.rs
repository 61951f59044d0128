//! NVDEC through libnvcuvid: capabilities, and the parser + decoder that
//! turns [`Chunk`](crate::video::chunk::Chunk)s into frames in VRAM.

pub mod caps;
pub mod decoder;

pub use caps::{query_caps, standard_caps_table, DecoderCaps, NvdecError};
pub use decoder::{FrameLayout, MappedPicture, NvDecoder, PictureStatus};
