//! SAM2.1's memory-attention stack on the GPU (src/models/sam2) against the
//! plain-Rust CPU reference (which tools/parity/sam2_parity.py --cpu-check
//! holds to Meta's module at 1e-4), the memory bank's ring semantics
//! (masking before the ring is full, the last W frames after), and memory
//! that stays flat over 10,000 appended frames.
//!
//! Tolerance: relative L2 <= 1e-2 against the CPU reference (the issue's
//! parity bound; FP16 storage of activations gives about 1e-3).

use half::f16;
use vrseg::gpu::{device_allocation_count, Gpu, PoolPlan, VramPool};
use vrseg::models::sam2::bank::{MemoryBank, MemoryBankPlan};
use vrseg::models::sam2::reference::{memory_attention_reference, MemoryAttentionInputs};
use vrseg::models::sam2::stack::{MemoryAttention, MemoryAttentionPlan};
use vrseg::models::sam2::weights::MemoryAttentionWeights;
use vrseg::models::sam2::{MemoryAttentionConfig, Sam2Error};
use vrseg::selftest::SplitMix64;

use crate::{gpu_or_skip, test_seed};

const REL_L2: f64 = 1e-2;

fn normal_ish(rng: &mut SplitMix64, count: usize) -> Vec<f32> {
    // Sum of three uniforms: mean 0, variance 1, bounded tails.
    (0..count).map(|_| (0..3).map(|_| rng.uniform_f32(-1.0, 1.0)).sum::<f32>()).collect()
}

fn halves(values: &[f32]) -> Vec<f16> {
    values.iter().map(|&v| f16::from_f32(v)).collect()
}

fn rounded(values: &[f32]) -> Vec<f32> {
    values.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(g, w)| (f64::from(*g) - f64::from(*w)).powi(2)).sum();
    let den: f64 = want.iter().map(|w| f64::from(*w).powi(2)).sum();
    if num.is_nan() {
        f64::INFINITY
    } else {
        (num / den).sqrt()
    }
}

/// Everything one scenario needs on the GPU.
struct Rig {
    gpu: Gpu,
    config: MemoryAttentionConfig,
    weights: MemoryAttentionWeights,
    window: usize,
    max_pointers: usize,
}

/// A scenario's frames and pointers on the host (already FP16-rounded).
struct Frames {
    memory: Vec<Vec<f32>>,
    memory_pos: Vec<Vec<f32>>,
    pointers: Vec<f32>,
    pointer_pos: Vec<f32>,
    curr: Vec<f32>,
    curr_pos: Vec<f32>,
}

impl Frames {
    fn random(rng: &mut SplitMix64, config: &MemoryAttentionConfig, frames: usize, pointers: usize) -> Frames {
        let (t, d, m) = (config.tokens(), config.d_model, config.mem_dim);
        let mut f = |n| rounded(&normal_ish(rng, n));
        Frames {
            memory: (0..frames).map(|_| f(t * m)).collect(),
            memory_pos: (0..frames).map(|_| f(t * m)).collect(),
            pointers: f(pointers * m),
            pointer_pos: f(pointers * m),
            curr: f(t * d),
            curr_pos: f(t * d),
        }
    }

    /// The CPU reference over the frames at `kept` (any order) and all pointers.
    fn reference(&self, weights: &MemoryAttentionWeights, kept: &[usize]) -> Vec<f32> {
        let mut memory: Vec<f32> = kept.iter().flat_map(|&i| self.memory[i].iter().copied()).collect();
        let mut pos: Vec<f32> = kept.iter().flat_map(|&i| self.memory_pos[i].iter().copied()).collect();
        memory.extend_from_slice(&self.pointers);
        pos.extend_from_slice(&self.pointer_pos);
        memory_attention_reference(
            weights,
            &MemoryAttentionInputs {
                curr: &self.curr,
                curr_pos: &self.curr_pos,
                memory: &memory,
                memory_pos: &pos,
                spatial_keys: kept.len() * weights.config.tokens(),
            },
        )
    }
}

impl Rig {
    fn new(gpu: Gpu, side: usize, window: usize, max_pointers: usize, seed: u64) -> Rig {
        let config = MemoryAttentionConfig::sam2_1_hiera_t().with_side(side);
        let weights = MemoryAttentionWeights::random(config, seed);
        Rig { gpu, config, weights, window, max_pointers }
    }

