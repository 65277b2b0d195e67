//! `CudaBackend`: one CUDA device, one stream, and the kernel modules compiled for it.

use super::compile::{arch_name, ptx_for};
use super::library::{contain, probe_driver};
use super::memory::DeviceBuffer;
use super::source::{ALL, Source};
use super::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A loaded module and its entry points.
struct Loaded {
    /// Kept so the functions stay valid (they borrow the module on the driver side).
    _module: Arc<CudaModule>,
    functions: HashMap<&'static str, CudaFunction>,
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    compute_capability: (u32, u32),
    arch: &'static str,
    multiprocessors: usize,
    /// Modules by kernel file, loaded on first use.
    modules: Mutex<HashMap<&'static str, Arc<Loaded>>>,
    /// `[0, rows]` / `[0, ceil(rows / 64)]` group tables for the dense GEMM, by row count.
    pub(crate) dense_rows: Mutex<HashMap<usize, Arc<super::ops::DenseRows>>>,
    /// Timing marks, recorded only while a timeline is open.
    timeline: super::timeline::Timeline,
}

/// One CUDA device with one stream; cheap to clone (the clones share the device state).
///
/// Every launch goes to the one stream in order, so ops need no events between them and the
/// host only waits where it reads a result back.
#[derive(Clone)]
pub struct CudaBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("ordinal", &self.inner.ordinal)
            .field("name", &self.inner.name)
            .field("compute_capability", &self.inner.compute_capability)
            .finish()
    }
}

