//! Elementwise ops: the binary arithmetic ops with ONNX's multidirectional
//! (numpy) broadcasting, Sigmoid, and Softmax along one axis.

use super::{expect_inputs, expect_output, for_each_row, strides, Tensor};

/// The broadcast shape of `a` and `b` (numpy rules: align trailing axes;
/// each pair equal, or one of them 1).
pub(super) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() < rank { 1 } else { s[i + s.len() - rank] };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Strides for reading a tensor of `shape` as if it had `out_shape` (its
/// broadcast): 0 along axes where it has size 1, so every index there reads
/// the one element.
pub(super) fn broadcast_strides(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let own = strides(shape);
    let lead = out_shape.len() - shape.len();
    (0..out_shape.len()).map(|i| if i < lead || shape[i - lead] == 1 { 0 } else { own[i - lead] }).collect()
}

pub(super) fn binary(ins: &[Tensor], out_shape: &[usize], f: impl Fn(f32, f32) -> f32) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 2..=2)?;
    let (a, b) = (ins[0], ins[1]);
    let computed = broadcast_shape(a.shape, b.shape)?;
    expect_output(out_shape, &computed)?;
    if a.shape == b.shape {
        return Ok(a.data.iter().zip(b.data).map(|(&x, &y)| f(x, y)).collect());
    }
    let (sa, sb) = (broadcast_strides(a.shape, &computed), broadcast_strides(b.shape, &computed));
    // Walk rows of the output; each input's row offset follows from its own
    // strides, which `for_each_row` cannot track for two inputs at once, so
    // track the output row index and convert.
    let rank = computed.len();
    let len = computed.last().copied().unwrap_or(1);
    let (ja, jb) = (sa.last().copied().unwrap_or(0), sb.last().copied().unwrap_or(0));
    let out_strides = strides(&computed);
    let mut out = Vec::with_capacity(computed.iter().product());
    for_each_row(&computed, &out_strides, |offset| {
        let (mut oa, mut ob, mut rest) = (0, 0, offset);
        for axis in 0..rank.saturating_sub(1) {
            let i = rest / out_strides[axis];
            rest %= out_strides[axis];
            oa += i * sa[axis];
            ob += i * sb[axis];
        }
        out.extend((0..len).map(|j| f(a.data[oa + j * ja], b.data[ob + j * jb])));
    });
    Ok(out)
}

/// 1 / (1 + exp(-x)) in f32, written so that exp never overflows: for
/// x < 0 it is exp(x) / (1 + exp(x)), with exp(x) in (0, 1). Both forms are
/// the same function; the split point gives a continuous result and keeps
/// tiny outputs (x around -100) accurate instead of flushing them to 0.
#[inline]
pub(super) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

pub(super) fn sigmoid_op(ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 1..=1)?;
    expect_output(out_shape, ins[0].shape)?;
    Ok(ins[0].data.iter().map(|&x| sigmoid(x)).collect())
}

pub(super) fn softmax(axis: usize, ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 1..=1)?;
    let x = ins[0];
    if axis >= x.shape.len() {
        return Err(format!("axis {axis} is out of range for input shape {:?}", x.shape));
    }
    expect_output(out_shape, x.shape)?;
    let outer: usize = x.shape[..axis].iter().product();
    let n = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut y = vec![0.0; x.data.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            // exp(x - max) <= 1: no overflow, and the largest term is exactly 1.
            let max = (0..n).map(|j| x.data[at(j)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for j in 0..n {
                let e = (x.data[at(j)] - max).exp();
                y[at(j)] = e;
                sum += e;
            }
            for j in 0..n {
                y[at(j)] /= sum;
            }
        }
    }
    Ok(y)
}
