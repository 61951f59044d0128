//! `vrseg info`: what this machine offers vrseg — GPUs, NVDEC capabilities,
//! NVENC, TensorRT and the kernels built into this binary.

use std::fmt;

use crate::engine::tensorrt_probe::{self, TensorRtProbe};
use crate::gpu::{self, DeviceProperties, Gpu, GpuError};
use crate::video::nvdec::{self, DecoderCaps};
use crate::video::nvenc::{self, NvencProbe};

#[derive(Debug, Clone, serde::Serialize)]
pub struct NvdecInfo {
    pub available: bool,
    pub error: Option<String>,
    pub engines: Option<u8>,
    pub caps: Vec<DecoderCaps>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuInfo {
    #[serde(flatten)]
    pub properties: DeviceProperties,
    pub sm: String,
    pub free_memory_bytes: usize,
    /// "native" (SASS for this arch is embedded), "ptx-jit" or "none".
    pub kernel_code: &'static str,
    pub nvdec: NvdecInfo,
    pub nvenc: NvencProbe,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelBuildInfo {
    /// Compute capabilities with SASS in this binary, e.g. [86, 89, 90, 120].
    pub sass: Vec<u32>,
    /// The compute capability whose PTX is embedded (the lowest).
    pub ptx: u32,
    pub kernels: usize,
    pub modules: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SystemInfo {
    pub vrseg_version: &'static str,
    pub driver_version: Option<String>,
    pub driver_cuda_version: String,
    pub gpus: Vec<GpuInfo>,
    pub tensorrt: TensorRtProbe,
    pub kernel_build: KernelBuildInfo,
}

pub fn kernel_build_info() -> KernelBuildInfo {
    let sass: Vec<u32> = env!("VRSEG_CUDA_ARCHS_BUILT").split(',').filter_map(|a| a.parse().ok()).collect();
    KernelBuildInfo {
        ptx: sass.first().copied().unwrap_or(0),
        sass,
        kernels: gpu::Kernel::ALL.len(),
        modules: gpu::Module::ALL.len(),
    }
}

fn kernel_code_for(build: &KernelBuildInfo, cc: (i32, i32)) -> &'static str {
    let arch = (cc.0 * 10 + cc.1) as u32;
    if build.sass.contains(&arch) {
        "native"
    } else if arch >= build.ptx {
        "ptx-jit"
    } else {
        "none"
    }
}

fn gpu_info(gpu: &Gpu, build: &KernelBuildInfo) -> Result<GpuInfo, GpuError> {
    let (free, _) = gpu.memory_info()?;
    let nvdec = match nvdec::standard_caps_table(gpu) {
        Ok(caps) => NvdecInfo { available: true, error: None, engines: caps.iter().map(|c| c.engines).max(), caps },
        Err(e) => NvdecInfo { available: false, error: Some(e.to_string()), engines: None, caps: Vec::new() },
    };
    let props = gpu.properties().clone();
    Ok(GpuInfo {
        sm: props.sm(),
        kernel_code: kernel_code_for(build, props.compute_capability),
        free_memory_bytes: free,
        nvdec,
        nvenc: nvenc::probe(gpu),
        properties: props,
    })
}

/// Gathers everything; fails only when no GPU can be opened at all.
/// `only` restricts the report to one GPU ordinal.
pub fn gather(only: Option<usize>) -> Result<SystemInfo, GpuError> {
    let count = gpu::device_count()?;
    if count == 0 {
        return Err(GpuError::NoDevice { detail: "cuDeviceGetCount returned 0".into() });
    }
    let ordinals: Vec<usize> = match only {
        Some(n) if n >= count => return Err(GpuError::NoSuchDevice { requested: n, count }),
        Some(n) => vec![n],
        None => (0..count).collect(),
    };
    let build = kernel_build_info();
    let mut gpus = Vec::new();
    for ordinal in ordinals {
        let gpu = Gpu::open(ordinal)?;
        gpus.push(gpu_info(&gpu, &build)?);
    }
    let first = &gpus[0].properties;
    Ok(SystemInfo {
        vrseg_version: env!("CARGO_PKG_VERSION"),
        driver_version: first.driver_version.clone(),
        driver_cuda_version: format!("{}.{}", first.driver_cuda_version.0, first.driver_cuda_version.1),
        gpus,
        tensorrt: tensorrt_probe::probe(),
        kernel_build: build,
    })
}

const GIB: f64 = (1u64 << 30) as f64;

impl fmt::Display for SystemInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vrseg {}", self.vrseg_version)?;
        writeln!(
            f,
            "NVIDIA driver {} (CUDA {})",
            self.driver_version.as_deref().unwrap_or("(release unknown)"),
            self.driver_cuda_version
        )?;
        for g in &self.gpus {
            let p = &g.properties;
            writeln!(f)?;
            writeln!(f, "GPU {}: {} ({}, {} SMs, PCI {})", p.ordinal, p.name, g.sm, p.multiprocessors, p.pci_bus_id)?;
            writeln!(
                f,
                "  memory: {:.1} GiB total, {:.1} GiB free; L2 {} MiB",
                p.total_memory_bytes as f64 / GIB,
                g.free_memory_bytes as f64 / GIB,
                p.l2_cache_bytes >> 20
            )?;
            writeln!(f, "  vrseg kernels: {}", match g.kernel_code {
                "native" => "native code for this GPU",
                "ptx-jit" => "compiled from PTX by the driver at first use (add this GPU to VRSEG_CUDA_ARCHS for native code)",
                _ => "NONE for this GPU: rebuild with VRSEG_CUDA_ARCHS including it",
            })?;
            match (&g.nvdec.error, g.nvdec.engines) {
                (Some(e), _) => writeln!(f, "  NVDEC: unavailable: {e}")?,
                (None, engines) => {
                    writeln!(f, "  NVDEC: {} engine(s)", engines.unwrap_or(0))?;
                    for c in &g.nvdec.caps {
                        if c.supported {
                            writeln!(
                                f,
                                "    {:<5} {:>2}-bit 4:2:0  up to {}x{}  (min {}x{}; outputs {})",
                                c.codec,
                                c.bit_depth,
                                c.max_width,
                                c.max_height,
                                c.min_width,
                                c.min_height,
                                c.output_formats.join(", ")
                            )?;
                        } else {
                            writeln!(f, "    {:<5} {:>2}-bit 4:2:0  not supported", c.codec, c.bit_depth)?;
                        }
                    }
                }
            }
            if g.nvenc.session_opens {
                writeln!(f, "  NVENC: available (driver API {})", g.nvenc.driver_api.as_deref().unwrap_or("?"))?;
            } else {
                writeln!(f, "  NVENC: unavailable: {}", g.nvenc.reason.as_deref().unwrap_or("unknown reason"))?;
            }
        }
        writeln!(f)?;
        if self.tensorrt.available {
            let from: Vec<String> = self.tensorrt.libraries.iter().filter_map(|l| l.loaded_from.clone()).collect();
            let version = self.tensorrt.version.map(|v| format!(" {v}")).unwrap_or_default();
            writeln!(f, "TensorRT{version}: available ({})", from.join(", "))?;
            let usable = if self.tensorrt.backend_usable {
                "can drive it"
            } else {
                "cannot drive it; rebuild vrseg with TENSORRT_ROOT set to this TensorRT"
            };
            writeln!(f, "  vrseg's TensorRT backend: headers {}; {usable}", self.tensorrt.backend_headers)?;
        } else {
            let missing: Vec<&str> =
                self.tensorrt.libraries.iter().filter(|l| l.loaded_from.is_none()).map(|l| l.name).collect();
            writeln!(
                f,
                "TensorRT: not found ({} missing; set TENSORRT_ROOT or LD_LIBRARY_PATH); vrseg's native engine needs none",
                missing.join(", ")
            )?;
        }
        let sass: Vec<String> = self.kernel_build.sass.iter().map(|a| format!("sm_{a}")).collect();
        write!(
            f,
            "Kernels: {} in {} modules; SASS for {}, PTX for sm_{}",
            self.kernel_build.kernels,
            self.kernel_build.modules,
            sass.join(", "),
            self.kernel_build.ptx
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_code_classifies_native_ptx_and_none() {
        let build = KernelBuildInfo { sass: vec![86, 89, 90, 120], ptx: 86, kernels: 1, modules: 1 };
        assert_eq!(kernel_code_for(&build, (9, 0)), "native");
        assert_eq!(kernel_code_for(&build, (10, 0)), "ptx-jit");
        assert_eq!(kernel_code_for(&build, (8, 0)), "none");
    }

    #[test]
    fn build_info_lists_the_compiled_archs() {
        let b = kernel_build_info();
        assert!(!b.sass.is_empty());
        assert_eq!(b.ptx, *b.sass.iter().min().unwrap());
        assert!(b.kernels >= 4, "memory.cu alone has four kernels");
    }
}
