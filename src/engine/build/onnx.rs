//! ONNX protobuf decoding: message structs for the subset of `onnx.proto` that
//! vrseg reads, derived by hand with `prost` (no protoc at build time), and
//! the tensor decoding every initializer and `Constant` goes through.
//!
//! Field numbers are those of the official schema
//! (<https://github.com/onnx/onnx/blob/main/onnx/onnx.proto>). Fields we do
//! not declare are skipped by the decoder, so a model using them still reads;
//! the importer refuses what it cannot honour (subgraphs, sparse tensors, …)
//! by op type. `onnx.proto` is proto2: singular fields are `optional` here so
//! an absent field and a zero are told apart where that matters (dims).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Component, Path};

use prost::Message as _;

use super::ir::TensorData;
use super::BuildError;

/// `TensorProto.DataType` values (element types).
pub mod data_type {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const STRING: i32 = 8;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const BFLOAT16: i32 = 16;

    /// The schema's name for an element type, for messages.
    pub fn name(data_type: i32) -> String {
        let known = match data_type {
            0 => "UNDEFINED",
            FLOAT => "FLOAT",
            UINT8 => "UINT8",
            INT8 => "INT8",
            UINT16 => "UINT16",
            INT16 => "INT16",
            INT32 => "INT32",
            INT64 => "INT64",
            STRING => "STRING",
            BOOL => "BOOL",
            FLOAT16 => "FLOAT16",
            DOUBLE => "DOUBLE",
            UINT32 => "UINT32",
            UINT64 => "UINT64",
            14 => "COMPLEX64",
            15 => "COMPLEX128",
            BFLOAT16 => "BFLOAT16",
            17..=23 => "a float8/int4 type",
            _ => return format!("unknown type {data_type}"),
        };
        format!("{known} ({data_type})")
    }
}

/// `AttributeProto.AttributeType` values.
pub mod attribute_type {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const GRAPH: i32 = 5;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
    pub const STRINGS: i32 = 8;
}

/// `TensorProto.DataLocation::EXTERNAL`: the data lives in a side file.
pub const DATA_LOCATION_EXTERNAL: i32 = 1;

/// The most elements one decoded tensor may have (1 GiB of f32). Real
/// weights are far below it; the limit keeps a damaged or hostile dims list
/// (with `allow_empty_initializers`, which allocates zeros) from asking for
/// terabytes.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// "" (or absent) and "ai.onnx" both name the default operator set.
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// Sorted topologically (the schema requires it; the importer checks).
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Value names; "" marks an optional input that is left out.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
}

impl NodeProto {
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name.as_deref() == Some(name))
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    // proto2 without [packed = true]: writers emit one record per element;
    // prost reads both forms either way.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    /// `attribute_type::*`; absent in IR version 1 files, where the filled
    /// field tells the type.
    #[prost(int32, optional, tag = "20")]
    pub r#type: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// INT32, INT16, INT8, UINT16, UINT8, BOOL and FLOAT16 (as bits).
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    /// Fixed-width little-endian elements.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// Keys "location" (relative to the model's directory), "offset", "length".
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// Only tensors are declared: sequence and map types decode as `None`.
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
}

pub mod type_proto {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(int32, optional, tag = "1")]
        pub elem_type: Option<i32>,
        /// Absent: the rank is unknown too.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

pub mod tensor_shape_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// Neither set: an unknown dimension.
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
    }

    pub mod dimension {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(int64, tag = "1")]
            DimValue(i64),
            /// A symbolic dimension ("batch", "height", …).
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

impl ValueInfoProto {
    /// The tensor type, if the value is declared as a tensor.
    pub fn tensor_type(&self) -> Option<&type_proto::Tensor> {
        match self.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => Some(t),
        }
    }
}

