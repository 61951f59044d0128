//! The VRAM pool on a real device: one allocation, disjoint buffers, a frame
//! loop that allocates nothing, backpressure, and the out-of-memory sentence.

use vrseg::gpu::{device_allocation_count, GpuError, PoolPlan, VramPool};
use vrseg::selftest::{check_disjoint_patterns, check_frame_loop};

use crate::gpu_or_skip;

#[test]
fn reserve_makes_exactly_one_device_allocation() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    for i in 0..17 {
        plan.buffer(format!("b{i}"), 1 + i * 4099);
    }
    plan.slots("frames", 8192 * 4096 * 3 / 2, 3);
    let before = device_allocation_count();
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    assert_eq!(device_allocation_count(), before + 1);
    assert_eq!(pool.total_bytes(), plan.total_bytes().unwrap());
}

#[test]
fn buffers_of_odd_sizes_are_disjoint() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    let ids: Vec<_> = [1usize, 4, 255, 257, 4097, 65_539, 1_048_573]
        .iter()
        .enumerate()
        .map(|(i, &b)| plan.buffer(format!("odd{i}"), b * 4))
        .collect();
    let slots = plan.slots("ring", 3 * 1078 * 1918 / 2 * 4, 3);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let mut views: Vec<_> = ids.iter().map(|&id| pool.buffer(id)).collect();
    views.extend((0..3).map(|i| pool.slot(slots, i)));
    for v in &views {
        assert_eq!(v.ptr() % 256, 0, "`{}` is not 256-byte aligned", v.name());
    }
    let outcome = check_disjoint_patterns(&gpu, &stream, &views).unwrap();
    assert!(outcome.passed, "{}", outcome.detail);
}

#[test]
fn thousand_frame_loop_allocates_nothing() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    // 8K SBS NV12 frames: the size the pipeline will move.
    let slots = plan.slots("frames", 8192 * 4096 * 3 / 2, 4);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    // Warm-up: first launches may make the driver set up per-context state.
    check_frame_loop(&gpu, &stream, &pool, slots, 8).unwrap();
    let (free_before, _) = gpu.memory_info().unwrap();
    let outcome = check_frame_loop(&gpu, &stream, &pool, slots, 1000).unwrap();
    let (free_after, _) = gpu.memory_info().unwrap();
    assert!(outcome.passed, "{}: {}", outcome.name, outcome.detail);
    // The driver's own view agrees: nothing was allocated behind our counter.
    assert_eq!(free_before, free_after, "device free memory changed across the frame loop");
}

#[test]
fn slot_ring_applies_backpressure() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    let slots = plan.slots("two", 4096, 2);
    let pool = VramPool::reserve(&gpu, &plan).unwrap();
    let stream = gpu.new_stream().unwrap();
    let ring = pool.slot_ring(slots).unwrap();
    let a = ring.acquire(&stream).unwrap();
    let b = ring.acquire(&stream).unwrap();
    assert_ne!(a.index(), b.index());
    assert!(ring.try_acquire(&stream).unwrap().is_none(), "a third slot was handed out of a ring of two");
    a.release(&stream).unwrap();
    let c = ring.try_acquire(&stream).unwrap().expect("a released slot is free again");
    drop(c);
    b.release(&stream).unwrap();
    // A blocked acquirer wakes when another thread releases.
    let held = ring.acquire(&stream).unwrap();
    let held2 = ring.acquire(&stream).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            held.release(&stream).unwrap();
        });
        let woke = ring.acquire(&stream).unwrap();
        drop(woke);
    });
    drop(held2);
}

#[test]
fn too_large_a_plan_stops_before_any_allocation() {
    let gpu = gpu_or_skip!();
    let mut plan = PoolPlan::new();
    plan.buffer("everything", gpu.properties().total_memory_bytes * 2);
    let before = device_allocation_count();
    let err = VramPool::reserve(&gpu, &plan).unwrap_err();
    assert_eq!(device_allocation_count(), before, "an allocation was attempted");
    let text = err.to_string();
    assert!(matches!(err, GpuError::OutOfMemory { .. }), "{text}");
    assert!(text.contains("needs ") && text.contains(" GiB free"), "{text}");
}
