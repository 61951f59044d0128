//! A graph with YOLO11n-seg's layers (Ultralytics' yolo11n-seg.yaml at
//! depth 0.5, width 0.25: the same convs, C3k2/C3k/SPPF/C2PSA blocks,
//! attention, upsampling, Proto with its ConvTranspose, the Segment head and
//! the DFL/box decode), with random weights and BatchNorm folded. It stands
//! in for the imported model until import lands: it exercises every op at
//! real sizes, and at 640x640 it is the speed test the brief asks for.
//!
//! Built fused (Conv+SiLU, Conv+SiLU+Add, as the fusion passes will leave
//! it) or unfused (Conv, Sigmoid, Mul, Add as ONNX has them); both must give
//! bit-identical outputs.

use std::time::Instant;

use super::*;
use crate::engine::build::ir::{Activation, Conv, ConvTranspose, MaxPool};
use crate::engine::reference::run;

struct Net {
    b: Builder,
    rng: SplitMix64,
    fused: bool,
    /// Multiply-adds of every Conv, ConvTranspose and MatMul.
    macs: u64,
}

/// One conv's shape: output channels, k x k kernel, stride, groups, activation.
#[derive(Clone, Copy)]
struct Layer {
    cout: usize,
    k: usize,
    s: usize,
    group: usize,
    act: Act,
}

#[derive(Clone, Copy, PartialEq)]
enum Act {
    Silu,
    Linear,
}

impl Net {
    fn shape4(&self, x: ValueId) -> [usize; 4] {
        self.b.shape(x).try_into().expect("NCHW")
    }

    /// Conv (k x k, stride s, pads k/2, bias) with SiLU or not, then
    /// + `residual`: one node when fused, else Conv, Sigmoid, Mul, Add.
    fn conv_full(&mut self, x: ValueId, layer: Layer, residual: Option<ValueId>) -> ValueId {
        let Layer { cout, k, s, group, act } = layer;
        let [n, c, h, w] = self.shape4(x);
        let pad = k / 2;
        let (ho, wo) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
        let fan_in = c / group * k * k;
        // Uniform with variance 1 / fan_in keeps activations O(1) through the stack.
        let scale = (3.0 / fan_in as f32).sqrt();
        let weight: Vec<f32> = random(&mut self.rng, cout * fan_in).iter().map(|v| v * scale).collect();
        let bias: Vec<f32> = random(&mut self.rng, cout).iter().map(|v| v * 0.1).collect();
        let wi = self.b.constant(&[cout, c / group, k, k], weight);
        let bi = self.b.constant(&[cout], bias);
        self.macs += (n * cout * ho * wo * fan_in) as u64;
        let ys = [n, cout, ho, wo];
        let activation = if act == Act::Silu { Activation::Silu } else { Activation::None };
        let p = Conv {
            kernel: [k, k],
            stride: [s, s],
            dilation: [1, 1],
            pads: [pad; 4],
            group,
            activation,
            residual: false,
        };
        if self.fused {
            let mut inputs = vec![x, wi, bi];
            inputs.extend(residual);
            return self.b.node1(Op::Conv(Conv { residual: residual.is_some(), ..p }), &inputs, &ys);
        }
        let mut y = self.b.node1(Op::Conv(Conv { activation: Activation::None, ..p }), &[x, wi, bi], &ys);
        if act == Act::Silu {
            let s = self.b.node1(Op::Sigmoid, &[y], &ys);
            y = self.b.node1(Op::Mul, &[y, s], &ys);
        }
        if let Some(r) = residual {
            y = self.b.node1(Op::Add, &[y, r], &ys);
        }
        y
    }

    /// Ultralytics `Conv`: conv, folded BatchNorm, SiLU.
    fn conv(&mut self, x: ValueId, cout: usize, k: usize, s: usize) -> ValueId {
        self.conv_full(x, Layer { cout, k, s, group: 1, act: Act::Silu }, None)
    }

