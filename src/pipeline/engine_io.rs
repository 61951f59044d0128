//! What the pipeline asks of an engine, decided from its file and its
//! [`TensorDesc`]s alone (no GPU), so that both engines are held to one
//! rule and the rule is tested on any machine: which backend opens a file,
//! and whether its inputs and outputs are YOLO-seg's at a batch of whole
//! frames.

use std::io::Read as _;
use std::path::Path;

use crate::engine::backend::{DType, TensorDesc, TensorRole};
use crate::engine::plan::PLAN_MAGIC;
use crate::ops::letterbox::MAX_BATCH_FRAMES;
use crate::ops::yolo_seg::YoloSegShape;

/// Which backend runs an engine file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// vrseg's plan (`build-engine`, magic `VRSEGPLN`).
    Native,
    /// A TensorRT engine: vrseg's header (`build-engine --backend tensorrt`,
    /// magic `VRSEGTRT`), or a bare TensorRT plan (`trtexec --saveEngine`)
    /// named `*.engine` or `*.trt`.
    TensorRt,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Native => "native",
            EngineKind::TensorRt => "tensorrt",
        }
    }
}

/// Tells the backends apart by the file's first bytes. A file with neither
/// header is a bare TensorRT plan when its name says so (`.engine`, `.trt`),
/// else it goes to the plan loader, whose error names what a plan is.
pub fn engine_kind(path: &Path) -> EngineKind {
    let mut magic = [0u8; 8];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok();
    if read && magic == PLAN_MAGIC {
        return EngineKind::Native;
    }
    if read && &magic == crate::engine::tensorrt::file::MAGIC {
        return EngineKind::TensorRt;
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("engine" | "trt") => EngineKind::TensorRt,
        _ => EngineKind::Native,
    }
}

/// An engine's I/O as the pipeline binds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YoloSegIo {
    /// Images per inference (frames × eyes).
    pub images: usize,
    /// The square input's side.
    pub side: usize,
    pub batch_frames: usize,
    pub shape: YoloSegShape,
    /// The input's element type (the letterbox writes FP16).
    pub input: DType,
    /// Positions among the outputs (in `tensors()` order) of the heads
    /// `[N, 116, anchors]` and the prototypes `[N, 32, S/4, S/4]`, and their
    /// element types (the postprocess reads FP32).
    pub heads: usize,
    pub heads_type: DType,
    pub protos: usize,
    pub protos_type: DType,
}

fn dims(shape: &[usize]) -> String {
    let d: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", d.join(", "))
}

