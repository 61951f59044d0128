//! Import tests on small models built here with the `onnx` message structs
//! (encoded to bytes, so decoding is tested too).

use std::path::Path;

use prost::Message as _;

use super::*;
use crate::engine::build::onnx::tensor_shape_proto::{dimension, Dimension};
use crate::engine::build::onnx::{
    attribute_type, type_proto, AttributeProto, GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};

fn f32_tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(data_type::FLOAT),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, dims: &[i64], data: Vec<i64>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(data_type::INT64),
        int64_data: data,
        ..Default::default()
    }
}

/// A weight of `dims` filled with 0.01.
fn weight(name: &str, dims: &[i64]) -> TensorProto {
    let n = dims.iter().product::<i64>() as usize;
    f32_tensor(name, dims, vec![0.01; n])
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("/{op}_{}", outputs.first().copied().unwrap_or(""))),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_type::INT), i: Some(v), ..Default::default() }
}

fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::STRING),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn a_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_type::TENSOR), t: Some(t), ..Default::default() }
}

/// A float tensor value; `None` dims are symbolic ("batch").
fn vi(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("batch".into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(data_type::FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
    }
}

fn fixed(name: &str, dims: &[i64]) -> ValueInfoProto {
    vi(name, &dims.iter().map(|&d| Some(d)).collect::<Vec<_>>())
}

/// An output declared without a shape.
fn out(name: &str) -> ValueInfoProto {
    ValueInfoProto { name: Some(name.into()), r#type: None }
}

struct Model {
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
}

impl Model {
    fn new(inputs: Vec<ValueInfoProto>, nodes: Vec<NodeProto>, outputs: Vec<ValueInfoProto>) -> Model {
        Model { opset: 17, nodes, inits: Vec::new(), inputs, outputs }
    }

    fn inits(mut self, inits: Vec<TensorProto>) -> Model {
        self.inits = inits;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("vrseg tests".into()),
            graph: Some(GraphProto {
                node: self.nodes.clone(),
                name: Some("test".into()),
                initializer: self.inits.clone(),
                input: self.inputs.clone(),
                output: self.outputs.clone(),
                value_info: Vec::new(),
            }),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(self.opset) }],
        }
        .encode_to_vec()
    }

    fn import(&self, options: &ImportOptions) -> Result<Graph, BuildError> {
        import(&self.bytes(), Path::new("test.onnx"), options)
    }

    fn import_ok(&self) -> Graph {
        self.import(&ImportOptions::default()).unwrap_or_else(|e| panic!("import failed: {e}"))
    }
}

fn batch(n: usize) -> ImportOptions {
    ImportOptions { batch: Some(n), ..Default::default() }
}

fn shape_of(g: &Graph, name: &str) -> Vec<usize> {
    g.values.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no value {name}")).shape.clone()
}

fn output_shapes(g: &Graph) -> Vec<(String, Vec<usize>)> {
    g.outputs.iter().map(|&o| (g.value(o).name.clone(), g.value(o).shape.clone())).collect()
}

fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.onnx_type()).collect()
}

/// Conv (stride 2, pad 1) → Sigmoid → Mul (SiLU as exported), then a Conv
/// with SAME_UPPER padding and no kernel_shape attribute.
fn conv_silu() -> Model {
    let nodes = vec![
        node("Conv", &["images", "w1", "b1"], &["c1"], vec![a_ints("strides", &[2, 2]), a_ints("pads", &[1, 1, 1, 1])]),
        node("Sigmoid", &["c1"], &["s1"], vec![]),
        node("Mul", &["c1", "s1"], &["m1"], vec![]),
        node("Conv", &["m1", "w2"], &["output0"], vec![a_str("auto_pad", "SAME_UPPER"), a_ints("strides", &[2, 2])]),
    ];
    Model::new(vec![fixed("images", &[1, 3, 64, 64])], nodes, vec![fixed("output0", &[1, 8, 16, 16])]).inits(vec![
        weight("w1", &[16, 3, 3, 3]),
        weight("b1", &[16]),
        weight("w2", &[8, 16, 3, 3]),
    ])
}