    /// A stride-1 conv without activation (`act=False`, or a plain nn.Conv2d).
    fn linear(&mut self, x: ValueId, cout: usize, k: usize, residual: Option<ValueId>) -> ValueId {
        self.conv_full(x, Layer { cout, k, s: 1, group: 1, act: Act::Linear }, residual)
    }

    /// A depthwise 3x3 conv (Ultralytics `DWConv`, or `act=False`).
    fn depthwise(&mut self, x: ValueId, act: Act) -> ValueId {
        let c = self.shape4(x)[1];
        self.conv_full(x, Layer { cout: c, k: 3, s: 1, group: c, act }, None)
    }

    fn concat(&mut self, xs: &[ValueId]) -> ValueId {
        let mut shape = self.b.shape(xs[0]);
        shape[1] = xs.iter().map(|&x| self.b.shape(x)[1]).sum();
        self.b.node1(Op::Concat { axis: 1 }, xs, &shape)
    }

    fn split(&mut self, x: ValueId, axis: usize, sizes: &[usize]) -> Vec<ValueId> {
        let shapes: Vec<Vec<usize>> = sizes
            .iter()
            .map(|&s| {
                let mut shape = self.b.shape(x);
                shape[axis] = s;
                shape
            })
            .collect();
        let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        self.b.node(Op::Split { axis, sizes: sizes.to_vec() }, &[x], &refs)
    }

    fn reshape(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        self.b.node1(Op::Reshape { shape: shape.to_vec() }, &[x], shape)
    }

    fn transpose(&mut self, x: ValueId, perm: &[usize]) -> ValueId {
        let shape: Vec<usize> = perm.iter().map(|&p| self.b.shape(x)[p]).collect();
        self.b.node1(Op::Transpose { perm: perm.to_vec() }, &[x], &shape)
    }

