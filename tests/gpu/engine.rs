//! The native engine's runtime (src/engine/native, kernels/engine_*.cu)
//! against the CPU reference executor, whose ops follow ONNX semantics
//! (src/engine/reference): every op on awkward sizes (odd, prime, larger
//! than a tile, batched), then the whole YOLO11n-seg fixture.
//!
//! Each case builds a graph, writes it as a plan with `build_plan` (so the
//! weight packing and memory plan under test are the real ones), runs it
//! on the GPU with the arena and outputs poisoned (NaN) first, and compares
//! with the reference on the same FP16-rounded inputs and weights.
//! Tolerances: single ops (FP32 outputs, FP32 accumulation) relative L2
//! ≤ 2e-3 and no non-finite value; graphs with FP16 intermediates ≤ 1e-2.
//! FP32 plans (FP32 throughout, only the summation order differs from the
//! reference's): single convolutions ≤ 1e-6, the whole YOLO11n-seg fixture
//! ≤ 2e-5 (measured on the H100: at most 4e-8 and 1.2e-6).

use std::sync::Arc;

use cudarc::driver::CudaStream;
use vrseg::engine::backend::{upload_as, Backend};
use vrseg::engine::build::fuse::fuse_all;
use vrseg::engine::build::import::{import_file, ImportOptions};
use vrseg::engine::build::ir::{Activation, Conv, ConvTranspose, DType, Graph, MaxPool, Node, Op, TensorData, Value};
use vrseg::engine::build::memory::ElementType;
use vrseg::engine::build::{build_plan_as, Precision};
use vrseg::engine::native::{NativeEngine, WGMMA_KERNELS};
use vrseg::engine::plan::Plan;
use vrseg::engine::reference;
use vrseg::gpu::{device_allocation_count, Gpu, Kernel, PoolPlan, VramPool};
use vrseg::ops::memory::fill;
use vrseg::selftest::SplitMix64;

use crate::{gpu_or_skip, test_seed};

fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// A graph under construction.
struct Builder {
    graph: Graph,
    rng: SplitMix64,
}

impl Builder {
    fn new(seed: u64) -> Builder {
        Builder { graph: Graph::default(), rng: SplitMix64::new(seed) }
    }

    fn value(&mut self, shape: &[usize], data: Option<Vec<f32>>) -> usize {
        let name = format!("v{}", self.graph.values.len());
        self.graph.add_value(Value {
            name,
            shape: shape.to_vec(),
            dtype: DType::F32,
            constant: data.map(TensorData::F32),
        })
    }

    fn input(&mut self, shape: &[usize]) -> usize {
        let v = self.value(shape, None);
        self.graph.inputs.push(v);
        v
    }

    /// A constant of uniform values in ±bound, FP16-representable (so that the
    /// engine's FP16 weights equal the reference's).
    fn constant(&mut self, shape: &[usize], bound: f32) -> usize {
        let n = shape.iter().product();
        let data = (0..n).map(|_| round_f16(self.rng.uniform_f32(-bound, bound))).collect();
        self.value(shape, Some(data))
    }

    fn node(&mut self, op: Op, inputs: Vec<usize>, out_shapes: &[&[usize]]) -> Vec<usize> {
        let outputs: Vec<usize> = out_shapes.iter().map(|s| self.value(s, None)).collect();
        let name = format!("n{}", self.graph.nodes.len());
        self.graph.nodes.push(Node { name, op, inputs, outputs: outputs.clone() });
        outputs
    }

    fn output(&mut self, v: usize) {
        self.graph.outputs.push(v);
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_op(
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    pads: [usize; 4],
    group: usize,
    silu: bool,
    residual: bool,
) -> Op {
    Op::Conv(Conv {
        kernel: k,
        stride: s,
        dilation: d,
        pads,
        group,
        activation: if silu { Activation::Silu } else { Activation::None },
        residual,
    })
}

fn out_dim(i: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> usize {
    (i + p0 + p1 - d * (k - 1) - 1) / s + 1
}

fn relative_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (f64::from(g) - f64::from(w)).powi(2);
        den += f64::from(w).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// Runs `graph` on the GPU (through an FP16 plan file) and on the CPU
/// reference with the same random inputs; returns (gpu outputs, reference
/// outputs).
fn run_both(gpu: &Gpu, graph: Graph, seed: u64, tag: &str) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    run_both_as(gpu, graph, seed, tag, Precision::Fp16)
}

/// [`run_both`] through a plan of `precision`.
fn run_both_as(gpu: &Gpu, graph: Graph, seed: u64, tag: &str, precision: Precision) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = SplitMix64::new(seed ^ 0x5eed);
    let inputs: Vec<Vec<f32>> = graph
        .inputs
        .iter()
        .map(|&v| (0..graph.values[v].elements()).map(|_| round_f16(rng.uniform_f32(-1.0, 1.0))).collect())
        .collect();
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let want = reference::run(&graph, &refs).expect("the reference runs the graph");

    let dir = std::env::temp_dir().join(format!("vrseg-native-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("g.plan");
    build_plan_as(graph, tag, &path, precision).expect("the graph builds");
    let plan = Plan::open(&path).unwrap();
    let got = run_plan(gpu, &plan, &inputs);
    std::fs::remove_dir_all(&dir).ok();
    (got, want)
}

thread_local! {
    /// Kernel launches of the last forward `run_plan` ran (tests that mean
    /// to reach a particular path check it was taken).
    static LAST_LAUNCHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The kernels of that forward, in launch order.
    static LAST_KERNELS: std::cell::RefCell<Vec<Kernel>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Where that forward took the wgmma kernel: the same plan's outputs
    /// without it (the mma.sync kernels), which `check` holds to the same
    /// reference, so both paths of every such test are tested on Hopper.
    static LAST_WITHOUT_WGMMA: std::cell::RefCell<Option<Vec<Vec<f32>>>> = const { std::cell::RefCell::new(None) };
}

/// Runs a plan once on `inputs` (eager and as a graph, which must agree
/// bit for bit, and where the GPU has it with and without programmatic
/// dependent launch, likewise) and returns its outputs; where the forward
/// took the wgmma kernel, runs it again without (`LAST_WITHOUT_WGMMA`).
fn run_plan(gpu: &Gpu, plan: &Plan, inputs: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut pool_plan = PoolPlan::new();
    let buffers = NativeEngine::reserve(plan, &mut pool_plan);
    let in_ids: Vec<_> = plan
        .graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let value = &plan.graph.values[v];
            let id =
                pool_plan.buffer(format!("input {i}"), value.shape.iter().product::<usize>() * value.element.bytes());
            pool_plan.align(id, 256);
            id
        })
        .collect();
    let out_ids: Vec<_> = plan
        .graph
        .outputs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let value = &plan.graph.values[v];
            assert_eq!(value.element, ElementType::F32);
            let id = pool_plan.buffer(format!("output {i}"), value.shape.iter().product::<usize>() * 4);
            pool_plan.align(id, 256);
            id
        })
        .collect();
    let pool = VramPool::reserve(gpu, &pool_plan).unwrap();
    let stream: Arc<CudaStream> = gpu.new_stream().unwrap();
    let mut engine = NativeEngine::load(gpu, &stream, plan, &pool, buffers).unwrap();
    for ((&id, data), &v) in in_ids.iter().zip(inputs).zip(&plan.graph.inputs) {
        upload_as(&pool.buffer(id), &stream, data, plan.graph.values[v].element).unwrap();
    }
    let in_views: Vec<_> = in_ids.iter().map(|&id| pool.buffer(id)).collect();
    let out_views: Vec<_> = out_ids.iter().map(|&id| pool.buffer(id)).collect();
    LAST_LAUNCHES.set(engine.launches_per_forward(&in_views, &out_views).unwrap());
    let kernels = engine.kernels_per_forward(&in_views, &out_views).unwrap();
    let wgmma = kernels.iter().any(|k| WGMMA_KERNELS.contains(k));
    LAST_KERNELS.with(|k| *k.borrow_mut() = kernels);
    let arena = pool.buffer(buffers.arena);
    let poison = |stream: &Arc<CudaStream>| {
        // NaN read as FP32 and as either FP16 half (FP16 and FP32 plans).
        fill(gpu, stream, &arena, arena.bytes() / 4, 0x7fff_7fffu32).unwrap();
        for view in &out_views {
            fill(gpu, stream, view, view.bytes() / 4, 0x7fc0_0000u32).unwrap(); // FP32 NaN
        }
    };
    let download = |stream: &Arc<CudaStream>| -> Vec<Vec<f32>> {
        plan.graph
            .outputs
            .iter()
            .zip(&out_views)
            .map(|(&v, view)| {
                let mut out = vec![0f32; plan.graph.values[v].shape.iter().product()];
                view.download_blocking(stream, &mut out).unwrap();
                out
            })
            .collect()
    };

    let forward = |engine: &mut NativeEngine| {
        poison(&stream);
        engine.enqueue_eager(&stream, &in_views, &out_views).unwrap();
        let eager = download(&stream);

        poison(&stream);
        let allocations = device_allocation_count();
        engine.enqueue(&stream, &in_views, &out_views).unwrap(); // captures
        poison(&stream);
        engine.enqueue(&stream, &in_views, &out_views).unwrap(); // replays
        let replayed = download(&stream);
        assert_eq!(device_allocation_count(), allocations, "a forward allocated device memory");
        for (o, (a, b)) in eager.iter().zip(&replayed).enumerate() {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "output {o}: the CUDA graph replay differs from the eager forward"
            );
        }
        replayed
    };
    // Programmatic dependent launch (Hopper on) must not change a bit: a
    // kernel that read or wrote before the one ahead of it finished would.
    let pdl = engine.set_programmatic_launch(true);
    let outputs = forward(&mut engine);
    if pdl {
        assert!(!engine.set_programmatic_launch(false));
        let serial = forward(&mut engine);
        for (o, (a, b)) in outputs.iter().zip(&serial).enumerate() {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "output {o}: the forward with programmatic dependent launch differs from the one without"
            );
        }
        engine.set_programmatic_launch(true);
    }
    let without = wgmma.then(|| {
        assert!(!engine.set_wgmma(false));
        forward(&mut engine)
    });
    LAST_WITHOUT_WGMMA.with(|w| *w.borrow_mut() = without);
    outputs
}