#[test]
fn conv_sigmoid_mul_chain() {
    let g = conv_silu().import_ok();
    assert_eq!(ops(&g), ["Conv", "Sigmoid", "Mul", "Conv"]);
    assert_eq!(shape_of(&g, "c1"), [1, 16, 32, 32]);
    assert_eq!(shape_of(&g, "s1"), [1, 16, 32, 32]);
    assert_eq!(shape_of(&g, "m1"), [1, 16, 32, 32]);
    assert_eq!(output_shapes(&g), [("output0".to_string(), vec![1, 8, 16, 16])]);
    let Op::Conv(c) = &g.nodes[0].op else { panic!("not a conv") };
    assert_eq!((c.kernel, c.stride, c.pads, c.group), ([3, 3], [2, 2], [1, 1, 1, 1], 1));
    assert_eq!(g.nodes[0].inputs.len(), 3);
    // SAME_UPPER, 32 → 16 with k 3 s 2: total pad (16-1)*2+3-32 = 1, at the end.
    let Op::Conv(c) = &g.nodes[3].op else { panic!("not a conv") };
    assert_eq!((c.kernel, c.pads), ([3, 3], [0, 0, 1, 1]));
    assert_eq!(g.nodes[0].name, "/Conv_c1");
    // Weights are constant values, the image is the one input.
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.value(g.nodes[0].inputs[1]).constant.as_ref().map(TensorData::len), Some(16 * 27));
}

fn resize_model(attrs: Vec<AttributeProto>, scales: Option<Vec<f32>>, sizes: Option<Vec<i64>>) -> Model {
    let mut inits = Vec::new();
    let mut inputs = vec!["x", ""];
    match scales {
        Some(s) => {
            inits.push(f32_tensor("scales", &[s.len() as i64], s));
            inputs.push("scales");
        }
        None => inputs.push(""),
    }
    if let Some(s) = sizes {
        inits.push(i64_tensor("sizes", &[s.len() as i64], s));
        inputs.push("sizes");
    }
    Model::new(vec![fixed("x", &[1, 16, 20, 20])], vec![node("Resize", &inputs, &["y"], attrs)], vec![out("y")])
        .inits(inits)
}

/// The attributes nn.Upsample(scale_factor=2, mode="nearest") exports with.
fn upsample_attrs() -> Vec<AttributeProto> {
    vec![
        a_str("coordinate_transformation_mode", "asymmetric"),
        AttributeProto {
            name: Some("cubic_coeff_a".into()),
            r#type: Some(attribute_type::FLOAT),
            f: Some(-0.75),
            ..Default::default()
        },
        a_str("mode", "nearest"),
        a_str("nearest_mode", "floor"),
    ]
}

#[test]
fn resize_nearest_by_scales_and_sizes() {
    let g = resize_model(upsample_attrs(), Some(vec![1.0, 1.0, 2.0, 2.0]), None).import_ok();
    assert_eq!(g.nodes[0].op, Op::ResizeNearest { scales: vec![1, 1, 2, 2] });
    assert_eq!(g.nodes[0].inputs.len(), 1, "scales become an attribute");
    assert_eq!(shape_of(&g, "y"), [1, 16, 40, 40]);

    let g = resize_model(upsample_attrs(), None, Some(vec![1, 16, 60, 40])).import_ok();
    assert_eq!(g.nodes[0].op, Op::ResizeNearest { scales: vec![1, 1, 3, 2] });

    // half_pixel with round_prefer_floor reads the same pixels for whole factors.
    let attrs = vec![a_str("mode", "nearest"), a_str("coordinate_transformation_mode", "half_pixel")];
    assert!(resize_model(attrs, Some(vec![1.0, 1.0, 2.0, 2.0]), None).import(&ImportOptions::default()).is_ok());
}