    /// Appends `order` of the frames, sets the pointers, runs one forward and
    /// returns its output (the output buffer is poisoned first).
    fn run(&self, frames: &Frames, order: &[usize], pointers: usize) -> Result<Vec<f32>, Sam2Error> {
        let (t, d, m) = (self.config.tokens(), self.config.d_model, self.config.mem_dim);
        let mut plan = PoolPlan::new();
        let bank_plan = MemoryBankPlan::new(&mut plan, &self.config, self.window, self.max_pointers)?;
        let stack_plan = MemoryAttentionPlan::new(&mut plan, self.config)?;
        let curr_id = plan.buffer("test.curr", t * d * 2);
        let pos_id = plan.buffer("test.curr_pos", t * d * 2);
        let out_id = plan.buffer("test.out", t * d * 2);
        let mem_ids: Vec<_> = (0..frames.memory.len())
            .map(|i| {
                (plan.buffer(format!("test.memory{i}"), t * m * 2), plan.buffer(format!("test.pos{i}"), t * m * 2))
            })
            .collect();
        let ptr_id = plan.buffer("test.pointers", self.max_pointers.max(1) * m * 2);
        let ptr_pos_id = plan.buffer("test.pointer_pos", self.max_pointers.max(1) * m * 2);
        let pool = VramPool::reserve(&self.gpu, &plan)?;
        let stream = self.gpu.new_stream()?;
        let stack = MemoryAttention::new(&self.gpu, &stream, &pool, stack_plan, &self.weights)?;
        let mut bank = MemoryBank::new(&pool, bank_plan);
        pool.buffer(curr_id).upload_blocking(&stream, &halves(&frames.curr))?;
        pool.buffer(pos_id).upload_blocking(&stream, &halves(&frames.curr_pos))?;
        for (i, (mid, pid)) in mem_ids.iter().enumerate() {
            pool.buffer(*mid).upload_blocking(&stream, &halves(&frames.memory[i]))?;
            pool.buffer(*pid).upload_blocking(&stream, &halves(&frames.memory_pos[i]))?;
        }
        for &i in order {
            let (mid, pid) = mem_ids[i];
            stack.append(&self.gpu, &stream, &mut bank, &pool.buffer(mid), &pool.buffer(pid))?;
        }
        if pointers > 0 {
            pool.buffer(ptr_id).upload_blocking(&stream, &halves(&frames.pointers))?;
            pool.buffer(ptr_pos_id).upload_blocking(&stream, &halves(&frames.pointer_pos))?;
        }
        bank.set_object_pointers(&self.gpu, &stream, &pool.buffer(ptr_id), &pool.buffer(ptr_pos_id), pointers)?;
        let out = pool.buffer(out_id);
        out.upload_blocking(&stream, &vec![f16::NAN; t * d])?;
        stack.forward(&self.gpu, &stream, &bank, &pool.buffer(curr_id), &pool.buffer(pos_id), &out)?;
        let mut got = vec![f16::ZERO; t * d];
        out.download_blocking(&stream, &mut got)?;
        Ok(got.iter().map(|v| v.to_f32()).collect())
    }
}

fn check(label: &str, got: &[f32], want: &[f32]) {
    let err = rel_l2(got, want);
    eprintln!("{label}: relative L2 {err:.2e} against the CPU reference");
    assert!(err <= REL_L2, "{label}: relative L2 {err:.3e} > {REL_L2}");
}

#[test]
fn stack_matches_the_cpu_reference_12x12_three_frames_sixteen_pointers() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("sam2 stack 12x12 W3 P16");
    let rig = Rig::new(gpu, 12, 3, 16, seed);
    let frames = Frames::random(&mut SplitMix64::new(seed ^ 1), &rig.config, 3, 16);
    let got = rig.run(&frames, &[0, 1, 2], 16).unwrap();
    check("12x12, 3 frames, 16 pointers", &got, &frames.reference(&rig.weights, &[0, 1, 2]));
}

#[test]
fn ring_not_yet_full_attends_only_to_appended_frames() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("sam2 ring not full");
    let rig = Rig::new(gpu, 11, 7, 8, seed);
    let frames = Frames::random(&mut SplitMix64::new(seed ^ 2), &rig.config, 2, 5);
    let got = rig.run(&frames, &[0, 1], 5).unwrap();
    check("11x11, ring of 7 holding 2 frames, 5 pointers", &got, &frames.reference(&rig.weights, &[0, 1]));
}