/// Holds `got` (and, where the forward took the wgmma kernel, the same
/// forward without it) to the reference within a relative L2 of `tolerance`.
fn check(tag: &str, got: &[Vec<f32>], want: &[Vec<f32>], tolerance: f64) {
    check_one(tag, got, want, tolerance);
    if let Some(without) = LAST_WITHOUT_WGMMA.with(|w| w.borrow_mut().take()) {
        check_one(&format!("{tag} (without wgmma)"), &without, want, tolerance);
    }
}

fn check_one(tag: &str, got: &[Vec<f32>], want: &[Vec<f32>], tolerance: f64) {
    assert_eq!(got.len(), want.len());
    for (o, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{tag}: output {o} length");
        if let Some(i) = g.iter().position(|x| !x.is_finite()) {
            panic!("{tag}: output {o} element {i} is {} (never written, or overflowed)", g[i]);
        }
        let err = relative_l2(g, w);
        eprintln!("{tag}: output {o}: relative L2 {err:.2e} over {} values", g.len());
        assert!(err <= tolerance, "{tag}: output {o}: relative L2 {err:.3e} > {tolerance:e}");
    }
}

struct ConvCase {
    batch: usize,
    cin: usize,
    hw: [usize; 2],
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pads: [usize; 4],
    depthwise: bool,
    silu: bool,
    residual: bool,
    bias: bool,
}

impl ConvCase {
    /// A 1x1 convolution of one channel on one pixel, with bias: the case
    /// the others are spelled from.
    const ONE: ConvCase = ConvCase {
        batch: 1,
        cin: 1,
        hw: [1, 1],
        cout: 1,
        kernel: [1, 1],
        stride: [1, 1],
        dilation: [1, 1],
        pads: [0; 4],
        depthwise: false,
        silu: false,
        residual: false,
        bias: true,
    };
}

fn conv_graph(c: &ConvCase, seed: u64) -> Graph {
    let mut b = Builder::new(seed);
    let x = b.input(&[c.batch, c.cin, c.hw[0], c.hw[1]]);
    let group = if c.depthwise { c.cin } else { 1 };
    let per_group = c.cin / group;
    let fan_in = per_group * c.kernel[0] * c.kernel[1];
    let w = b.constant(&[c.cout, per_group, c.kernel[0], c.kernel[1]], (3.0 / fan_in as f32).sqrt());
    let oh = out_dim(c.hw[0], c.kernel[0], c.stride[0], c.dilation[0], c.pads[0], c.pads[2]);
    let ow = out_dim(c.hw[1], c.kernel[1], c.stride[1], c.dilation[1], c.pads[1], c.pads[3]);
    let mut inputs = vec![x, w];
    if c.bias {
        inputs.push(b.constant(&[c.cout], 0.5));
    }
    if c.residual {
        inputs.push(b.input(&[c.batch, c.cout, oh, ow]));
    }
    let op = conv_op(c.kernel, c.stride, c.dilation, c.pads, group, c.silu, c.residual);
    let y = b.node(op, inputs, &[&[c.batch, c.cout, oh, ow]])[0];
    b.output(y);
    b.graph
}