#[test]
fn resize_refusals_say_why() {
    let err = |m: Model| m.import(&ImportOptions::default()).unwrap_err().to_string();
    let mut attrs = upsample_attrs();
    attrs[2] = a_str("mode", "linear");
    let e = err(resize_model(attrs, Some(vec![1.0, 1.0, 2.0, 2.0]), None));
    assert!(e.contains("\"linear\"") && e.contains("nearest"), "{e}");

    let attrs = vec![a_str("mode", "nearest"), a_str("coordinate_transformation_mode", "asymmetric")];
    let e = err(resize_model(attrs, Some(vec![1.0, 1.0, 2.0, 2.0]), None));
    assert!(e.contains("round_prefer_floor") && e.contains("floor(x / scale)"), "{e}");

    let e = err(resize_model(upsample_attrs(), Some(vec![1.0, 1.0, 1.5, 1.5]), None));
    assert!(e.contains("whole"), "{e}");
}

#[test]
fn split_slice_concat_shapes() {
    let nodes = vec![
        node("Split", &["x", "sizes"], &["a", "b"], vec![a_int("axis", 1)]),
        // The last 10 columns (negative start, INT64_MAX end) and the first 10.
        node("Slice", &["a", "s_starts", "s_ends", "s_axes"], &["right"], vec![]),
        node("Slice", &["a", "z", "ten", "s_axes"], &["left"], vec![]),
        node("Concat", &["right", "left"], &["swapped"], vec![a_int("axis", -1)]),
        node("Concat", &["swapped", "b"], &["y"], vec![a_int("axis", 1)]),
        // Equal split by the number of outputs; every other row.
        node("Split", &["y"], &["y0", "y1", "y2", "y3"], vec![a_int("axis", 1)]),
        node("Slice", &["y0", "z", "big", "two", "two"], &["rows"], vec![]),
    ];
    let inits = vec![
        i64_tensor("sizes", &[2], vec![48, 16]),
        i64_tensor("s_starts", &[1], vec![-10]),
        i64_tensor("s_ends", &[1], vec![i64::MAX]),
        i64_tensor("s_axes", &[1], vec![-1]),
        i64_tensor("z", &[1], vec![0]),
        i64_tensor("ten", &[1], vec![10]),
        i64_tensor("big", &[1], vec![1000]),
        i64_tensor("two", &[1], vec![2]),
    ];
    let outputs = vec![out("y"), out("rows"), out("y3")];
    let g = Model::new(vec![fixed("x", &[1, 64, 20, 20])], nodes, outputs).inits(inits).import_ok();
    assert_eq!(ops(&g), ["Split", "Slice", "Slice", "Concat", "Concat", "Split", "Slice"]);
    assert_eq!(g.nodes[0].op, Op::Split { axis: 1, sizes: vec![48, 16] });
    assert_eq!((shape_of(&g, "a"), shape_of(&g, "b")), (vec![1, 48, 20, 20], vec![1, 16, 20, 20]));
    assert_eq!(g.nodes[1].op, Op::Slice { axes: vec![3], starts: vec![10], ends: vec![20], steps: vec![1] });
    assert_eq!(shape_of(&g, "right"), [1, 48, 20, 10]);
    assert_eq!(g.nodes[3].op, Op::Concat { axis: 3 });
    assert_eq!(shape_of(&g, "swapped"), [1, 48, 20, 20]);
    assert_eq!(shape_of(&g, "y"), [1, 64, 20, 20]);
    assert_eq!(g.nodes[5].op, Op::Split { axis: 1, sizes: vec![16; 4] });
    // End 1000 clamps to 20; step 2 gives 10 rows.
    assert_eq!(g.nodes[6].op, Op::Slice { axes: vec![2], starts: vec![0], ends: vec![20], steps: vec![2] });
    assert_eq!(shape_of(&g, "rows"), [1, 16, 10, 20]);
    assert_eq!(g.nodes[0].inputs.len(), 1, "split sizes become an attribute");
}