#[test]
fn ring_keeps_the_last_window_of_frames() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("sam2 ring wraps");
    let rig = Rig::new(gpu, 9, 3, 4, seed);
    let frames = Frames::random(&mut SplitMix64::new(seed ^ 3), &rig.config, 5, 4);
    let got = rig.run(&frames, &[0, 1, 2, 3, 4], 4).unwrap();
    let want = frames.reference(&rig.weights, &[2, 3, 4]);
    check("9x9, 5 frames into a ring of 3", &got, &want);
    // And it is not what the first three frames give.
    let stale = frames.reference(&rig.weights, &[0, 1, 2]);
    assert!(rel_l2(&got, &stale) > 10.0 * rel_l2(&got, &want), "the ring still attends to dropped frames");
}

#[test]
fn pointers_only_and_frames_only() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("sam2 pointers only");
    let rig = Rig::new(gpu, 8, 2, 16, seed);
    let frames = Frames::random(&mut SplitMix64::new(seed ^ 4), &rig.config, 1, 16);
    let got = rig.run(&frames, &[], 16).unwrap();
    check("8x8, no frame, 16 pointers", &got, &frames.reference(&rig.weights, &[]));
    let no_pointers = Frames { pointers: vec![], pointer_pos: vec![], ..frames };
    let got = rig.run(&no_pointers, &[0], 0).unwrap();
    check("8x8, 1 frame, no pointer", &got, &no_pointers.reference(&rig.weights, &[0]));
}

#[test]
fn empty_bank_and_too_many_pointers_are_refused() {
    let gpu = gpu_or_skip!();
    let rig = Rig::new(gpu, 4, 2, 3, 5);
    let frames = Frames::random(&mut SplitMix64::new(5), &rig.config, 1, 3);
    let err = rig.run(&frames, &[], 0).unwrap_err();
    assert!(matches!(err, Sam2Error::EmptyMemory), "{err}");
    let err = rig.run(&frames, &[0], 4).unwrap_err().to_string();
    assert!(err.contains("4 object-pointer tokens") && err.contains("at most 3"), "{err}");
}

/// The CPU reference over `kept` frames whose memory_pos is the spatial
/// encoding plus `tpos[age - 1]`, as SAM2's `_prepare_memory_conditioned_features`
/// builds it (`maskmem_tpos_enc[num_maskmem - t_pos - 1]`, t_rel = age).
fn reference_at_ages(
    weights: &MemoryAttentionWeights,
    frames: &Frames,
    kept: &[(usize, usize)],
    tpos: &[f32],
) -> Vec<f32> {
    let m = weights.config.mem_dim;
    let mut memory: Vec<f32> = kept.iter().flat_map(|&(f, _)| frames.memory[f].iter().copied()).collect();
    let mut pos: Vec<f32> = kept
        .iter()
        .flat_map(|&(f, age)| {
            frames.memory_pos[f]
                .chunks(m)
                .flat_map(move |row| row.iter().zip(&tpos[(age - 1) * m..age * m]).map(|(p, t)| p + t))
        })
        .collect();
    memory.extend_from_slice(&frames.pointers);
    pos.extend_from_slice(&frames.pointer_pos);
    memory_attention_reference(
        weights,
        &MemoryAttentionInputs {
            curr: &frames.curr,
            curr_pos: &frames.curr_pos,
            memory: &memory,
            memory_pos: &pos,
            spatial_keys: kept.len() * weights.config.tokens(),
        },
    )
}

