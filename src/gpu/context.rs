//! The GPU handle: one CUDA context (the device's primary context, shared with
//! NVDEC and any library we load), its properties, and the kernel registry.

use std::ffi::c_int;
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaStream};

use super::error::{CheckDriver, GpuError};
use super::kernels::{Kernel, KernelRegistry};

/// What `vrseg info` and the planners need to know about a device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceProperties {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for the H100.
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: usize,
    pub multiprocessors: i32,
    pub l2_cache_bytes: i32,
    /// Shared memory one block may opt into (99 KiB on sm_86/sm_89, 227 KiB
    /// on sm_90): which kernel variants fit.
    pub shared_memory_per_block_optin: i32,
    pub pci_bus_id: String,
    /// The CUDA version the driver serves, e.g. (13, 0).
    pub driver_cuda_version: (i32, i32),
    /// The NVIDIA driver release, e.g. "580.159.03", where the system says it.
    pub driver_version: Option<String>,
}

impl DeviceProperties {
    pub fn sm(&self) -> String {
        format!("sm_{}{}", self.compute_capability.0, self.compute_capability.1)
    }

    /// Whether kernels built on Hopper's warpgroup MMA (wgmma) run here:
    /// a compute-capability-9.0 GPU and a build that carries sm_90a SASS
    /// (build.rs compiles sm_90 as sm_90a). Elsewhere those kernels are
    /// traps, and the JIT-compiled PTX of a lower architecture lacks them.
    pub fn has_wgmma(&self) -> bool {
        self.compute_capability == (9, 0) && env!("VRSEG_CUDA_ARCHS_BUILT").split(',').any(|a| a == "90")
    }

    /// Whether kernels may be launched with programmatic dependent launch
    /// (programmatic stream serialisation, `griddepcontrol.wait`): compute
    /// capability 9.0 and later.
    pub fn has_programmatic_launch(&self) -> bool {
        self.compute_capability.0 >= 9
    }
}

struct GpuInner {
    ctx: Arc<CudaContext>,
    props: DeviceProperties,
    kernels: KernelRegistry,
}

/// A cheaply cloneable handle to one GPU. All device work of vrseg goes
/// through one `Gpu` per device.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("props", &self.inner.props).finish()
    }
}

/// Loads libcuda (once) and initialises the driver API. Fails with a sentence,
/// never a panic, when the driver library is missing or too old.
pub fn init_driver() -> Result<(i32, i32), GpuError> {
    // SAFETY: `is_culib_present` only tries `dlopen` on the candidate names; it
    // has no preconditions. cudarc panics on first use of a missing library, so
    // this check must come before any other driver call.
    if !unsafe { sys::is_culib_present() } {
        let mut names = cudarc::get_lib_name_candidates("cuda");
        names.retain(|n| n.starts_with("libcuda.so"));
        names.dedup();
        let searched = names.join(", ");
        return Err(GpuError::NoDriver { searched });
    }
    cudarc::driver::result::init().map_err(|e| {
        let status = super::error::driver_status_text(&e);
        if e.0 == sys::cudaError_enum::CUDA_ERROR_NO_DEVICE {
            GpuError::NoDevice { detail: status }
        } else {
            GpuError::Driver { call: "cuInit", status, context: String::new() }
        }
    })?;
    let mut version: c_int = 0;
    // SAFETY: `version` is a valid out-pointer for the duration of the call.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result().check("cuDriverGetVersion")?;
    let (major, minor) = (version / 1000, (version % 1000) / 10);
    if major < 12 {
        return Err(GpuError::DriverTooOld { found_major: major, found_minor: minor });
    }
    Ok((major, minor))
}

/// Number of CUDA devices; an error (not zero) when there is no driver.
pub fn device_count() -> Result<usize, GpuError> {
    init_driver()?;
    let count = cudarc::driver::result::device::get_count().check("cuDeviceGetCount")?;
    Ok(count.max(0) as usize)
}