impl CudaBackend {
    /// Opens device `ordinal`. On a machine without the CUDA driver this is `Err(NoDriver)`
    /// (never a panic); without that device, `Err(NoDevice)`.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        probe_driver()?;
        contain("opening the CUDA device", || Self::open(ordinal))
    }

    fn open(ordinal: usize) -> Result<CudaBackend> {
        let count = CudaContext::device_count().map_err(Error::driver("cuDeviceGetCount"))?;
        let count = usize::try_from(count).unwrap_or(0);
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(Error::driver("creating the context"))?;
        // SAFETY: the backend uses exactly one stream (created below) for every allocation,
        // copy and launch, so stream-ordered execution already orders all uses and frees;
        // cudarc's per-buffer events would only add two event calls per argument per launch.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(Error::driver("creating a stream"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(Error::driver("reading the compute capability"))?;
        let (major, minor) = (major as u32, minor as u32);
        let multiprocessors = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(Error::driver("reading the multiprocessor count"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        if major < 8 {
            // cp.async and bf16 mma.sync need sm_80.
            return Err(Error::Limit {
                op: "CudaBackend::new",
                what: "compute capability major",
                value: major as usize,
                rule: "≥ 8 (sm_80: cp.async and bf16 tensor cores)",
            });
        }
        Ok(CudaBackend {
            inner: Arc::new(Inner {
                ctx,
                stream,
                ordinal,
                name,
                compute_capability: (major, minor),
                arch: arch_name(major, minor),
                multiprocessors: multiprocessors.max(1) as usize,
                modules: Mutex::new(HashMap::new()),
                dense_rows: Mutex::new(HashMap::new()),
                timeline: Default::default(),
            }),
        })
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (u32, u32) {
        self.inner.compute_capability
    }

    /// The NVRTC target the kernels are compiled for, e.g. `compute_90`.
    pub fn arch(&self) -> &'static str {
        self.inner.arch
    }

    /// Streaming multiprocessors.
    pub fn multiprocessors(&self) -> usize {
        self.inner.multiprocessors
    }

    /// `(free, total)` device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.inner
            .ctx
            .mem_get_info()
            .map_err(Error::driver("cuMemGetInfo"))
    }

    /// Waits until every queued copy and kernel has finished (and reports a kernel fault).
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .stream
            .synchronize()
            .map_err(Error::driver("synchronising the stream"))
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    pub(crate) fn timeline(&self) -> &super::timeline::Timeline {
        &self.inner.timeline
    }

    pub(crate) fn dense_rows_cache(&self) -> &Mutex<HashMap<usize, Arc<super::ops::DenseRows>>> {
        &self.inner.dense_rows
    }

    /// Compiles (or finds precompiled PTX for) and loads every kernel file now, instead of
    /// on first use; returns the first failure.
    pub fn load_all(&self) -> Result<()> {
        for src in ALL.iter().chain([&super::fill::SOURCE]) {
            self.module(src)?;
        }
        Ok(())
    }

    /// The loaded module of `src`, compiling and loading it on first use.
    fn module(&self, src: &'static Source) -> Result<Arc<Loaded>> {
        let mut modules = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(src.file) {
            return Ok(m.clone());
        }
        let ptx = ptx_for(src, self.inner.arch)?;
        let module = contain("loading a module", || {
            self.inner
                .ctx
                .load_module(Ptx::from_src(ptx.to_string()))
                .map_err(Error::driver(format!(
                    "loading {} for {}",
                    src.file, self.inner.arch
                )))
        })?;
        let mut functions = HashMap::new();
        for name in src.entry_points() {
            let f = module
                .load_function(name)
                .map_err(Error::driver(format!("{}: finding `{name}`", src.file)))?;
            functions.insert(name, f);
        }
        let loaded = Arc::new(Loaded {
            _module: module,
            functions,
        });
        modules.insert(src.file, loaded.clone());
        Ok(loaded)
    }

    /// The entry point `name` of `src`.
    pub(crate) fn function(
        &self,
        src: &'static Source,
        name: &'static str,
    ) -> Result<CudaFunction> {
        self.module(src)?
            .functions
            .get(name)
            .cloned()
            .ok_or(Error::MissingKernel {
                file: src.file,
                name,
            })
    }

    /// Maps a failed allocation to `OutOfMemory` with the sizes involved.
    pub(crate) fn alloc_error(
        &self,
        what: &str,
        bytes: usize,
    ) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
        let (free, total) = self.memory().unwrap_or((0, 0));
        let what = what.to_owned();
        move |e| {
            if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                Error::OutOfMemory {
                    what,
                    bytes,
                    free,
                    total,
                }
            } else {
                Error::Driver {
                    what: format!("allocating {bytes} bytes for {what}"),
                    source: e,
                }
            }
        }
    }

    /// A zeroed device buffer of `len` elements; `what` names it in an out-of-memory error.
    pub fn alloc<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        len: usize,
        what: &str,
    ) -> Result<DeviceBuffer<T>> {
        let bytes = len * std::mem::size_of::<T>();
        // Zero-length allocations are legal for the driver but useless; keep one element so
        // every buffer has a valid address to pass to a kernel.
        let slice = self
            .inner
            .stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(|e| (self.alloc_error(what, bytes))(e))?;
        Ok(DeviceBuffer::new(slice, len))
    }

    /// Copies `host` into a new device buffer.
    pub fn upload<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        host: &[T],
        what: &str,
    ) -> Result<DeviceBuffer<T>> {
        let mut buf = self.alloc(host.len(), what)?;
        self.write(&mut buf, 0, host)?;
        Ok(buf)
    }

    /// Copies `host` into `dst` starting at element `offset`.
    pub fn write<T: DeviceRepr>(
        &self,
        dst: &mut DeviceBuffer<T>,
        offset: usize,
        host: &[T],
    ) -> Result<()> {
        super::error::at_least("write", "dst", dst.len(), offset + host.len())?;
        if host.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice_mut().slice_mut(offset..offset + host.len());
        self.inner
            .stream
            .memcpy_htod(host, &mut view)
            .map_err(Error::driver("copying to the device"))
    }

    /// The first `len` elements of `src`, copied back to the host (waits for the stream).
    pub fn read<T: DeviceRepr + Default + Clone>(
        &self,
        src: &DeviceBuffer<T>,
        len: usize,
    ) -> Result<Vec<T>> {
        super::error::at_least("read", "src", src.len(), len)?;
        let mut host = vec![T::default(); len];
        if len > 0 {
            let view = src.slice().slice(0..len);
            self.inner
                .stream
                .memcpy_dtoh(&view, &mut host[..])
                .map_err(Error::driver("copying to the host"))?;
        }
        self.synchronize()?;
        Ok(host)
    }

    /// Copies `len` elements from `src[src_offset..]` to `dst[dst_offset..]` on the device.
    pub fn copy<T: DeviceRepr>(
        &self,
        src: &DeviceBuffer<T>,
        src_offset: usize,
        dst: &mut DeviceBuffer<T>,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        super::error::at_least("copy", "src", src.len(), src_offset + len)?;
        super::error::at_least("copy", "dst", dst.len(), dst_offset + len)?;
        if len == 0 {
            return Ok(());
        }
        let from = src.slice().slice(src_offset..src_offset + len);
        let mut to = dst.slice_mut().slice_mut(dst_offset..dst_offset + len);
        self.inner
            .stream
            .memcpy_dtod(&from, &mut to)
            .map_err(Error::driver("copying on the device"))
    }
}