    fn matmul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let (sa, sb) = (self.b.shape(a), self.b.shape(b));
        // Same-rank operands here: the output is A's shape with B's columns.
        let (k, n) = (sa[sa.len() - 1], sb[sb.len() - 1]);
        let mut shape = sa.clone();
        *shape.last_mut().unwrap() = n;
        self.macs += (shape.iter().product::<usize>() * k) as u64;
        self.b.node1(Op::MatMul, &[a, b], &shape)
    }

    fn binary(&mut self, op: Op, a: ValueId, b: ValueId) -> ValueId {
        let shape = self.b.shape(a);
        self.b.node1(op, &[a, b], &shape)
    }

    /// Bottleneck(c, c, shortcut, k=3, e): 3x3 to c*e, 3x3 back, + x.
    fn bottleneck(&mut self, x: ValueId, e: f32) -> ValueId {
        let c = self.shape4(x)[1];
        let y = self.conv(x, (c as f32 * e) as usize, 3, 1);
        self.conv_full(y, Layer { cout: c, k: 3, s: 1, group: 1, act: Act::Silu }, Some(x))
    }

    /// C3k(c, c, n=2): two 1x1 branches, bottlenecks on one, 1x1 merge.
    fn c3k(&mut self, x: ValueId, c2: usize) -> ValueId {
        let c_ = c2 / 2;
        let mut a = self.conv(x, c_, 1, 1);
        let b = self.conv(x, c_, 1, 1);
        for _ in 0..2 {
            a = self.bottleneck(a, 1.0);
        }
        let cat = self.concat(&[a, b]);
        self.conv(cat, c2, 1, 1)
    }

    /// C3k2(c1, c2, n=1, c3k, e): 1x1 to 2c, split, one block on the second
    /// half, concat all three, 1x1 to c2.
    fn c3k2(&mut self, x: ValueId, c2: usize, c3k: bool, e: f32) -> ValueId {
        let c = (c2 as f32 * e) as usize;
        let y = self.conv(x, 2 * c, 1, 1);
        let halves = self.split(y, 1, &[c, c]);
        let m = if c3k { self.c3k(halves[1], c) } else { self.bottleneck(halves[1], 0.5) };
        let cat = self.concat(&[halves[0], halves[1], m]);
        self.conv(cat, c2, 1, 1)
    }

    fn sppf(&mut self, x: ValueId, c2: usize) -> ValueId {
        let c_ = self.shape4(x)[1] / 2;
        let mut y = vec![self.conv(x, c_, 1, 1)];
        let shape = self.b.shape(y[0]);
        for _ in 0..3 {
            let pool = MaxPool { kernel: [5, 5], stride: [1, 1], pads: [2; 4] };
            let last = *y.last().unwrap();
            y.push(self.b.node1(Op::MaxPool(pool), &[last], &shape));
        }
        let cat = self.concat(&y);
        self.conv(cat, c2, 1, 1)
    }

    /// Ultralytics `Attention(dim, num_heads, attn_ratio=0.5)`.
    fn attention(&mut self, x: ValueId) -> ValueId {
        let [n, c, h, w] = self.shape4(x);
        let (heads, head_dim) = (c / 64, 64);
        let key_dim = head_dim / 2;
        let pixels = h * w;
        let qkv = self.linear(x, c + 2 * key_dim * heads, 1, None);
        let qkv = self.reshape(qkv, &[n, heads, 2 * key_dim + head_dim, pixels]);
        let parts = self.split(qkv, 2, &[key_dim, key_dim, head_dim]);
        let (q, k, v) = (parts[0], parts[1], parts[2]);
        let qt = self.transpose(q, &[0, 1, 3, 2]);
        let attn = self.matmul(qt, k);
        let scale = self.b.constant(&[], vec![(key_dim as f32).powf(-0.5)]);
        let attn = self.binary(Op::Mul, attn, scale);
        let shape = self.b.shape(attn);
        let attn = self.b.node1(Op::Softmax { axis: 3 }, &[attn], &shape);
        let attn_t = self.transpose(attn, &[0, 1, 3, 2]);
        let out = self.matmul(v, attn_t);
        let out = self.reshape(out, &[n, c, h, w]);
        let v_img = self.reshape(v, &[n, c, h, w]);
        let pe = self.depthwise(v_img, Act::Linear);
        let sum = self.binary(Op::Add, out, pe);
        self.linear(sum, c, 1, None)
    }

    /// C2PSA(c1, c2, n=1): 1x1 to 2c, split, PSABlock on the second half.
    fn c2psa(&mut self, x: ValueId) -> ValueId {
        let c1 = self.shape4(x)[1];
        let c = c1 / 2;
        let y = self.conv(x, 2 * c, 1, 1);
        let halves = self.split(y, 1, &[c, c]);
        let b = halves[1];
        let attn = self.attention(b);
        let b = self.binary(Op::Add, b, attn);
        let f = self.conv(b, 2 * c, 1, 1);
        let b = self.linear(f, c, 1, Some(b));
        let cat = self.concat(&[halves[0], b]);
        self.conv(cat, c1, 1, 1)
    }

    fn upsample(&mut self, x: ValueId) -> ValueId {
        let [n, c, h, w] = self.shape4(x);
        self.b.node1(Op::ResizeNearest { scales: vec![1, 1, 2, 2] }, &[x], &[n, c, 2 * h, 2 * w])
    }

    /// Ultralytics `Proto(64, 64, 32)`: 3x3, ConvTranspose 2x2 stride 2, 3x3, 1x1.
    fn proto(&mut self, x: ValueId) -> ValueId {
        let y = self.conv(x, 64, 3, 1);
        let [n, c, h, w] = self.shape4(y);
        let weight: Vec<f32> = random(&mut self.rng, c * 64 * 4).iter().map(|v| v * (3.0 / c as f32).sqrt()).collect();
        let wi = self.b.constant(&[c, 64, 2, 2], weight);
        let bi = self.b.constant(&[64], vec![0.01; 64]);
        self.macs += (n * c * h * w * 64 * 4) as u64;
        let p = ConvTranspose {
            kernel: [2, 2],
            stride: [2, 2],
            dilation: [1, 1],
            pads: [0; 4],
            output_padding: [0, 0],
            group: 1,
        };
        let up = self.b.node1(Op::ConvTranspose(p), &[y, wi, bi], &[n, 64, 2 * h, 2 * w]);
        let y = self.conv(up, 64, 3, 1);
        self.conv(y, 32, 1, 1)
    }
}

