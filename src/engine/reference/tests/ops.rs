//! One op at a time against the ONNX spec.

use super::*;
use crate::engine::build::ir::{Activation, Conv, ConvTranspose, MaxPool};

// ---------------------------------------------------------------- Conv

/// ONNX Conv, with vrseg's fused epilogue, as nested loops over the spec:
/// y[n, m, oy, ox] = b[m] + sum over c in m's group, ky, kx of
/// x[n, c, oy*s + ky*d - pad_top, ox*s + kx*d - pad_left] * w[m, c - group start, ky, kx]
/// (terms in the padding are zero); then SiLU, then + residual. Returns the
/// f64 results and the sum of |terms| of each.
fn naive_conv(
    p: &Conv,
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>, [usize; 4]) {
    let [n, _, h, wd] = xs;
    let [m, cg, kh, kw] = ws;
    let mg = m / p.group;
    let [pt, pl, pb, pr] = p.pads;
    let ho = (h + pt + pb - (p.dilation[0] * (kh - 1) + 1)) / p.stride[0] + 1;
    let wo = (wd + pl + pr - (p.dilation[1] * (kw - 1) + 1)) / p.stride[1] + 1;
    let ys = [n, m, ho, wo];
    let (mut y, mut scale) = (Vec::new(), Vec::new());
    for ni in 0..n {
        for mi in 0..m {
            let g = mi / mg;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut sum = bias.map_or(0.0, |b| b[mi] as f64);
                    let mut mag = sum.abs();
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - pt as isize;
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize - pl as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[offset(&xs, &[ni, g * cg + ci, iy as usize, ix as usize])] as f64;
                                let t = xv * w[offset(&ws, &[mi, ci, ky, kx])] as f64;
                                sum += t;
                                mag += t.abs();
                            }
                        }
                    }
                    if p.activation == Activation::Silu {
                        sum /= 1.0 + (-sum).exp();
                    }
                    if let Some(r) = residual {
                        let rv = r[offset(&ys, &[ni, mi, oy, ox])] as f64;
                        sum += rv;
                        mag += rv.abs();
                    }
                    y.push(sum);
                    scale.push(mag);
                }
            }
        }
    }
    (y, scale, ys)
}

fn conv_params(kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2], pads: [usize; 4], group: usize) -> Conv {
    Conv { kernel, stride, dilation, pads, group, activation: Activation::None, residual: false }
}

/// Runs `p` on random data of input shape `xs` with `m` output channels and
/// compares with the naive conv.
fn check_conv(what: &str, p: Conv, xs: [usize; 4], m: usize, with_bias: bool, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let ws = [m, xs[1] / p.group, p.kernel[0], p.kernel[1]];
    let x = random(&mut rng, xs.iter().product());
    let w = random(&mut rng, ws.iter().product());
    let bias = with_bias.then(|| random(&mut rng, m));
    let ho = (xs[2] + p.pads[0] + p.pads[2] - (p.dilation[0] * (p.kernel[0] - 1) + 1)) / p.stride[0] + 1;
    let wo = (xs[3] + p.pads[1] + p.pads[3] - (p.dilation[1] * (p.kernel[1] - 1) + 1)) / p.stride[1] + 1;
    let ys = [xs[0], m, ho, wo];
    let residual = p.residual.then(|| random(&mut rng, ys.iter().product()));
    let (want, scale, _) = naive_conv(&p, &x, xs, &w, ws, bias.as_deref(), residual.as_deref());

    let mut inputs: Vec<(&[usize], &[f32])> = vec![(&xs[..], &x[..]), (&ws[..], &w[..])];
    let bias_shape = [m];
    if let Some(b) = &bias {
        inputs.push((&bias_shape[..], &b[..]));
    }
    if let Some(r) = &residual {
        inputs.push((&ys[..], &r[..]));
    }
    let got = run_op(Op::Conv(p), &inputs, &[&ys]);
    assert_sums_close(what, &got[0], &want, &scale);
}