#[test]
fn convolutions_match_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("convolutions_match_the_reference");
    let base = ConvCase::ONE;
    let cases = [
        // 3x3 gather path, odd everything, 2 K tiles with a ragged end (117).
        (
            "3x3 s1 p1 silu",
            ConvCase { batch: 3, cin: 13, hw: [17, 23], cout: 37, kernel: [3, 3], pads: [1; 4], silu: true, ..base },
        ),
        // 1x1 vector path (plane 9216), M = 200 in 128-row tiles.
        ("1x1 vector M128", ConvCase { batch: 2, cin: 72, hw: [96, 96], cout: 200, ..base }),
        // 1x1 on a plane that is not a multiple of 8: the gather path.
        ("1x1 gather", ConvCase { batch: 2, cin: 40, hw: [7, 9], cout: 70, silu: true, ..base }),
        (
            "3x3 s2 p1",
            ConvCase { batch: 2, cin: 8, hw: [31, 29], cout: 16, kernel: [3, 3], stride: [2, 2], pads: [1; 4], ..base },
        ),
        (
            "residual",
            ConvCase {
                batch: 2,
                cin: 24,
                hw: [19, 13],
                cout: 24,
                kernel: [3, 3],
                pads: [1; 4],
                silu: true,
                residual: true,
                ..base
            },
        ),
        (
            "dilated asymmetric no bias",
            ConvCase {
                batch: 1,
                cin: 5,
                hw: [23, 19],
                cout: 33,
                kernel: [3, 2],
                dilation: [2, 1],
                pads: [0, 1, 2, 1],
                bias: false,
                ..base
            },
        ),
        (
            "depthwise residual",
            ConvCase {
                batch: 2,
                cin: 37,
                hw: [11, 17],
                cout: 37,
                kernel: [3, 3],
                pads: [1; 4],
                depthwise: true,
                residual: true,
                ..base
            },
        ),
        // Rows of a multiple of 4: four outputs a thread.
        (
            "depthwise row4 residual silu",
            ConvCase {
                batch: 2,
                cin: 19,
                hw: [9, 20],
                cout: 19,
                kernel: [3, 3],
                pads: [1; 4],
                depthwise: true,
                residual: true,
                silu: true,
                ..base
            },
        ),
        (
            "depthwise s2 silu",
            ConvCase {
                batch: 3,
                cin: 6,
                hw: [20, 15],
                cout: 6,
                kernel: [3, 3],
                stride: [2, 2],
                pads: [1; 4],
                depthwise: true,
                silu: true,
                ..base
            },
        ),
        // The first YOLO layer's shape: K = 27.
        (
            "stem",
            ConvCase {
                batch: 2,
                cin: 3,
                hw: [64, 48],
                cout: 16,
                kernel: [3, 3],
                stride: [2, 2],
                pads: [1; 4],
                silu: true,
                ..base
            },
        ),
        // Many channels: K = 1152, 36 K tiles; 2 output tiles, so split-K (9 ways).
        ("deep K", ConvCase { batch: 1, cin: 128, hw: [10, 10], cout: 131, kernel: [3, 3], pads: [1; 4], ..base }),
        // Row-segment loads (output rows of whole 16-pixel groups; the
        // stem's 24-pixel rows above take the gather), padding on all sides.
        (
            "3x3 s1 rows",
            ConvCase { batch: 2, cin: 24, hw: [21, 48], cout: 40, kernel: [3, 3], pads: [1; 4], silu: true, ..base },
        ),
        (
            "3x3 s2 rows",
            ConvCase {
                batch: 2,
                cin: 16,
                hw: [33, 64],
                cout: 24,
                kernel: [3, 3],
                stride: [2, 2],
                pads: [1; 4],
                ..base
            },
        ),
        // Offsets of -2 .. +2 pixels along the row (dilation 2).
        (
            "5x3 dilated rows",
            ConvCase {
                batch: 1,
                cin: 7,
                hw: [13, 48],
                cout: 19,
                kernel: [5, 3],
                dilation: [1, 2],
                pads: [2, 2, 2, 2],
                ..base
            },
        ),
        // Split-K (27 K tiles over 2 output tiles) with the residual epilogue.
        (
            "split-K residual",
            ConvCase {
                batch: 1,
                cin: 96,
                hw: [9, 11],
                cout: 70,
                kernel: [3, 3],
                pads: [1; 4],
                silu: true,
                residual: true,
                ..base
            },
        ),
        // Split-K over row-segment loads.
        (
            "split-K rows",
            ConvCase { batch: 1, cin: 64, hw: [16, 32], cout: 48, kernel: [3, 3], pads: [1; 4], silu: true, ..base },
        ),
    ];
    for (i, (tag, case)) in cases.iter().enumerate() {
        let (got, want) = run_both(&gpu, conv_graph(case, seed + i as u64), seed + i as u64, &format!("conv-{i}"));
        check(tag, &got, &want, 2e-3);
        // Split-K adds the reduce launch: the split cases must have split.
        let split = tag.starts_with("split-K") || *tag == "deep K";
        assert_eq!(LAST_LAUNCHES.get(), 1 + split as usize, "{tag}: launches per forward");
    }
}

/// A ConvTranspose with bias whose kernel equals its stride `s` (the form
/// the engine runs) from an input of shape `x`, as a graph's only node.
fn conv_transpose_graph(seed: u64, x: [usize; 4], cout: usize, s: usize) -> Graph {
    let [batch, cin, h, w] = x;
    let mut b = Builder::new(seed);
    let x = b.input(&[batch, cin, h, w]);
    let wt = b.constant(&[cin, cout, s, s], (3.0 / cin as f32).sqrt());
    let bias = b.constant(&[cout], 0.5);
    let op = Op::ConvTranspose(ConvTranspose {
        kernel: [s, s],
        stride: [s, s],
        dilation: [1, 1],
        pads: [0; 4],
        output_padding: [0, 0],
        group: 1,
    });
    let y = b.node(op, vec![x, wt, bias], &[&[batch, cout, h * s, w * s]])[0];
    b.output(y);
    b.graph
}

#[test]
fn conv_transpose_matches_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("conv_transpose_matches_the_reference");
    for (i, &(batch, cin, cout, h, w, s)) in
        [(2, 19, 21, 9, 11, 2), (1, 64, 64, 8, 8, 2), (1, 7, 3, 5, 3, 3)].iter().enumerate()
    {
        let graph = conv_transpose_graph(seed + i as u64, [batch, cin, h, w], cout, s);
        let (got, want) = run_both(&gpu, graph, seed, &format!("convt-{i}"));
        check(&format!("ConvTranspose {cin}->{cout} {h}x{w} s{s}"), &got, &want, 2e-3);
    }
    // Feeding a convolution, the upsampled value is FP16 and takes the
    // staged, phase-interleaved store (YOLO's Proto: ConvTranspose -> Conv).
    // Rows of a multiple of 4 pixels take 16-byte stores (the first and
    // third), others the element-wise store.
    for (i, &(batch, cin, cout, h, w)) in
        [(2, 64, 64, 10, 12), (1, 40, 70, 9, 7), (3, 24, 48, 13, 20)].iter().enumerate()
    {
        let mut b = Builder::new(seed + 10 + i as u64);
        let x = b.input(&[batch, cin, h, w]);
        let wt = b.constant(&[cin, cout, 2, 2], (3.0 / cin as f32).sqrt());
        let bias = b.constant(&[cout], 0.5);
        let op = Op::ConvTranspose(ConvTranspose {
            kernel: [2, 2],
            stride: [2, 2],
            dilation: [1, 1],
            pads: [0; 4],
            output_padding: [0, 0],
            group: 1,
        });
        let up = b.node(op, vec![x, wt, bias], &[&[batch, cout, h * 2, w * 2]])[0];
        let w2 = b.constant(&[5, cout, 1, 1], (3.0 / cout as f32).sqrt());
        let y = b.node(
            conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, false, false),
            vec![up, w2],
            &[&[batch, 5, h * 2, w * 2]],
        )[0];
        b.output(y);
        let (got, want) = run_both(&gpu, b.graph, seed, &format!("convt-chain-{i}"));
        check(&format!("ConvTranspose {cin}->{cout} {h}x{w} s2 -> Conv (FP16 between)"), &got, &want, 1e-2);
    }
}

#[test]
fn pooling_resize_and_copies_match_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("pooling_resize_and_copies_match_the_reference");
    let mut b = Builder::new(seed);
    let x = b.input(&[2, 7, 13, 11]);
    let p5 =
        b.node(Op::MaxPool(MaxPool { kernel: [5, 5], stride: [1, 1], pads: [2; 4] }), vec![x], &[&[2, 7, 13, 11]])[0];
    let p3 =
        b.node(Op::MaxPool(MaxPool { kernel: [3, 3], stride: [2, 2], pads: [1; 4] }), vec![x], &[&[2, 7, 7, 6]])[0];
    let up = b.node(Op::ResizeNearest { scales: vec![1, 1, 2, 3] }, vec![x], &[&[2, 7, 26, 33]])[0];
    let t = b.node(Op::Transpose { perm: vec![0, 2, 3, 1] }, vec![x], &[&[2, 13, 11, 7]])[0];
    let sl = b.node(
        Op::Slice { axes: vec![1, 3], starts: vec![1, 2], ends: vec![7, 11], steps: vec![2, 3] },
        vec![x],
        &[&[2, 3, 13, 3]],
    )[0];
    let y = b.input(&[2, 5, 13, 11]);
    let cat1 = b.node(Op::Concat { axis: 1 }, vec![x, y, x], &[&[2, 19, 13, 11]])[0];
    let cat3 = b.node(Op::Concat { axis: 3 }, vec![y, y], &[&[2, 5, 13, 22]])[0];
    let parts = b.node(Op::Split { axis: 2, sizes: vec![4, 9] }, vec![y], &[&[2, 5, 4, 11], &[2, 5, 9, 11]]);
    let r = b.node(Op::Reshape { shape: vec![2, 7, 143] }, vec![t], &[&[2, 7, 143]])[0];
    // Last dims of a multiple of 4 run 4 elements a thread (resize by 2
    // along it, concatenation along it).
    let z = b.input(&[2, 3, 5, 12]);
    let up4 = b.node(Op::ResizeNearest { scales: vec![1, 1, 2, 2] }, vec![z], &[&[2, 3, 10, 24]])[0];
    let cat4 = b.node(Op::Concat { axis: 3 }, vec![z, z], &[&[2, 3, 5, 24]])[0];
    for v in [p5, p3, up, t, sl, cat1, cat3, parts[0], parts[1], r, up4, cat4] {
        b.output(v);
    }
    let (got, want) = run_both(&gpu, b.graph, seed, "copies");
    check("maxpool, resize, transpose, slice, concat, split, reshape", &got, &want, 1e-6);
}

