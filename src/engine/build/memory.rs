//! Activation memory for a fused graph: which values are views of others,
//! and where in one arena each stored value lives, by liveness.
//!
//! - Reshape's output is its input (same bytes, another shape).
//! - Split along the channel axis yields views: output k is channels
//!   [c_k, c_k + n_k) of its input, read in place.
//! - Concat along the channel axis is removed: each input is written by its
//!   producer straight into its channel slice of the output. It applies when
//!   every input is written by a kernel (not a view, a constant, a model
//!   input or output), appears once, and is not reshaped anywhere; a run of
//!   inputs that are one split's outputs in order stands for the split's
//!   input (YOLO's C2f/C3k2 blocks concatenate their own split halves).
//!   Readers of a slice read it in place.
//!
//! - Concat along the last axis of [N, C, L] values each flattened from a
//!   conv's [N, C, H, W] output (YOLO's head: per-scale outputs joined along
//!   the anchors) is removed too: each conv writes its channel planes
//!   straight into its columns of the output, `L_total` elements apart
//!   (`Layout::NchwPlanes`). Applies when the conv's output is read by the
//!   reshape alone and the reshape by the concat alone.
//! - A concatenation's output may itself be a member of a channel
//!   concatenation, or a model output (YOLO's output0 = boxes, class scores
//!   and mask coefficients): members are then written into the output.
//!
//! A channel slice of an NCHW [N, C, H, W] tensor is contiguous within one
//! image and strided across the batch, so every placement carries its batch
//! stride: kernels address element (n, i) of a value as
//! `root + offset + n * batch_stride + i`.
//!
//! Layouts ([`layouts`]): activations between convolutions are stored NHWC
//! (a pixel's channels contiguous), because the tensor-core convolution then
//! loads 8 channels of one pixel as one aligned 16-byte copy for any kernel
//! size, stride or padding, which NCHW allows only for special shapes. Values
//! read or written by ops that work on NCHW memory (reshapes, the attention's
//! matmuls and softmax, the model's inputs and outputs) stay NCHW; a conv
//! converts between the two in its loads and its epilogue, so no transpose
//! is ever added. An NHWC channel slice at channel c0 of its root is at
//! `root + c0` and steps `pixel_stride` (the root's channel count) from pixel
//! to pixel.
//!
//! Roots (values that own storage) get arena offsets by liveness: a root is
//! live from the first node writing it or any of its views to the last node
//! reading any of them; roots whose intervals overlap never share bytes.
//! Offsets are assigned greedily, largest first, at the lowest 256-byte
//! aligned offset that fits (the usual best-fit heuristic for this problem).

use super::ir::{Graph, Op, ValueId};
use super::Precision;

/// Where a value's elements are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Storage {
    /// Bytes of the activation arena, from `Placement::offset`.
    Arena,
    /// The model input with this index (bound by the caller).
    Input(usize),
    /// The model output with this index (bound by the caller).
    Output(usize),
    /// A constant (weights section of the plan).
    Constant,
}

/// How a value's elements are stored on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ElementType {
    F16,
    F32,
}

impl ElementType {
    pub fn bytes(self) -> usize {
        match self {
            ElementType::F16 => 2,
            ElementType::F32 => 4,
        }
    }
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ElementType::F16 => "f16",
            ElementType::F32 => "f32",
        })
    }
}

/// How a 4-D activation's elements are ordered within one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// ONNX's order (channel planes, rows, pixels), and every non-4-D value.
    Nchw,
    /// Pixels (rows, columns), each holding its channels contiguously;
    /// `pixel_stride` elements from one pixel to the next (the root's
    /// channel count: more than the value's own for a concatenation member
    /// or a split output).
    Nhwc { pixel_stride: usize },
    /// NCHW whose channel planes are `plane_stride` elements apart, more than
    /// a plane's own size: a member of a concatenation along the last axis
    /// (written by a conv, see the module notes).
    NchwPlanes { plane_stride: usize },
}