#[test]
fn reshape_with_zero_and_minus_one() {
    let nodes = vec![
        node("Reshape", &["x", "shape"], &["r"], vec![]),
        node("Transpose", &["r"], &["t"], vec![a_ints("perm", &[0, 2, 1, 3])]),
        node("Flatten", &["t"], &["f"], vec![]),
        node("Unsqueeze", &["f", "ax"], &["u"], vec![]),
        node("Squeeze", &["u", "ax"], &["sq"], vec![]),
        node("Identity", &["sq"], &["out"], vec![]),
    ];
    let inits = vec![i64_tensor("shape", &[4], vec![0, 4, 16, -1]), i64_tensor("ax", &[1], vec![-1])];
    let g =
        Model::new(vec![fixed("x", &[1, 64, 8, 8])], nodes, vec![fixed("out", &[1, 4096])]).inits(inits).import_ok();
    assert_eq!(g.nodes[0].op, Op::Reshape { shape: vec![1, 4, 16, 64] });
    assert_eq!(g.nodes[1].op, Op::Transpose { perm: vec![0, 2, 1, 3] });
    assert_eq!(shape_of(&g, "t"), [1, 16, 4, 64]);
    assert_eq!(g.nodes[2].op, Op::Reshape { shape: vec![1, 4096] });
    assert_eq!(shape_of(&g, "u"), [1, 4096, 1]);
    // Identity is gone; its output name stays on the graph output.
    assert_eq!(ops(&g), ["Reshape", "Transpose", "Reshape", "Reshape", "Reshape"]);
    assert_eq!(output_shapes(&g), [("out".to_string(), vec![1, 4096])]);

    let bad = vec![node("Reshape", &["x", "shape"], &["r"], vec![])];
    let e = Model::new(vec![fixed("x", &[1, 64, 8, 8])], bad, vec![out("r")])
        .inits(vec![i64_tensor("shape", &[2], vec![3, -1])])
        .import(&ImportOptions::default())
        .unwrap_err();
    assert!(matches!(e, BuildError::Shape { .. }), "{e}");
    assert!(e.to_string().contains("/Reshape_r"), "{e}");
}

/// A dynamic-batch export: Reshape's target is computed from the input's
/// shape (Shape → Gather → Unsqueeze → Concat), which folds away once the
/// batch is pinned.
fn dynamic_batch() -> Model {
    let nodes = vec![
        node("Conv", &["images", "w"], &["c"], vec![a_ints("kernel_shape", &[1, 1])]),
        node("Shape", &["c"], &["shape"], vec![]),
        node("Gather", &["shape", "zero"], &["n"], vec![a_int("axis", 0)]),
        node("Unsqueeze", &["n", "axes0"], &["n1"], vec![]),
        node("Concat", &["n1", "rest"], &["target"], vec![a_int("axis", 0)]),
        node("Reshape", &["c", "target"], &["output0"], vec![]),
    ];
    let inits = vec![
        weight("w", &[8, 3, 1, 1]),
        i64_tensor("zero", &[], vec![0]),
        i64_tensor("axes0", &[1], vec![0]),
        i64_tensor("rest", &[2], vec![8, -1]),
    ];
    let outputs = vec![vi("output0", &[None, Some(8), Some(64)])];
    Model::new(vec![vi("images", &[None, Some(3), Some(8), Some(8)])], nodes, outputs).inits(inits)
}

#[test]
fn dynamic_batch_shape_arithmetic_folds_away() {
    let g = dynamic_batch().import(&batch(4)).unwrap();
    assert_eq!(ops(&g), ["Conv", "Reshape"]);
    assert_eq!(shape_of(&g, "images"), [4, 3, 8, 8]);
    assert_eq!(g.nodes[1].op, Op::Reshape { shape: vec![4, 8, 64] });
    assert_eq!(output_shapes(&g), [("output0".to_string(), vec![4, 8, 64])]);
    // The folded shape tensors are gone with the nodes that read them.
    assert!(g.values.iter().all(|v| v.dtype == DType::F32), "{:?}", g.values);

    // No batch given: 1.
    let g = dynamic_batch().import(&ImportOptions::default()).unwrap();
    assert_eq!(g.nodes[1].op, Op::Reshape { shape: vec![1, 8, 64] });
}

