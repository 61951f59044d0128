//! The windowed ops on NCHW images: Conv (with its fused epilogue),
//! ConvTranspose and MaxPool.
//!
//! Conv is im2col by tiles: for a tile of output pixels, one matrix row per
//! (input channel, ky, kx) holds the input sample each pixel's window puts
//! there (zero in the padding), and the weights [M/group, C/group*kH*kW]
//! multiply it. Tiles keep the im2col buffer in cache (a whole-image im2col
//! of a 64-channel 3x3 layer at 160x160 would be 59 MB) and are the unit the
//! threads share. ConvTranspose is the same product the other way round:
//! weightsᵀ times the input gives every (output channel, ky, kx)
//! contribution of every input pixel, which col2im adds where it lands.

use super::gemm::{multiply_tile, par_map, tile_width, PackedA};
use super::{expect_inputs, expect_output, expect_rank, Tensor};
use crate::engine::build::ir::{Activation, Conv, ConvTranspose, MaxPool};

/// The spatial part of a windowed op: input and output size, kernel,
/// stride, dilation and the top/left pads.
#[derive(Debug, Clone, Copy)]
struct Window {
    h: usize,
    w: usize,
    wo: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
}

impl Window {
    /// Input row and column that output pixel (oy, ox) reads at kernel tap
    /// (ky, kx), if inside the image (padding otherwise).
    #[inline]
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.sh + ky * self.dh).checked_sub(self.pt).filter(|&iy| iy < self.h)?;
        let ix = (ox * self.sw + kx * self.dw).checked_sub(self.pl).filter(|&ix| ix < self.w)?;
        Some((iy, ix))
    }
}

/// Output length of a windowed axis: floor((len + pads - span) / stride) + 1
/// with span = dilation * (kernel - 1) + 1, as ONNX Conv and MaxPool
/// (ceil_mode 0) define it.
fn windowed_len(
    axis: &str,
    len: usize,
    pads: (usize, usize),
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Result<usize, String> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(format!("{axis}: kernel {kernel}, stride {stride} and dilation {dilation} must all be at least 1"));
    }
    let span = dilation * (kernel - 1) + 1;
    let padded = len + pads.0 + pads.1;
    if padded < span {
        return Err(format!("{axis}: the window spans {span}, more than the padded input ({padded})"));
    }
    Ok((padded - span) / stride + 1)
}

/// Empty images are legal ONNX but never occur in the models vrseg runs;
/// refusing them keeps the loops free of zero-size special cases.
fn expect_nonempty(what: &str, t: &Tensor) -> Result<(), String> {
    if t.shape.contains(&0) {
        return Err(format!("{what} has shape {:?}; empty tensors are not supported here", t.shape));
    }
    Ok(())
}

/// The fused epilogue, applied to a conv sum that already includes the
/// bias; shared with the unfused Sigmoid so fused and unfused graphs agree
/// bit for bit.
#[inline]
fn activate(y: f32, activation: Activation) -> f32 {
    match activation {
        Activation::None => y,
        Activation::Silu => y * super::elementwise::sigmoid(y),
        Activation::Sigmoid => super::elementwise::sigmoid(y),
    }
}

