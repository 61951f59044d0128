//! The ops that only move data: Concat, Split, Slice, Reshape, Transpose and
//! nearest-neighbour Resize. Each checks its attributes against the input
//! shape, then gathers: for every output row (all axes but the last) it
//! finds where that row starts in the input and walks the last axis with
//! one stride. Outputs are exact copies of input elements, so tests compare
//! them for equality.

use super::{expect_inputs, expect_output, for_each_row, strides, Tensor};

/// Copies, for every output row of `out_shape`, `out_shape[last]` elements
/// of `data` starting at `base(row offset)` with stride `step`, where the row
/// offset is computed with `in_strides` (the input offset of index 1 along
/// each output axis).
fn gather(data: &[f32], out_shape: &[usize], in_strides: &[usize], base: usize, step: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(out_shape.iter().product());
    let len = out_shape.last().copied().unwrap_or(1);
    for_each_row(out_shape, in_strides, |offset| {
        out.extend((0..len).map(|j| data[base + offset + j * step]));
    });
    out
}

pub(super) fn concat(axis: usize, ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    if ins.is_empty() {
        return Err("has no inputs".into());
    }
    let first = ins[0].shape;
    if axis >= first.len() {
        return Err(format!("axis {axis} is out of range for rank {}", first.len()));
    }
    let mut computed = first.to_vec();
    computed[axis] = 0;
    for (i, t) in ins.iter().enumerate() {
        let same_elsewhere = t.shape.len() == first.len()
            && t.shape.iter().zip(first).enumerate().all(|(a, (x, y))| a == axis || x == y);
        if !same_elsewhere {
            return Err(format!(
                "input {i} has shape {:?}, which differs from input 0's {first:?} off axis {axis}",
                t.shape
            ));
        }
        computed[axis] += t.shape[axis];
    }
    expect_output(out_shape, &computed)?;
    let outer: usize = first[..axis].iter().product();
    let inner: usize = first[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(computed.iter().product());
    for o in 0..outer {
        for t in ins {
            let chunk = t.shape[axis] * inner;
            out.extend_from_slice(&t.data[o * chunk..][..chunk]);
        }
    }
    Ok(out)
}

pub(super) fn split(axis: usize, sizes: &[usize], ins: &[Tensor], outs: &[&[usize]]) -> Result<Vec<Vec<f32>>, String> {
    expect_inputs(ins, 1..=1)?;
    let x = ins[0];
    if axis >= x.shape.len() {
        return Err(format!("axis {axis} is out of range for input shape {:?}", x.shape));
    }
    if sizes.iter().sum::<usize>() != x.shape[axis] {
        return Err(format!("split sizes {sizes:?} do not add up to axis {axis} of input shape {:?}", x.shape));
    }
    for (i, (&size, &declared)) in sizes.iter().zip(outs).enumerate() {
        let mut computed = x.shape.to_vec();
        computed[axis] = size;
        expect_output(declared, &computed).map_err(|e| format!("output {i}: {e}"))?;
    }
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let mut out: Vec<Vec<f32>> = sizes.iter().map(|&s| Vec::with_capacity(outer * s * inner)).collect();
    let mut src = x.data;
    for _ in 0..outer {
        for (piece, &size) in out.iter_mut().zip(sizes) {
            let (head, rest) = src.split_at(size * inner);
            piece.extend_from_slice(head);
            src = rest;
        }
    }
    Ok(out)
}

pub(super) fn slice(
    axes: &[usize],
    starts: &[usize],
    ends: &[usize],
    steps: &[usize],
    ins: &[Tensor],
    out_shape: &[usize],
) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 1..=1)?;
    let x = ins[0];
    let rank = x.shape.len();
    if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
        return Err(format!("axes {axes:?}, starts {starts:?}, ends {ends:?} and steps {steps:?} differ in length"));
    }
    // Per input axis: first index and step (axes not listed: all of it).
    let mut first = vec![0usize; rank];
    let mut step = vec![1usize; rank];
    let mut computed = x.shape.to_vec();
    let mut listed = vec![false; rank];
    for (i, &axis) in axes.iter().enumerate() {
        if axis >= rank || listed[axis] {
            return Err(format!("axes {axes:?} must be distinct and below the rank {rank}"));
        }
        listed[axis] = true;
        let (s, e, st) = (starts[i], ends[i], steps[i]);
        if st == 0 || s > x.shape[axis] || e > x.shape[axis] {
            return Err(format!(
                "axis {axis}: start {s}, end {e}, step {st} must be clamped to 0..={} with step >= 1",
                x.shape[axis]
            ));
        }
        first[axis] = s;
        step[axis] = st;
        // ONNX: the elements s, s + step, ... below e.
        computed[axis] = e.saturating_sub(s).div_ceil(st);
    }
    expect_output(out_shape, &computed)?;
    let in_strides = strides(x.shape);
    let base = first.iter().zip(&in_strides).map(|(f, s)| f * s).sum();
    let out_strides: Vec<usize> = in_strides.iter().zip(&step).map(|(s, st)| s * st).collect();
    let last = out_strides.last().copied().unwrap_or(1);
    Ok(gather(x.data, &computed, &out_strides, base, last))
}