/// Decodes a model file's bytes. Truncated or damaged bytes (and strings
/// that are not UTF-8) give `BuildError::Damaged` naming `path`.
pub fn decode_model(bytes: &[u8], path: &Path) -> Result<ModelProto, BuildError> {
    ModelProto::decode(bytes).map_err(|e| BuildError::Damaged {
        path: path.to_path_buf(),
        reason: format!(
            "the protobuf does not decode ({e}); the file may be truncated or not an ONNX model: export it again"
        ),
    })
}

/// A decoded tensor: its shape and its elements as the IR stores them
/// (floats of every width as f32, integers as i64).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// How `decode_tensor` treats a tensor that has dims but no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingData {
    /// An error (a real model always carries its data).
    Refuse,
    /// Float tensors read as zeros (test fixtures whose weights were
    /// stripped; the tests refill them). Integer tensors are still refused:
    /// they hold shapes, and zeros there would build a wrong graph silently.
    ZeroFloats,
}

/// Decodes one tensor. `what` names it for messages (`initializer "w"`,
/// `attribute "value" of node "c"`); `path` is the model file, whose
/// directory external data is read from.
pub fn decode_tensor(t: &TensorProto, what: &str, path: &Path, missing: MissingData) -> Result<Tensor, BuildError> {
    let damaged = |reason: String| BuildError::Damaged { path: path.to_path_buf(), reason: format!("{what} {reason}") };
    let mut shape = Vec::with_capacity(t.dims.len());
    // Zero dims count as 1 in the bound, so that no partial product of the
    // shape (strides, flattening) can overflow later either.
    let mut volume: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| damaged(format!("has a negative dimension in {:?}", t.dims)))?;
        volume = volume.checked_mul(d.max(1)).filter(|&v| v <= MAX_TENSOR_ELEMENTS).ok_or_else(|| {
            damaged(format!("has dims {:?}, more than {MAX_TENSOR_ELEMENTS} elements; the file is damaged", t.dims))
        })?;
        shape.push(d);
    }
    let n: usize = shape.iter().product();
    let data_type = t.data_type.unwrap_or(0);
    let elem_size = match data_type {
        data_type::FLOAT | data_type::INT32 => 4,
        data_type::INT64 | data_type::DOUBLE => 8,
        data_type::FLOAT16 => 2,
        other => {
            return Err(BuildError::UnsupportedModel {
                path: path.to_path_buf(),
                reason: format!(
                    "{what} has element type {}; vrseg reads FLOAT, FLOAT16, DOUBLE, INT32 and INT64 tensors: \
                     export the model with float32 weights",
                    data_type::name(other)
                ),
            })
        }
    };

    let external;
    let raw: Option<&[u8]> = if t.data_location == Some(DATA_LOCATION_EXTERNAL) {
        external = read_external(t, what, path, n * elem_size)?;
        Some(&external)
    } else {
        t.raw_data.as_deref().filter(|r| !r.is_empty())
    };

    if let Some(raw) = raw {
        if raw.len() != n * elem_size {
            return Err(damaged(format!(
                "has dims {:?} ({n} elements of {} bytes) but {} bytes of raw data",
                t.dims,
                elem_size,
                raw.len()
            )));
        }
        let data = match data_type {
            data_type::FLOAT => TensorData::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes(le(c))).collect()),
            data_type::DOUBLE => {
                TensorData::F32(raw.chunks_exact(8).map(|c| f64::from_le_bytes(le(c)) as f32).collect())
            }
            data_type::FLOAT16 => TensorData::F32(
                raw.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes(le(c))).to_f32()).collect(),
            ),
            data_type::INT32 => {
                TensorData::I64(raw.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes(le(c)))).collect())
            }
            _ => TensorData::I64(raw.chunks_exact(8).map(|c| i64::from_le_bytes(le(c))).collect()),
        };
        return Ok(Tensor { shape, data });
    }

    let typed_len = match data_type {
        data_type::FLOAT => t.float_data.len(),
        data_type::DOUBLE => t.double_data.len(),
        data_type::INT64 => t.int64_data.len(),
        _ => t.int32_data.len(), // INT32, FLOAT16
    };
    if typed_len == 0 && n > 0 {
        let float = matches!(data_type, data_type::FLOAT | data_type::FLOAT16 | data_type::DOUBLE);
        if missing == MissingData::ZeroFloats && float {
            return Ok(Tensor { shape, data: TensorData::F32(vec![0.0; n]) });
        }
        return Err(damaged(format!(
            "has dims {:?} but no data{}",
            t.dims,
            if float {
                "; if its weights were stripped on purpose (a test fixture), import with allow_empty_initializers"
            } else {
                ""
            }
        )));
    }
    if typed_len != n {
        return Err(damaged(format!("has dims {:?} ({n} elements) but {typed_len} data elements", t.dims)));
    }
    let data = match data_type {
        data_type::FLOAT => TensorData::F32(t.float_data.clone()),
        data_type::DOUBLE => TensorData::F32(t.double_data.iter().map(|&v| v as f32).collect()),
        // FLOAT16 in int32_data: the bits in the low 16 (the schema's rule).
        data_type::FLOAT16 => {
            TensorData::F32(t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f32()).collect())
        }
        data_type::INT32 => TensorData::I64(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
        _ => TensorData::I64(t.int64_data.clone()),
    };
    Ok(Tensor { shape, data })
}

