//! Compiles every `kernels/*.cu` into a fatbin, keeps ptxas's resource report,
//! and generates the typed kernel registry (`$OUT_DIR/kernel_registry.rs`).
//!
//! Why a fatbin per `.cu` file: one op family is one CUDA module, loaded once
//! at run time (`gpu::kernels`), so a pipeline loads only the families it uses.
//!
//! Why the registry is generated from ptxas's report rather than from the
//! sources: the report lists exactly the entry points that were compiled, so a
//! Rust `Kernel` variant cannot exist for a kernel the fatbin lacks, and no
//! kernel name is ever typed twice.
//!
//! Architectures (override with `VRSEG_CUDA_ARCHS`, e.g. `VRSEG_CUDA_ARCHS=89`
//! or `86,90`):
//! - sm_86: RTX 30xx / A10 / A40 (Ampere GA10x), the oldest card our users run.
//!   Its PTX is embedded too (the lowest listed arch always gets PTX), so a GPU
//!   newer than every SASS target below still runs, JIT-compiled by the driver.
//! - sm_89: RTX 40xx / L4 / L40 (Ada). sm_86 SASS would run there, but native
//!   code avoids Ampere-tuned scheduling on Ada.
//! - sm_90: H100 / H200 (Hopper), the project's test machine; compiled as
//!   sm_90a for wgmma (the conv kernels `conv_wgmma_nhwc_n*`).
//! - sm_120: RTX 50xx (Blackwell consumer), which does not run sm_9x SASS.
//!
//! sm_80 (A100) and sm_75 (Turing) are left out on purpose: they get the sm_86
//! PTX only if they are at least sm_86, so A100 users must add 80 to the list.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_ARCHS: &[u32] = &[86, 89, 90, 120];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels_dir = manifest_dir.join("kernels");

    println!("cargo::rerun-if-changed=kernels");
    for var in ["VRSEG_CUDA_ARCHS", "NVCC", "CUDA_HOME", "CUDA_PATH", "PATH"] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let archs = match parse_archs(env::var("VRSEG_CUDA_ARCHS").ok().as_deref()) {
        Ok(archs) => archs,
        Err(message) => fail(&message),
    };
    let nvcc = match find_nvcc(&manifest_dir) {
        Some(nvcc) => nvcc,
        None => fail(
            "nvcc was not found (looked at $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH and ./.cuda); \
             run `tools/setup.sh` to install the CUDA compiler from PyPI into .cuda/, or set NVCC=/path/to/nvcc",
        ),
    };

    let mut sources: Vec<PathBuf> = match fs::read_dir(&kernels_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .collect(),
        Err(e) => fail(&format!("cannot read {}: {e}", kernels_dir.display())),
    };
    sources.sort();

    // nvcc per file in parallel: the machines that build this have few cores,
    // and each nvcc invocation is single-threaded.
    let results: Vec<(PathBuf, Result<String, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let nvcc = &nvcc;
                let archs = &archs;
                let out_dir = &out_dir;
                let kernels_dir = &kernels_dir;
                scope.spawn(move || (src.clone(), compile_fatbin(nvcc, src, kernels_dir, out_dir, archs)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("nvcc thread panicked")).collect()
    });

    let mut modules: Vec<ModuleReport> = Vec::new();
    for (src, result) in results {
        let module_name = src.file_stem().unwrap().to_string_lossy().into_owned();
        match result {
            Ok(ptxas_log) => modules.push(ModuleReport {
                kernels: parse_ptxas_report(&ptxas_log),
                name: module_name,
                raw: ptxas_log,
            }),
            Err(message) => fail(&message),
        }
    }

    let report = write_reports(&modules, &out_dir, &archs);
    // Also place the report beside the binaries, where people look for it.
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        let _ = fs::write(profile_dir.join("vrseg-kernels-report.txt"), &report);
    }

    for module in &modules {
        for kernel in &module.kernels {
            if kernel.name.starts_with("_Z") {
                fail(&format!(
                    "kernel `{}` in kernels/{}.cu has a mangled name; declare entry points with VRSEG_KERNEL (extern \"C\")",
                    kernel.name, module.name
                ));
            }
            for (arch, res) in &kernel.per_arch {
                if res.spill_stores > 0 || res.spill_loads > 0 {
                    println!(
                        "cargo::warning=kernel {} (kernels/{}.cu) spills on {arch}: {} bytes stores, {} bytes loads, {} bytes stack",
                        kernel.name, module.name, res.spill_stores, res.spill_loads, res.stack
                    );
                }
            }
        }
    }

    let arch_list: Vec<String> = archs.iter().map(|a| a.to_string()).collect();
    println!("cargo::rustc-env=VRSEG_CUDA_ARCHS_BUILT={}", arch_list.join(","));

    let registry = generate_registry(&modules);
    fs::write(out_dir.join("kernel_registry.rs"), registry)
        .unwrap_or_else(|e| fail(&format!("cannot write registry: {e}")));

    tensorrt_shim(&manifest_dir, &out_dir, &nvcc);
}

