//! The kernel registry against the real driver: every generated `Kernel`
//! resolves in its module, and each module is loaded once.

use std::sync::Arc;

use vrseg::gpu::{Kernel, Module};

use crate::gpu_or_skip;

#[test]
fn every_kernel_resolves_and_modules_load_once() {
    let gpu = gpu_or_skip!();
    for &k in Kernel::ALL {
        gpu.kernels().function(gpu.context(), k).unwrap_or_else(|e| panic!("{}: {e}", k.symbol()));
    }
    for &m in Module::ALL {
        assert!(gpu.kernels().is_loaded(m), "{} not loaded", m.name());
    }
    // A second preload must not reload (the same module object comes back).
    let first: Vec<_> =
        Kernel::ALL.iter().map(|&k| gpu.kernels().function(gpu.context(), k).unwrap().cu_function()).collect();
    gpu.preload(Module::ALL).unwrap();
    let again: Vec<_> =
        Kernel::ALL.iter().map(|&k| gpu.kernels().function(gpu.context(), k).unwrap().cu_function()).collect();
    assert_eq!(first, again);
    let _ = Arc::strong_count(gpu.context());
}

#[test]
fn selftest_passes() {
    let gpu = gpu_or_skip!();
    let report = vrseg::selftest::run(&gpu, crate::test_seed("selftest"), 200).unwrap();
    for c in &report.checks {
        assert!(c.passed, "{}: {}", c.name, c.detail);
    }
}