/// The storage type of every value in an FP32 plan ([`Precision::Fp32`]):
/// everything, weights included, is FP32.
///
/// In an FP16 plan (the default), activations are FP16 wherever they
/// still feed a convolution (the tensor-core kernels read FP16, and FP16
/// halves the memory traffic); values past the last convolution on every
/// path — YOLO's box decode (coordinates up to the input size, where FP16
/// steps by 0.25–0.5 pixel), class scores, mask coefficients — and the
/// model outputs are FP32, as the postprocess reads them. The model input
/// is FP16 (what the letterbox kernel writes). Constants are FP16 when they
/// are convolution weights, FP32 otherwise (as the plan stores them).
pub fn element_types(graph: &Graph, precision: Precision) -> Vec<ElementType> {
    if precision == Precision::Fp32 {
        return vec![ElementType::F32; graph.values.len()];
    }
    let n = graph.values.len();
    let mut feeds_conv = vec![false; n];
    for node in graph.nodes.iter().rev() {
        let conv = matches!(node.op, Op::Conv(_) | Op::ConvTranspose(_));
        if conv || node.outputs.iter().any(|&v| feeds_conv[v]) {
            for &v in &node.inputs {
                feeds_conv[v] = true;
            }
        }
    }
    let mut weights = vec![false; n];
    for node in &graph.nodes {
        if matches!(node.op, Op::Conv(_) | Op::ConvTranspose(_)) {
            weights[node.inputs[1]] = true;
        }
    }
    (0..n)
        .map(|v| {
            if graph.values[v].constant.is_some() {
                if weights[v] {
                    ElementType::F16
                } else {
                    ElementType::F32
                }
            } else if graph.inputs.contains(&v) {
                ElementType::F16
            } else if graph.outputs.contains(&v) || !feeds_conv[v] {
                ElementType::F32
            } else {
                ElementType::F16
            }
        })
        .collect()
}

/// A value's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    pub storage: Storage,
    /// The value that owns the storage this one is a view of (itself when
    /// it owns its storage).
    pub root: usize,
    /// Bytes from the start of the storage.
    pub offset: usize,
    /// Elements between consecutive images of the batch (dim 0).
    pub batch_stride: usize,
    pub layout: Layout,
}

/// The memory plan of a graph: a placement per value and the arena size.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryPlan {
    pub placements: Vec<Placement>,
    /// Each value's storage type (see [`element_types`]).
    pub element_types: Vec<ElementType>,
    /// Values stored NHWC (see [`layouts`]).
    pub nhwc_values: usize,
    /// Arena size in bytes.
    pub arena_bytes: usize,
    /// What the arena would be without reuse (sum of all roots), for reports.
    pub unshared_bytes: usize,
    /// Concats removed (inputs written in place) and splits made views.
    pub concats_in_place: usize,
    pub splits_as_views: usize,
}

/// Alignment of arena roots, in bytes.
pub const ARENA_ALIGN_BYTES: usize = 256;

/// Which values are stored NHWC. A value may be when it is a 4-D FP16
/// activation (not a constant, model input or output) with a multiple of 8
/// channels (whole 16-byte chunks per pixel), and every node touching it
/// handles NHWC:
/// - a conv reads and writes either layout, but its residual is read in its
///   output's layout, and a depthwise conv's input, output and residual
///   share one (its kernel walks them together);
/// - max-pooling, sigmoid and same-shape binary ops keep one layout across
///   their operands (their kernels stay coalesced), as do a channel
///   concatenation's or split's members (they are slices of one root);
/// - a nearest resize reads and writes any layout (a strided copy);
/// - every other op (reshape, transpose, slice, softmax, matmul, broadcasting
///   arithmetic) needs NCHW.
///
/// The constraints are applied until nothing changes (a group with one NCHW
/// member is all NCHW).
pub fn layouts(graph: &Graph, types: &[ElementType]) -> Vec<bool> {
    let n = graph.values.len();
    let external = |v: ValueId| graph.inputs.contains(&v) || graph.outputs.contains(&v);
    let mut nhwc: Vec<bool> = (0..n)
        .map(|v| {
            let value = &graph.values[v];
            value.shape.len() == 4
                && value.shape[1] % 8 == 0
                && value.constant.is_none()
                && !external(v)
                && types[v] == ElementType::F16
        })
        .collect();
    // (values that must share a layout, values that must be NCHW) per node.
    let mut groups: Vec<Vec<ValueId>> = Vec::new();
    let mut forced: Vec<ValueId> = Vec::new();
    for node in &graph.nodes {
        let x = node.inputs[0];
        let same_shape = node.inputs.iter().all(|&i| graph.values[i].shape == graph.values[node.outputs[0]].shape);
        match &node.op {
            Op::Conv(c) if c.group > 1 => {
                let mut g = vec![x, node.outputs[0]];
                if c.residual {
                    g.push(*node.inputs.last().unwrap());
                }
                groups.push(g);
            }
            Op::Conv(c) => {
                if c.residual {
                    groups.push(vec![node.outputs[0], *node.inputs.last().unwrap()]);
                }
            }
            Op::ConvTranspose(_) | Op::ResizeNearest { .. } => {}
            Op::MaxPool(_) | Op::Sigmoid => groups.push(vec![x, node.outputs[0]]),
            Op::Add | Op::Sub | Op::Mul | Op::Div if same_shape => {
                groups.push(node.inputs.iter().chain(&node.outputs).copied().collect());
            }
            Op::Concat { axis: 1 } | Op::Split { axis: 1, .. } => {
                groups.push(node.inputs.iter().chain(&node.outputs).copied().collect());
            }
            _ => forced.extend(node.inputs.iter().chain(&node.outputs).copied()),
        }
    }
    for v in forced {
        nhwc[v] = false;
    }
    loop {
        let mut changed = false;
        for g in &groups {
            if g.iter().any(|&v| !nhwc[v]) && g.iter().any(|&v| nhwc[v]) {
                for &v in g {
                    nhwc[v] = false;
                }
                changed = true;
            }
        }
        if !changed {
            return nhwc;
        }
    }
}

