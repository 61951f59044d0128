//! Constant evaluation for import: the ops whose inputs are all known at
//! build time (the shape arithmetic dynamic exports contain, and elementwise
//! ops on small constants) computed on the CPU so they leave the graph.
//!
//! Callers validate shapes, axes and the output size (at most
//! `MAX_FOLD_ELEMENTS`) first; these functions only compute, and the few
//! failures that depend on the data (an index out of range, integer division
//! by zero) come back as a reason for the caller to wrap with the node.

use crate::engine::build::ir::{DType, TensorData};

/// The most elements a folded constant may have (256 MiB of f32): shape
/// arithmetic needs a handful; anything near this is a model that
/// materialises a large tensor from a shape, which vrseg would rather refuse
/// than allocate.
pub(super) const MAX_FOLD_ELEMENTS: usize = 1 << 26;

/// A constant while importing: its shape and data.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Const {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Const {
    pub fn i64s(shape: Vec<usize>, v: Vec<i64>) -> Const {
        Const { shape, data: TensorData::I64(v) }
    }

    pub fn f32s(shape: Vec<usize>, v: Vec<f32>) -> Const {
        Const { shape, data: TensorData::F32(v) }
    }

    pub fn reshaped(&self, shape: Vec<usize>) -> Const {
        Const { shape, data: self.data.clone() }
    }
}

/// The product of `shape`, or None on overflow.
pub(super) fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The product of `shape` with zero dims counted as 1, or None on overflow:
/// the bound every value's shape is held to, so that strides and partial
/// products of a shape with a zero dim cannot overflow either.
pub(super) fn volume(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d.max(1)))
}