#[test]
fn elementwise_softmax_and_matmul_match_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("elementwise_softmax_and_matmul_match_the_reference");
    let mut b = Builder::new(seed);
    let x = b.input(&[2, 4, 7]);
    let row = b.constant(&[7], 1.0);
    let scalar = b.constant(&[], 1.0);
    let col = b.constant(&[1, 7], 1.0);
    let y = b.input(&[2, 4, 7]);
    let add = b.node(Op::Add, vec![x, row], &[&[2, 4, 7]])[0];
    let mul = b.node(Op::Mul, vec![scalar, x], &[&[2, 4, 7]])[0];
    let div = b.node(Op::Div, vec![x, col], &[&[2, 4, 7]])[0];
    let sub = b.node(Op::Sub, vec![x, y], &[&[2, 4, 7]])[0];
    let sig = b.node(Op::Sigmoid, vec![y], &[&[2, 4, 7]])[0];
    let s = b.input(&[3, 16, 4, 37]);
    let soft1 = b.node(Op::Softmax { axis: 1 }, vec![s], &[&[3, 16, 4, 37]])[0];
    let soft3 = b.node(Op::Softmax { axis: 3 }, vec![s], &[&[3, 16, 4, 37]])[0];
    // Rows of 37, 401, 45 along a strided axis, and 613 (the FP16 rows
    // held in registers are in the attention-shaped test below).
    let long = b.input(&[2, 2, 3, 401]);
    let soft_long = b.node(Op::Softmax { axis: 3 }, vec![long], &[&[2, 2, 3, 401]])[0];
    let across = b.input(&[3, 45, 2, 5]);
    let soft_across = b.node(Op::Softmax { axis: 1 }, vec![across], &[&[3, 45, 2, 5]])[0];
    let longer = b.input(&[2, 3, 613]);
    let soft_longer = b.node(Op::Softmax { axis: 2 }, vec![longer], &[&[2, 3, 613]])[0];
    let ma = b.input(&[1, 2, 40, 8]);
    let mb = b.input(&[1, 2, 8, 37]);
    let mm = b.node(Op::MatMul, vec![ma, mb], &[&[1, 2, 40, 37]])[0];
    let bc = b.input(&[2, 3, 5, 6]);
    let w = b.constant(&[6, 7], 1.0);
    let mm2 = b.node(Op::MatMul, vec![bc, w], &[&[2, 3, 5, 7]])[0];
    // Several 64x64 output tiles, the last ones partial, and K = 67: five
    // 16-deep steps, the last partial; then the same through a transposed
    // operand (a strided view, as YOLO's attention reads its keys).
    let big_a = b.input(&[1, 3, 131, 67]);
    let big_b = b.input(&[1, 3, 67, 97]);
    let mm3 = b.node(Op::MatMul, vec![big_a, big_b], &[&[1, 3, 131, 97]])[0];
    let big_bt = b.input(&[1, 3, 97, 67]);
    let bt = b.node(Op::Transpose { perm: vec![0, 1, 3, 2] }, vec![big_bt], &[&[1, 3, 67, 97]])[0];
    let mm4 = b.node(Op::MatMul, vec![big_a, bt], &[&[1, 3, 131, 97]])[0];
    // Runs of 4 along a last dim of 8, one operand broadcast along it.
    let x8 = b.input(&[2, 3, 8]);
    let col8 = b.constant(&[3, 1], 1.0);
    let add8 = b.node(Op::Add, vec![x8, col8], &[&[2, 3, 8]])[0];
    let sig8 = b.node(Op::Sigmoid, vec![x8], &[&[2, 3, 8]])[0];
    for v in [add, mul, div, sub, sig, soft1, soft3, soft_long, soft_across, soft_longer, mm, mm2, mm3, mm4, add8, sig8]
    {
        b.output(v);
    }
    let (got, want) = run_both(&gpu, b.graph, seed, "elementwise");
    let kernels = LAST_KERNELS.with(|k| k.borrow().clone());
    for kernel in [Kernel::SoftmaxThread, Kernel::SoftmaxWarp] {
        assert!(kernels.contains(&kernel), "the softmaxes cover {kernel:?}: {kernels:?}");
    }
    check("add, mul, div, sub, sigmoid, softmax, matmul", &got, &want, 2e-3);
}

#[test]
fn an_in_place_concat_chain_matches_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("an_in_place_concat_chain_matches_the_reference");
    // C2f's shape: conv -> split -> conv -> concat(split halves, conv) -> conv.
    let mut b = Builder::new(seed);
    let x = b.input(&[3, 16, 20, 24]);
    let w1 = b.constant(&[32, 16, 1, 1], 0.4);
    let c1 = b.node(conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, true, false), vec![x, w1], &[&[3, 32, 20, 24]])[0];
    let halves = b.node(Op::Split { axis: 1, sizes: vec![16, 16] }, vec![c1], &[&[3, 16, 20, 24], &[3, 16, 20, 24]]);
    let w2 = b.constant(&[16, 16, 3, 3], 0.15);
    let c2 = b.node(
        conv_op([3, 3], [1, 1], [1, 1], [1; 4], 1, true, true),
        vec![halves[1], w2, halves[1]],
        &[&[3, 16, 20, 24]],
    )[0];
    let cat = b.node(Op::Concat { axis: 1 }, vec![halves[0], halves[1], c2], &[&[3, 48, 20, 24]])[0];
    let w3 = b.constant(&[24, 48, 1, 1], 0.25);
    let bias = b.constant(&[24], 0.5);
    let c3 =
        b.node(conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, false, false), vec![cat, w3, bias], &[&[3, 24, 20, 24]])[0];
    b.output(c3);
    let mut graph = b.graph;
    let plan = vrseg::engine::build::memory::plan(&graph);
    assert_eq!((plan.concats_in_place, plan.splits_as_views), (1, 1), "the test must exercise in-place writes");
    fuse_all(&mut graph);
    let (got, want) = run_both(&gpu, graph, seed, "c2f");
    check("C2f-shaped chain (FP16 intermediates)", &got, &want, 1e-2);
}

