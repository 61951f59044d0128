//! NVDEC through libnvcuvid: capabilities now; the parser/decoder joins here.

pub mod caps;

pub use caps::{query_caps, standard_caps_table, DecoderCaps, NvdecError};
