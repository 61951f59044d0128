//! Shape decisions, kept apart from the FFI so they are tested without
//! TensorRT: the optimisation profile `build-engine` asks for, and the
//! concrete shapes a loaded engine runs at.

use std::path::Path;

use super::error::TensorRtError;
use super::file::{BatchRange, MetadataTensor};
use crate::engine::backend::{DType, TensorRole};

/// An engine's or a network's input or output as TensorRT describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoTensor {
    pub name: String,
    /// None for TensorRT's `TensorIOMode::kNONE` (not an I/O tensor).
    pub role: Option<TensorRole>,
    /// TensorRT's `DataType` value.
    pub dtype: i32,
    /// -1 for a dimension set at run time.
    pub shape: Vec<i64>,
    pub on_device: bool,
    pub linear: bool,
}

/// TensorRT's `DataType` values by name, for messages and metadata.
pub fn dtype_name(raw: i32) -> String {
    match raw {
        0 => "f32".into(),
        1 => "f16".into(),
        2 => "i8".into(),
        3 => "i32".into(),
        4 => "bool".into(),
        5 => "u8".into(),
        6 => "fp8".into(),
        7 => "bf16".into(),
        8 => "i64".into(),
        9 => "i4".into(),
        10 => "fp4".into(),
        other => format!("type {other}"),
    }
}

pub fn to_dtype(raw: i32) -> Option<DType> {
    match raw {
        0 => Some(DType::F32),
        1 => Some(DType::F16),
        _ => None,
    }
}

/// How an engine file's metadata records a tensor.
pub fn metadata_tensor(tensor: &IoTensor) -> MetadataTensor {
    MetadataTensor {
        name: tensor.name.clone(),
        role: tensor.role.map(|r| r.to_string()).unwrap_or_else(|| "none".into()),
        dtype: dtype_name(tensor.dtype),
        shape: tensor.shape.clone(),
    }
}

fn dims_text(shape: &[i64]) -> String {
    let d: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", d.join(", "))
}

/// One input's shapes in the optimisation profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileInput {
    pub name: String,
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

/// The optimisation profile for a network's inputs: dimension 0 of each
/// input with a dynamic batch takes `batch`; the spatial dimensions of a
/// rank-4 (NCHW) input take `input_size` (height, width) where they are
/// dynamic. Anything else dynamic is refused: vrseg runs one input size.
/// `Ok(None)`: every input is static, no profile needed.
pub fn plan_profile(
    inputs: &[IoTensor],
    batch: Option<BatchRange>,
    input_size: Option<(u32, u32)>,
) -> Result<Option<Vec<ProfileInput>>, TensorRtError> {
    let refuse = |text: String| Err(TensorRtError::InvalidRequest(text));
    let mut profile = Vec::new();
    let mut any_dynamic_batch = false;
    for input in inputs {
        let shape = &input.shape;
        if shape.iter().all(|&d| d >= 0) {
            if let Some((h, w)) = input_size {
                if shape.len() == 4 && (shape[2] != i64::from(h) || shape[3] != i64::from(w)) {
                    return refuse(format!(
                        "--input-size {h}x{w} does not match input `{}`, which is fixed at {}",
                        input.name,
                        dims_text(shape)
                    ));
                }
            }
            continue;
        }
        let mut min = shape.clone();
        let mut opt = shape.clone();
        let mut max = shape.clone();
        for (axis, &d) in shape.iter().enumerate() {
            if d >= 0 {
                continue;
            }
            match (axis, shape.len(), batch, input_size) {
                (0, _, Some(b), _) => {
                    any_dynamic_batch = true;
                    min[0] = i64::from(b.min);
                    opt[0] = i64::from(b.opt);
                    max[0] = i64::from(b.max);
                }
                (0, _, None, _) => {
                    return refuse(format!(
                        "input `{}` has a dynamic batch {}; give --batch MIN:OPT:MAX (e.g. --batch 2:2:8 for two eyes \
                         per frame and up to four frames per inference)",
                        input.name,
                        dims_text(shape)
                    ))
                }
                (2 | 3, 4, _, Some((h, w))) => {
                    let v = i64::from(if axis == 2 { h } else { w });
                    min[axis] = v;
                    opt[axis] = v;
                    max[axis] = v;
                }
                (2 | 3, 4, _, None) => {
                    return refuse(format!(
                        "input `{}` has a dynamic height or width {}; give --input-size HEIGHTxWIDTH (e.g. 640x640) \
                         or export the model with a fixed image size",
                        input.name,
                        dims_text(shape)
                    ))
                }
                _ => {
                    return refuse(format!(
                        "input `{}` has a dynamic dimension {axis} {}; vrseg builds engines for one input size: export \
                         the model with that dimension fixed",
                        input.name,
                        dims_text(shape)
                    ))
                }
            }
        }
        profile.push(ProfileInput { name: input.name.clone(), min, opt, max });
    }
    if let Some(b) = batch {
        if !any_dynamic_batch {
            let fixed: Vec<String> = inputs.iter().map(|i| format!("`{}` {}", i.name, dims_text(&i.shape))).collect();
            return refuse(format!(
                "--batch {}:{}:{} needs a model exported with a dynamic batch (Ultralytics: `yolo export format=onnx \
                 dynamic=True`); this one's inputs have a fixed batch: {}",
                b.min,
                b.opt,
                b.max,
                fixed.join(", ")
            ));
        }
    }
    Ok((!profile.is_empty()).then_some(profile))
}