/// YOLO's head, at awkward sizes: per-scale convs (one on an NHWC input,
/// one on the NCHW model input; 1x1 with 150 channels: two 128-row tiles of
/// 32-row staged FP32 stores; 3x3 with 19) flattened, joined along the last
/// axis, a Sigmoid over the class scores, a broadcast Mul over the boxes,
/// and the three joined into the model output along the channels. The build
/// moves the Sigmoid into the class convs and writes every conv's planes
/// straight into the output (`Layout::NchwPlanes`), which this test asserts
/// before comparing with the reference on the unfused graph.
#[test]
fn a_head_assembled_in_place_matches_the_reference() {
    use vrseg::engine::build::memory::{plan, Layout};
    let gpu = gpu_or_skip!();
    let seed = test_seed("a_head_assembled_in_place_matches_the_reference");
    let mut b = Builder::new(seed);
    let (n, c) = (3, 24);
    let x0 = b.input(&[n, c, 13, 11]);
    let x1 = b.input(&[n, c, 7, 5]);
    let w0 = b.constant(&[c, c, 3, 3], 0.1);
    let f0 = b.node(conv_op([3, 3], [1, 1], [1, 1], [1; 4], 1, true, false), vec![x0, w0], &[&[n, c, 13, 11]])[0];
    let scales = [(f0, 13 * 11), (x1, 7 * 5)];
    let anchors = 13 * 11 + 7 * 5;
    // One branch: a conv per scale, flattened, joined along the anchors.
    let branch = |b: &mut Builder, m: usize, k: usize| -> usize {
        let mut flat = Vec::new();
        for &(x, len) in &scales {
            let hw = b.graph.values[x].shape[2..].to_vec();
            let w = b.constant(&[m, c, k, k], 0.3);
            let bias = b.constant(&[m], 0.5);
            let pad = [k / 2; 4];
            let y = b.node(
                conv_op([k, k], [1, 1], [1, 1], pad, 1, false, false),
                vec![x, w, bias],
                &[&[n, m, hw[0], hw[1]]],
            )[0];
            flat.push(b.node(Op::Reshape { shape: vec![n, m, len] }, vec![y], &[&[n, m, len]])[0]);
        }
        b.node(Op::Concat { axis: 2 }, flat, &[&[n, m, anchors]])[0]
    };
    let boxes = branch(&mut b, 5, 1);
    let scores = branch(&mut b, 150, 1);
    let masks = branch(&mut b, 19, 3);
    let scale = b.constant(&[1, 5, 1], 2.0);
    let boxes = b.node(Op::Mul, vec![boxes, scale], &[&[n, 5, anchors]])[0];
    let scores = b.node(Op::Sigmoid, vec![scores], &[&[n, 150, anchors]])[0];
    let out = b.node(Op::Concat { axis: 1 }, vec![boxes, scores, masks], &[&[n, 174, anchors]])[0];
    b.output(out);
    let mut fused = b.graph.clone();
    assert_eq!(fuse_all(&mut fused).sigmoid, 1, "the Sigmoid moves into the class convs");
    let memory = plan(&fused);
    let pitched = memory
        .placements
        .iter()
        .filter(|p| matches!(p.layout, Layout::NchwPlanes { plane_stride } if plane_stride == anchors))
        .count();
    // Per branch and scale: the conv's output and its flattened view.
    assert_eq!(pitched, 12, "every head conv writes its planes into the joined rows");
    assert_eq!(memory.concats_in_place, 4, "three joins along the anchors and the output");
    let (got, want) = run_both(&gpu, b.graph, seed, "head");
    LAST_KERNELS.with(|k| eprintln!("head kernels: {:?}", k.borrow()));
    check("YOLO-like head written in place", &got, &want, 1e-2);
}

/// `matmul_f16_mma`: attention-shaped products of FP16 operands (values
/// between convs), through transposed views: S = Q^T K (65 x 65, K = 12:
/// one partial K step, two partial tiles each way), its softmax along rows
/// (`softmax_warp512`), transposed (`transpose_last2`, three 32-tiles a
/// side, the last partial) and O = V S^T (12 x 65,
/// K = 65: three K steps, the last partial), batched over 2 x 2, the
/// operands walked along either of their dims.
#[test]
fn fp16_matmuls_run_on_tensor_cores_and_match_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("fp16_matmuls_run_on_tensor_cores_and_match_the_reference");
    let mut b = Builder::new(seed);
    let x = b.input(&[2, 16, 5, 13]);
    let head = |b: &mut Builder| {
        let w = b.constant(&[24, 16, 1, 1], 0.4);
        let y = b.node(conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, false, false), vec![x, w], &[&[2, 24, 5, 13]])[0];
        b.node(Op::Reshape { shape: vec![2, 2, 12, 65] }, vec![y], &[&[2, 2, 12, 65]])[0]
    };
    let (q, k, v) = (head(&mut b), head(&mut b), head(&mut b));
    let flip = || Op::Transpose { perm: vec![0, 1, 3, 2] };
    let qt = b.node(flip(), vec![q], &[&[2, 2, 65, 12]])[0];
    let s = b.node(Op::MatMul, vec![qt, k], &[&[2, 2, 65, 65]])[0];
    // Rows of 65: three a lane, the third for one lane only.
    let attn = b.node(Op::Softmax { axis: 3 }, vec![s], &[&[2, 2, 65, 65]])[0];
    let st = b.node(flip(), vec![attn], &[&[2, 2, 65, 65]])[0];
    let o = b.node(Op::MatMul, vec![v, st], &[&[2, 2, 12, 65]])[0];
    let o = b.node(Op::Reshape { shape: vec![2, 24, 5, 13] }, vec![o], &[&[2, 24, 5, 13]])[0];
    let w = b.constant(&[8, 24, 1, 1], 0.3);
    let out = b.node(conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, false, false), vec![o, w], &[&[2, 8, 5, 13]])[0];
    b.output(out);
    let types = vrseg::engine::build::memory::element_types(&b.graph, Precision::Fp16);
    assert!([qt, k, s, attn, v, st].iter().all(|&t| types[t] == ElementType::F16), "the products' operands are FP16");
    let (got, want) = run_both(&gpu, b.graph, seed, "mma-matmul");
    let kernels = LAST_KERNELS.with(|k| k.borrow().clone());
    assert_eq!(kernels.iter().filter(|&&k| k == Kernel::MatmulF16Mma).count(), 2, "{kernels:?}");
    assert!(kernels.contains(&Kernel::SoftmaxWarp512), "FP16 rows of 65 stay in registers: {kernels:?}");
    assert!(kernels.contains(&Kernel::TransposeLast2), "the 65 x 65 scores transpose in tiles: {kernels:?}");
    check("FP16 attention-shaped matmuls on tensor cores", &got, &want, 1e-2);
}