/// The graph at `size` x `size` (a multiple of 32); outputs are output0
/// [1, 116, anchors] and the protos [1, 32, size/4, size/4].
fn yolo11n_seg_like(size: usize, fused: bool) -> (Graph, u64) {
    let mut net = Net { b: Builder::default(), rng: SplitMix64::new(11), fused, macs: 0 };
    let x = net.b.input(&[1, 3, size, size]);
    // Backbone.
    let x = net.conv(x, 16, 3, 2);
    let x = net.conv(x, 32, 3, 2);
    let x = net.c3k2(x, 64, false, 0.25);
    let x = net.conv(x, 64, 3, 2);
    let p3 = net.c3k2(x, 128, false, 0.25);
    let x = net.conv(p3, 128, 3, 2);
    let p4 = net.c3k2(x, 128, true, 0.5);
    let x = net.conv(p4, 256, 3, 2);
    let x = net.c3k2(x, 256, true, 0.5);
    let x = net.sppf(x, 256);
    let p5 = net.c2psa(x);
    // Head (FPN + PAN).
    let up = net.upsample(p5);
    let cat = net.concat(&[up, p4]);
    let h13 = net.c3k2(cat, 128, false, 0.5);
    let up = net.upsample(h13);
    let cat = net.concat(&[up, p3]);
    let out3 = net.c3k2(cat, 64, false, 0.5);
    let down = net.conv(out3, 64, 3, 2);
    let cat = net.concat(&[down, h13]);
    let out4 = net.c3k2(cat, 128, false, 0.5);
    let down = net.conv(out4, 128, 3, 2);
    let cat = net.concat(&[down, p5]);
    let out5 = net.c3k2(cat, 256, true, 0.5);

    // Segment head: per level box (cv2), class (cv3) and mask-coefficient (cv4) branches.
    let protos = net.proto(out3);
    let (mut heads, mut coefficients) = (Vec::new(), Vec::new());
    for level in [out3, out4, out5] {
        let [n, _, h, w] = net.shape4(level);
        let b = net.conv(level, 64, 3, 1);
        let b = net.conv(b, 64, 3, 1);
        let b = net.linear(b, 64, 1, None);
        let k = net.depthwise(level, Act::Silu);
        let k = net.conv(k, 80, 1, 1);
        let k = net.depthwise(k, Act::Silu);
        let k = net.conv(k, 80, 1, 1);
        let k = net.linear(k, 80, 1, None);
        let m = net.conv(level, 32, 3, 1);
        let m = net.conv(m, 32, 3, 1);
        let m = net.linear(m, 32, 1, None);
        let head = net.concat(&[b, k]);
        heads.push(net.reshape(head, &[n, 144, h * w]));
        coefficients.push(net.reshape(m, &[n, 32, h * w]));
    }
    let anchors: usize = [8, 16, 32].iter().map(|s| (size / s) * (size / s)).sum();
    let cat_shape = [1, 144, anchors];
    let all = net.b.node1(Op::Concat { axis: 2 }, &heads, &cat_shape);
    let box_cls = net.split(all, 1, &[64, 80]);
    // DFL: softmax over 16 bins per side, expectation by a 1x1 conv with weights 0..15.
    let dist = net.reshape(box_cls[0], &[1, 4, 16, anchors]);
    let dist = net.transpose(dist, &[0, 2, 1, 3]);
    let dist = net.b.node1(Op::Softmax { axis: 1 }, &[dist], &[1, 16, 4, anchors]);
    let bins = net.b.constant(&[1, 16, 1, 1], (0..16).map(|v| v as f32).collect());
    let p = Conv {
        kernel: [1, 1],
        stride: [1, 1],
        dilation: [1, 1],
        pads: [0; 4],
        group: 1,
        activation: Activation::None,
        residual: false,
    };
    let dist = net.b.node1(Op::Conv(p), &[dist, bins], &[1, 1, 4, anchors]);
    let dist = net.reshape(dist, &[1, 4, anchors]);
    // dist2bbox (xywh), then times the stride of each anchor's level.
    let lt_rb = net.split(dist, 1, &[2, 2]);
    let mut points = Vec::with_capacity(2 * anchors);
    let mut strides = Vec::with_capacity(anchors);
    for axis in 0..2 {
        for s in [8, 16, 32] {
            for y in 0..size / s {
                for x in 0..size / s {
                    points.push(if axis == 0 { x as f32 + 0.5 } else { y as f32 + 0.5 });
                    if axis == 0 {
                        strides.push(s as f32);
                    }
                }
            }
        }
    }
    let points = net.b.constant(&[2, anchors], points);
    let strides = net.b.constant(&[1, anchors], strides);
    let two = net.b.constant(&[], vec![2.0]);
    let side = [1, 2, anchors];
    let x1y1 = net.b.node1(Op::Sub, &[points, lt_rb[0]], &side);
    let x2y2 = net.b.node1(Op::Add, &[points, lt_rb[1]], &side);
    let sum = net.binary(Op::Add, x1y1, x2y2);
    let centre = net.binary(Op::Div, sum, two);
    let wh = net.binary(Op::Sub, x2y2, x1y1);
    let boxes = net.b.node1(Op::Concat { axis: 1 }, &[centre, wh], &[1, 4, anchors]);
    let boxes = net.binary(Op::Mul, boxes, strides);
    let scores = net.b.node1(Op::Sigmoid, &[box_cls[1]], &[1, 80, anchors]);
    let coefficients = net.b.node1(Op::Concat { axis: 2 }, &coefficients, &[1, 32, anchors]);
    let output0 = net.b.node1(Op::Concat { axis: 1 }, &[boxes, scores, coefficients], &[1, 116, anchors]);
    net.b.output(output0);
    net.b.output(protos);
    (net.b.graph, net.macs)
}

