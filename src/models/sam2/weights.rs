//! The memory-attention weights on the host: `MemoryAttention.state_dict()`
//! as PyTorch names it, read from a safetensors file (F32, F16 or BF16
//! tensors; an optional `memory_attention.` prefix, as in a whole SAM2
//! model's state dict, is accepted), or drawn at random for tests.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::{MemoryAttentionConfig, Sam2Error};
use crate::selftest::SplitMix64;

/// One tensor, as f32, with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads every tensor of a safetensors file as f32 (F32, F16 and BF16).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, Sam2Error> {
    let fail = |reason: String| Sam2Error::Weights { path: path.display().to_string(), reason };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.iter() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(fail(format!("tensor `{name}` is {other:?}; F32, F16 or BF16 expected"))),
        };
        out.insert(name.to_string(), Tensor { shape: view.shape().to_vec(), data: values });
    }
    Ok(out)
}

/// Writes f32 tensors to a safetensors file: under `PATH.partial` first,
/// renamed when complete.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &[usize], &[f32])]) -> Result<(), Sam2Error> {
    let fail = |reason: String| Sam2Error::Weights { path: path.display().to_string(), reason };
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, data)| bytemuck::cast_slice(data).to_vec()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.to_vec(), b)
                .map(|v| (name.to_string(), v))
                .map_err(|e| fail(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let encoded = safetensors::serialize(views, None).map_err(|e| fail(format!("cannot encode: {e}")))?;
    let partial = path.with_extension("safetensors.partial");
    std::fs::write(&partial, encoded).map_err(|e| fail(format!("cannot write {}: {e}", partial.display())))?;
    std::fs::rename(&partial, path).map_err(|e| fail(format!("cannot rename {}: {e}", partial.display())))
}

/// The parameters of one `MemoryAttentionLayer`, in the module's names.
pub const LAYER_TENSORS: [&str; 26] = [
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.out_proj.weight",
    "self_attn.out_proj.bias",
    "cross_attn_image.q_proj.weight",
    "cross_attn_image.q_proj.bias",
    "cross_attn_image.k_proj.weight",
    "cross_attn_image.k_proj.bias",
    "cross_attn_image.v_proj.weight",
    "cross_attn_image.v_proj.bias",
    "cross_attn_image.out_proj.weight",
    "cross_attn_image.out_proj.bias",
    "linear1.weight",
    "linear1.bias",
    "linear2.weight",
    "linear2.bias",
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
    "norm3.weight",
    "norm3.bias",
];

/// The shape PyTorch gives a layer parameter (Linear weights are `[out, in]`).
fn layer_shape(config: &MemoryAttentionConfig, name: &str) -> Vec<usize> {
    let (d, m, f) = (config.d_model, config.mem_dim, config.ffn_dim);
    match name {
        "cross_attn_image.k_proj.weight" | "cross_attn_image.v_proj.weight" => vec![d, m],
        "linear1.weight" => vec![f, d],
        "linear1.bias" => vec![f],
        "linear2.weight" => vec![d, f],
        n if n.ends_with(".weight") && n.contains("proj") => vec![d, d],
        _ => vec![d],
    }
}

/// Every tensor the stack needs, with its shape, in state-dict order.
pub fn expected_tensors(config: &MemoryAttentionConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for layer in 0..config.layers {
        for name in LAYER_TENSORS {
            out.push((format!("layers.{layer}.{name}"), layer_shape(config, name)));
        }
    }
    out.push(("norm.weight".into(), vec![config.d_model]));
    out.push(("norm.bias".into(), vec![config.d_model]));
    out
}

/// The stack's parameters by name (see [`expected_tensors`]).
#[derive(Debug, Clone)]
pub struct MemoryAttentionWeights {
    pub config: MemoryAttentionConfig,
    tensors: BTreeMap<String, Tensor>,
}

impl MemoryAttentionWeights {
    /// Checks that `tensors` holds every expected tensor with its shape
    /// (names may carry a `memory_attention.` prefix; others are ignored).
    pub fn from_tensors(
        config: MemoryAttentionConfig,
        mut tensors: BTreeMap<String, Tensor>,
        source: &str,
    ) -> Result<Self, Sam2Error> {
        let mut picked = BTreeMap::new();
        for (name, shape) in expected_tensors(&config) {
            let tensor = tensors
                .remove(&name)
                .or_else(|| tensors.remove(&format!("memory_attention.{name}")))
                .ok_or_else(|| Sam2Error::Weights {
                    path: source.to_string(),
                    reason: format!(
                        "tensor `{name}` is missing (a MemoryAttention state_dict with {} layers is expected)",
                        config.layers
                    ),
                })?;
            if tensor.shape != shape {
                return Err(Sam2Error::Weights {
                    path: source.to_string(),
                    reason: format!("tensor `{name}` has shape {:?}; {shape:?} expected", tensor.shape),
                });
            }
            if let Some(bad) = tensor.data.iter().find(|v| !v.is_finite()) {
                return Err(Sam2Error::Weights {
                    path: source.to_string(),
                    reason: format!("tensor `{name}` holds {bad}"),
                });
            }
            picked.insert(name, tensor);
        }
        Ok(MemoryAttentionWeights { config, tensors: picked })
    }

    /// Reads a safetensors file (see the module docs).
    pub fn load(config: MemoryAttentionConfig, path: &Path) -> Result<Self, Sam2Error> {
        Self::from_tensors(config, read_safetensors(path)?, &path.display().to_string())
    }

    /// Random weights shaped like the real ones: Linear weights and biases
    /// uniform in ±1/sqrt(fan_in) (PyTorch's default init), LayerNorm
    /// weights in [0.5, 1.5) and biases in ±0.5 (so that they matter).
    pub fn random(config: MemoryAttentionConfig, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let expected = expected_tensors(&config);
        let shapes: BTreeMap<&str, &Vec<usize>> = expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let mut tensors = BTreeMap::new();
        for (name, shape) in &expected {
            let count: usize = shape.iter().product();
            let data: Vec<f32> = if name.contains("norm") {
                let (lo, hi) = if name.ends_with("weight") { (0.5, 1.5) } else { (-0.5, 0.5) };
                (0..count).map(|_| rng.uniform_f32(lo, hi)).collect()
            } else {
                // A Linear bias takes its weight's fan-in.
                let fan_in = shapes[name.replace(".bias", ".weight").as_str()][1];
                let bound = 1.0 / (fan_in as f32).sqrt();
                (0..count).map(|_| rng.uniform_f32(-bound, bound)).collect()
            };
            tensors.insert(name.clone(), Tensor { shape: shape.clone(), data });
        }
        MemoryAttentionWeights { config, tensors }
    }

    /// A tensor by its state-dict name (without prefix). Panics on a name
    /// outside [`expected_tensors`]: those are checked at construction.
    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("`{name}` is not a memory-attention tensor"))
    }

    /// A layer's tensor: `layer(1, "linear1.weight")`.
    pub fn layer(&self, layer: usize, name: &str) -> &Tensor {
        self.get(&format!("layers.{layer}.{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_tensors_are_the_module_state_dict() {
        let config = MemoryAttentionConfig::sam2_1_hiera_t();
        let expected = expected_tensors(&config);
        assert_eq!(expected.len(), 4 * 26 + 2);
        let shape = |n: &str| expected.iter().find(|(name, _)| name == n).unwrap().1.clone();
        assert_eq!(shape("layers.0.self_attn.q_proj.weight"), vec![256, 256]);
        assert_eq!(shape("layers.3.cross_attn_image.k_proj.weight"), vec![256, 64]);
        assert_eq!(shape("layers.2.cross_attn_image.v_proj.bias"), vec![256]);
        assert_eq!(shape("layers.1.linear1.weight"), vec![2048, 256]);
        assert_eq!(shape("layers.1.linear2.weight"), vec![256, 2048]);
        assert_eq!(shape("norm.bias"), vec![256]);
    }

    #[test]
    fn random_weights_follow_pytorch_init_bounds() {
        let config = MemoryAttentionConfig::sam2_1_hiera_t();
        let w = MemoryAttentionWeights::random(config, 3);
        let max = |t: &Tensor| t.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max(w.layer(0, "linear2.weight")) <= 1.0 / 2048f32.sqrt());
        assert!(max(w.layer(0, "linear2.bias")) <= 1.0 / 2048f32.sqrt());
        assert!(max(w.layer(0, "cross_attn_image.k_proj.bias")) <= 1.0 / 8.0);
        assert!(max(w.layer(0, "cross_attn_image.k_proj.bias")) > 1.0 / 16.0);
    }

    #[test]
    fn safetensors_round_trip_and_clear_errors() {
        let dir = std::env::temp_dir().join(format!("vrseg-sam2-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = MemoryAttentionConfig::sam2_1_hiera_t().with_side(4);
        let w = MemoryAttentionWeights::random(config, 11);
        let names = expected_tensors(&config);
        let list: Vec<(&str, &[usize], &[f32])> =
            names.iter().map(|(n, _)| (n.as_str(), &w.get(n).shape[..], &w.get(n).data[..])).collect();
        let path = dir.join("w.safetensors");
        write_safetensors(&path, &list).unwrap();
        let back = MemoryAttentionWeights::load(config, &path).unwrap();
        assert_eq!(back.layer(2, "linear1.weight"), w.layer(2, "linear1.weight"));

        // One tensor missing, one of the wrong shape: the error names it.
        let short: Vec<_> = list.iter().filter(|(n, _, _)| *n != "layers.1.norm2.bias").copied().collect();
        write_safetensors(&path, &short).unwrap();
        let err = MemoryAttentionWeights::load(config, &path).unwrap_err().to_string();
        assert!(err.contains("layers.1.norm2.bias") && err.contains("missing"), "{err}");
        let mut wrong = list.clone();
        let bad = [1f32; 8];
        wrong[0] = (list[0].0, &[2, 4], &bad);
        write_safetensors(&path, &wrong).unwrap();
        let err = MemoryAttentionWeights::load(config, &path).unwrap_err().to_string();
        assert!(err.contains("layers.0.self_attn.q_proj.weight") && err.contains("[2, 4]"), "{err}");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = MemoryAttentionWeights::load(config, &path).unwrap_err().to_string();
        assert!(err.contains("not a valid safetensors file"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