/// `conv_stem_c*`: a whole K of at most 32 from the NCHW model input into an
/// NHWC output (YOLO's stem), at odd sizes and batch 3, for each channel
/// width the kernels come in and counts between them: 3x3/2 (K = 27), an
/// asymmetrically padded 4x4/1 of 2 channels (K = 32 exactly) and a dilated
/// 5x5/3 of one channel (K = 25). A 1x1 conv reads the NHWC output back.
#[test]
fn stem_convolutions_match_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("stem_convolutions_match_the_reference");
    // (cin, kernel, stride, dilation, pads [t, l, b, r], cout, stem kernel)
    type StemCase = (usize, usize, usize, usize, [usize; 4], usize, Kernel);
    let cases: [StemCase; 6] = [
        (3, 3, 2, 1, [1; 4], 16, Kernel::ConvStemC16),
        (3, 3, 2, 1, [1; 4], 96, Kernel::ConvStemC96),
        (3, 3, 2, 1, [1; 4], 40, Kernel::ConvStemC64),
        (2, 4, 1, 1, [2, 1, 1, 2], 128, Kernel::ConvStemC128),
        (1, 5, 3, 2, [3, 0, 4, 2], 24, Kernel::ConvStemC32),
        (3, 3, 1, 1, [0; 4], 8, Kernel::ConvStemC16),
    ];
    for (i, &(cin, k, s, d, pads, cout, kernel)) in cases.iter().enumerate() {
        let mut b = Builder::new(seed + i as u64);
        let (n, h, w) = (3, 37, 29);
        let oh = out_dim(h, k, s, d, pads[0], pads[2]);
        let ow = out_dim(w, k, s, d, pads[1], pads[3]);
        let x = b.input(&[n, cin, h, w]);
        let wt = b.constant(&[cout, cin, k, k], (3.0 / (cin * k * k) as f32).sqrt());
        let bias = b.constant(&[cout], 0.5);
        let op = conv_op([k, k], [s, s], [d, d], pads, 1, true, false);
        let stem = b.node(op, vec![x, wt, bias], &[&[n, cout, oh, ow]])[0];
        let w2 = b.constant(&[5, cout, 1, 1], (3.0 / cout as f32).sqrt());
        let out =
            b.node(conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, false, false), vec![stem, w2], &[&[n, 5, oh, ow]])[0];
        b.output(out);
        assert_nhwc(&b.graph, &[stem], "stem");
        let tag = format!("stem{i}");
        let (got, want) = run_both(&gpu, b.graph, seed + i as u64, &tag);
        let kernels = LAST_KERNELS.with(|k| k.borrow().clone());
        assert_eq!(kernels.first(), Some(&kernel), "case {i}: the stem runs on {kernel:?}: {kernels:?}");
        check(
            &format!("stem case {i}: {cin}x{k}x{k}/{s} dilation {d} -> {cout} channels at {oh}x{ow}"),
            &got,
            &want,
            1e-2,
        );
    }
}

/// NHWC max-pools, 8 channels a thread (`max_pool_nhwc8`): YOLO's SPPF
/// (three chained 5x5/1 pools, each written into its slice of a channel
/// concatenation, pixel stride 160) on 40 channels, and a 3x3/2 pool with
/// asymmetric padding on 24; odd sizes, batch 3. (NCHW pools, on
/// `max_pool`, are in `pooling_resize_and_copies_match_the_reference`.)
#[test]
fn nhwc_max_pools_match_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("nhwc_max_pools_match_the_reference");
    let mut b = Builder::new(seed);
    let (n, h, w) = (3, 13, 11);
    let x = b.input(&[n, 8, h, w]);
    let pointwise = || conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, false, false);
    let wt = b.constant(&[40, 8, 1, 1], (3.0f32 / 8.0).sqrt());
    let a = b.node(conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, true, false), vec![x, wt], &[&[n, 40, h, w]])[0];
    let sppf = || Op::MaxPool(MaxPool { kernel: [5, 5], stride: [1, 1], pads: [2; 4] });
    let y1 = b.node(sppf(), vec![a], &[&[n, 40, h, w]])[0];
    let y2 = b.node(sppf(), vec![y1], &[&[n, 40, h, w]])[0];
    let y3 = b.node(sppf(), vec![y2], &[&[n, 40, h, w]])[0];
    let cat = b.node(Op::Concat { axis: 1 }, vec![a, y1, y2, y3], &[&[n, 160, h, w]])[0];
    let wt = b.constant(&[5, 160, 1, 1], (3.0f32 / 160.0).sqrt());
    let out = b.node(pointwise(), vec![cat, wt], &[&[n, 5, h, w]])[0];
    b.output(out);
    let wt = b.constant(&[24, 8, 1, 1], (3.0f32 / 8.0).sqrt());
    let c = b.node(conv_op([1, 1], [1, 1], [1, 1], [0; 4], 1, true, false), vec![x, wt], &[&[n, 24, h, w]])[0];
    let down =
        b.node(Op::MaxPool(MaxPool { kernel: [3, 3], stride: [2, 2], pads: [1, 0, 1, 1] }), vec![c], &[&[n, 24, 7, 5]])
            [0];
    let wt = b.constant(&[3, 24, 1, 1], (3.0f32 / 24.0).sqrt());
    let out2 = b.node(pointwise(), vec![down, wt], &[&[n, 3, 7, 5]])[0];
    b.output(out2);
    assert_nhwc(&b.graph, &[a, y1, y2, y3, cat, c, down], "max-pools");
    let (got, want) = run_both(&gpu, b.graph, seed, "nhwc-pools");
    let kernels = LAST_KERNELS.with(|k| k.borrow().clone());
    let count = |kernel: Kernel| kernels.iter().filter(|&&k| k == kernel).count();
    assert_eq!(count(Kernel::MaxPoolNhwc8), 4, "every NHWC pool takes 16-byte vectors: {kernels:?}");
    check("NHWC max-pools: SPPF into concat slices, 3x3/2 asymmetric", &got, &want, 1e-2);
}

/// Asserts that the plan of `graph` stores each of `values` NHWC (so that a
/// test of the NHWC kernels cannot silently fall back to NCHW ones).
fn assert_nhwc(graph: &Graph, values: &[usize], tag: &str) {
    use vrseg::engine::build::memory::{plan, Layout};
    let memory = plan(graph);
    for &v in values {
        assert!(
            matches!(memory.placements[v].layout, Layout::Nhwc { .. }),
            "{tag}: value {v} {:?} should be NHWC",
            graph.values[v].shape
        );
    }
}