pub(super) fn conv(p: &Conv, ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    let extra = usize::from(p.residual);
    expect_inputs(ins, 2 + extra..=3 + extra)?;
    let (x, weight) = (ins[0], ins[1]);
    let bias = (ins.len() == 3 + extra).then(|| ins[2]);
    let residual = p.residual.then(|| ins[ins.len() - 1]);
    expect_rank("input", &x, 4)?;
    expect_rank("weight", &weight, 4)?;
    expect_nonempty("input", &x)?;
    let [n, c, h, w] = x.shape.try_into().expect("rank checked");
    let [m, cg, kh, kw] = weight.shape.try_into().expect("rank checked");
    let g = p.group;
    if g == 0 || c % g != 0 || m % g != 0 || cg != c / g {
        return Err(format!(
            "group {g} does not fit input channels {c}, weight {:?} (needs C and M divisible by group, weight[1] = C/group)",
            weight.shape
        ));
    }
    if [kh, kw] != p.kernel {
        return Err(format!("kernel_shape {:?} differs from the weight's {:?}", p.kernel, [kh, kw]));
    }
    if let Some(b) = bias {
        if b.shape != [m] {
            return Err(format!("bias has shape {:?}, expected [{m}]", b.shape));
        }
    }
    let [pt, pl, pb, pr] = p.pads;
    let ho = windowed_len("height", h, (pt, pb), kh, p.stride[0], p.dilation[0])?;
    let wo = windowed_len("width", w, (pl, pr), kw, p.stride[1], p.dilation[1])?;
    let computed = [n, m, ho, wo];
    expect_output(out_shape, &computed)?;
    if let Some(r) = residual {
        if r.shape != computed {
            return Err(format!("residual has shape {:?}, expected the output's {computed:?}", r.shape));
        }
    }
    let win =
        Window { h, w, wo, kh, kw, sh: p.stride[0], sw: p.stride[1], dh: p.dilation[0], dw: p.dilation[1], pt, pl };

    let (mg, k, pixels) = (m / g, cg * kh * kw, ho * wo);
    // Weight rows are already [M][C/group * kH * kW] in im2col's row order.
    let packed: Vec<PackedA> =
        (0..g).map(|gi| PackedA::from_rows(mg, k, &weight.data[gi * mg * k..][..mg * k])).collect();
    let t = tile_width(k, pixels, n * g);
    let tiles = pixels.div_ceil(t);
    let results = par_map(n * g * tiles, |task| {
        let (image, tile) = (task / tiles, task % tiles);
        let (ni, gi) = (image / g, image % g);
        let p0 = tile * t;
        let width = (pixels - p0).min(t);
        let planes = &x.data[(ni * c + gi * cg) * h * w..][..cg * h * w];
        let cols = im2col_tile(planes, cg, &win, p0, width, t);
        let mut out = multiply_tile(&packed[gi], &cols, t, width);
        for (mi, row) in out.chunks_exact_mut(width).enumerate() {
            let co = gi * mg + mi;
            let b = bias.map_or(0.0, |b| b.data[co]);
            for v in row.iter_mut() {
                *v = activate(*v + b, p.activation);
            }
            if let Some(r) = residual {
                for (v, &r) in row.iter_mut().zip(&r.data[(ni * m + co) * pixels + p0..]) {
                    *v += r;
                }
            }
        }
        out
    });

    let mut y = vec![0.0; n * m * pixels];
    for (task, out) in results.iter().enumerate() {
        let (image, tile) = (task / tiles, task % tiles);
        let (ni, gi) = (image / g, image % g);
        let p0 = tile * t;
        let width = (pixels - p0).min(t);
        for (mi, row) in out.chunks_exact(width).enumerate() {
            y[(ni * m + gi * mg + mi) * pixels + p0..][..width].copy_from_slice(row);
        }
    }
    Ok(y)
}

/// The [cg*kh*kw, t] im2col tile for output pixels p0..p0+width of one
/// image's group (`planes`: its cg input channels); columns past `width`
/// are zero. Works a run of pixels at a time (the part of the tile in one
/// output row), finding the run's span inside the input once and copying it
/// (a memcpy at stride 1), because per-pixel bounds tests make the
/// unoptimised test build spend as long here as in the multiply.
fn im2col_tile(planes: &[f32], cg: usize, win: &Window, p0: usize, width: usize, t: usize) -> Vec<f32> {
    let mut cols = vec![0.0; cg * win.kh * win.kw * t];
    let mut rows = cols.chunks_exact_mut(t);
    for plane in planes.chunks_exact(win.h * win.w) {
        for ky in 0..win.kh {
            for kx in 0..win.kw {
                let row = rows.next().expect("one row per (channel, ky, kx)");
                // Output columns whose tap lands inside the input:
                // 0 <= ox * sw + kx * dw - pl < w.
                let reach = kx * win.dw;
                let ox_lo = win.pl.saturating_sub(reach).div_ceil(win.sw);
                let ox_hi = (win.w + win.pl).saturating_sub(reach).div_ceil(win.sw);
                let (mut j, mut oy, mut ox) = (0, p0 / win.wo, p0 % win.wo);
                while j < width {
                    let run = (win.wo - ox).min(width - j);
                    let iy = (oy * win.sh + ky * win.dh).checked_sub(win.pt).filter(|&iy| iy < win.h);
                    let (a, b) = (ox_lo.clamp(ox, ox + run), ox_hi.clamp(ox, ox + run));
                    if let (Some(iy), true) = (iy, a < b) {
                        let src = &plane[iy * win.w + a * win.sw + reach - win.pl..];
                        let dst = &mut row[j + a - ox..j + b - ox];
                        if win.sw == 1 {
                            dst.copy_from_slice(&src[..b - a]);
                        } else {
                            for (d, &s) in dst.iter_mut().zip(src.iter().step_by(win.sw)) {
                                *d = s;
                            }
                        }
                    }
                    j += run;
                    ox = 0;
                    oy += 1;
                }
            }
        }
    }
    cols
}