/// Stops the build with one sentence (shown by cargo as an error).
fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(1);
}

fn parse_archs(spec: Option<&str>) -> Result<Vec<u32>, String> {
    let Some(spec) = spec.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_ARCHS.to_vec());
    };
    let mut archs = Vec::new();
    for part in spec.split([',', ';', ' ']).filter(|p| !p.is_empty()) {
        let digits = part.trim_start_matches("sm_").trim_start_matches("compute_");
        match digits.parse::<u32>() {
            Ok(a) if a >= 75 => archs.push(a),
            _ => {
                return Err(format!(
                    "VRSEG_CUDA_ARCHS={spec:?} is not a list of compute capabilities >= 75 such as `86,89,90,120`"
                ))
            }
        }
    }
    archs.sort_unstable();
    archs.dedup();
    Ok(archs)
}

fn find_nvcc(manifest_dir: &Path) -> Option<PathBuf> {
    let is_file = |p: &Path| p.is_file().then(|| p.to_path_buf());
    if let Some(p) = env::var_os("NVCC").map(PathBuf::from) {
        return is_file(&p);
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env::var_os(var) {
            if let Some(p) = is_file(&PathBuf::from(root).join("bin/nvcc")) {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            if let Some(p) = is_file(&dir.join("nvcc")) {
                return Some(p);
            }
        }
    }
    // The project-local toolchain from tools/setup.sh: a venv holding PyPI's
    // nvidia-cuda-nvcc, whose layout is site-packages/nvidia/cu13/bin/nvcc.
    let lib = manifest_dir.join(".cuda/lib");
    let mut pythons: Vec<PathBuf> = fs::read_dir(&lib).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    pythons.sort();
    pythons.iter().rev().find_map(|py| is_file(&py.join("site-packages/nvidia/cu13/bin/nvcc")))
}

fn compile_fatbin(
    nvcc: &Path,
    src: &Path,
    kernels_dir: &Path,
    out_dir: &Path,
    archs: &[u32],
) -> Result<String, String> {
    let stem = src.file_stem().unwrap().to_string_lossy();
    let out = out_dir.join(format!("{stem}.fatbin"));
    let mut cmd = Command::new(nvcc);
    cmd.arg("--fatbin")
        .arg("-std=c++17")
        .arg("-O3")
        // Source lines in SASS for Nsight Compute; costs nothing at run time.
        .arg("-lineinfo")
        .arg("-Xptxas=-v")
        .arg("-I")
        .arg(kernels_dir);
    // PyPI's nvcc keeps its headers beside bin/ and does not always find them itself.
    if let Some(root) = nvcc.parent().and_then(Path::parent) {
        for inc in [root.join("include"), root.join("include/cccl")] {
            if inc.is_dir() {
                cmd.arg("-I").arg(inc);
            }
        }
    }
    for &arch in archs {
        // Hopper as sm_90a: the same GPUs, plus its arch-specific
        // instructions (wgmma, which kernels/wgmma.cuh guards); such SASS
        // runs on compute capability 9.0 only, which is all sm_90 SASS
        // ever ran on.
        let target = if arch == 90 { "90a".to_string() } else { arch.to_string() };
        cmd.arg("-gencode").arg(format!("arch=compute_{target},code=sm_{target}"));
    }
    let lowest = archs[0];
    cmd.arg("-gencode").arg(format!("arch=compute_{lowest},code=compute_{lowest}"));
    cmd.arg("-o").arg(&out).arg(src);

    let output = cmd.output().map_err(|e| format!("could not run {} for {}: {e}", nvcc.display(), src.display()))?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let errors: Vec<&str> = log.lines().filter(|l| !l.starts_with("ptxas info")).take(30).collect();
        return Err(format!("nvcc failed on {}:\n{}", src.display(), errors.join("\n")));
    }
    for line in log.lines().filter(|l| l.contains("warning")) {
        println!("cargo::warning={}: {line}", src.display());
    }
    Ok(log)
}