/// A static batch-1 model (as Ultralytics exports by default) whose Reshape
/// writes the batch as the number 1.
fn static_batch1(target: Vec<i64>) -> Model {
    let nodes = vec![
        node("Conv", &["images", "w"], &["c"], vec![]),
        node("Reshape", &["c", "target"], &["r"], vec![]),
        node("Transpose", &["r"], &["output0"], vec![a_ints("perm", &[0, 2, 1])]),
    ];
    let n = target.len() as i64;
    let inits = vec![weight("w", &[8, 3, 1, 1]), i64_tensor("target", &[n], target)];
    Model::new(vec![fixed("images", &[1, 3, 8, 8])], nodes, vec![fixed("output0", &[1, 64, 8])]).inits(inits)
}

#[test]
fn static_batch_is_rewritten() {
    let g = static_batch1(vec![1, 8, -1]).import(&batch(8)).unwrap();
    assert_eq!(shape_of(&g, "images"), [8, 3, 8, 8]);
    assert_eq!(shape_of(&g, "c"), [8, 8, 8, 8]);
    assert_eq!(g.nodes[1].op, Op::Reshape { shape: vec![8, 8, 64] });
    assert_eq!(output_shapes(&g), [("output0".to_string(), vec![8, 64, 8])]);

    // Same batch as exported: nothing to rewrite.
    let g = static_batch1(vec![1, 8, -1]).import(&batch(1)).unwrap();
    assert_eq!(g.nodes[1].op, Op::Reshape { shape: vec![1, 8, 64] });
}

#[test]
fn batch_rewrite_refuses_a_reshape_that_moves_the_batch() {
    // [8, -1] folds batch 1 into axis 1: with batch 8 its numbers mean something else.
    let e = static_batch1(vec![8, -1]).import(&batch(8)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, BuildError::Unsupported { .. }), "{text}");
    assert!(text.contains("/Reshape_r") && text.contains("batch=8"), "{text}");
}

#[test]
fn einsum_is_refused_with_op_and_node() {
    let nodes = vec![node("Einsum", &["a", "a"], &["e"], vec![a_str("equation", "ij,jk->ik")])];
    let e = Model::new(vec![fixed("a", &[4, 4])], nodes, vec![out("e")]).import(&ImportOptions::default()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(&e, BuildError::Unsupported { op_type, node, .. } if op_type == "Einsum" && node == "/Einsum_e"));
    assert!(text.contains("no kernel for Einsum") && text.contains("\"/Einsum_e\""), "{text}");
}

#[test]
fn truncated_bytes_are_damaged() {
    let bytes = conv_silu().bytes();
    for cut in [bytes.len() / 2, bytes.len() - 3, 7] {
        let e = import(&bytes[..cut], Path::new("cut.onnx"), &ImportOptions::default()).unwrap_err();
        assert!(matches!(e, BuildError::Damaged { .. }), "cut at {cut}: {e}");
        assert!(e.to_string().contains("cut.onnx"), "{e}");
    }
}

#[test]
fn unknown_value_is_damaged_with_the_node() {
    let nodes = vec![node("Sigmoid", &["nowhere"], &["s"], vec![])];
    let e = Model::new(vec![fixed("x", &[1, 3])], nodes, vec![out("s")]).import(&ImportOptions::default()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, BuildError::Damaged { .. }), "{text}");
    assert!(text.contains("/Sigmoid_s") && text.contains("\"nowhere\""), "{text}");
}

#[test]
fn nodes_out_of_order_are_refused() {
    let nodes = vec![node("Sigmoid", &["a"], &["s"], vec![]), node("Sigmoid", &["x"], &["a"], vec![])];
    let e = Model::new(vec![fixed("x", &[1, 3])], nodes, vec![out("s")]).import(&ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("topological"), "{e}");
}

#[test]
fn opset_9_is_refused() {
    let mut m = conv_silu();
    m.opset = 9;
    let e = m.import(&ImportOptions::default()).unwrap_err();
    assert!(matches!(e, BuildError::Opset { version: 9, .. }), "{e}");
    assert!(e.to_string().contains("opset 17"), "{e}");
}