pub(super) fn conv_transpose(p: &ConvTranspose, ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 2..=3)?;
    let (x, weight, bias) = (ins[0], ins[1], ins.get(2).copied());
    expect_rank("input", &x, 4)?;
    expect_rank("weight", &weight, 4)?;
    expect_nonempty("input", &x)?;
    let [n, c, h, w] = x.shape.try_into().expect("rank checked");
    let [wc, mg, kh, kw] = weight.shape.try_into().expect("rank checked");
    let g = p.group;
    if g == 0 || c % g != 0 || wc != c {
        return Err(format!(
            "group {g} does not fit input channels {c}, weight {:?} (needs C divisible by group, weight[0] = C)",
            weight.shape
        ));
    }
    if [kh, kw] != p.kernel {
        return Err(format!("kernel_shape {:?} differs from the weight's {:?}", p.kernel, [kh, kw]));
    }
    let (cg, m) = (c / g, mg * g);
    if let Some(b) = bias {
        if b.shape != [m] {
            return Err(format!("bias has shape {:?}, expected [{m}]", b.shape));
        }
    }
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    if sh == 0 || sw == 0 || dh == 0 || dw == 0 || kh == 0 || kw == 0 {
        return Err(format!(
            "kernel {:?}, stride {:?} and dilation {:?} must be at least 1",
            p.kernel, p.stride, p.dilation
        ));
    }
    let [pt, pl, pb, pr] = p.pads;
    // ONNX: out = stride * (in - 1) + output_padding + dilation * (k - 1) + 1 - pads.
    let full_h = sh * (h - 1) + p.output_padding[0] + dh * (kh - 1) + 1;
    let full_w = sw * (w - 1) + p.output_padding[1] + dw * (kw - 1) + 1;
    if pt + pb >= full_h || pl + pr >= full_w {
        return Err(format!("pads {:?} leave no output (unpadded output {full_h}x{full_w})", p.pads));
    }
    let (ho, wo) = (full_h - pt - pb, full_w - pl - pr);
    expect_output(out_shape, &[n, m, ho, wo])?;

    // Per group, rows (m, ky, kx) by columns (input channel): the weight
    // [C][M/group * kH * kW] read transposed.
    let taps = mg * kh * kw;
    let packed: Vec<PackedA> =
        (0..g).map(|gi| PackedA::new(taps, cg, |row, ci| weight.data[(gi * cg + ci) * taps + row])).collect();
    let pixels = h * w;
    let t = tile_width(cg, pixels, n * g);
    let tiles = pixels.div_ceil(t);
    let results = par_map(n * g * tiles, |task| {
        let (image, tile) = (task / tiles, task % tiles);
        let (ni, gi) = (image / g, image % g);
        let p0 = tile * t;
        let width = (pixels - p0).min(t);
        let mut cols = vec![0.0; cg * t];
        for (ci, row) in cols.chunks_exact_mut(t).enumerate() {
            row[..width].copy_from_slice(&x.data[(ni * c + gi * cg + ci) * pixels + p0..][..width]);
        }
        multiply_tile(&packed[gi], &cols, t, width)
    });

    let mut y = vec![0.0; n * m * ho * wo];
    if let Some(b) = bias {
        for (plane, &b) in y.chunks_exact_mut(ho * wo).zip(b.data.iter().cycle()) {
            plane.fill(b);
        }
    }
    // col2im: input pixel (iy, ix) at tap (ky, kx) lands on output
    // (iy * stride + ky * dilation - pad_top, ... - pad_left).
    for (task, contributions) in results.iter().enumerate() {
        let (image, tile) = (task / tiles, task % tiles);
        let (ni, gi) = (image / g, image % g);
        let p0 = tile * t;
        let width = (pixels - p0).min(t);
        for (row, contribution) in contributions.chunks_exact(width).enumerate() {
            let (mi, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
            let plane = &mut y[(ni * m + gi * mg + mi) * ho * wo..][..ho * wo];
            for (j, &v) in contribution.iter().enumerate() {
                let (iy, ix) = ((p0 + j) / w, (p0 + j) % w);
                let oy = (iy * sh + ky * dh).checked_sub(pt).filter(|&oy| oy < ho);
                let ox = (ix * sw + kx * dw).checked_sub(pl).filter(|&ox| ox < wo);
                if let (Some(oy), Some(ox)) = (oy, ox) {
                    plane[oy * wo + ox] += v;
                }
            }
        }
    }
    Ok(y)
}

pub(super) fn max_pool(p: &MaxPool, ins: &[Tensor], out_shape: &[usize]) -> Result<Vec<f32>, String> {
    expect_inputs(ins, 1..=1)?;
    let x = ins[0];
    expect_rank("input", &x, 4)?;
    expect_nonempty("input", &x)?;
    let [n, c, h, w] = x.shape.try_into().expect("rank checked");
    let [kh, kw] = p.kernel;
    let [pt, pl, pb, pr] = p.pads;
    let ho = windowed_len("height", h, (pt, pb), kh, p.stride[0], 1)?;
    let wo = windowed_len("width", w, (pl, pr), kw, p.stride[1], 1)?;
    expect_output(out_shape, &[n, c, ho, wo])?;
    let win = Window { h, w, wo, kh, kw, sh: p.stride[0], sw: p.stride[1], dh: 1, dw: 1, pt, pl };
    let mut y = Vec::with_capacity(n * c * ho * wo);
    for plane in x.data.chunks_exact(h * w) {
        for oy in 0..ho {
            for ox in 0..wo {
                // Padding counts as -inf: a window entirely in the padding gives -inf.
                let mut best = f32::NEG_INFINITY;
                for ky in 0..kh {
                    for kx in 0..kw {
                        if let Some((iy, ix)) = win.source(oy, ox, ky, kx) {
                            best = best.max(plane[iy * w + ix]);
                        }
                    }
                }
                y.push(best);
            }
        }
    }
    Ok(y)
}