#[derive(Default, Clone)]
struct Resources {
    registers: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
    shared: u32,
}

struct KernelReport {
    name: String,
    per_arch: BTreeMap<String, Resources>,
}

struct ModuleReport {
    name: String,
    kernels: Vec<KernelReport>,
    raw: String,
}

/// Parses `nvcc -Xptxas=-v` output. The lines come per (function, arch):
/// `Compiling entry function 'NAME' for 'sm_90'`, then
/// `N bytes stack frame, N bytes spill stores, N bytes spill loads`, then
/// `Used N registers, ... N bytes smem ...`.
fn parse_ptxas_report(log: &str) -> Vec<KernelReport> {
    let mut kernels: Vec<KernelReport> = Vec::new();
    let mut current: Option<(String, String)> = None;
    let number_before = |line: &str, unit: &str| -> u32 {
        line.find(unit).and_then(|i| line[..i].split_whitespace().last()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let name = parts.next().unwrap_or_default().to_string();
            let arch = parts.nth(1).unwrap_or_default().to_string();
            if !kernels.iter().any(|k| k.name == name) {
                kernels.push(KernelReport { name: name.clone(), per_arch: BTreeMap::new() });
            }
            current = Some((name, arch));
            continue;
        }
        let Some((name, arch)) = &current else { continue };
        let Some(kernel) = kernels.iter_mut().find(|k| &k.name == name) else { continue };
        let res = kernel.per_arch.entry(arch.clone()).or_default();
        if line.contains("bytes stack frame") {
            res.stack = number_before(line, "bytes stack frame");
            res.spill_stores = number_before(line, "bytes spill stores");
            res.spill_loads = number_before(line, "bytes spill loads");
        } else if line.contains("Used") && line.contains("registers") {
            res.registers = number_before(line, "registers");
            res.shared = number_before(line, "bytes smem");
        }
    }
    kernels
}

fn write_reports(modules: &[ModuleReport], out_dir: &Path, archs: &[u32]) -> String {
    let mut table = String::new();
    let arch_list: Vec<String> = archs.iter().map(|a| format!("sm_{a}")).collect();
    let _ = writeln!(
        table,
        "vrseg kernel resources (ptxas -v), SASS for {}, PTX for sm_{}",
        arch_list.join(", "),
        archs[0]
    );
    let _ = writeln!(
        table,
        "{:<14} {:<32} {:<7} {:>5} {:>6} {:>7} {:>7} {:>6}",
        "module", "kernel", "arch", "regs", "stack", "spill-st", "spill-ld", "smem"
    );
    for module in modules {
        for kernel in &module.kernels {
            for (arch, r) in &kernel.per_arch {
                let _ = writeln!(
                    table,
                    "{:<14} {:<32} {:<7} {:>5} {:>6} {:>7} {:>7} {:>6}",
                    module.name, kernel.name, arch, r.registers, r.stack, r.spill_stores, r.spill_loads, r.shared
                );
            }
        }
        let _ = fs::write(out_dir.join(format!("{}.ptxas.txt", module.name)), &module.raw);
    }
    let _ = fs::write(out_dir.join("kernels-report.txt"), &table);
    table
}

fn out_dir_of_registry() -> PathBuf {
    PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
}