/// Where a view's elements are in its parent's image: `offset` elements
/// from the start (the batch stride is the root's image size). A view has
/// its parent's element type.
#[derive(Debug, Clone, Copy)]
struct Alias {
    parent: ValueId,
    offset: usize,
    /// For a member of a concatenation along the last axis: the parent's
    /// last-axis length, which becomes the member's channel-plane stride.
    planes: Option<usize>,
}

fn per_image(graph: &Graph, v: ValueId) -> usize {
    let shape = &graph.values[v].shape;
    shape.iter().skip(1).product::<usize>().max(1)
}

/// Plans `graph` (nodes in execution order) for an FP16 plan.
pub fn plan(graph: &Graph) -> MemoryPlan {
    plan_for(graph, Precision::Fp16)
}

/// Plans `graph` (nodes in execution order) for a plan of `precision`
/// (FP32 values are all NCHW: only FP16 ones are NHWC, see [`layouts`]).
pub fn plan_for(graph: &Graph, precision: Precision) -> MemoryPlan {
    let n_values = graph.values.len();
    let consumers = graph.consumers();
    let producers = graph.producers();
    let external = |v: ValueId| graph.inputs.contains(&v) || graph.outputs.contains(&v);
    let types = element_types(graph, precision);
    let nhwc = layouts(graph, &types);
    // Elements from one channel to the next within an image: a plane for
    // NCHW, 1 for NHWC (members of a split or concatenation share a layout).
    let channel_step = |v: ValueId| if nhwc[v] { 1 } else { graph.values[v].shape.iter().skip(2).product::<usize>() };
    let mut alias: Vec<Option<Alias>> = vec![None; n_values];
    let (mut concats, mut splits) = (0, 0);

    for node in &graph.nodes {
        match &node.op {
            Op::Reshape { .. } => {
                let (x, y) = (node.inputs[0], node.outputs[0]);
                // A reshape of a strided slice would need a gather; those stay copies.
                let contiguous = graph.values[x].shape.first().copied().unwrap_or(1) == 1 || alias[x].is_none();
                if !external(y) && contiguous && types[x] == types[y] {
                    alias[y] = Some(Alias { parent: x, offset: 0, planes: None });
                }
            }
            Op::Split { axis: 1, sizes } => {
                let x = node.inputs[0];
                let plane = channel_step(x);
                let mut c0 = 0;
                for (&y, &n) in node.outputs.iter().zip(sizes) {
                    if !external(y) && types[x] == types[y] && nhwc[x] == nhwc[y] {
                        alias[y] = Some(Alias { parent: x, offset: c0 * plane, planes: None });
                    }
                    c0 += n;
                }
                splits += 1;
            }
            Op::Concat { axis: 2 } if graph.values[node.outputs[0]].shape.len() == 3 => {
                // [N, C, L_k] members, each a flattened conv output: the
                // conv writes its planes into columns [start, start + L_k)
                // of every channel row of y.
                let y = node.outputs[0];
                let total = graph.values[y].shape[2];
                let member = |x: ValueId| -> Option<ValueId> {
                    let r = producers[x]?;
                    let Op::Reshape { .. } = graph.nodes[r].op else { return None };
                    let c = graph.nodes[r].inputs[0];
                    let p = producers[c]?;
                    let conv = matches!(&graph.nodes[p].op, Op::Conv(conv) if conv.group == 1);
                    let (cs, xs) = (&graph.values[c].shape, &graph.values[x].shape);
                    let flattened = cs.len() == 4 && cs[..2] == xs[..2];
                    let once = node.inputs.iter().filter(|&&o| o == x).count() == 1;
                    let alone = consumers[c] == [r] && consumers[x].len() == 1;
                    let view = alias[x].is_some_and(|a| a.parent == c) && alias[c].is_none();
                    let plain =
                        !external(c) && !external(x) && !nhwc[c] && types[c] == types[y] && types[x] == types[y];
                    (conv && flattened && once && alone && view && plain).then_some(c)
                };
                let convs: Option<Vec<ValueId>> = node.inputs.iter().map(|&x| member(x)).collect();
                if let Some(convs) = convs.filter(|_| !external(y)) {
                    let mut start = 0;
                    for (&c, &x) in convs.iter().zip(&node.inputs) {
                        alias[c] = Some(Alias { parent: y, offset: start, planes: Some(total) });
                        start += graph.values[x].shape[2];
                    }
                    concats += 1;
                }
            }
            Op::Concat { axis: 1 } => {
                let y = node.outputs[0];
                let plane = channel_step(y);
                // The members to place: each input, except that consecutive
                // inputs which are all of one channel split's outputs, in
                // order, stand for the split's input (YOLO's C2f/C3k2 concat
                // their own split halves: the split's input then sits in the
                // first channels and its outputs stay views of it).
                let mut members: Vec<ValueId> = Vec::new();
                let mut i = 0;
                while i < node.inputs.len() {
                    let x = node.inputs[i];
                    if let Some(p) = producers[x] {
                        let pn = &graph.nodes[p];
                        if matches!(pn.op, Op::Split { axis: 1, .. })
                            && node.inputs.get(i..i + pn.outputs.len()) == Some(&pn.outputs[..])
                        {
                            members.push(pn.inputs[0]);
                            i += pn.outputs.len();
                            continue;
                        }
                    }
                    members.push(x);
                    i += 1;
                }
                let eligible = members.iter().all(|&x| {
                    let once = members.iter().filter(|&&o| o == x).count() == 1;
                    let free = alias[x].is_none() && graph.values[x].constant.is_none() && !external(x);
                    // Written by a kernel or a concatenation (not itself a
                    // view), and not reshaped anywhere: a reshape of a
                    // batch-strided slice would not be a view.
                    let kernel_output = producers[x]
                        .is_some_and(|p| !matches!(graph.nodes[p].op, Op::Reshape { .. } | Op::Split { .. }));
                    let no_reshape = consumers[x].iter().all(|&c| !matches!(graph.nodes[c].op, Op::Reshape { .. }));
                    once && free && kernel_output && no_reshape && types[x] == types[y] && nhwc[x] == nhwc[y]
                });
                if eligible {
                    let mut c0 = 0;
                    for &x in &members {
                        alias[x] = Some(Alias { parent: y, offset: c0 * plane, planes: None });
                        c0 += graph.values[x].shape.get(1).copied().unwrap_or(1);
                    }
                    concats += 1;
                }
            }
            _ => {}
        }
    }

    // Resolve each value to its root and its offset in it.
    let mut root = vec![0usize; n_values];
    let mut offset = vec![0usize; n_values];
    let mut stride = vec![0usize; n_values];
    let mut planes: Vec<Option<usize>> = vec![None; n_values];
    for v in 0..n_values {
        let (mut r, mut off) = (v, 0usize);
        while let Some(a) = alias[r] {
            off += a.offset;
            planes[v] = planes[v].or(a.planes);
            r = a.parent;
        }
        root[v] = r;
        offset[v] = off;
        // Every view of a root steps from image to image as the root does.
        stride[v] = per_image(graph, r);
    }

    // Liveness of roots over node indices.
    let mut first_def = vec![usize::MAX; n_values];
    let mut last_use = vec![0usize; n_values];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &v in &node.outputs {
            let r = root[v];
            first_def[r] = first_def[r].min(i);
            last_use[r] = last_use[r].max(i);
        }
        for &v in &node.inputs {
            let r = root[v];
            last_use[r] = last_use[r].max(i);
            first_def[r] = first_def[r].min(i);
        }
    }

    let mut placements = Vec::with_capacity(n_values);
    let mut roots: Vec<ValueId> = (0..n_values)
        .filter(|&v| root[v] == v && graph.values[v].constant.is_none() && !external(v) && first_def[v] != usize::MAX)
        .collect();
    roots.sort_by_key(|&v| std::cmp::Reverse(graph.values[v].elements()));
    let align = |x: usize| x.div_ceil(ARENA_ALIGN_BYTES) * ARENA_ALIGN_BYTES;
    let mut arena_offset = vec![0usize; n_values];
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (start, end, first, last)
    let mut arena = 0usize;
    let mut unshared = 0usize;
    for &v in &roots {
        let size = align(graph.values[v].elements() * types[v].bytes());
        unshared += size;
        let (lo, hi) = (first_def[v], last_use[v]);
        let mut busy: Vec<(usize, usize)> =
            placed.iter().filter(|p| p.2 <= hi && lo <= p.3).map(|p| (p.0, p.1)).collect();
        busy.sort_unstable();
        let mut at = 0usize;
        for (s, e) in busy {
            if at + size <= s {
                break;
            }
            at = at.max(e);
        }
        arena_offset[v] = at;
        placed.push((at, at + size, lo, hi));
        arena = arena.max(at + size);
    }

    for v in 0..n_values {
        let r = root[v];
        let storage = if graph.values[r].constant.is_some() {
            Storage::Constant
        } else if let Some(i) = graph.inputs.iter().position(|&x| x == r) {
            Storage::Input(i)
        } else if let Some(i) = graph.outputs.iter().position(|&x| x == r) {
            Storage::Output(i)
        } else {
            Storage::Arena
        };
        let base = if storage == Storage::Arena { arena_offset[r] } else { 0 };
        placements.push(Placement {
            storage,
            root: r,
            offset: base + offset[v] * types[v].bytes(),
            batch_stride: stride[v],
            layout: match (nhwc[v], planes[v]) {
                (true, _) => Layout::Nhwc { pixel_stride: graph.values[r].shape[1] },
                (false, Some(plane_stride)) => Layout::NchwPlanes { plane_stride },
                (false, None) => Layout::Nchw,
            },
        });
    }
    MemoryPlan {
        placements,
        nhwc_values: nhwc.iter().filter(|&&b| b).count(),
        element_types: types,
        arena_bytes: arena,
        unshared_bytes: unshared,
        concats_in_place: concats,
        splits_as_views: splits,
    }
}