#[test]
fn symbolic_image_size_is_refused() {
    let m = Model::new(vec![vi("images", &[None, Some(3), None, Some(8)])], vec![], vec![out("images")]);
    let e = m.import(&ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("\"images\"") && e.contains("axis 2") && e.contains("fixed"), "{e}");
}

#[test]
fn stripped_weights_need_the_option() {
    let mut m = conv_silu();
    m.inits[0].raw_data = None;
    let e = m.import(&ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("\"w1\"") && e.contains("allow_empty_initializers"), "{e}");
    let g = m.import(&ImportOptions { allow_empty_initializers: true, ..Default::default() }).unwrap();
    let w = g.value(g.nodes[0].inputs[1]);
    assert_eq!(w.constant, Some(TensorData::F32(vec![0.0; 16 * 27])));
}

#[test]
fn external_data_names_the_tensor() {
    let mut m = conv_silu();
    m.inits[0].raw_data = None;
    m.inits[0].data_location = Some(onnx::DATA_LOCATION_EXTERNAL);
    m.inits[0].external_data =
        vec![onnx::StringStringEntryProto { key: Some("location".into()), value: Some("../weights.bin".into()) }];
    let e = m.import(&ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("\"w1\"") && e.contains("external") && e.contains("save_as_external_data=False"), "{e}");
}