impl Gpu {
    /// Opens GPU `ordinal`: driver checks, primary context, properties.
    /// Kernel modules are loaded on first use or by [`Gpu::preload`].
    pub fn open(ordinal: usize) -> Result<Gpu, GpuError> {
        let driver_cuda_version = init_driver()?;
        let count = device_count()?;
        if count == 0 {
            return Err(GpuError::NoDevice { detail: "cuDeviceGetCount returned 0".into() });
        }
        if ordinal >= count {
            return Err(GpuError::NoSuchDevice { requested: ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).check_with("cuDevicePrimaryCtxRetain", || format!("GPU {ordinal}"))?;
        // vrseg orders work across streams with its own events (pool slots,
        // pipeline stages); cudarc's per-allocation tracking would add event
        // records to every launch.
        // SAFETY: no cudarc-managed allocation exists yet, and vrseg never uses
        // cudarc allocations (clippy.toml forbids them), so nothing relies on tracking.
        unsafe { ctx.disable_event_tracking() };

        let attr = |a: sys::CUdevice_attribute| ctx.attribute(a).check("cuDeviceGetAttribute");
        use sys::CUdevice_attribute::*;
        let props = DeviceProperties {
            ordinal,
            name: ctx.name().check("cuDeviceGetName")?,
            compute_capability: (
                attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ),
            total_memory_bytes: ctx.total_mem().check("cuDeviceTotalMem")?,
            multiprocessors: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            l2_cache_bytes: attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?,
            shared_memory_per_block_optin: attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
            pci_bus_id: pci_bus_id(ctx.cu_device())?,
            driver_cuda_version,
            driver_version: nvidia_driver_release(),
        };
        Ok(Gpu { inner: Arc::new(GpuInner { ctx, props, kernels: KernelRegistry::new() }) })
    }

    pub fn properties(&self) -> &DeviceProperties {
        &self.inner.props
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The raw context, for foreign APIs (NVDEC, NVENC, TensorRT) that take one.
    pub fn cu_context(&self) -> sys::CUcontext {
        self.inner.ctx.cu_ctx()
    }

    /// Makes this GPU's context current on the calling thread. Every thread
    /// that calls the driver or a codec library directly must do this first.
    pub fn bind_to_thread(&self) -> Result<(), GpuError> {
        self.inner.ctx.bind_to_thread().check("cuCtxSetCurrent")
    }

    /// (free, total) device memory in bytes, as the driver sees it now.
    pub fn memory_info(&self) -> Result<(usize, usize), GpuError> {
        self.inner.ctx.mem_get_info().check("cuMemGetInfo")
    }

    /// A new non-blocking stream. Streams are made at start-up, never per frame.
    pub fn new_stream(&self) -> Result<Arc<CudaStream>, GpuError> {
        self.inner.ctx.new_stream().check("cuStreamCreate")
    }

    /// A stream of the context's greatest priority, for the decoders' short
    /// copies out of NVDEC surfaces: the block scheduler starts its blocks
    /// before the queued blocks of default-priority streams, so a copy waits
    /// for one engine block to retire rather than for the engine's whole
    /// grid (with YOLO11x-seg on every SM, default-priority copies of 8K
    /// frames took about 20 ms each instead of tens of microseconds).
    pub fn new_priority_stream(&self) -> Result<Arc<CudaStream>, GpuError> {
        self.inner.ctx.bind_to_thread().check("cuCtxSetCurrent")?;
        let (_least, greatest) =
            cudarc::driver::result::stream::get_priority_range().check("cuCtxGetStreamPriorityRange")?;
        self.inner.ctx.new_stream_with_priority(greatest).check("cuStreamCreateWithPriority")
    }

    pub fn kernels(&self) -> &KernelRegistry {
        &self.inner.kernels
    }

    /// Loads the given op families now, so that no module load happens in a
    /// frame loop.
    pub fn preload(&self, modules: &[super::kernels::Module]) -> Result<(), GpuError> {
        for &m in modules {
            self.inner.kernels.module(&self.inner.ctx, m)?;
        }
        Ok(())
    }

    /// Lets `kernel` launch with `bytes` of dynamic shared memory. Up to 48 KiB
    /// needs nothing; above that the function must opt in, up to the device's
    /// per-block limit (99 KiB on sm_86/sm_89, 227 KiB on sm_90). The attribute
    /// is set only when a launch needs more than the function allows already.
    pub fn allow_dynamic_shared_memory(
        &self,
        function: &CudaFunction,
        kernel: Kernel,
        bytes: usize,
    ) -> Result<(), GpuError> {
        const DEFAULT_LIMIT: usize = 48 * 1024;
        if bytes <= DEFAULT_LIMIT {
            return Ok(());
        }
        use sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as MAX_DYNAMIC;
        let allowed = function.get_attribute(MAX_DYNAMIC).check("cuFuncGetAttribute")?;
        if bytes <= allowed.max(0) as usize {
            return Ok(());
        }
        let limit = self
            .inner
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .check("cuDeviceGetAttribute")?;
        if bytes > limit.max(0) as usize {
            return Err(GpuError::InvalidLaunch {
                kernel: kernel.symbol(),
                reason: format!(
                    "needs {bytes} bytes of shared memory per block; this GPU allows {limit} (the input is too wide for it)"
                ),
            });
        }
        function
            .set_attribute(MAX_DYNAMIC, bytes as i32)
            .check_with("cuFuncSetAttribute", || format!("{} to {bytes} bytes of shared memory", kernel.symbol()))
    }

    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.inner.ctx.synchronize().check("cuCtxSynchronize")
    }
}

fn pci_bus_id(device: sys::CUdevice) -> Result<String, GpuError> {
    let mut buf = [0 as std::ffi::c_char; 32];
    // SAFETY: the buffer is 32 bytes and we pass its length; the driver writes a
    // NUL-terminated string of at most that length.
    unsafe { sys::cuDeviceGetPCIBusId(buf.as_mut_ptr(), buf.len() as c_int, device) }
        .result()
        .check("cuDeviceGetPCIBusId")?;
    // SAFETY: the driver NUL-terminated the buffer (checked above); it outlives the CStr.
    let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(text.to_string_lossy().into_owned())
}

/// The NVIDIA driver release ("580.159.03"). The CUDA driver API does not
/// expose it, so read the kernel module's banner, else the version suffix of
/// the libcuda that was loaded.
pub fn nvidia_driver_release() -> Option<String> {
    if let Ok(text) = std::fs::read_to_string("/proc/driver/nvidia/version") {
        // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.03  Thu ..."
        if let Some(v) =
            text.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        {
            return Some(v.to_string());
        }
    }
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib"];
    for dir in dirs {
        if let Ok(real) = std::fs::canonicalize(format!("{dir}/libcuda.so.1")) {
            let name = real.file_name()?.to_string_lossy().into_owned();
            if let Some(v) = name.strip_prefix("libcuda.so.") {
                if v.contains('.') {
                    return Some(v.to_string());
                }
            }
        }
    }
    None
}