#[test]
fn nhwc_chains_match_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("nhwc_chains_match_the_reference");
    let conv = |k: usize, s: usize, p: usize, silu: bool, residual: bool| {
        conv_op([k, k], [s, s], [1, 1], [p; 4], 1, silu, residual)
    };
    let weight = |b: &mut Builder, cout: usize, cin: usize, k: [usize; 2]| {
        b.constant(&[cout, cin, k[0], k[1]], (3.0 / (cin * k[0] * k[1]) as f32).sqrt())
    };

    // 1. NCHW input -> NHWC through every op family -> NCHW FP32 output, at
    //    odd and prime sizes; channel counts of 24, 40 and 56 make K tiles
    //    straddle taps, 136 output channels two 128-row tiles.
    {
        let mut b = Builder::new(seed);
        let x = b.input(&[2, 3, 37, 29]);
        let w = weight(&mut b, 24, 3, [3, 3]);
        let bias = b.constant(&[24], 0.5);
        let stem = b.node(conv(3, 2, 1, true, false), vec![x, w, bias], &[&[2, 24, 19, 15]])[0];
        let w = weight(&mut b, 40, 24, [3, 3]);
        let c1 = b.node(conv(3, 1, 1, true, false), vec![stem, w], &[&[2, 40, 19, 15]])[0];
        let wd = b.constant(&[40, 1, 3, 3], 0.5);
        let bd = b.constant(&[40], 0.5);
        let dw =
            b.node(conv_op([3, 3], [1, 1], [1, 1], [1; 4], 40, true, true), vec![c1, wd, bd, c1], &[&[2, 40, 19, 15]])
                [0];
        let w = weight(&mut b, 56, 40, [5, 3]);
        let dil =
            b.node(conv_op([5, 3], [1, 1], [1, 2], [2, 2, 2, 2], 1, false, false), vec![dw, w], &[&[2, 56, 19, 15]])[0];
        let w = weight(&mut b, 136, 56, [1, 1]);
        let wide = b.node(conv(1, 1, 0, true, false), vec![dil, w], &[&[2, 136, 19, 15]])[0];
        let pool = b.node(
            Op::MaxPool(MaxPool { kernel: [5, 5], stride: [1, 1], pads: [2; 4] }),
            vec![wide],
            &[&[2, 136, 19, 15]],
        )[0];
        let up = b.node(Op::ResizeNearest { scales: vec![1, 1, 2, 2] }, vec![pool], &[&[2, 136, 38, 30]])[0];
        let w = weight(&mut b, 16, 136, [3, 3]);
        let down = b.node(conv(3, 2, 1, true, false), vec![up, w], &[&[2, 16, 19, 15]])[0];
        // Same-shape arithmetic on NHWC values (walked channels-last).
        let sum = b.node(Op::Add, vec![down, down], &[&[2, 16, 19, 15]])[0];
        let sig = b.node(Op::Sigmoid, vec![sum], &[&[2, 16, 19, 15]])[0];
        let w = weight(&mut b, 5, 16, [1, 1]);
        let out = b.node(conv(1, 1, 0, false, false), vec![sig, w], &[&[2, 5, 19, 15]])[0];
        b.output(out);
        assert_nhwc(&b.graph, &[stem, c1, dw, dil, wide, pool, up, down, sum, sig], "chain");
        let (got, want) = run_both(&gpu, b.graph, seed, "nhwc-chain");
        check(
            "NHWC chain: stem, 3x3, depthwise, dilated 5x3, 1x1 M=136, maxpool, resize, 3x3/2, add, sigmoid",
            &got,
            &want,
            1e-2,
        );
    }

    // 2. Split-K over an NHWC input into an NHWC output with an NHWC
    //    residual (batch 1, 99 pixels: one tile; K = 864).
    {
        let mut b = Builder::new(seed + 1);
        let x = b.input(&[1, 64, 9, 11]);
        let w = weight(&mut b, 96, 64, [1, 1]);
        let a = b.node(conv(1, 1, 0, true, false), vec![x, w], &[&[1, 96, 9, 11]])[0];
        let w = weight(&mut b, 104, 64, [1, 1]);
        let r = b.node(conv(1, 1, 0, false, false), vec![x, w], &[&[1, 104, 9, 11]])[0];
        let w = weight(&mut b, 104, 96, [3, 3]);
        let bias = b.constant(&[104], 0.5);
        let deep = b.node(conv(3, 1, 1, true, true), vec![a, w, bias, r], &[&[1, 104, 9, 11]])[0];
        let w = weight(&mut b, 7, 104, [1, 1]);
        let out = b.node(conv(1, 1, 0, false, false), vec![deep, w], &[&[1, 7, 9, 11]])[0];
        b.output(out);
        assert_nhwc(&b.graph, &[a, r, deep], "split-K");
        let (got, want) = run_both(&gpu, b.graph, seed + 1, "nhwc-splitk");
        check("NHWC split-K 3x3 96->104 with residual", &got, &want, 1e-2);
        // Three convs, the split one and its reduce, and the output conv.
        assert_eq!(LAST_LAUNCHES.get(), 5, "the deep conv must have split K");
    }

    // 3. ConvTranspose (kernel = stride 2) from NHWC into NHWC (rows in
    //    pixel-phase order) and into NCHW (20 channels: not a multiple of 8).
    {
        let mut b = Builder::new(seed + 2);
        let x = b.input(&[2, 24, 7, 9]);
        let w = weight(&mut b, 32, 24, [1, 1]);
        let a = b.node(conv(1, 1, 0, true, false), vec![x, w], &[&[2, 32, 7, 9]])[0];
        let ct = || {
            Op::ConvTranspose(ConvTranspose {
                kernel: [2, 2],
                stride: [2, 2],
                dilation: [1, 1],
                pads: [0; 4],
                output_padding: [0, 0],
                group: 1,
            })
        };
        let wt = b.constant(&[32, 48, 2, 2], (3.0f32 / 32.0).sqrt());
        let bt = b.constant(&[48], 0.5);
        let up = b.node(ct(), vec![a, wt, bt], &[&[2, 48, 14, 18]])[0];
        let wt2 = b.constant(&[32, 20, 2, 2], (3.0f32 / 32.0).sqrt());
        let up2 = b.node(ct(), vec![a, wt2], &[&[2, 20, 14, 18]])[0];
        let w = weight(&mut b, 5, 48, [3, 3]);
        let out = b.node(conv(3, 1, 1, false, false), vec![up, w], &[&[2, 5, 14, 18]])[0];
        let w = weight(&mut b, 3, 20, [1, 1]);
        let out2 = b.node(conv(1, 1, 0, false, false), vec![up2, w], &[&[2, 3, 14, 18]])[0];
        b.output(out);
        b.output(out2);
        assert_nhwc(&b.graph, &[a, up], "transposed");
        let (got, want) = run_both(&gpu, b.graph, seed + 2, "nhwc-convt");
        check("NHWC ConvTranspose into NHWC and NCHW", &got, &want, 1e-2);
    }

    // 4. Enough 128-row tiles to fill the GPU twice (2 x 135 on 132 SMs), so
    //    the 128-row kernel runs (smaller GEMMs take 64-row tiles): 3x3
    //    32 -> 256 over 2 x 97 x 89 pixels, with an NHWC residual.
    {
        let mut b = Builder::new(seed + 3);
        let x = b.input(&[2, 3, 97, 89]);
        let w = weight(&mut b, 32, 3, [3, 3]);
        let a = b.node(conv(3, 1, 1, true, false), vec![x, w], &[&[2, 32, 97, 89]])[0];
        let w = weight(&mut b, 256, 32, [1, 1]);
        let r = b.node(conv(1, 1, 0, false, false), vec![a, w], &[&[2, 256, 97, 89]])[0];
        let w = weight(&mut b, 256, 32, [3, 3]);
        let bias = b.constant(&[256], 0.5);
        let big = b.node(conv(3, 1, 1, true, true), vec![a, w, bias, r], &[&[2, 256, 97, 89]])[0];
        let w = weight(&mut b, 5, 256, [1, 1]);
        let out = b.node(conv(1, 1, 0, false, false), vec![big, w], &[&[2, 5, 97, 89]])[0];
        b.output(out);
        assert_nhwc(&b.graph, &[a, r, big], "128-row tiles");
        let (got, want) = run_both(&gpu, b.graph, seed + 3, "nhwc-128");
        // On Hopper this GEMM takes wgmma, and `check` holds the same plan's
        // forward without it (the 128-row mma.sync tiles, the RTX cards'
        // path) to the same reference.
        check("NHWC 3x3 32->256 in 128-row tiles with residual", &got, &want, 1e-2);
    }

    // 5. The wgmma kernels' edges (on Hopper; elsewhere the mma.sync
    //    kernels run the same graph): 3x3/2 cin -> 376 over 3 x 61 x 47
    //    output pixels (68 tiles of 128 pixels, the last 25 full, tiles
    //    across image borders), with an NHWC residual, written into a
    //    concatenation's slice (pixel stride 392). cin 40: K = 360, short:
    //    three 128-channel tiles in 3 stages (the third 120 full; 64-deep K
    //    tiles straddle taps of 40 channels, K ends inside one). cin 96:
    //    K = 864, two 192-channel tiles (the second 184 full) in 4 stages.
    for (case, (cin, kernel)) in
        [(40, Kernel::ConvWgmmaNhwcN128S3), (96, Kernel::ConvWgmmaNhwcN192)].into_iter().enumerate()
    {
        use vrseg::engine::build::memory::{plan, Layout};
        let case_seed = seed + 4 + 10 * case as u64;
        let mut b = Builder::new(case_seed);
        let x = b.input(&[3, 8, 121, 93]);
        let w = weight(&mut b, cin, 8, [1, 1]);
        let a = b.node(conv(1, 1, 0, true, false), vec![x, w], &[&[3, cin, 121, 93]])[0];
        let w = weight(&mut b, 376, cin, [3, 3]);
        let r = b.node(conv(3, 2, 1, false, false), vec![a, w], &[&[3, 376, 61, 47]])[0];
        let w = weight(&mut b, 376, cin, [3, 3]);
        let bias = b.constant(&[376], 0.5);
        let big = b.node(conv(3, 2, 1, true, true), vec![a, w, bias, r], &[&[3, 376, 61, 47]])[0];
        let w = weight(&mut b, 16, cin, [3, 3]);
        let side = b.node(conv(3, 2, 1, true, false), vec![a, w], &[&[3, 16, 61, 47]])[0];
        let cat = b.node(Op::Concat { axis: 1 }, vec![big, side], &[&[3, 392, 61, 47]])[0];
        let w = weight(&mut b, 5, 392, [1, 1]);
        let out = b.node(conv(1, 1, 0, false, false), vec![cat, w], &[&[3, 5, 61, 47]])[0];
        b.output(out);
        assert_nhwc(&b.graph, &[a, r, big, side, cat], "wgmma edges");
        assert_eq!(
            plan(&b.graph).placements[big].layout,
            Layout::Nhwc { pixel_stride: 392 },
            "the 376-channel conv writes its slice of the concatenation"
        );
        let (got, want) = run_both(&gpu, b.graph, case_seed, "nhwc-wgmma");
        if gpu.properties().has_wgmma() {
            let kernels = LAST_KERNELS.with(|k| k.borrow().clone());
            assert!(kernels.contains(&kernel), "wgmma edges, cin {cin}: {kernel:?} was not chosen: {kernels:?}");
        }
        check(&format!("NHWC 3x3/2 {cin}->376 (wgmma edges) with residual, into a concat slice"), &got, &want, 1e-2);
    }
}