/// The ring under ageing: with SAM2's temporal encoding set, frames appended
/// one per step through a ring of 3 (two wraps), a forward after every
/// append matches the CPU reference computed with each frame's true age at
/// that step; a ring that froze each frame's keys at its age on append
/// (what projecting once would give) is far from it after the first step.
#[test]
fn ring_keys_age_with_their_frames() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("sam2 ring ageing");
    let (side, window, pointers, total) = (9, 3, 4, 7);
    let config = MemoryAttentionConfig::sam2_1_hiera_t().with_side(side);
    let (t, d, m) = (config.tokens(), config.d_model, config.mem_dim);
    let weights = MemoryAttentionWeights::random(config, seed);
    let mut rng = SplitMix64::new(seed ^ 6);
    let frames = Frames::random(&mut rng, &config, total, pointers);
    // One row more than the ring needs (SAM2 has num_maskmem = 7 rows): the
    // extra row must not be used. Magnitude like the spatial encodings, so
    // that a wrong age shows.
    let tpos_rows = window + 1;
    let tpos = rounded(&normal_ish(&mut rng, tpos_rows * m));

    let mut plan = PoolPlan::new();
    let bank_plan = MemoryBankPlan::new(&mut plan, &config, window, pointers).unwrap();
    let stack_plan = MemoryAttentionPlan::new(&mut plan, config).unwrap();
    let curr_id = plan.buffer("test.curr", t * d * 2);
    let pos_id = plan.buffer("test.curr_pos", t * d * 2);
    let out_id = plan.buffer("test.out", t * d * 2);
    let mem_ids: Vec<_> = (0..total)
        .map(|i| (plan.buffer(format!("test.memory{i}"), t * m * 2), plan.buffer(format!("test.pos{i}"), t * m * 2)))
        .collect();
    let ptr_id = plan.buffer("test.pointers", pointers * m * 2);
    let ptr_pos_id = plan.buffer("test.pointer_pos", pointers * m * 2);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let stack = MemoryAttention::new(&gpu, &stream, &pool, stack_plan, &weights).unwrap();
    let mut bank = MemoryBank::new(&pool, bank_plan);
    pool.buffer(curr_id).upload_blocking(&stream, &halves(&frames.curr)).unwrap();
    pool.buffer(pos_id).upload_blocking(&stream, &halves(&frames.curr_pos)).unwrap();
    pool.buffer(ptr_id).upload_blocking(&stream, &halves(&frames.pointers)).unwrap();
    pool.buffer(ptr_pos_id).upload_blocking(&stream, &halves(&frames.pointer_pos)).unwrap();
    for (i, (mid, pid)) in mem_ids.iter().enumerate() {
        pool.buffer(*mid).upload_blocking(&stream, &halves(&frames.memory[i])).unwrap();
        pool.buffer(*pid).upload_blocking(&stream, &halves(&frames.memory_pos[i])).unwrap();
    }
    // Too few rows for the ring is refused.
    let err = stack.set_temporal_encoding(&stream, &mut bank, &tpos[..(window - 1) * m], window - 1).unwrap_err();
    assert!(err.to_string().contains("needs at least 3 rows"), "{err}");
    stack.set_temporal_encoding(&stream, &mut bank, &tpos, tpos_rows).unwrap();

    let out = pool.buffer(out_id);
    for (step, &(mid, pid)) in mem_ids.iter().enumerate() {
        stack.append(&gpu, &stream, &mut bank, &pool.buffer(mid), &pool.buffer(pid)).unwrap();
        bank.set_object_pointers(&gpu, &stream, &pool.buffer(ptr_id), &pool.buffer(ptr_pos_id), pointers).unwrap();
        out.upload_blocking(&stream, &vec![f16::NAN; t * d]).unwrap();
        stack.forward(&gpu, &stream, &bank, &pool.buffer(curr_id), &pool.buffer(pos_id), &out).unwrap();
        let mut got = vec![f16::ZERO; t * d];
        out.download_blocking(&stream, &mut got).unwrap();
        let got: Vec<f32> = got.iter().map(|v| v.to_f32()).collect();
        // Frames step + 1 - kept ..= step, the newest 1 frame old.
        let kept = (step + 1).min(window);
        let true_ages: Vec<(usize, usize)> = (step + 1 - kept..=step).map(|f| (f, step + 1 - f)).collect();
        let want = reference_at_ages(&weights, &frames, &true_ages, &tpos);
        check(&format!("ageing step {step}: {kept} frame(s) of a ring of {window}"), &got, &want);
        if kept > 1 {
            let frozen: Vec<(usize, usize)> = true_ages.iter().map(|&(f, _)| (f, 1)).collect();
            let stale = reference_at_ages(&weights, &frames, &frozen, &tpos);
            let (e_true, e_stale) = (rel_l2(&got, &want), rel_l2(&got, &stale));
            assert!(
                e_stale > 10.0 * e_true,
                "step {step}: ages frozen at append fit as well ({e_stale:.2e} vs {e_true:.2e})"
            );
        }
    }
    // Setting it once frames are in is refused; after a reset it is allowed.
    let err = stack.set_temporal_encoding(&stream, &mut bank, &tpos, tpos_rows).unwrap_err();
    assert!(err.to_string().contains("before the first append"), "{err}");
    bank.reset();
    stack.set_temporal_encoding(&stream, &mut bank, &tpos, tpos_rows).unwrap();
}

