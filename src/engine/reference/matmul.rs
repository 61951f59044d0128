//! ONNX MatMul, which is numpy's matmul: a 1-D left operand is a row
//! ([K] -> [1, K]) and a 1-D right operand a column ([K] -> [K, 1]), the
//! added axis is dropped from the result, and the axes before the last two
//! are batch axes that broadcast against each other.

use super::elementwise::{broadcast_shape, broadcast_strides};
use super::gemm::{multiply_tile, par_map, tile_width, PackedA};
use super::{expect_inputs, expect_output, Tensor};

pub(super) fn matmul(ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 2..=2)?;
    let (a, b) = (ins[0], ins[1]);
    let (a_batch, m, k) = match a.shape {
        [] => return Err("input A is a scalar; MatMul needs rank >= 1".into()),
        [k] => (&[][..], 1, *k),
        [batch @ .., m, k] => (batch, *m, *k),
    };
    let (b_batch, kb, n) = match b.shape {
        [] => return Err("input B is a scalar; MatMul needs rank >= 1".into()),
        [k] => (&[][..], *k, 1),
        [batch @ .., k, n] => (batch, *k, *n),
    };
    if k != kb {
        return Err(format!("inner dimensions differ: A {:?}, B {:?}", a.shape, b.shape));
    }
    let batch = broadcast_shape(a_batch, b_batch).map_err(|e| format!("batch axes: {e}"))?;
    let mut computed = batch.clone();
    if a.shape.len() > 1 {
        computed.push(m);
    }
    if b.shape.len() > 1 {
        computed.push(n);
    }
    expect_output(out_shape, &computed)?;

    // Matrix strides (in whole matrices) of each operand along the batch axes.
    let (sa, sb) = (broadcast_strides(a_batch, &batch), broadcast_strides(b_batch, &batch));
    let batches: usize = batch.iter().product();
    let matrix_of = |index: usize, s: &[usize]| {
        let mut rest = index;
        let mut at = 0;
        for (axis, &dim) in batch.iter().enumerate().rev() {
            at += rest % dim * s[axis];
            rest /= dim;
        }
        at
    };
    let t = tile_width(k, n, batches);
    let tiles = n.div_ceil(t);
    let results = par_map(batches * tiles, |task| {
        let (bi, tile) = (task / tiles, task % tiles);
        let a_mat = &a.data[matrix_of(bi, &sa) * m * k..][..m * k];
        let b_mat = &b.data[matrix_of(bi, &sb) * k * n..][..k * n];
        let j0 = tile * t;
        let width = (n - j0).min(t);
        let mut cols = vec![0.0; k * t];
        for (row, b_row) in cols.chunks_exact_mut(t).zip(b_mat.chunks_exact(n)) {
            row[..width].copy_from_slice(&b_row[j0..j0 + width]);
        }
        // Packing A per tile repeats m * k copies per t * m * k products.
        multiply_tile(&PackedA::from_rows(m, k, a_mat), &cols, t, width)
    });
    let mut y = vec![0.0; batches * m * n];
    for (task, out) in results.iter().enumerate() {
        let (bi, tile) = (task / tiles, task % tiles);
        let j0 = tile * t;
        let width = (n - j0).min(t);
        for (row, values) in out.chunks_exact(width).enumerate() {
            y[(bi * m + row) * n + j0..][..width].copy_from_slice(values);
        }
    }
    Ok(y)
}