#[test]
fn conv_matches_the_spec() {
    // (what, params, input shape, output channels, bias)
    let cases = [
        ("3x3 pads 1", conv_params([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1), [2, 3, 7, 11], 5, true),
        ("depthwise 3x3", conv_params([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 7), [1, 7, 13, 9], 7, true),
        ("depthwise x2 5x5 stride 2", conv_params([5, 5], [2, 2], [1, 1], [2, 2, 2, 2], 5), [2, 5, 11, 7], 10, true),
        ("stride 2 asymmetric pads", conv_params([3, 3], [2, 2], [1, 1], [1, 0, 0, 1], 1), [1, 4, 11, 13], 6, false),
        ("stride 2 pads bottom/right", conv_params([3, 3], [2, 2], [1, 1], [0, 0, 1, 1], 1), [1, 3, 10, 12], 5, true),
        ("groups 3, 3x1, dilation", conv_params([3, 1], [1, 2], [2, 1], [2, 0, 1, 3], 3), [1, 6, 9, 8], 9, true),
        ("1x1", conv_params([1, 1], [1, 1], [1, 1], [0, 0, 0, 0], 1), [1, 37, 5, 7], 13, true),
        ("k 576, several tiles", conv_params([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1), [1, 64, 23, 29], 17, true),
        ("kernel wider than input", conv_params([5, 5], [1, 1], [1, 1], [2, 2, 2, 2], 1), [1, 2, 2, 3], 3, false),
        ("stride 3 dilation 2", conv_params([3, 2], [3, 3], [2, 2], [1, 2, 0, 1], 1), [3, 2, 17, 19], 4, true),
    ];
    for (i, (what, p, xs, m, bias)) in cases.into_iter().enumerate() {
        check_conv(what, p, xs, m, bias, 100 + i as u64);
    }
}

#[test]
fn conv_fused_epilogue_matches_the_spec() {
    let silu = |mut p: Conv, residual: bool| {
        p.activation = Activation::Silu;
        p.residual = residual;
        p
    };
    let p = conv_params([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1);
    check_conv("SiLU", silu(p.clone(), false), [2, 5, 9, 7], 5, true, 1);
    check_conv("SiLU + residual", silu(p.clone(), true), [2, 5, 9, 7], 5, true, 2);
    check_conv("residual, no bias", Conv { residual: true, ..p }, [1, 3, 7, 5], 3, false, 3);
    let dw = conv_params([3, 3], [2, 2], [1, 1], [1, 1, 0, 0], 11);
    check_conv("depthwise stride 2 SiLU + residual", silu(dw, true), [1, 11, 13, 17], 11, false, 4);
}

/// Fusing Sigmoid -> Mul -> Add into the conv must not change a bit: both
/// forms run the same sum and the same f32 sigmoid.
#[test]
fn fused_silu_residual_equals_the_unfused_ops() {
    let mut rng = SplitMix64::new(7);
    for (xs, m, group, stride, pads) in [
        ([2usize, 6, 11, 13], 6, 1, [2, 2], [1, 0, 0, 1]),
        ([1, 8, 9, 7], 8, 8, [1, 1], [1, 1, 1, 1]),
        ([1, 4, 5, 5], 4, 2, [1, 1], [1, 1, 1, 1]),
    ] {
        let ws = [m, xs[1] / group, 3, 3];
        let ho = (xs[2] + pads[0] + pads[2] - 3) / stride[0] + 1;
        let wo = (xs[3] + pads[1] + pads[3] - 3) / stride[1] + 1;
        let ys = [xs[0], m, ho, wo];
        let (x, r) = (random(&mut rng, xs.iter().product()), random(&mut rng, ys.iter().product()));
        // Large weights so that SiLU sees values well outside [-1, 1].
        let w: Vec<f32> = random(&mut rng, ws.iter().product()).iter().map(|v| v * 4.0).collect();
        let bias = random(&mut rng, m);
        let p = Conv { residual: false, ..conv_params([3, 3], stride, [1, 1], pads, group) };

        let mut fused = Builder::default();
        let (xi, ri) = (fused.input(&xs), fused.input(&ys));
        let (wi, bi) = (fused.constant(&ws, w.clone()), fused.constant(&[m], bias.clone()));
        let p_fused = Conv { activation: Activation::Silu, residual: true, ..p.clone() };
        let y = fused.node1(Op::Conv(p_fused), &[xi, wi, bi, ri], &ys);
        fused.output(y);

        let mut plain = Builder::default();
        let (xi, ri) = (plain.input(&xs), plain.input(&ys));
        let (wi, bi) = (plain.constant(&ws, w), plain.constant(&[m], bias));
        let conv = plain.node1(Op::Conv(p), &[xi, wi, bi], &ys);
        let sig = plain.node1(Op::Sigmoid, &[conv], &ys);
        let silu = plain.node1(Op::Mul, &[conv, sig], &ys);
        let y = plain.node1(Op::Add, &[silu, ri], &ys);
        plain.output(y);

        let a = crate::engine::reference::run(&fused.graph, &[&x, &r]).unwrap();
        let b = crate::engine::reference::run(&plain.graph, &[&x, &r]).unwrap();
        assert_exact(&format!("fused vs unfused, input {xs:?} group {group}"), &a[0], &b[0]);
    }
}

/// The ONNX operator docs' Conv examples: x = 0..n as a 5x5 or 7x5 image,
/// a 3x3 kernel of ones.
#[test]
fn conv_onnx_doc_examples() {
    let x55: Vec<f32> = (0..25).map(|v| v as f32).collect();
    let x75: Vec<f32> = (0..35).map(|v| v as f32).collect();
    let check =
        |what: &str, xs: [usize; 4], x: &[f32], stride: [usize; 2], pads: [usize; 4], ys: [usize; 4], want: &[f32]| {
            let p = conv_params([3, 3], stride, [1, 1], pads, 1);
            let got = run_op(Op::Conv(p), &[(&xs, x), (&[1, 1, 3, 3], &[1.0; 9])], &[&ys]);
            assert_exact(what, &got[0], want);
        };
    #[rustfmt::skip]
    let with_padding = [
        12., 21., 27., 33., 24.,
        33., 54., 63., 72., 51.,
        63., 99., 108., 117., 81.,
        93., 144., 153., 162., 111.,
        72., 111., 117., 123., 84.,
    ];
    check("conv (with padding)", [1, 1, 5, 5], &x55, [1, 1], [1; 4], [1, 1, 5, 5], &with_padding);
    let without_padding = [54., 63., 72., 99., 108., 117., 144., 153., 162.];
    check("conv (without padding)", [1, 1, 5, 5], &x55, [1, 1], [0; 4], [1, 1, 3, 3], &without_padding);
    let strides_padding = [12., 27., 24., 63., 108., 81., 123., 198., 141., 112., 177., 124.];
    check("conv_with_strides_padding", [1, 1, 7, 5], &x75, [2, 2], [1; 4], [1, 1, 4, 3], &strides_padding);
    let strides_no_padding = [54., 72., 144., 162., 234., 252.];
    check("conv_with_strides_no_padding", [1, 1, 7, 5], &x75, [2, 2], [0; 4], [1, 1, 3, 2], &strides_no_padding);
    let asymmetric = [21., 33., 99., 117., 189., 207., 171., 183.];
    let what = "conv_with_strides_and_asymmetric_padding";
    check(what, [1, 1, 7, 5], &x75, [2, 2], [1, 0, 1, 0], [1, 1, 4, 2], &asymmetric);
}

// ------------------------------------------------------- ConvTranspose

/// ONNX ConvTranspose from the spec, as a scatter: input pixel (iy, ix) of
/// channel c (group g) adds x * w[c, m, ky, kx] to output channel
/// g * M/group + m at (iy*s + ky*d - pad_top, ix*s + kx*d - pad_left), where
/// that is inside the output; every output starts at its bias.
fn naive_conv_transpose(
    p: &ConvTranspose,
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let [_, mg, kh, kw] = ws;
    let (cg, m) = (c / p.group, mg * p.group);
    let [pt, pl, pb, pr] = p.pads;
    let ho = p.stride[0] * (h - 1) + p.output_padding[0] + p.dilation[0] * (kh - 1) + 1 - pt - pb;
    let wo = p.stride[1] * (wd - 1) + p.output_padding[1] + p.dilation[1] * (kw - 1) + 1 - pl - pr;
    let ys = [n, m, ho, wo];
    let mut y = vec![0.0f64; ys.iter().product()];
    let mut scale = vec![0.0f64; y.len()];
    for ni in 0..n {
        for mi in 0..m {
            for oy in 0..ho {
                for ox in 0..wo {
                    let b = bias.map_or(0.0, |b| b[mi] as f64);
                    y[offset(&ys, &[ni, mi, oy, ox])] = b;
                    scale[offset(&ys, &[ni, mi, oy, ox])] = b.abs();
                }
            }
        }
        for ci in 0..c {
            let g = ci / cg;
            for iy in 0..h {
                for ix in 0..wd {
                    for mi in 0..mg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy = (iy * p.stride[0] + ky * p.dilation[0]) as isize - pt as isize;
                                let ox = (ix * p.stride[1] + kx * p.dilation[1]) as isize - pl as isize;
                                if oy < 0 || ox < 0 || oy >= ho as isize || ox >= wo as isize {
                                    continue;
                                }
                                let t =
                                    x[offset(&xs, &[ni, ci, iy, ix])] as f64 * w[offset(&ws, &[ci, mi, ky, kx])] as f64;
                                let at = offset(&ys, &[ni, g * mg + mi, oy as usize, ox as usize]);
                                y[at] += t;
                                scale[at] += t.abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (y, scale, ys)
}

#[test]
fn conv_transpose_matches_the_spec() {
    let ct = |kernel, stride, dilation, pads, output_padding, group| ConvTranspose {
        kernel,
        stride,
        dilation,
        pads,
        output_padding,
        group,
    };
    // (what, params, input shape, M/group, bias)
    let cases = [
        (
            "stride 2 kernel 2 (YOLO proto upsample)",
            ct([2, 2], [2, 2], [1, 1], [0; 4], [0, 0], 1),
            [2, 5, 7, 9],
            3,
            true,
        ),
        ("stride 2 kernel 2, 17 channels", ct([2, 2], [2, 2], [1, 1], [0; 4], [0, 0], 1), [1, 17, 5, 3], 13, true),
        ("kernel 3 stride 1", ct([3, 3], [1, 1], [1, 1], [0; 4], [0, 0], 1), [1, 3, 4, 5], 2, false),
        (
            "groups, pads, output_padding, dilation",
            ct([3, 2], [3, 2], [1, 2], [1, 0, 2, 1], [1, 1], 2),
            [1, 4, 5, 7],
            3,
            true,
        ),
        (
            "depthwise stride 2 kernel 3 pads 1",
            ct([3, 3], [2, 2], [1, 1], [1, 1, 1, 1], [1, 1], 3),
            [2, 3, 5, 5],
            1,
            true,
        ),
    ];
    for (i, (what, p, xs, mg, with_bias)) in cases.into_iter().enumerate() {
        let mut rng = SplitMix64::new(200 + i as u64);
        let ws = [xs[1], mg, p.kernel[0], p.kernel[1]];
        let m = mg * p.group;
        let x = random(&mut rng, xs.iter().product());
        let w = random(&mut rng, ws.iter().product());
        let bias = with_bias.then(|| random(&mut rng, m));
        let (want, scale, ys) = naive_conv_transpose(&p, &x, xs, &w, ws, bias.as_deref());
        let bias_shape = [m];
        let mut inputs: Vec<(&[usize], &[f32])> = vec![(&xs[..], &x[..]), (&ws[..], &w[..])];
        if let Some(b) = &bias {
            inputs.push((&bias_shape[..], &b[..]));
        }
        let got = run_op(Op::ConvTranspose(p), &inputs, &[&ys]);
        assert_sums_close(what, &got[0], &want, &scale);
    }
}

/// The ONNX docs' ConvTranspose examples: x = 0..9 as 3x3, weights of ones
/// [1, 2, 3, 3] (two identical output channels).
#[test]
fn conv_transpose_onnx_doc_examples() {
    let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
    let w = [1.0f32; 18];
    let plain = ConvTranspose {
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        pads: [0; 4],
        output_padding: [0, 0],
        group: 1,
    };
    let got = run_op(Op::ConvTranspose(plain.clone()), &[(&[1, 1, 3, 3], &x), (&[1, 2, 3, 3], &w)], &[&[1, 2, 5, 5]]);
    let channel = [
        0., 1., 3., 3., 2., 3., 8., 15., 12., 7., 9., 21., 36., 27., 15., 9., 20., 33., 24., 13., 6., 13., 21., 15., 8.,
    ];
    assert_exact("convtranspose", &got[0], &[channel, channel].concat());

    let pads = ConvTranspose { stride: [3, 2], pads: [1, 2, 1, 2], ..plain };
    let got = run_op(Op::ConvTranspose(pads), &[(&[1, 1, 3, 3], &x), (&[1, 2, 3, 3], &w)], &[&[1, 2, 7, 3]]);
    let channel = [1., 1., 3., 1., 1., 3., 7., 4., 9., 7., 4., 9., 7., 4., 9., 13., 7., 15., 13., 7., 15.];
    assert_exact("convtranspose_pads", &got[0], &[channel, channel].concat());
}

// ------------------------------------------------------------- MaxPool

/// ONNX MaxPool: the max over the window's samples inside the input
/// (padding is -inf, so it never wins unless the window is all padding).
fn naive_max_pool(p: &MaxPool, x: &[f32], xs: [usize; 4]) -> (Vec<f32>, [usize; 4]) {
    let [n, c, h, w] = xs;
    let [pt, pl, pb, pr] = p.pads;
    let ho = (h + pt + pb - p.kernel[0]) / p.stride[0] + 1;
    let wo = (w + pl + pr - p.kernel[1]) / p.stride[1] + 1;
    let mut y = Vec::new();
    for ni in 0..n {
        for ci in 0..c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut best = f32::NEG_INFINITY;
                    for ky in 0..p.kernel[0] {
                        for kx in 0..p.kernel[1] {
                            let iy = (oy * p.stride[0] + ky) as isize - pt as isize;
                            let ix = (ox * p.stride[1] + kx) as isize - pl as isize;
                            if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                let v = x[offset(&xs, &[ni, ci, iy as usize, ix as usize])];
                                if v > best {
                                    best = v;
                                }
                            }
                        }
                    }
                    y.push(best);
                }
            }
        }
    }
    (y, [n, c, ho, wo])
}

#[test]
fn max_pool_matches_the_spec() {
    let mp = |kernel, stride, pads| MaxPool { kernel, stride, pads };
    let cases = [
        ("SPPF 5x5 pads 2", mp([5, 5], [1, 1], [2, 2, 2, 2]), [1, 3, 7, 9]),
        ("2x2 stride 2, odd size", mp([2, 2], [2, 2], [0; 4]), [2, 3, 7, 11]),
        ("3x3 stride 2 asymmetric pads", mp([3, 3], [2, 2], [0, 1, 2, 0]), [1, 2, 13, 5]),
        ("3x2 stride (1, 3), pads 2 (all-padding windows)", mp([3, 2], [1, 3], [2, 0, 2, 1]), [1, 1, 3, 7]),
    ];
    for (i, (what, p, xs)) in cases.into_iter().enumerate() {
        let x = random(&mut SplitMix64::new(300 + i as u64), xs.iter().product());
        let (want, ys) = naive_max_pool(&p, &x, xs);
        let got = run_op(Op::MaxPool(p), &[(&xs, &x)], &[&ys]);
        assert_exact(what, &got[0], &want);
    }
}

#[test]
fn max_pool_onnx_doc_examples() {
    let x: Vec<f32> = (1..=25).map(|v| v as f32).collect();
    let pads = MaxPool { kernel: [5, 5], stride: [1, 1], pads: [2, 2, 2, 2] };
    let got = run_op(Op::MaxPool(pads), &[(&[1, 1, 5, 5], &x)], &[&[1, 1, 5, 5]]);
    let want = [
        13., 14., 15., 15., 15., 18., 19., 20., 20., 20., 23., 24., 25., 25., 25., 23., 24., 25., 25., 25., 23., 24.,
        25., 25., 25.,
    ];
    assert_exact("maxpool_2d_precomputed_pads", &got[0], &want);
    let strides = MaxPool { kernel: [2, 2], stride: [2, 2], pads: [0; 4] };
    let got = run_op(Op::MaxPool(strides), &[(&[1, 1, 5, 5], &x)], &[&[1, 1, 2, 2]]);
    assert_exact("maxpool_2d_precomputed_strides", &got[0], &[7., 9., 17., 19.]);
}

// -------------------------------------------------------------- Resize

#[test]
fn resize_nearest_matches_the_spec() {
    for (xs, scales) in [([2usize, 3, 5, 7], [1usize, 1, 2, 3]), ([1, 2, 3, 1], [2, 3, 1, 5])] {
        let x = random(&mut SplitMix64::new(400), xs.iter().product());
        let ys: Vec<usize> = xs.iter().zip(&scales).map(|(d, s)| d * s).collect();
        // asymmetric: x_original = x_resized / scale; nearest_mode floor.
        let want: Vec<f32> = (0..ys.iter().product())
            .map(|flat| {
                let index: Vec<usize> = unravel(&ys, flat).iter().zip(&scales).map(|(i, s)| i / s).collect();
                x[offset(&xs, &index)]
            })
            .collect();
        let got = run_op(Op::ResizeNearest { scales: scales.to_vec() }, &[(&xs, &x)], &[&ys]);
        assert_exact(&format!("resize {xs:?} x {scales:?}"), &got[0], &want);
    }
}

/// resize_upsample_scales_nearest from the ONNX docs (its coordinate mode
/// differs, but at integer scales every mode picks the same pixels).
#[test]
fn resize_onnx_doc_example() {
    let got =
        run_op(Op::ResizeNearest { scales: vec![1, 1, 2, 3] }, &[(&[1, 1, 2, 2], &[1., 2., 3., 4.])], &[&[1, 1, 4, 6]]);
    let want = [1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2., 3., 3., 3., 4., 4., 4., 3., 3., 3., 4., 4., 4.];
    assert_exact("resize_upsample_scales_nearest", &got[0], &want);
}

// ------------------------------------------------- Concat, Split, Slice

#[test]
fn concat_matches_the_spec() {
    let mut rng = SplitMix64::new(500);
    for axis in 0..3 {
        let shapes: Vec<Vec<usize>> = [3usize, 1, 4]
            .iter()
            .map(|&len| {
                let mut s = vec![2, 5, 3];
                s[axis] = len;
                s
            })
            .collect();
        let data: Vec<Vec<f32>> = shapes.iter().map(|s| random(&mut rng, s.iter().product())).collect();
        let mut ys = shapes[0].clone();
        ys[axis] = 8;
        // Output index i along `axis` comes from the input whose range holds it.
        let want: Vec<f32> = (0..ys.iter().product())
            .map(|flat| {
                let mut index = unravel(&ys, flat);
                let mut which = 0;
                while index[axis] >= shapes[which][axis] {
                    index[axis] -= shapes[which][axis];
                    which += 1;
                }
                data[which][offset(&shapes[which], &index)]
            })
            .collect();
        let inputs: Vec<(&[usize], &[f32])> =
            shapes.iter().zip(&data).map(|(s, d)| (s.as_slice(), d.as_slice())).collect();
        let got = run_op(Op::Concat { axis }, &inputs, &[&ys]);
        assert_exact(&format!("concat axis {axis}"), &got[0], &want);
    }
    // ONNX docs: [[1, 2], [3, 4]] and [[5, 6], [7, 8]] along axis 1.
    let got = run_op(Op::Concat { axis: 1 }, &[(&[2, 2], &[1., 2., 3., 4.]), (&[2, 2], &[5., 6., 7., 8.])], &[&[2, 4]]);
    assert_exact("concat docs", &got[0], &[1., 2., 5., 6., 3., 4., 7., 8.]);
}

#[test]
fn split_matches_the_spec() {
    let xs = [3usize, 7, 5];
    let x = random(&mut SplitMix64::new(600), xs.iter().product());
    for (axis, sizes) in [(1usize, vec![2usize, 4, 1]), (0, vec![1, 2]), (2, vec![5]), (2, vec![2, 0, 3])] {
        let shapes: Vec<Vec<usize>> = sizes
            .iter()
            .map(|&s| {
                let mut shape = xs.to_vec();
                shape[axis] = s;
                shape
            })
            .collect();
        let out_shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let got = run_op(Op::Split { axis, sizes: sizes.clone() }, &[(&xs, &x)], &out_shapes);
        let mut start = 0;
        for (piece, (shape, got)) in shapes.iter().zip(&got).enumerate() {
            let want: Vec<f32> = (0..shape.iter().product())
                .map(|flat| {
                    let mut index = unravel(shape, flat);
                    index[axis] += start;
                    x[offset(&xs, &index)]
                })
                .collect();
            assert_exact(&format!("split axis {axis} {sizes:?} piece {piece}"), got, &want);
            start += shape[axis];
        }
    }
    // ONNX docs: [1..6] split [2, 4].
    let got = run_op(Op::Split { axis: 0, sizes: vec![2, 4] }, &[(&[6], &[1., 2., 3., 4., 5., 6.])], &[&[2], &[4]]);
    assert_exact("split docs 0", &got[0], &[1., 2.]);
    assert_exact("split docs 1", &got[1], &[3., 4., 5., 6.]);
}

#[test]
fn slice_matches_the_spec() {
    let xs = [7usize, 11, 5];
    let x = random(&mut SplitMix64::new(700), xs.iter().product());
    // [axes, starts, ends, steps]
    let cases: [[&[usize]; 4]; 5] = [
        [&[2, 0, 1], &[1, 2, 0], &[5, 7, 11], &[3, 2, 4]],
        [&[1], &[3], &[10], &[1]],
        [&[0, 2], &[6, 0], &[7, 5], &[5, 5]],
        [&[1], &[4], &[4], &[2]], // empty
        [&[], &[], &[], &[]],     // everything
    ];
    for [axes, starts, ends, steps] in cases {
        // Per axis: indices start, start + step, ... below end.
        let mut first = [0usize; 3];
        let mut step = [1usize; 3];
        let mut ys = xs;
        for i in 0..axes.len() {
            first[axes[i]] = starts[i];
            step[axes[i]] = steps[i];
            ys[axes[i]] = (starts[i]..ends[i]).step_by(steps[i]).count();
        }
        let want: Vec<f32> = (0..ys.iter().product())
            .map(|flat| {
                let index: Vec<usize> =
                    unravel(&ys, flat).iter().enumerate().map(|(a, &i)| first[a] + i * step[a]).collect();
                x[offset(&xs, &index)]
            })
            .collect();
        let op = Op::Slice { axes: axes.to_vec(), starts: starts.to_vec(), ends: ends.to_vec(), steps: steps.to_vec() };
        let got = run_op(op, &[(&xs, &x)], &[&ys]);
        assert_exact(&format!("slice axes {axes:?} starts {starts:?} ends {ends:?} steps {steps:?}"), &got[0], &want);
    }
    // ONNX docs example 1: [[1, 2, 3, 4], [5, 6, 7, 8]], axes [0, 1],
    // starts [1, 0], ends [2, 3], steps [1, 2] -> [[5, 7]].
    let op = Op::Slice { axes: vec![0, 1], starts: vec![1, 0], ends: vec![2, 3], steps: vec![1, 2] };
    let got = run_op(op, &[(&[2, 4], &[1., 2., 3., 4., 5., 6., 7., 8.])], &[&[1, 2]]);
    assert_exact("slice docs", &got[0], &[5., 7.]);
}

// ------------------------------------------------- Reshape, Transpose

#[test]
fn reshape_copies() {
    let x = random(&mut SplitMix64::new(800), 30);
    let got = run_op(Op::Reshape { shape: vec![5, 6] }, &[(&[2, 3, 5], &x)], &[&[5, 6]]);
    assert_exact("reshape", &got[0], &x);
}

#[test]
fn transpose_matches_the_spec() {
    let xs = [2usize, 3, 5, 7];
    let x = random(&mut SplitMix64::new(900), xs.iter().product());
    for perm in [[0usize, 2, 3, 1], [3, 1, 0, 2], [0, 1, 2, 3], [3, 2, 1, 0]] {
        let ys: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
        // Output index i reads input index j with j[perm[a]] = i[a].
        let want: Vec<f32> = (0..x.len())
            .map(|flat| {
                let out = unravel(&ys, flat);
                let mut index = [0usize; 4];
                for a in 0..4 {
                    index[perm[a]] = out[a];
                }
                x[offset(&xs, &index)]
            })
            .collect();
        let got = run_op(Op::Transpose { perm: perm.to_vec() }, &[(&xs, &x)], &[&ys]);
        assert_exact(&format!("transpose {perm:?}"), &got[0], &want);
    }
    let got = run_op(Op::Transpose { perm: vec![1, 0] }, &[(&[2, 3], &[1., 2., 3., 4., 5., 6.])], &[&[3, 2]]);
    assert_exact("transpose 2x3", &got[0], &[1., 4., 2., 5., 3., 6.]);
}

// -------------------------------------------------------------- MatMul

/// numpy matmul from its definition: promote 1-D operands, broadcast the
/// batch axes (a size-1 axis repeats), sum over k; drop promoted axes.
fn naive_matmul(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let a2: Vec<usize> = if a_shape.len() == 1 { vec![1, a_shape[0]] } else { a_shape.to_vec() };
    let b2: Vec<usize> = if b_shape.len() == 1 { vec![b_shape[0], 1] } else { b_shape.to_vec() };
    let rank = a2.len().max(b2.len());
    let pad = |s: &[usize]| [vec![1; rank - s.len()], s.to_vec()].concat();
    let (a4, b4) = (pad(&a2), pad(&b2));
    let batch: Vec<usize> = (0..rank - 2)
        .map(|i| {
            assert!(a4[i] == b4[i] || a4[i] == 1 || b4[i] == 1);
            a4[i].max(b4[i])
        })
        .collect();
    let (m, k, n) = (a4[rank - 2], a4[rank - 1], b4[rank - 1]);
    let (mut y, mut scale) = (Vec::new(), Vec::new());
    for bflat in 0..batch.iter().product() {
        let bi = unravel(&batch, bflat);
        let pick =
            |s: &[usize]| -> Vec<usize> { bi.iter().zip(s).map(|(&i, &d)| if d == 1 { 0 } else { i }).collect() };
        let (ab, bb) = (pick(&a4), pick(&b4));
        for i in 0..m {
            for j in 0..n {
                let (mut sum, mut mag) = (0.0f64, 0.0f64);
                for kk in 0..k {
                    let av = a[offset(&a4, &[ab.clone(), vec![i, kk]].concat())] as f64;
                    let bv = b[offset(&b4, &[bb.clone(), vec![kk, j]].concat())] as f64;
                    sum += av * bv;
                    mag += (av * bv).abs();
                }
                y.push(sum);
                scale.push(mag);
            }
        }
    }
    let mut shape = batch;
    if a_shape.len() > 1 {
        shape.push(m);
    }
    if b_shape.len() > 1 {
        shape.push(n);
    }
    (y, scale, shape)
}

#[test]
fn matmul_matches_numpy() {
    let cases: [(&[usize], &[usize]); 9] = [
        (&[2, 3, 5, 7], &[7, 4]),
        (&[2, 3, 11, 5], &[2, 3, 5, 11]), // attention: [B, h, n, d] x [B, h, d, n]
        (&[1, 3, 5, 7], &[4, 1, 7, 2]),   // both sides broadcast
        (&[7], &[2, 7, 3]),               // 1-D left
        (&[3, 5, 7], &[7]),               // 1-D right
        (&[7], &[7]),                     // dot product, rank-0 result
        (&[13, 37], &[37, 29]),           // several column tiles and row blocks
        (&[1, 1], &[1, 1]),
        (&[2, 6, 0], &[0, 3]), // k = 0: zeros
    ];
    for (i, (a_shape, b_shape)) in cases.into_iter().enumerate() {
        let mut rng = SplitMix64::new(1000 + i as u64);
        let a = random(&mut rng, a_shape.iter().product());
        let b = random(&mut rng, b_shape.iter().product());
        let (want, scale, ys) = naive_matmul(&a, a_shape, &b, b_shape);
        let got = run_op(Op::MatMul, &[(a_shape, &a), (b_shape, &b)], &[&ys]);
        assert_sums_close(&format!("matmul {a_shape:?} x {b_shape:?}"), &got[0], &want, &scale);
    }
    // [[1, 2, 3], [4, 5, 6]] x [1, 0, -1] = [-2, -2]
    let got = run_op(Op::MatMul, &[(&[2, 3], &[1., 2., 3., 4., 5., 6.]), (&[3], &[1., 0., -1.])], &[&[2]]);
    assert_exact("matmul 1-D right", &got[0], &[-2., -2.]);
}

// ------------------------------------------------------ Elementwise

#[test]
fn binary_ops_broadcast_like_numpy() {
    type F = fn(f32, f32) -> f32;
    let ops: [(Op, F); 4] =
        [(Op::Add, |a, b| a + b), (Op::Sub, |a, b| a - b), (Op::Mul, |a, b| a * b), (Op::Div, |a, b| a / b)];
    let cases: [(&[usize], &[usize]); 8] = [
        (&[2, 3, 5, 7], &[1, 3, 1, 1]), // per-channel [1, C, 1, 1] onto [N, C, H, W]
        (&[3, 5, 7], &[3, 1, 7]),       // [N, 1, W] onto [N, H, W]
        (&[3, 1, 7], &[3, 5, 7]),
        (&[1, 5, 1], &[3, 1, 4]), // both sides broadcast
        (&[5], &[2, 3, 5]),
        (&[2, 3], &[]), // scalar
        (&[4, 1, 3], &[4, 2, 1]),
        (&[2, 3, 5], &[2, 3, 5]),
    ];
    for (i, (a_shape, b_shape)) in cases.into_iter().enumerate() {
        let mut rng = SplitMix64::new(1100 + i as u64);
        let a = random(&mut rng, a_shape.iter().product());
        let b = random(&mut rng, b_shape.iter().product());
        let rank = a_shape.len().max(b_shape.len());
        let pad = |s: &[usize]| [vec![1; rank - s.len()], s.to_vec()].concat();
        let (a4, b4) = (pad(a_shape), pad(b_shape));
        let ys: Vec<usize> = a4.iter().zip(&b4).map(|(&x, &y)| x.max(y)).collect();
        // Each output index reads index 0 along the inputs' size-1 axes.
        let pick = |s: &[usize], index: &[usize]| -> Vec<usize> {
            index.iter().zip(s).map(|(&i, &d)| if d == 1 { 0 } else { i }).collect()
        };
        for (op, f) in &ops {
            let want: Vec<f32> = (0..ys.iter().product())
                .map(|flat| {
                    let index = unravel(&ys, flat);
                    f(a[offset(&a4, &pick(&a4, &index))], b[offset(&b4, &pick(&b4, &index))])
                })
                .collect();
            let got = run_op(op.clone(), &[(a_shape, &a), (b_shape, &b)], &[&ys]);
            assert_exact(&format!("{} {a_shape:?} with {b_shape:?}", op.onnx_type()), &got[0], &want);
        }
    }
    let got = run_op(Op::Add, &[(&[2, 3], &[1., 2., 3., 4., 5., 6.]), (&[3], &[10., 20., 30.])], &[&[2, 3]]);
    assert_exact("add [2, 3] + [3]", &got[0], &[11., 22., 33., 14., 25., 36.]);
}

#[test]
fn sigmoid_is_accurate_and_never_overflows() {
    let mut x = vec![0.0f32, -0.0, 1.0, -1.0, 20.0, -20.0, 87.0, -87.0, 89.0, -89.0, 100.0, -100.0, 1000.0, -1000.0];
    x.extend([f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY]);
    x.extend(random(&mut SplitMix64::new(1200), 101).iter().map(|v| v * 30.0));
    let got = run_op(Op::Sigmoid, &[(&[x.len()], &x)], &[&[x.len()]]);
    // 1 / (1 + e^-x) in f64 (which has the range for |x| <= 1000), clamped
    // to its limits beyond.
    let want: Vec<f64> = x.iter().map(|&v| 1.0 / (1.0 + (-(v as f64)).exp())).collect();
    assert!(got[0].iter().all(|v| (0.0..=1.0).contains(v)), "sigmoid left [0, 1]: {:?}", got[0]);
    assert_relative("sigmoid", &got[0], &want);
    assert_eq!(&got[0][14..18], &[1.0, 0.0, 1.0, 0.0]);
}

#[test]
fn softmax_matches_the_spec() {
    let xs = [3usize, 7, 5];
    let x: Vec<f32> = random(&mut SplitMix64::new(1300), 105).iter().map(|v| v * 10.0).collect();
    for axis in 0..3 {
        // exp(x) / sum over the axis of exp(x), in f64 (no overflow at |x| <= 10).
        let want: Vec<f64> = (0..x.len())
            .map(|flat| {
                let index = unravel(&xs, flat);
                let sum: f64 = (0..xs[axis])
                    .map(|j| {
                        let mut other = index.clone();
                        other[axis] = j;
                        (x[offset(&xs, &other)] as f64).exp()
                    })
                    .sum();
                (x[flat] as f64).exp() / sum
            })
            .collect();
        let got = run_op(Op::Softmax { axis }, &[(&xs, &x)], &[&xs]);
        assert_relative_within(&format!("softmax axis {axis}"), &got[0], &want, 3e-6);
    }
    // ONNX docs: softmax([[-1, 0, 1]]) = [[0.09003058, 0.24472848, 0.66524094]];
    // shifted by +-1000 it must not overflow (the max is subtracted first).
    let want = [0.09003057317038046, 0.24472847105479767, 0.6652409557748219];
    for shift in [0.0f32, 1000.0, -1000.0] {
        let x = [shift - 1.0, shift, shift + 1.0];
        let got = run_op(Op::Softmax { axis: 1 }, &[(&[1, 3], &x)], &[&[1, 3]]);
        assert_relative_within(&format!("softmax docs shifted {shift}"), &got[0], &want, 3e-6);
    }
}