fn image(size: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(640);
    (0..3 * size * size).map(|_| rng.uniform_f32(0.0, 1.0)).collect()
}

#[test]
fn yolo_like_graph_runs_and_fusion_changes_nothing() {
    let size = 64;
    let (fused, _) = yolo11n_seg_like(size, true);
    let (plain, _) = yolo11n_seg_like(size, false);
    let convs = fused.nodes.iter().filter(|n| matches!(n.op, Op::Conv(_))).count();
    assert_eq!(convs, plain.nodes.iter().filter(|n| matches!(n.op, Op::Conv(_))).count());
    assert!(convs >= 100, "{convs} convs; YOLO11n-seg has ~100");
    let x = image(size);
    let a = run(&fused, &[&x]).unwrap();
    let b = run(&plain, &[&x]).unwrap();
    let anchors = 8 * 8 + 4 * 4 + 2 * 2;
    assert_eq!(a[0].len(), 116 * anchors);
    assert_eq!(a[1].len(), 32 * 16 * 16);
    assert!(a.iter().flatten().all(|v| v.is_finite()));
    assert_exact("output0 fused vs unfused", &a[0], &b[0]);
    assert_exact("protos fused vs unfused", &a[1], &b[1]);
}

/// The speed check: `cargo test --release --lib yolo_like_timing -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn yolo_like_timing() {
    for size in [320, 640] {
        let (graph, macs) = yolo11n_seg_like(size, true);
        let x = image(size);
        let start = Instant::now();
        let out = run(&graph, &[&x]).unwrap();
        let seconds = start.elapsed().as_secs_f64();
        assert!(out.iter().flatten().all(|v| v.is_finite()));
        println!(
            "yolo11n-seg-like {size}x{size}: {} nodes, {:.2} GMAC ({:.2} GFLOP), {seconds:.2} s, {:.1} GFLOP/s on {} threads",
            graph.nodes.len(),
            macs as f64 / 1e9,
            2.0 * macs as f64 / 1e9,
            2.0 * macs as f64 / 1e9 / seconds,
            super::super::gemm::threads()
        );
    }
}