#[test]
fn external_data_is_read_beside_the_model() {
    let dir = std::env::temp_dir().join(format!("vrseg-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut m = conv_silu();
    let raw = m.inits[0].raw_data.take().unwrap();
    let mut file = vec![0xAAu8; 16];
    file.extend_from_slice(&raw);
    std::fs::write(dir.join("w.bin"), &file).unwrap();
    m.inits[0].data_location = Some(onnx::DATA_LOCATION_EXTERNAL);
    m.inits[0].external_data = [("location", "w.bin"), ("offset", "16"), ("length", &raw.len().to_string())]
        .iter()
        .map(|(k, v)| onnx::StringStringEntryProto { key: Some(k.to_string()), value: Some(v.to_string()) })
        .collect();
    let path = dir.join("m.onnx");
    std::fs::write(&path, m.bytes()).unwrap();
    let g = import_file(&path, &ImportOptions::default());
    std::fs::remove_dir_all(&dir).ok();
    let g = g.unwrap();
    assert_eq!(g.value(g.nodes[0].inputs[1]).constant, Some(TensorData::F32(vec![0.01; 16 * 27])));
}

#[test]
fn pooling_upconv_attention_ops() {
    // SPPF's MaxPool, the proto head's ConvTranspose, and C2PSA's attention
    // (MatMul, Softmax) with YOLO11's shapes, scaled down.
    let nodes = vec![
        node(
            "MaxPool",
            &["x"],
            &["p"],
            vec![a_ints("kernel_shape", &[5, 5]), a_ints("pads", &[2, 2, 2, 2]), a_ints("strides", &[1, 1])],
        ),
        node(
            "ConvTranspose",
            &["p", "wt", "bt"],
            &["up"],
            vec![a_ints("strides", &[2, 2]), a_ints("kernel_shape", &[2, 2])],
        ),
        node("Reshape", &["p", "qk_shape"], &["q"], vec![]),
        node("Transpose", &["q"], &["qt"], vec![a_ints("perm", &[0, 1, 3, 2])]),
        node("MatMul", &["qt", "q"], &["attn"], vec![]),
        node("Softmax", &["attn"], &["sm"], vec![a_int("axis", -1)]),
        node("Div", &["sm", "two"], &["half"], vec![]),
        node("Sub", &["half", "two"], &["d"], vec![]),
    ];
    let inits = vec![
        weight("wt", &[16, 8, 2, 2]),
        weight("bt", &[8]),
        i64_tensor("qk_shape", &[4], vec![1, 2, 8, 100]),
        f32_tensor("two", &[], vec![2.0]),
    ];
    let outputs = vec![out("up"), out("d")];
    let g = Model::new(vec![fixed("x", &[1, 16, 10, 10])], nodes, outputs).inits(inits).import_ok();
    assert_eq!(g.nodes[0].op, Op::MaxPool(ir::MaxPool { kernel: [5, 5], stride: [1, 1], pads: [2, 2, 2, 2] }));
    assert_eq!(shape_of(&g, "p"), [1, 16, 10, 10]);
    assert_eq!(shape_of(&g, "up"), [1, 8, 20, 20]);
    assert_eq!(shape_of(&g, "attn"), [1, 2, 100, 100]);
    assert_eq!(g.nodes[5].op, Op::Softmax { axis: 3 });
    assert_eq!(shape_of(&g, "d"), [1, 2, 100, 100]);
}

#[test]
fn constants_fold_and_leave() {
    // Constant nodes, Cast, Range and ConstantOfShape feeding a Mul: only the Mul stays.
    let nodes = vec![
        node("Constant", &[], &["k"], vec![a_tensor("value", f32_tensor("", &[3], vec![1.0, 2.0, 3.0]))]),
        node("Constant", &[], &["lim"], vec![a_int("value_int", 3)]),
        node("Range", &["zero", "lim", "one"], &["r"], vec![]),
        node("Cast", &["r"], &["rf"], vec![a_int("to", data_type::FLOAT as i64)]),
        node("Add", &["rf", "k"], &["sum"], vec![]),
        node("ConstantOfShape", &["three"], &["ones"], vec![a_tensor("value", f32_tensor("", &[1], vec![1.0]))]),
        node("Mul", &["sum", "ones"], &["c"], vec![]),
        node("Mul", &["x", "c"], &["y"], vec![]),
    ];
    let inits =
        vec![i64_tensor("zero", &[], vec![0]), i64_tensor("one", &[], vec![1]), i64_tensor("three", &[1], vec![3])];
    let g = Model::new(vec![fixed("x", &[2, 3])], nodes, vec![out("y")]).inits(inits).import_ok();
    assert_eq!(ops(&g), ["Mul"]);
    let c = g.value(g.nodes[0].inputs[1]);
    assert_eq!(c.constant, Some(TensorData::F32(vec![1.0, 3.0, 5.0])));
}

#[test]
fn identity_output_copies_when_the_value_is_an_output_too() {
    let nodes = vec![node("Sigmoid", &["x"], &["a"], vec![]), node("Identity", &["a"], &["b"], vec![])];
    let g = Model::new(vec![fixed("x", &[1, 3])], nodes, vec![out("a"), out("b")]).import_ok();
    let names: Vec<_> = output_shapes(&g).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(ops(&g), ["Sigmoid", "Reshape"]);
}

#[test]
fn declared_output_shape_is_checked() {
    let mut m = conv_silu();
    m.outputs = vec![fixed("output0", &[1, 8, 17, 16])];
    let e = m.import(&ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("output0") && e.contains("[1, 8, 17, 16]") && e.contains("[1, 8, 16, 16]"), "{e}");
}

#[test]
fn older_opsets_take_attributes() {
    let nodes = vec![
        node("Split", &["x"], &["a", "b"], vec![a_int("axis", 1), a_ints("split", &[1, 4])]),
        node("Unsqueeze", &["b"], &["u"], vec![a_ints("axes", &[0])]),
        node("Squeeze", &["u"], &["s"], vec![a_ints("axes", &[0])]),
        node("Softmax", &["s"], &["sm"], vec![]),
    ];
    let mut m = Model::new(vec![fixed("x", &[2, 5])], nodes, vec![out("a"), out("sm")]);
    m.opset = 11;
    let g = m.import_ok();
    assert_eq!(g.nodes[0].op, Op::Split { axis: 1, sizes: vec![1, 4] });
    assert_eq!(shape_of(&g, "u"), [1, 2, 4]);
    // Opset 11's default axis 1 is the last one here: a one-axis softmax.
    assert_eq!(g.nodes[3].op, Op::Softmax { axis: 1 });

    // Opset 11 Softmax over axes 1 and 2 together has no one-axis form.
    let mut m = Model::new(vec![fixed("x", &[1, 4, 3])], vec![node("Softmax", &["x"], &["y"], vec![])], vec![out("y")]);
    m.opset = 11;
    let e = m.import(&ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("opset 13"), "{e}");
}

#[test]
fn unnamed_nodes_are_named_by_index_and_output() {
    let mut n = node("Einsum", &["a"], &["e"], vec![]);
    n.name = None;
    let e = Model::new(vec![fixed("a", &[4])], vec![n], vec![out("e")]).import(&ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("#0 (unnamed, writes e)"), "{e}");
}

#[test]
fn degenerate_shapes_are_errors() {
    let conv = |w: TensorProto| {
        Model::new(vec![fixed("x", &[1, 3, 8, 8])], vec![node("Conv", &["x", "w"], &["y"], vec![])], vec![out("y")])
            .inits(vec![w])
            .import(&ImportOptions::default())
    };
    assert!(matches!(conv(f32_tensor("w", &[4, 3, 0, 3], vec![])), Err(BuildError::Shape { .. })));
    assert!(matches!(conv(weight("w", &[4, 3, 9, 9])), Err(BuildError::Shape { .. })));
    assert!(matches!(conv(weight("w", &[4, 2, 3, 3])), Err(BuildError::Shape { .. })));
    let e = conv(weight("w", &[4, 3, 3])).unwrap_err().to_string();
    assert!(e.contains("2-D"), "{e}");
    // A huge shape with a zero dim in it: refused, not overflowed.
    let big = i64_tensor("shape", &[3], vec![0, 1 << 40, 1 << 40]);
    let nodes = vec![node("ConstantOfShape", &["shape"], &["c"], vec![]), node("Flatten", &["c"], &["f"], vec![])];
    let e = Model::new(vec![], nodes, vec![out("f")]).inits(vec![big]).import(&ImportOptions::default());
    assert!(e.is_err());
}

/// Damaged bytes of every kind give an error, never a panic: every byte of
/// small models replaced by a few values, then random multi-byte damage.
#[test]
fn damaged_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let models = [dynamic_batch().bytes(), conv_silu().bytes(), static_batch1(vec![1, 8, -1]).bytes()];
    for bytes in &models {
        for i in 0..bytes.len() {
            for v in [0x00, 0xff, 0x7f, bytes[i] ^ 0x01, bytes[i].wrapping_add(8)] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = import(&b, Path::new("fuzz.onnx"), &batch(2));
            }
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for _ in 0..3000 {
        let mut b = models[rng.random_range(0..models.len())].clone();
        for _ in 0..rng.random_range(1..6) {
            let i = rng.random_range(0..b.len());
            match rng.random_range(0..3) {
                0 => b[i] = rng.random(),
                1 => {
                    b.remove(i);
                }
                _ => b.insert(i, rng.random()),
            }
        }
        let _ = import(&b, Path::new("fuzz.onnx"), &batch(rng.random_range(1..9)));
    }
}

/// The Ultralytics YOLO11n-seg export (opset 17, simplified, convolution
/// weights stripped: tests/data/models, made by
/// `tools/export/export_yolo_seg.py --strip-weights`).
#[test]
fn yolo11n_seg_export() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/yolo11n-seg-640.structure.onnx");
    for n in [1, 8] {
        let options = ImportOptions { batch: Some(n), allow_empty_initializers: true };
        let g = import_file(&path, &options).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("batch {n}: {} nodes {:?}", g.nodes.len(), g.op_histogram());
        // The export's 360 nodes less its 5 Constant nodes.
        assert_eq!(g.nodes.len(), 355);
        assert_eq!(
            output_shapes(&g),
            [("output0".into(), vec![n, 116, 8400]), ("output1".into(), vec![n, 32, 160, 160])]
        );
        assert_eq!(shape_of(&g, "images"), [n, 3, 640, 640]);
    }
}