/// Checks the plan's one safety property: two arena values of different
/// roots whose roots are live at the same node share no element. A root is
/// live from the first node writing it or any view of it to the last node
/// reading any of them. Used by tests and by `build-engine` before it
/// writes a plan.
pub fn check(graph: &Graph, plan: &MemoryPlan) -> Result<(), String> {
    let n = graph.values.len();
    let mut live: Vec<(usize, usize)> = vec![(usize::MAX, 0); n];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &v in node.inputs.iter().chain(&node.outputs) {
            let r = plan.placements[v].root;
            live[r].0 = live[r].0.min(i);
            live[r].1 = live[r].1.max(i);
        }
    }
    // Bytes a value covers, as one interval over all its images (a
    // conservative box for batch-strided slices).
    let extent = |v: usize| {
        let p = plan.placements[v];
        let size = plan.element_types[v].bytes();
        let shape = &graph.values[v].shape;
        let batch = shape.first().copied().unwrap_or(1).max(1);
        let per = match p.layout {
            Layout::Nchw => shape.iter().skip(1).product::<usize>().max(1),
            // The last pixel's channels end the image.
            Layout::Nhwc { pixel_stride } => (shape[2] * shape[3] - 1) * pixel_stride + shape[1],
            // The last plane ends it.
            Layout::NchwPlanes { plane_stride } => {
                (shape[1] - 1) * plane_stride + shape.iter().skip(2).product::<usize>()
            }
        };
        (p.offset, p.offset + ((batch - 1) * p.batch_stride + per) * size)
    };
    let arena: Vec<usize> = (0..n)
        .filter(|&v| plan.placements[v].storage == Storage::Arena && live[plan.placements[v].root].0 != usize::MAX)
        .collect();
    for (i, &a) in arena.iter().enumerate() {
        let (s, e) = extent(a);
        if e > plan.arena_bytes {
            return Err(format!("value {:?} ends past the arena", graph.values[a].name));
        }
        let ra = plan.placements[a].root;
        for &b in &arena[i + 1..] {
            let rb = plan.placements[b].root;
            if ra == rb {
                continue;
            }
            let together = live[ra].0 <= live[rb].1 && live[rb].0 <= live[ra].1;
            let (s2, e2) = extent(b);
            if together && s < e2 && s2 < e {
                return Err(format!(
                    "values {:?} and {:?} are live together and overlap in the arena",
                    graph.values[a].name, graph.values[b].name
                ));
            }
        }
    }
    Ok(())
}