pub(super) fn reshape(shape: &[usize], ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 1..=1)?;
    let x = ins[0];
    expect_output(out_shape, shape)?;
    if shape.iter().product::<usize>() != x.data.len() {
        return Err(format!("cannot reshape {:?} to {shape:?}: element counts differ", x.shape));
    }
    Ok(x.data.to_vec())
}

pub(super) fn transpose(perm: &[usize], ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 1..=1)?;
    let x = ins[0];
    let rank = x.shape.len();
    let mut seen = vec![false; rank];
    for &p in perm {
        if p >= rank || std::mem::replace(&mut seen[p], true) {
            return Err(format!("perm {perm:?} is not a permutation of 0..{rank}"));
        }
    }
    if perm.len() != rank {
        return Err(format!("perm {perm:?} is not a permutation of 0..{rank}"));
    }
    let computed: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    expect_output(out_shape, &computed)?;
    // Output axis i walks input axis perm[i].
    let in_strides = strides(x.shape);
    let out_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let last = out_strides.last().copied().unwrap_or(1);
    Ok(gather(x.data, &computed, &out_strides, 0, last))
}

pub(super) fn resize_nearest(scales: &[usize], ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 1..=1)?;
    let x = ins[0];
    if scales.len() != x.shape.len() || scales.contains(&0) {
        return Err(format!("scales {scales:?} must be positive, one per axis of input shape {:?}", x.shape));
    }
    let computed: Vec<usize> = x.shape.iter().zip(scales).map(|(d, s)| d * s).collect();
    expect_output(out_shape, &computed)?;
    // Asymmetric coordinates with floor rounding at an integer scale s:
    // out[i] = in[floor(i / s)] on every axis.
    let in_strides = strides(x.shape);
    let Some((&last_scale, outer_scales)) = scales.split_last() else {
        return Ok(x.data.to_vec()); // rank 0: a scalar maps to itself.
    };
    let mut out = Vec::with_capacity(computed.iter().product());
    let len = computed[computed.len() - 1];
    let outer = &computed[..computed.len() - 1];
    let mut index = vec![0usize; outer.len()];
    if outer.contains(&0) || len == 0 {
        return Ok(out);
    }
    loop {
        let row: usize = index.iter().zip(outer_scales).zip(&in_strides).map(|((i, s), st)| i / s * st).sum();
        out.extend((0..len).map(|j| x.data[row + j / last_scale]));
        // Odometer over the output's outer axes (their input offset is not
        // linear in the index, so `for_each_row` does not apply).
        let mut axis = outer.len();
        loop {
            if axis == 0 {
                return Ok(out);
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < outer[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}