fn camel_case(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn generate_registry(modules: &[ModuleReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "// @generated by build.rs from ptxas's report of kernels/*.cu. Do not edit.\n");
    let _ = writeln!(s, "/// One CUDA module per `kernels/*.cu` file (one op family each).");
    let _ = writeln!(s, "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]\npub enum Module {{");
    for m in modules {
        let _ = writeln!(s, "    /// `kernels/{}.cu`\n    {},", m.name, camel_case(&m.name));
    }
    let _ = writeln!(s, "}}\n\nimpl Module {{\n    pub const ALL: &'static [Module] = &[");
    for m in modules {
        let _ = writeln!(s, "        Module::{},", camel_case(&m.name));
    }
    let _ = writeln!(
        s,
        "    ];\n\n    /// The `.cu` file's stem.\n    pub fn name(self) -> &'static str {{\n        match self {{"
    );
    for m in modules {
        let _ = writeln!(s, "            Module::{} => {:?},", camel_case(&m.name), m.name);
    }
    let _ = writeln!(s, "        }}\n    }}\n\n    /// The embedded fatbin (SASS per arch plus PTX for the lowest).\n    pub fn fatbin(self) -> &'static [u8] {{\n        match self {{");
    for m in modules {
        let _ = writeln!(s, "            Module::{} => &FATBIN_{}.0,", camel_case(&m.name), m.name.to_uppercase());
    }
    let _ = writeln!(
        s,
        "        }}\n    }}\n\n    pub(crate) fn index(self) -> usize {{\n        self as usize\n    }}\n}}\n"
    );

    // The fatbins live in the ELF section `.nv_fatbin`, 8-byte aligned, as
    // nvcc's own host objects keep them: then `cuobjdump` and Nsight find the
    // device code in the vrseg binary like in any CUDA program.
    let _ = writeln!(s, "#[repr(C, align(8))]\nstruct Fatbin<const N: usize>([u8; N]);\n");
    for m in modules {
        let len =
            fs::metadata(out_dir_of_registry().join(format!("{}.fatbin", m.name))).map(|md| md.len()).unwrap_or(0);
        let _ = writeln!(
            s,
            "#[used]\n#[link_section = \".nv_fatbin\"]\nstatic FATBIN_{}: Fatbin<{len}> = Fatbin(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{}.fatbin\")));\n",
            m.name.to_uppercase(),
            m.name
        );
    }
    let _ = writeln!(s, "/// Every compiled entry point, named after its `extern \"C\"` symbol.");
    let _ = writeln!(s, "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]\npub enum Kernel {{");
    for m in modules {
        for k in &m.kernels {
            let _ = writeln!(s, "    /// `{}` in `kernels/{}.cu`\n    {},", k.name, m.name, camel_case(&k.name));
        }
    }
    let _ = writeln!(s, "}}\n\nimpl Kernel {{\n    pub const ALL: &'static [Kernel] = &[");
    for m in modules {
        for k in &m.kernels {
            let _ = writeln!(s, "        Kernel::{},", camel_case(&k.name));
        }
    }
    let _ = writeln!(s, "    ];\n\n    /// The symbol name in the fatbin.\n    pub fn symbol(self) -> &'static str {{\n        match self {{");
    for m in modules {
        for k in &m.kernels {
            let _ = writeln!(s, "            Kernel::{} => {:?},", camel_case(&k.name), k.name);
        }
    }
    let _ = writeln!(s, "        }}\n    }}\n\n    /// The module (op family) that holds this kernel.\n    pub fn module(self) -> Module {{\n        match self {{");
    for m in modules {
        for k in &m.kernels {
            let _ = writeln!(s, "            Kernel::{} => Module::{},", camel_case(&k.name), camel_case(&m.name));
        }
    }
    let _ = writeln!(
        s,
        "        }}\n    }}\n\n    pub(crate) fn index(self) -> usize {{\n        self as usize\n    }}\n}}\n"
    );

    // The resource report, so that `vrseg info --kernels` and tests can read it.
    let _ = writeln!(
        s,
        "/// (kernel, arch, registers, stack bytes, spill-store bytes, spill-load bytes) per compiled kernel and arch."
    );
    let _ = writeln!(s, "pub const RESOURCE_REPORT: &[(Kernel, &str, u32, u32, u32, u32)] = &[");
    for m in modules {
        for k in &m.kernels {
            for (arch, r) in &k.per_arch {
                let _ = writeln!(
                    s,
                    "    (Kernel::{}, {:?}, {}, {}, {}, {}),",
                    camel_case(&k.name),
                    arch,
                    r.registers,
                    r.stack,
                    r.spill_stores,
                    r.spill_loads
                );
            }
        }
    }
    let _ = writeln!(s, "];");
    s
}

// ---------------------------------------------------------------------------
// The TensorRT backend's C++ shim (src/engine/tensorrt/shim.{h,cpp}) and its
// Rust bindings. Everything TensorRT-related in this script is below.
//
// The shim is compiled against TensorRT headers, never linked against
// TensorRT (it dlopens libnvinfer at run time), so all a build needs is a
// header directory. The first of these that holds NvInfer.h and
// NvOnnxParser.h wins:
//   1. $TENSORRT_INCLUDE_DIR (set explicitly: the build stops if it is wrong);
//   2. $TENSORRT_ROOT/include (the TensorRT tarball's layout);
//   3. the system's (Debian/Ubuntu libnvinfer-dev: /usr/include/x86_64-linux-gnu),
//      /usr/local/TensorRT/include, /opt/tensorrt/include;
//   4. TensorRT 11.4's headers as vendored by the crates.io crate trtx-sys
//      (TensorRT-Headers/TRT-Enterprise-11.4), found in cargo's registry
//      ($CARGO_HOME/registry/src/*/trtx-sys-0.9.1+rtx1.7). tools/setup.sh puts
//      them there with `cargo fetch` on tools/tensorrt-headers/Cargo.toml.
//      trtx-sys is deliberately not a build-dependency of vrseg: its own build
//      script runs autocxx and bindgen over TensorRT-RTX headers (autocxx-build,
//      cxx and about 45 more crates, minutes on CI) and declares
//      `links = "tensorrt-rtx"`, all to give us 5 MB of headers we only read.
//      The fetch-only manifest downloads it without building anything and keeps
//      vrseg's Cargo.lock free of its dependency tree.
// A user's own headers come first because the shim must match the TensorRT
// it will load: C++ interfaces differ between major versions, and a library
// older than the headers may lack methods they declare (the shim refuses both
// at run time). With none found, the shim is not compiled, cfg
// `vrseg_tensorrt_shim` stays unset and the backend says "built without
// TensorRT headers"; VRSEG_REQUIRE_TENSORRT_SHIM=1 (CI) makes that an error,
// VRSEG_TENSORRT_SHIM=0 skips the shim on purpose (to test that path).
//
// The bindings are generated here, at build time, by bindgen over shim.h
// rather than checked in: shim.h is ours and changes together with shim.cpp,
// so generating them keeps the two from drifting, and libclang is already
// required (the nvtx crate runs bindgen too). They land in
// $OUT_DIR/tensorrt_shim_sys.rs, included by src/engine/tensorrt/sys.rs.
// ---------------------------------------------------------------------------

/// The trtx-sys release whose TensorRT headers CI compiles the shim against
/// (pinned in tools/tensorrt-headers/Cargo.lock).
const TRTX_SYS_DIR: &str = "trtx-sys-0.9.1+rtx1.7";
const TRTX_SYS_HEADERS: &str = "TensorRT-Headers/TRT-Enterprise-11.4";

fn tensorrt_shim(manifest_dir: &Path, out_dir: &Path, nvcc: &Path) {
    let shim_dir = manifest_dir.join("src/engine/tensorrt");
    println!("cargo::rustc-check-cfg=cfg(vrseg_tensorrt_shim)");
    println!("cargo::rerun-if-changed=src/engine/tensorrt/shim.h");
    println!("cargo::rerun-if-changed=src/engine/tensorrt/shim.cpp");
    for var in
        ["TENSORRT_INCLUDE_DIR", "TENSORRT_ROOT", "CARGO_HOME", "VRSEG_TENSORRT_SHIM", "VRSEG_REQUIRE_TENSORRT_SHIM"]
    {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let required = env::var("VRSEG_REQUIRE_TENSORRT_SHIM").is_ok_and(|v| v == "1");
    if env::var("VRSEG_TENSORRT_SHIM").is_ok_and(|v| v == "0") {
        if required {
            fail("VRSEG_TENSORRT_SHIM=0 and VRSEG_REQUIRE_TENSORRT_SHIM=1 contradict each other");
        }
        println!("cargo::rustc-env=VRSEG_TENSORRT_HEADERS=none (VRSEG_TENSORRT_SHIM=0)");
        return;
    }

    let (headers, version) = match find_tensorrt_headers() {
        Ok(Some(found)) => found,
        Ok(None) => {
            let message = "TensorRT headers not found (looked at $TENSORRT_INCLUDE_DIR, $TENSORRT_ROOT/include, \
                           the system include directories and cargo's registry copy of trtx-sys); the TensorRT \
                           backend is not compiled. Run tools/setup.sh or set TENSORRT_ROOT, then rebuild";
            if required {
                fail(&format!("{message} (VRSEG_REQUIRE_TENSORRT_SHIM=1)"));
            }
            println!("cargo::warning={message}");
            println!("cargo::rustc-env=VRSEG_TENSORRT_HEADERS=none (not found at build time)");
            return;
        }
        Err(message) => fail(&message),
    };
    println!("cargo::rerun-if-changed={}", headers.join("NvInferVersion.h").display());
    println!("cargo::rerun-if-changed={}", headers.join("NvInfer.h").display());

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file(shim_dir.join("shim.cpp"))
        .include(&shim_dir)
        // -isystem: TensorRT's headers are not ours to keep free of warnings.
        .flag("-isystem")
        .flag(headers.to_string_lossy().as_ref())
        .warnings(true)
        .extra_warnings(true)
        .flag("-Wpedantic")
        .warnings_into_errors(true);
    let cuda_include = match cuda_include_dir(nvcc) {
        Some(cuda) => cuda,
        None => {
            // TensorRT's headers include cuda_runtime_api.h for two handle
            // types only; without a CUDA toolkit's headers, declare just those.
            let stub = out_dir.join("cuda-stub");
            let _ = fs::create_dir_all(&stub);
            fs::write(
                stub.join("cuda_runtime_api.h"),
                "#pragma once\n/* vrseg build.rs: the two CUDA types TensorRT's headers name */\n\
                 typedef struct CUstream_st* cudaStream_t;\ntypedef struct CUevent_st* cudaEvent_t;\n",
            )
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", stub.display())));
            stub
        }
    };
    build.flag("-isystem").flag(cuda_include.to_string_lossy().as_ref());
    if let Err(e) = build.try_compile("vrseg_tensorrt_shim") {
        fail(&format!("compiling the TensorRT shim against {} failed: {e}", headers.display()));
    }
    // dlopen and friends live in libc from glibc 2.34 on, in libdl before.
    println!("cargo::rustc-link-lib=dl");

    let bindings = bindgen::Builder::default()
        .header(shim_dir.join("shim.h").to_string_lossy())
        .allowlist_function("vrseg_trt_.*")
        .allowlist_type("vrseg_trt_.*")
        .allowlist_var("VRSEG_TRT_.*")
        // Status and enum values as newtypes: an out-of-range value from C
        // stays a value instead of becoming undefined behaviour.
        .newtype_enum("vrseg_trt_.*")
        .derive_default(true)
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen over src/engine/tensorrt/shim.h failed: {e}")));
    let header_line = format!(
        "// @generated by build.rs (bindgen over src/engine/tensorrt/shim.h). Do not edit.\n\
         // Shim compiled against TensorRT {version} headers at {}.\n",
        headers.display()
    );
    fs::write(out_dir.join("tensorrt_shim_sys.rs"), header_line + &bindings.to_string())
        .unwrap_or_else(|e| fail(&format!("cannot write the TensorRT shim bindings: {e}")));

    println!("cargo::rustc-cfg=vrseg_tensorrt_shim");
    println!("cargo::rustc-env=VRSEG_TENSORRT_HEADERS=TensorRT {version} at {}", headers.display());
    // For the shim's tests: its archive (symbols checked with nm) and the
    // include directories (they compile stand-in TensorRT libraries).
    println!("cargo::rustc-env=VRSEG_TENSORRT_SHIM_ARCHIVE={}", out_dir.join("libvrseg_tensorrt_shim.a").display());
    println!("cargo::rustc-env=VRSEG_TENSORRT_INCLUDE={}", headers.display());
    println!("cargo::rustc-env=VRSEG_TENSORRT_CUDA_INCLUDE={}", cuda_include.display());
    // The same facts for tools/gpu-bundle.sh, which builds the stand-in
    // TensorRT libraries for the GPU machine (which may have no compiler).
    let facts = format!("version={version}\ninclude={}\ncuda_include={}\n", headers.display(), cuda_include.display());
    fs::write(out_dir.join("tensorrt_shim_paths.txt"), facts)
        .unwrap_or_else(|e| fail(&format!("cannot write tensorrt_shim_paths.txt: {e}")));
}

/// The header directory and its version ("11.4.0"), or None.
fn find_tensorrt_headers() -> Result<Option<(PathBuf, String)>, String> {
    let usable = |dir: &Path| dir.join("NvInfer.h").is_file() && dir.join("NvOnnxParser.h").is_file();
    if let Some(dir) = env::var_os("TENSORRT_INCLUDE_DIR").map(PathBuf::from) {
        if !usable(&dir) {
            return Err(format!(
                "TENSORRT_INCLUDE_DIR={} holds no NvInfer.h and NvOnnxParser.h; point it at TensorRT's include/ directory",
                dir.display()
            ));
        }
        return tensorrt_header_version(&dir).map(|v| Some((dir, v)));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(root) = env::var_os("TENSORRT_ROOT").map(PathBuf::from) {
        candidates.push(root.join("include"));
    }
    for dir in ["/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include"] {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(PathBuf::from("/usr/local/TensorRT/include"));
    candidates.push(PathBuf::from("/opt/tensorrt/include"));
    candidates.extend(registry_tensorrt_headers());
    for dir in candidates {
        if usable(&dir) {
            return tensorrt_header_version(&dir).map(|v| Some((dir, v)));
        }
        if dir.join("NvInfer.h").is_file() {
            println!(
                "cargo::warning={} has NvInfer.h but no NvOnnxParser.h (install TensorRT's ONNX parser headers); skipped",
                dir.display()
            );
        }
    }
    Ok(None)
}

/// trtx-sys's TensorRT headers in cargo's registry: the pinned release
/// first, then any other release's TRT-Enterprise-* directories, newest first.
fn registry_tensorrt_headers() -> Vec<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(cargo_home) = cargo_home else { return Vec::new() };
    let Ok(indexes) = fs::read_dir(cargo_home.join("registry/src")) else { return Vec::new() };
    let mut pinned = Vec::new();
    let mut others = Vec::new();
    for index in indexes.filter_map(|e| e.ok()).map(|e| e.path()) {
        pinned.push(index.join(TRTX_SYS_DIR).join(TRTX_SYS_HEADERS));
        let Ok(crates) = fs::read_dir(&index) else { continue };
        for krate in crates.filter_map(|e| e.ok()).map(|e| e.path()) {
            let name = krate.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.starts_with("trtx-sys-") || name == TRTX_SYS_DIR {
                continue;
            }
            let Ok(sets) = fs::read_dir(krate.join("TensorRT-Headers")) else { continue };
            others.extend(
                sets.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("TRT-Enterprise-"))),
            );
        }
    }
    others.sort();
    others.reverse();
    pinned.into_iter().chain(others).collect()
}

/// "MAJOR.MINOR.PATCH" from NvInferVersion.h; TensorRT 10 is the oldest the shim supports.
fn tensorrt_header_version(dir: &Path) -> Result<String, String> {
    let path = dir.join("NvInferVersion.h");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Either `#define NV_TENSORRT_MAJOR 10` or, from 10.x on,
    // `#define TRT_MAJOR_ENTERPRISE 11` with NV_TENSORRT_MAJOR naming it.
    let define = |names: &[&str]| -> Option<u32> {
        text.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("#define") && words.next().is_some_and(|n| names.contains(&n)))
                .then(|| words.next().and_then(|v| v.parse().ok()))
                .flatten()
        })
    };
    let part = |what: &str| {
        define(&[&format!("NV_TENSORRT_{what}"), &format!("TRT_{what}_ENTERPRISE")])
            .ok_or_else(|| format!("{} does not define NV_TENSORRT_{what}", path.display()))
    };
    let (major, minor, patch) = (part("MAJOR")?, part("MINOR")?, part("PATCH")?);
    if major < 10 {
        return Err(format!(
            "the TensorRT headers at {} are version {major}.{minor}; vrseg's TensorRT backend needs TensorRT 10 or \
             newer (set TENSORRT_ROOT to a newer TensorRT, or VRSEG_TENSORRT_SHIM=0 to build without the backend)",
            dir.display()
        ));
    }
    Ok(format!("{major}.{minor}.{patch}"))
}

/// cuda_runtime_api.h: beside nvcc (a toolkit's or PyPI's), or $CUDA_HOME/include.
fn cuda_include_dir(nvcc: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> =
        nvcc.parent().and_then(Path::parent).map(|r| r.join("include")).into_iter().collect();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env::var_os(var) {
            candidates.push(PathBuf::from(root).join("include"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.into_iter().find(|d| d.join("cuda_runtime_api.h").is_file())
}