/// An engine input's profile-0 shapes, as read back from TensorRT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProfile {
    pub name: String,
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

/// The shape each input runs at: the engine's static shape, or for a dynamic
/// one the `batch` asked for (default: the profile's optimum) in dimension
/// 0 and the profile's value where it allows just one. Returns the batch size
/// and the shapes in the order of `inputs`.
pub fn input_shapes(
    path: &Path,
    inputs: &[IoTensor],
    profiles: &[InputProfile],
    batch: Option<usize>,
) -> Result<(usize, Vec<Vec<i64>>), TensorRtError> {
    let refuse = |tensor: &str, reason: String| TensorRtError::UnsupportedTensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        reason,
    };
    let mut chosen: Option<usize> = batch;
    let mut shapes = Vec::new();
    for input in inputs {
        let mut shape = input.shape.clone();
        if shape.iter().any(|&d| d < 0) {
            let profile = profiles
                .iter()
                .find(|p| p.name == input.name)
                .ok_or_else(|| refuse(&input.name, "is dynamic but has no optimisation profile".into()))?;
            for axis in 0..shape.len() {
                if shape[axis] >= 0 {
                    continue;
                }
                let (lo, opt, hi) = (profile.min[axis], profile.opt[axis], profile.max[axis]);
                if axis == 0 {
                    let want = *chosen.get_or_insert(opt.max(1) as usize);
                    if (want as i64) < lo || (want as i64) > hi {
                        return Err(refuse(
                            &input.name,
                            format!("takes a batch of {lo} to {hi}; {want} was asked for"),
                        ));
                    }
                    shape[0] = want as i64;
                } else if lo == hi {
                    shape[axis] = lo;
                } else {
                    return Err(refuse(
                        &input.name,
                        format!(
                            "has dimension {axis} dynamic from {lo} to {hi}; vrseg runs one input size: rebuild the \
                             engine with that dimension fixed"
                        ),
                    ));
                }
            }
        }
        shapes.push(shape);
    }
    let first = shapes.first().and_then(|s| s.first()).copied().unwrap_or(1).max(1) as usize;
    let batch_size = chosen.unwrap_or(first);
    if let Some(asked) = batch {
        let all_static = inputs.iter().all(|i| i.shape.iter().all(|&d| d >= 0));
        if all_static && asked != first {
            return Err(refuse(
                inputs.first().map(|i| i.name.as_str()).unwrap_or("?"),
                format!("has a fixed batch of {first}; a batch of {asked} was asked for"),
            ));
        }
    }
    Ok((batch_size, shapes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, shape: &[i64]) -> IoTensor {
        IoTensor {
            name: name.into(),
            role: Some(TensorRole::Input),
            dtype: 0,
            shape: shape.to_vec(),
            on_device: true,
            linear: true,
        }
    }

    const B: BatchRange = BatchRange { min: 1, opt: 2, max: 8 };

    #[test]
    fn static_models_need_no_profile_and_refuse_a_batch() {
        let inputs = [input("images", &[1, 3, 640, 640])];
        assert_eq!(plan_profile(&inputs, None, None).unwrap(), None);
        assert_eq!(plan_profile(&inputs, None, Some((640, 640))).unwrap(), None);
        let err = plan_profile(&inputs, Some(B), None).unwrap_err().to_string();
        assert!(err.starts_with("--batch 1:2:8 needs a model exported with a dynamic batch"), "{err}");
        assert!(err.ends_with("`images` [1, 3, 640, 640]"), "{err}");
        let err = plan_profile(&inputs, None, Some((480, 640))).unwrap_err().to_string();
        assert_eq!(err, "--input-size 480x640 does not match input `images`, which is fixed at [1, 3, 640, 640]");
    }

    #[test]
    fn a_dynamic_batch_takes_the_batch_range() {
        let inputs = [input("images", &[-1, 3, 640, 640])];
        let p = plan_profile(&inputs, Some(B), None).unwrap().unwrap();
        assert_eq!(
            p,
            vec![ProfileInput {
                name: "images".into(),
                min: vec![1, 3, 640, 640],
                opt: vec![2, 3, 640, 640],
                max: vec![8, 3, 640, 640],
            }]
        );
        let err = plan_profile(&inputs, None, None).unwrap_err().to_string();
        assert!(err.starts_with("input `images` has a dynamic batch [-1, 3, 640, 640]; give --batch MIN:OPT:MAX"));
    }

    #[test]
    fn ultralytics_dynamic_exports_need_an_input_size() {
        // `yolo export format=onnx dynamic=True`: batch, height and width all dynamic.
        let inputs = [input("images", &[-1, 3, -1, -1])];
        let err = plan_profile(&inputs, Some(B), None).unwrap_err().to_string();
        assert!(err.contains("has a dynamic height or width [-1, 3, -1, -1]; give --input-size"), "{err}");
        let p = plan_profile(&inputs, Some(B), Some((640, 480))).unwrap().unwrap();
        assert_eq!(p[0].min, vec![1, 3, 640, 480]);
        assert_eq!(p[0].max, vec![8, 3, 640, 480]);

        let odd = [input("tokens", &[1, -1])];
        let err = plan_profile(&odd, None, None).unwrap_err().to_string();
        assert!(err.starts_with("input `tokens` has a dynamic dimension 1 [1, -1]"), "{err}");
    }

    fn profile(name: &str, min: &[i64], opt: &[i64], max: &[i64]) -> InputProfile {
        InputProfile { name: name.into(), min: min.to_vec(), opt: opt.to_vec(), max: max.to_vec() }
    }

    #[test]
    fn engines_run_at_the_asked_batch_or_the_optimum() {
        let path = Path::new("x.engine");
        let inputs = [input("images", &[-1, 3, 640, 640])];
        let profiles = [profile("images", &[1, 3, 640, 640], &[2, 3, 640, 640], &[8, 3, 640, 640])];
        assert_eq!(input_shapes(path, &inputs, &profiles, None).unwrap(), (2, vec![vec![2, 3, 640, 640]]));
        assert_eq!(input_shapes(path, &inputs, &profiles, Some(8)).unwrap(), (8, vec![vec![8, 3, 640, 640]]));
        let err = input_shapes(path, &inputs, &profiles, Some(9)).unwrap_err().to_string();
        assert_eq!(err, "x.engine: tensor `images` takes a batch of 1 to 8; 9 was asked for");

        let fixed = [input("images", &[2, 3, 640, 640])];
        assert_eq!(input_shapes(path, &fixed, &[], None).unwrap().0, 2);
        assert_eq!(input_shapes(path, &fixed, &[], Some(2)).unwrap().0, 2);
        let err = input_shapes(path, &fixed, &[], Some(4)).unwrap_err().to_string();
        assert_eq!(err, "x.engine: tensor `images` has a fixed batch of 2; a batch of 4 was asked for");

        let spatial = [input("images", &[-1, 3, -1, -1])];
        let ok = [profile("images", &[1, 3, 640, 640], &[2, 3, 640, 640], &[4, 3, 640, 640])];
        assert_eq!(input_shapes(path, &spatial, &ok, None).unwrap().1, vec![vec![2, 3, 640, 640]]);
        let ranged = [profile("images", &[1, 3, 320, 320], &[2, 3, 640, 640], &[4, 3, 1280, 1280])];
        let err = input_shapes(path, &spatial, &ranged, None).unwrap_err().to_string();
        assert!(err.contains("has dimension 2 dynamic from 320 to 1280"), "{err}");
    }

    #[test]
    fn dtype_names_cover_tensorrts_types() {
        assert_eq!(dtype_name(0), "f32");
        assert_eq!(dtype_name(1), "f16");
        assert_eq!(dtype_name(8), "i64");
        assert_eq!(dtype_name(42), "type 42");
        assert_eq!(to_dtype(1), Some(DType::F16));
        assert_eq!(to_dtype(3), None);
    }
}