/// An array from a chunk of `chunks_exact(N)` (always N bytes long).
fn le<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(chunk);
    out
}

/// Reads a tensor's external data: `location` relative to the model's
/// directory, optional `offset` and `length`. Locations that leave the
/// model's directory are refused, as onnx's own checker does.
fn read_external(t: &TensorProto, what: &str, path: &Path, expected: usize) -> Result<Vec<u8>, BuildError> {
    let unsupported = |reason: String| BuildError::UnsupportedModel {
        path: path.to_path_buf(),
        reason: format!(
            "{what} keeps its data in an external file, and {reason}; re-export the model without external data \
             (onnx.save(model, path, save_as_external_data=False))"
        ),
    };
    let key = |k: &str| t.external_data.iter().find(|e| e.key.as_deref() == Some(k)).and_then(|e| e.value.as_deref());
    let number = |k: &str| -> Result<Option<u64>, BuildError> {
        key(k)
            .map(|v| v.trim().parse::<u64>().map_err(|_| unsupported(format!("its {k} {v:?} is not a number"))))
            .transpose()
    };
    let location = key("location").ok_or_else(|| unsupported("it names no location".into()))?;
    let relative = Path::new(location);
    if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(unsupported(format!("its location {location:?} leaves the model's directory")));
    }
    let file = path.parent().unwrap_or(Path::new("")).join(relative);
    let offset = number("offset")?.unwrap_or(0);
    let length = match number("length")? {
        Some(l) => l,
        None => expected as u64,
    };
    if length != expected as u64 {
        return Err(BuildError::Damaged {
            path: path.to_path_buf(),
            reason: format!("{what} declares {length} bytes of external data where its dims need {expected}"),
        });
    }
    let read = |source| BuildError::Read { path: file.clone(), source };
    let mut f = std::fs::File::open(&file).map_err(read)?;
    f.seek(SeekFrom::Start(offset)).map_err(read)?;
    let mut buf = vec![0u8; expected];
    f.read_exact(&mut buf).map_err(read)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data_type: i32, dims: &[i64]) -> TensorProto {
        TensorProto { name: Some("t".into()), dims: dims.to_vec(), data_type: Some(data_type), ..Default::default() }
    }

    fn decode(t: &TensorProto) -> Result<Tensor, BuildError> {
        decode_tensor(t, "initializer \"t\"", Path::new("m.onnx"), MissingData::Refuse)
    }

    #[test]
    fn element_types_decode_to_f32_and_i64() {
        let mut t = tensor(data_type::FLOAT16, &[2]);
        t.raw_data =
            Some([half::f16::from_f32(1.5), half::f16::from_f32(-2.0)].iter().flat_map(|h| h.to_le_bytes()).collect());
        assert_eq!(decode(&t).unwrap().data, TensorData::F32(vec![1.5, -2.0]));

        let mut t = tensor(data_type::FLOAT16, &[1]);
        t.int32_data = vec![i32::from(half::f16::from_f32(0.25).to_bits())];
        assert_eq!(decode(&t).unwrap().data, TensorData::F32(vec![0.25]));

        let mut t = tensor(data_type::DOUBLE, &[2, 1]);
        t.double_data = vec![0.5, 3.0];
        assert_eq!(decode(&t).unwrap(), Tensor { shape: vec![2, 1], data: TensorData::F32(vec![0.5, 3.0]) });

        let mut t = tensor(data_type::INT32, &[2]);
        t.raw_data = Some([-3i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(decode(&t).unwrap().data, TensorData::I64(vec![-3, 7]));

        let mut t = tensor(data_type::INT64, &[]);
        t.raw_data = Some(i64::MAX.to_le_bytes().to_vec());
        assert_eq!(decode(&t).unwrap(), Tensor { shape: vec![], data: TensorData::I64(vec![i64::MAX]) });

        let mut t = tensor(data_type::FLOAT, &[3]);
        t.float_data = vec![1.0, 2.0, 3.0];
        assert_eq!(decode(&t).unwrap().data, TensorData::F32(vec![1.0, 2.0, 3.0]));
    }

    #[test]
    fn bad_tensors_say_what_is_wrong() {
        let e = decode(&tensor(data_type::BOOL, &[1])).unwrap_err().to_string();
        assert!(e.contains("\"t\"") && e.contains("BOOL (9)"), "{e}");

        let mut t = tensor(data_type::FLOAT, &[4]);
        t.raw_data = Some(vec![0; 12]);
        let e = decode(&t).unwrap_err().to_string();
        assert!(e.contains("m.onnx") && e.contains("12 bytes"), "{e}");

        let e = decode(&tensor(data_type::INT64, &[2, -1])).unwrap_err().to_string();
        assert!(e.contains("negative"), "{e}");

        let e = decode(&tensor(data_type::FLOAT, &[1 << 20, 1 << 20])).unwrap_err().to_string();
        assert!(e.contains("elements"), "{e}");

        // Stripped weights read as zeros only when asked, and never for integers.
        let t = tensor(data_type::FLOAT, &[2, 2]);
        let zeros = decode_tensor(&t, "w", Path::new("m.onnx"), MissingData::ZeroFloats).unwrap();
        assert_eq!(zeros.data, TensorData::F32(vec![0.0; 4]));
        assert!(
            decode_tensor(&tensor(data_type::INT64, &[2]), "s", Path::new("m.onnx"), MissingData::ZeroFloats).is_err()
        );
    }

    #[test]
    fn field_numbers_match_onnx_proto() {
        // Hand-encoded: NodeProto { input: "x" (1), output: "y" (2), name: "n" (3), op_type: "Relu" (4),
        // attribute (5): { name: "a" (1), i: 3 (3), type: INT (20) }, domain: "" (7) }.
        let bytes = [
            0x0a, 1, b'x', 0x12, 1, b'y', 0x1a, 1, b'n', 0x22, 4, b'R', b'e', b'l', b'u', 0x2a, 8, 0x0a, 1, b'a', 0x18,
            3, 0xa0, 0x01, 2, 0x3a, 0,
        ];
        let n = NodeProto::decode(&bytes[..]).unwrap();
        assert_eq!((n.input, n.output), (vec!["x".to_string()], vec!["y".to_string()]));
        assert_eq!((n.name.as_deref(), n.op_type.as_deref(), n.domain.as_deref()), (Some("n"), Some("Relu"), Some("")));
        assert_eq!(n.attribute[0].i, Some(3));
        assert_eq!(n.attribute[0].r#type, Some(attribute_type::INT));
    }
}