/// Checks that `tensors` are YOLO-seg's (one square RGB input, heads and
/// prototypes for 80 classes and 32 mask coefficients, either order, FP16
/// or FP32 each) at a batch of whole frames of `eyes` images, and, when
/// `asked_frames` is given (`vrseg run --batch`), of that many frames.
pub fn yolo_seg_io(
    engine: &Path,
    kind: EngineKind,
    tensors: &[TensorDesc],
    eyes: usize,
    layout: &str,
    asked_frames: Option<usize>,
) -> Result<YoloSegIo, String> {
    let engine = engine.display();
    let inputs: Vec<&TensorDesc> = tensors.iter().filter(|t| t.role == TensorRole::Input).collect();
    let outputs: Vec<&TensorDesc> = tensors.iter().filter(|t| t.role == TensorRole::Output).collect();
    let [input] = inputs[..] else {
        let list: Vec<String> = inputs.iter().map(|t| t.to_string()).collect();
        return Err(format!(
            "{engine}: {} inputs ({}); a YOLO-seg model has one, the image batch",
            inputs.len(),
            list.join("; ")
        ));
    };
    let s = &input.shape;
    if s.len() != 4 || s[0] == 0 || s[1] != 3 || s[2] != s[3] || s[2] == 0 {
        return Err(format!(
            "{engine}: input `{}` {} is not a square RGB image batch [N, 3, S, S]",
            input.name,
            dims(s)
        ));
    }
    let (images, side) = (s[0], s[2]);
    if let Some(frames) = asked_frames {
        if images != frames * eyes {
            let fix = match kind {
                EngineKind::Native => format!(
                    "rebuild it with `vrseg build-engine MODEL.onnx --batch {} -o NAME.plan`, or leave --batch out",
                    frames * eyes
                ),
                EngineKind::TensorRt => "pick a batch its optimisation profile allows".to_string(),
            };
            return Err(format!(
                "{engine}: runs {images} images per inference, but --batch {frames} of {layout} frames needs {} \
                 ({frames} × {eyes} eyes); {fix}",
                frames * eyes
            ));
        }
    }
    if images % eyes != 0 {
        let whole = (images / eyes).max(1);
        let fix = match kind {
            EngineKind::Native => format!("rebuild it with `vrseg build-engine --batch {}`", whole * eyes),
            EngineKind::TensorRt => format!(
                "run it with `--batch FRAMES`, FRAMES × {eyes} images within its optimisation profile, or rebuild it \
                 with `vrseg build-engine --backend tensorrt --batch MIN:OPT:MAX` and an even OPT"
            ),
        };
        return Err(format!(
            "{engine}: runs at batch {images}, which does not hold whole {layout} frames of {eyes} eyes; {fix}"
        ));
    }
    let batch_frames = images / eyes;
    if batch_frames > MAX_BATCH_FRAMES {
        return Err(format!(
            "{engine}: {batch_frames} frames per batch; vrseg letterboxes at most {MAX_BATCH_FRAMES} frames at once"
        ));
    }
    let shape = YoloSegShape::yolo_seg(images, side);
    let want_heads = vec![images, 4 + shape.classes + shape.coefficients, shape.anchors];
    let want_protos = vec![images, shape.coefficients, shape.proto_h, shape.proto_w];
    let find = |want: &[usize]| outputs.iter().position(|t| t.shape == want);
    let (heads, protos) = match (outputs.len(), find(&want_heads), find(&want_protos)) {
        (2, Some(h), Some(p)) if h != p => (h, p),
        _ => {
            let list: Vec<String> = outputs.iter().map(|t| format!("`{}` {}", t.name, dims(&t.shape))).collect();
            return Err(format!(
                "{engine}: outputs {} are not YOLO-seg's {} and {} at input {side} (80 classes, 32 mask \
                 coefficients); export the model with tools/export/export_yolo_seg.py",
                if list.is_empty() { "(none)".to_string() } else { list.join(", ") },
                dims(&want_heads),
                dims(&want_protos)
            ));
        }
    };
    Ok(YoloSegIo {
        images,
        side,
        batch_frames,
        shape,
        input: input.dtype,
        heads,
        heads_type: outputs[heads].dtype,
        protos,
        protos_type: outputs[protos].dtype,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(name: &str, role: TensorRole, dtype: DType, shape: &[usize]) -> TensorDesc {
        TensorDesc { name: name.into(), role, dtype, shape: shape.to_vec() }
    }

    /// Descriptors of YOLO11-seg at `side`, batch `n`: the native plan's
    /// types (FP16 in, FP32 out) unless given.
    fn yolo(n: usize, side: usize, input: DType, outputs: DType) -> Vec<TensorDesc> {
        let anchors: usize = [8, 16, 32].iter().map(|s| (side / s) * (side / s)).sum();
        vec![
            desc("images", TensorRole::Input, input, &[n, 3, side, side]),
            desc("output0", TensorRole::Output, outputs, &[n, 116, anchors]),
            desc("output1", TensorRole::Output, outputs, &[n, 32, side / 4, side / 4]),
        ]
    }

    fn check(tensors: &[TensorDesc], kind: EngineKind, eyes: usize, asked: Option<usize>) -> Result<YoloSegIo, String> {
        yolo_seg_io(Path::new("engines/x"), kind, tensors, eyes, "sbs", asked)
    }

    #[test]
    fn native_like_descriptors_pass_with_their_types() {
        let io = check(&yolo(4, 320, DType::F16, DType::F32), EngineKind::Native, 2, None).unwrap();
        assert_eq!((io.images, io.side, io.batch_frames), (4, 320, 2));
        assert_eq!(
            (io.input, io.heads, io.heads_type, io.protos, io.protos_type),
            (DType::F16, 0, DType::F32, 1, DType::F32)
        );
        assert_eq!(io.shape, YoloSegShape::yolo_seg(4, 320));
        assert_eq!(io.shape.anchors, 2100);
        // The plan's own batch, asked for explicitly.
        check(&yolo(4, 320, DType::F16, DType::F32), EngineKind::Native, 2, Some(2)).unwrap();
    }

    #[test]
    fn tensorrt_like_descriptors_pass_with_f32_or_f16_io_and_either_output_order() {
        let io = check(&yolo(2, 640, DType::F32, DType::F32), EngineKind::TensorRt, 2, Some(1)).unwrap();
        assert_eq!((io.batch_frames, io.input, io.heads_type, io.protos_type), (1, DType::F32, DType::F32, DType::F32));
        let io = check(&yolo(3, 640, DType::F16, DType::F16), EngineKind::TensorRt, 1, None).unwrap();
        assert_eq!((io.batch_frames, io.input, io.heads_type, io.protos_type), (3, DType::F16, DType::F16, DType::F16));
        // Prototypes first, mixed types.
        let mut t = yolo(2, 640, DType::F32, DType::F32);
        t.swap(1, 2);
        t[1].dtype = DType::F16;
        let io = check(&t, EngineKind::TensorRt, 2, None).unwrap();
        assert_eq!((io.heads, io.heads_type, io.protos, io.protos_type), (1, DType::F32, 0, DType::F16));
    }

    #[test]
    fn wrong_shapes_are_refused_naming_what_was_found() {
        let mut t = yolo(2, 320, DType::F16, DType::F32);
        t[0].shape = vec![2, 3, 320, 256];
        let err = check(&t, EngineKind::Native, 2, None).unwrap_err();
        assert_eq!(err, "engines/x: input `images` [2, 3, 320, 256] is not a square RGB image batch [N, 3, S, S]");

        let mut t = yolo(2, 320, DType::F16, DType::F32);
        t[2].shape = vec![2, 32, 160, 160]; // prototypes of a 640 model
        let err = check(&t, EngineKind::TensorRt, 2, None).unwrap_err();
        assert!(
            err.starts_with(
                "engines/x: outputs `output0` [2, 116, 2100], `output1` [2, 32, 160, 160] are not YOLO-seg's \
                 [2, 116, 2100] and [2, 32, 80, 80] at input 320"
            ),
            "{err}"
        );

        // A detection model (no prototypes), and two image inputs.
        let t = &yolo(2, 320, DType::F16, DType::F32)[..2];
        assert!(check(t, EngineKind::Native, 2, None)
            .unwrap_err()
            .contains("outputs `output0` [2, 116, 2100] are not"));
        let mut t = yolo(2, 320, DType::F16, DType::F32);
        t.insert(1, desc("second", TensorRole::Input, DType::F16, &[2, 3, 320, 320]));
        let err = check(&t, EngineKind::Native, 2, None).unwrap_err();
        assert!(err.starts_with("engines/x: 2 inputs (input `images` f16 [2, 3, 320, 320]; input `second`"), "{err}");
        // Two identical outputs cannot be both heads and prototypes.
        let mut t = yolo(2, 320, DType::F16, DType::F32);
        t[2] = t[1].clone();
        assert!(check(&t, EngineKind::Native, 2, None).is_err());
    }

    #[test]
    fn a_batch_of_partial_frames_is_refused_with_the_fix_for_its_backend() {
        let t = yolo(3, 320, DType::F16, DType::F32);
        let err = check(&t, EngineKind::Native, 2, None).unwrap_err();
        assert_eq!(
            err,
            "engines/x: runs at batch 3, which does not hold whole sbs frames of 2 eyes; rebuild it with `vrseg \
             build-engine --batch 2`"
        );
        let err = check(&t, EngineKind::TensorRt, 2, None).unwrap_err();
        assert!(err.contains("does not hold whole sbs frames of 2 eyes; run it with `--batch FRAMES`"), "{err}");
        // Mono: every batch is whole.
        assert_eq!(check(&t, EngineKind::Native, 1, None).unwrap().batch_frames, 3);
    }

    #[test]
    fn a_batch_that_is_not_the_one_asked_for_is_refused() {
        let t = yolo(4, 320, DType::F16, DType::F32);
        let err = check(&t, EngineKind::Native, 2, Some(3)).unwrap_err();
        assert_eq!(
            err,
            "engines/x: runs 4 images per inference, but --batch 3 of sbs frames needs 6 (3 × 2 eyes); rebuild it \
             with `vrseg build-engine MODEL.onnx --batch 6 -o NAME.plan`, or leave --batch out"
        );
        let t = yolo(65 * 2, 64, DType::F16, DType::F32);
        let err = check(&t, EngineKind::Native, 2, None).unwrap_err();
        assert!(err.ends_with("65 frames per batch; vrseg letterboxes at most 64 frames at once"), "{err}");
    }

    #[test]
    fn engine_files_are_told_apart_by_their_header_then_their_name() {
        let dir = std::env::temp_dir().join(format!("vrseg-engine-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        assert_eq!(engine_kind(&write("a.bin", b"VRSEGPLN and the rest")), EngineKind::Native);
        assert_eq!(engine_kind(&write("b.plan", b"VRSEGTRT and the rest")), EngineKind::TensorRt);
        // A header beats the name.
        assert_eq!(engine_kind(&write("c.engine", b"VRSEGPLN and the rest")), EngineKind::Native);
        // No header: a bare TensorRT plan only when named like one.
        assert_eq!(engine_kind(&write("d.engine", b"ftrt bare plan bytes")), EngineKind::TensorRt);
        assert_eq!(engine_kind(&write("e.trt", b"ftrt")), EngineKind::TensorRt);
        assert_eq!(engine_kind(&write("f.onnx", b"an onnx model")), EngineKind::Native);
        assert_eq!(engine_kind(&dir.join("missing.plan")), EngineKind::Native);
        assert_eq!(engine_kind(&dir.join("missing.engine")), EngineKind::TensorRt);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