/// Row-major strides of `shape`, in elements.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Calls `f` with every multi-index of `shape`, in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let n = elements(shape).unwrap_or(0);
    if n == 0 {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// For each element of `out_shape`, the offset of the element it reads,
/// given per-axis source strides (0 for a broadcast axis) and starts.
fn offsets(out_shape: &[usize], base: usize, step: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(elements(out_shape).unwrap_or(0));
    for_each_index(out_shape, |idx| out.push(base + idx.iter().zip(step).map(|(i, s)| i * s).sum::<usize>()));
    out
}

/// The elements of `data` at `at`, in that order.
fn pick(data: &TensorData, at: &[usize]) -> TensorData {
    match data {
        TensorData::F32(v) => TensorData::F32(at.iter().map(|&i| v[i]).collect()),
        TensorData::I64(v) => TensorData::I64(at.iter().map(|&i| v[i]).collect()),
    }
}

/// Multidirectional (numpy) broadcasting of two shapes, or None when they
/// are incompatible.
pub(super) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let y = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            match (x, y) {
                _ if x == y => Some(x),
                (1, _) => Some(y),
                (_, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Offsets into a tensor of `shape` read by each element of `out` (which
/// `shape` broadcasts to).
fn broadcast_offsets(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    let lead = out.len() - shape.len();
    let step: Vec<usize> =
        (0..out.len()).map(|d| if d < lead || shape[d - lead] == 1 { 0 } else { st[d - lead] }).collect();
    offsets(out, 0, &step)
}

/// `c` broadcast to `shape` (ONNX Expand, once the caller has broadcast the
/// target with the input's shape).
pub(super) fn expand(c: &Const, shape: &[usize]) -> Const {
    Const { shape: shape.to_vec(), data: pick(&c.data, &broadcast_offsets(&c.shape, shape)) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// An elementwise binary op with broadcasting; both inputs have one dtype and
/// `out` is their broadcast shape. Integer ops are checked: an overflow or a
/// division by zero is an error, not a wrapped value. Integer division
/// truncates toward zero, as ONNX Runtime's does.
pub(super) fn binary(op: Binary, a: &Const, b: &Const, out: &[usize]) -> Result<Const, String> {
    let ia = broadcast_offsets(&a.shape, out);
    let ib = broadcast_offsets(&b.shape, out);
    let data = match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => TensorData::F32(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let (p, q) = (x[i], y[j]);
                    match op {
                        Binary::Add => p + q,
                        Binary::Sub => p - q,
                        Binary::Mul => p * q,
                        Binary::Div => p / q,
                    }
                })
                .collect(),
        ),
        (TensorData::I64(x), TensorData::I64(y)) => TensorData::I64(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let (p, q) = (x[i], y[j]);
                    let r = match op {
                        Binary::Add => p.checked_add(q),
                        Binary::Sub => p.checked_sub(q),
                        Binary::Mul => p.checked_mul(q),
                        Binary::Div => p.checked_div(q),
                    };
                    r.ok_or_else(|| format!("{p} {op:?} {q} is not an int64 (overflow or division by zero)"))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err("its inputs have different element types".into()),
    };
    Ok(Const { shape: out.to_vec(), data })
}

/// Transposes `c`: output axis i is input axis perm[i] (perm validated).
pub(super) fn transpose(c: &Const, perm: &[usize]) -> Const {
    let st = strides(&c.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| c.shape[p]).collect();
    let step: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    Const { data: pick(&c.data, &offsets(&shape, 0, &step)), shape }
}

/// A strided slice: per axis of `c`, the start and step (1 and 0 for axes not
/// sliced) and the output shape, all resolved and in range.
pub(super) fn slice(c: &Const, start: &[usize], step: &[usize], out: &[usize]) -> Const {
    let st = strides(&c.shape);
    let base = start.iter().zip(&st).map(|(a, s)| a * s).sum();
    let step: Vec<usize> = step.iter().zip(&st).map(|(a, s)| a * s).collect();
    Const { shape: out.to_vec(), data: pick(&c.data, &offsets(out, base, &step)) }
}

/// ONNX Gather along `axis` with integer indices (negative ones counting from
/// the end); the output shape is data[..axis] + indices + data[axis+1..].
pub(super) fn gather(data: &Const, indices: &[i64], indices_shape: &[usize], axis: usize) -> Result<Const, String> {
    let dim = data.shape[axis];
    let idx: Vec<usize> = indices
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            usize::try_from(j).ok().filter(|&j| j < dim).ok_or_else(|| format!("index {i} is outside 0..{dim}"))
        })
        .collect::<Result<_, _>>()?;
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let mut at = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &j in &idx {
            at.extend((0..inner).map(|k| (o * dim + j) * inner + k));
        }
    }
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(indices_shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    Ok(Const { shape, data: pick(&data.data, &at) })
}

/// Concatenates along `axis` (shapes and dtypes validated).
pub(super) fn concat(parts: &[&Const], axis: usize, out: &[usize]) -> Const {
    let outer: usize = out[..axis].iter().product();
    let chunk = |c: &Const| c.shape[axis..].iter().product::<usize>();
    let mut data = match parts[0].data {
        TensorData::F32(_) => TensorData::F32(Vec::new()),
        TensorData::I64(_) => TensorData::I64(Vec::new()),
    };
    for o in 0..outer {
        for p in parts {
            let n = chunk(p);
            match (&mut data, &p.data) {
                (TensorData::F32(d), TensorData::F32(s)) => d.extend_from_slice(&s[o * n..(o + 1) * n]),
                (TensorData::I64(d), TensorData::I64(s)) => d.extend_from_slice(&s[o * n..(o + 1) * n]),
                _ => {}
            }
        }
    }
    Const { shape: out.to_vec(), data }
}

/// Converts `c` to `to`. Float to int truncates toward zero (saturating);
/// `round_f16` rounds floats through FLOAT16 first, `int32` wraps integers
/// to 32 bits, as a cast to those ONNX types would.
pub(super) fn cast(c: &Const, to: DType, round_f16: bool, int32: bool) -> Const {
    let data = match (&c.data, to) {
        (TensorData::F32(v), DType::F32) if round_f16 => {
            TensorData::F32(v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect())
        }
        (TensorData::F32(v), DType::F32) => TensorData::F32(v.clone()),
        (TensorData::I64(v), DType::F32) => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
        (TensorData::F32(v), DType::I64) if int32 => TensorData::I64(v.iter().map(|&x| i64::from(x as i32)).collect()),
        (TensorData::F32(v), DType::I64) => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
        (TensorData::I64(v), DType::I64) if int32 => TensorData::I64(v.iter().map(|&x| i64::from(x as i32)).collect()),
        (TensorData::I64(v), DType::I64) => TensorData::I64(v.clone()),
    };
    Const { shape: c.shape.clone(), data }
}

pub(super) fn sigmoid(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shape(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shape(&[2, 3], &[4, 3]), None);
    }

    #[test]
    fn transpose_slice_gather_concat() {
        let c = Const::i64s(vec![2, 3], (0..6).collect());
        assert_eq!(transpose(&c, &[1, 0]).data, TensorData::I64(vec![0, 3, 1, 4, 2, 5]));
        // Rows 0..2, columns 1.. step 2: [[1], [4]].
        assert_eq!(slice(&c, &[0, 1], &[1, 2], &[2, 1]).data, TensorData::I64(vec![1, 4]));
        let g = gather(&c, &[-1, 0], &[2], 1).unwrap();
        assert_eq!((g.shape, g.data), (vec![2, 2], TensorData::I64(vec![2, 0, 5, 3])));
        let d = Const::i64s(vec![2, 1], vec![7, 8]);
        assert_eq!(concat(&[&c, &d], 1, &[2, 4]).data, TensorData::I64(vec![0, 1, 2, 7, 3, 4, 5, 8]));
    }

    #[test]
    fn integer_division_truncates_and_checks() {
        let a = Const::i64s(vec![2], vec![7, -7]);
        let b = Const::i64s(vec![], vec![2]);
        assert_eq!(binary(Binary::Div, &a, &b, &[2]).unwrap().data, TensorData::I64(vec![3, -3]));
        let z = Const::i64s(vec![], vec![0]);
        assert!(binary(Binary::Div, &a, &z, &[2]).is_err());
    }
}