#[test]
fn yolo11n_seg_matches_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("yolo11n_seg_matches_the_reference");
    let path = vrseg::testing::models_dir().join("yolo11n-seg-320.structure.onnx");
    let options = ImportOptions { batch: Some(2), allow_empty_initializers: true };
    let mut graph = import_file(&path, &options).expect("the fixture imports");
    vrseg::engine::build::fill_stripped_weights(&mut graph, seed);
    // The engine stores conv weights in FP16: give the reference the same.
    for v in &mut graph.values {
        if let Some(TensorData::F32(data)) = &mut v.constant {
            data.iter_mut().for_each(|x| *x = round_f16(*x));
        }
    }
    let (got, want) = run_both(&gpu, graph, seed, "yolo11n-seg");
    check("YOLO11n-seg 320, batch 2", &got, &want, 1e-2);
}

/// The FP32 plan's convolution kernels (`engine_conv_f32.cu`).
const FP32_CONV_KERNELS: [Kernel; 2] = [Kernel::ConvF32, Kernel::ConvF32Depthwise];

/// Every convolution of the last forward ran on an FP32 kernel: one FP32
/// conv launch, and nothing from the FP16 family.
fn assert_fp32_convolutions(tag: &str) {
    LAST_KERNELS.with(|k| {
        let kernels = k.borrow();
        let fp32 = kernels.iter().filter(|k| FP32_CONV_KERNELS.contains(k)).count();
        let fp16 = kernels.iter().filter(|k| k.module() == vrseg::gpu::Module::EngineConv).count();
        assert!(fp32 >= 1 && fp16 == 0, "{tag}: kernels {kernels:?}");
    });
}

#[test]
fn fp32_convolutions_match_the_reference_to_fp32_rounding() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("fp32_convolutions_match_the_reference_to_fp32_rounding");
    let base = ConvCase::ONE;
    let cases = [
        // K = 117: 8 K steps of 16, the last ragged; M = 37 in one 64-row tile.
        (
            "3x3 s1 p1 silu",
            ConvCase { batch: 3, cin: 13, hw: [17, 23], cout: 37, kernel: [3, 3], pads: [1; 4], silu: true, ..base },
        ),
        // M = 150 over three tiles, the last ragged; residual, no bias.
        ("1x1 residual", ConvCase { batch: 2, cin: 72, hw: [31, 29], cout: 150, residual: true, bias: false, ..base }),
        // Stride 2, asymmetric pads (top 1, left 2, bottom 0, right 1).
        (
            "3x3 s2 asymmetric pads",
            ConvCase {
                batch: 2,
                cin: 5,
                hw: [19, 31],
                cout: 67,
                kernel: [3, 3],
                stride: [2, 2],
                pads: [1, 2, 0, 1],
                silu: true,
                residual: true,
                ..base
            },
        ),
        (
            "3x3 dilation 2",
            ConvCase { cin: 8, hw: [13, 11], cout: 9, kernel: [3, 3], dilation: [2, 2], pads: [2; 4], ..base },
        ),
        // A long K (515 x 1 = 33 steps) over few pixels.
        ("1x1 long K", ConvCase { batch: 2, cin: 515, hw: [5, 7], cout: 33, silu: true, ..base }),
        // Many blocks both ways (1600 pixels x 130 channels a batch of 2).
        (
            "3x3 many tiles",
            ConvCase { batch: 2, cin: 64, hw: [40, 40], cout: 130, kernel: [3, 3], pads: [1; 4], silu: true, ..base },
        ),
        (
            "depthwise 3x3 silu residual",
            ConvCase {
                batch: 2,
                cin: 67,
                hw: [15, 13],
                cout: 67,
                kernel: [3, 3],
                pads: [1; 4],
                depthwise: true,
                silu: true,
                residual: true,
                ..base
            },
        ),
        (
            "depthwise 5x5 s2",
            ConvCase {
                cin: 9,
                hw: [23, 17],
                cout: 9,
                kernel: [5, 5],
                stride: [2, 2],
                pads: [2; 4],
                depthwise: true,
                ..base
            },
        ),
    ];
    for (i, (tag, case)) in cases.iter().enumerate() {
        let s = seed + i as u64;
        let (got, want) = run_both_as(&gpu, conv_graph(case, s), s, &format!("conv-f32-{i}"), Precision::Fp32);
        check(&format!("FP32 {tag}"), &got, &want, 1e-6);
        assert_fp32_convolutions(tag);
        assert_eq!(LAST_LAUNCHES.get(), 1, "{tag}: one launch");
    }
    for (i, &(batch, cin, cout, h, w, s)) in [(2, 19, 21, 9, 11, 2), (1, 7, 3, 5, 3, 3)].iter().enumerate() {
        let graph = conv_transpose_graph(seed + 20 + i as u64, [batch, cin, h, w], cout, s);
        let (got, want) = run_both_as(&gpu, graph, seed, &format!("convt-f32-{i}"), Precision::Fp32);
        let tag = format!("FP32 ConvTranspose {cin}->{cout} {h}x{w} s{s}");
        check(&tag, &got, &want, 1e-6);
        assert_fp32_convolutions(&tag);
    }
}

/// The whole YOLO11n-seg fixture as an FP32 plan: every value FP32, so the
/// engine follows the reference (FP32 weights, unrounded) to FP32 rounding
/// through 100-odd layers, concatenations in place and the head written
/// into its outputs included.
#[test]
fn an_fp32_yolo11n_seg_plan_matches_the_reference() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("an_fp32_yolo11n_seg_plan_matches_the_reference");
    let path = vrseg::testing::models_dir().join("yolo11n-seg-320.structure.onnx");
    let options = ImportOptions { batch: Some(2), allow_empty_initializers: true };
    let mut graph = import_file(&path, &options).expect("the fixture imports");
    vrseg::engine::build::fill_stripped_weights(&mut graph, seed);
    let (got, want) = run_both_as(&gpu, graph, seed, "yolo11n-seg-fp32", Precision::Fp32);
    check("YOLO11n-seg 320 FP32, batch 2", &got, &want, 2e-5);
    assert_fp32_convolutions("YOLO11n-seg FP32");
}