/// Full size: 10,000 frames through a ring of 7 at 64x64 make no device
/// allocation and do not move the driver's free memory; the forward after
/// them equals, bit for bit, a fresh bank holding the same last 7 frames in
/// the same slots.
#[test]
fn memory_is_flat_over_10000_appended_frames() {
    let gpu = gpu_or_skip!();
    let seed = test_seed("sam2 10000 appends");
    let config = MemoryAttentionConfig::sam2_1_hiera_t();
    let (t, d, m, window, pointers, sources) = (config.tokens(), config.d_model, config.mem_dim, 7, 64, 11);
    let weights = MemoryAttentionWeights::random(config, seed);
    let mut rng = SplitMix64::new(seed ^ 5);
    let mut plan = PoolPlan::new();
    let bank_plan = MemoryBankPlan::new(&mut plan, &config, window, pointers).unwrap();
    let fresh_plan = MemoryBankPlan::new(&mut plan, &config, window, pointers).unwrap();
    let stack_plan = MemoryAttentionPlan::new(&mut plan, config).unwrap();
    let src: Vec<_> = (0..sources).map(|i| plan.buffer(format!("test.source{i}"), t * m * 2)).collect();
    let pos_id = plan.buffer("test.memory_pos", t * m * 2);
    let curr_id = plan.buffer("test.curr", t * d * 2);
    let curr_pos_id = plan.buffer("test.curr_pos", t * d * 2);
    let ptr_id = plan.buffer("test.pointers", pointers * m * 2);
    let out_id = plan.buffer("test.out", t * d * 2);
    let fresh_out_id = plan.buffer("test.fresh_out", t * d * 2);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let stack = MemoryAttention::new(&gpu, &stream, &pool, stack_plan, &weights).unwrap();
    for id in src.iter().chain([&pos_id, &ptr_id]) {
        let view = pool.buffer(*id);
        view.upload_blocking(&stream, &halves(&normal_ish(&mut rng, view.bytes() / 2))).unwrap();
    }
    pool.buffer(curr_id).upload_blocking(&stream, &halves(&normal_ish(&mut rng, t * d))).unwrap();
    pool.buffer(curr_pos_id).upload_blocking(&stream, &halves(&normal_ish(&mut rng, t * d))).unwrap();
    let (curr, curr_pos, pos, ptr) =
        (pool.buffer(curr_id), pool.buffer(curr_pos_id), pool.buffer(pos_id), pool.buffer(ptr_id));

    let mut bank = MemoryBank::new(&pool, bank_plan);
    stack.append(&gpu, &stream, &mut bank, &pool.buffer(src[0]), &pos).unwrap();
    bank.set_object_pointers(&gpu, &stream, &ptr, &ptr, pointers).unwrap();
    stack.forward(&gpu, &stream, &bank, &curr, &curr_pos, &pool.buffer(out_id)).unwrap();
    stream.synchronize().unwrap();
    let allocations = device_allocation_count();
    let (free_before, _) = gpu.memory_info().unwrap();

    let total = 10_000usize;
    for f in 1..total {
        stack.append(&gpu, &stream, &mut bank, &pool.buffer(src[f % sources]), &pos).unwrap();
        if f % 1000 == 0 {
            stack.forward(&gpu, &stream, &bank, &curr, &curr_pos, &pool.buffer(out_id)).unwrap();
        }
    }
    stack.forward(&gpu, &stream, &bank, &curr, &curr_pos, &pool.buffer(out_id)).unwrap();
    stream.synchronize().unwrap();
    assert_eq!(bank.appended(), total as u64);
    assert_eq!(bank.valid_frames(), window);
    assert_eq!(device_allocation_count(), allocations, "appending frames allocated device memory");
    let (free_after, _) = gpu.memory_info().unwrap();
    eprintln!(
        "10000 appends: driver free memory {free_before} -> {free_after} bytes, pool {} bytes",
        pool.total_bytes()
    );
    assert_eq!(free_before, free_after, "the driver's free memory moved over 10,000 appends");

    // Frames 9993..9999 sit in slots 9993 % 7 = 4, 5, 6, 0, 1, 2, 3: append
    // 9996..9999 then 9993..9995 to a fresh ring to fill the same slots.
    let mut fresh = MemoryBank::new(&pool, fresh_plan);
    for f in (9996..10_000).chain(9993..9996) {
        stack.append(&gpu, &stream, &mut fresh, &pool.buffer(src[f % sources]), &pos).unwrap();
    }
    fresh.set_object_pointers(&gpu, &stream, &ptr, &ptr, pointers).unwrap();
    stack.forward(&gpu, &stream, &fresh, &curr, &curr_pos, &pool.buffer(fresh_out_id)).unwrap();
    let (mut a, mut b) = (vec![f16::ZERO; t * d], vec![f16::ZERO; t * d]);
    pool.buffer(out_id).download_blocking(&stream, &mut a).unwrap();
    pool.buffer(fresh_out_id).download_blocking(&stream, &mut b).unwrap();
    assert!(a.iter().all(|v| v.is_finite()), "non-finite output after 10,000 appends");
    let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same, "after 10,000 appends the ring does not hold exactly the last 7 frames");
}
