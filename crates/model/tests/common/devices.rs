//! One test body, every device: the devices this machine has, each with the tolerance its
//! numerics are held to. Every CPU kernel set always (the reference twins, the f32 kernels
//! of every ISA this CPU runs, and the bf16-activation kernels of the best one); CUDA device 0
//! with each KV cache type when a driver and a GPU are there, otherwise a printed reason (and a failure when
//! `MIXTRAL_REQUIRE_GPU` is set, as the gpu-check script sets it).

use mixtral_kernels::Isa;
use mixtral_kernels::cuda::CudaBackend;
use mixtral_kernels::matmul::Precision;
use mixtral_model::{Checkpoint, Kernels, KvDType, Model};
use std::sync::OnceLock;

/// The fixtures' f32 tolerance: max |diff| ≤ 1e-4 × max |reference|.
pub const F32_TOL: f32 = 1e-4;
/// The fixtures' bf16 tolerance (against the f32 reference): 5e-2 × max |reference|.
pub const BF16_TOL: f32 = 5e-2;

/// A device (or CPU kernel set) a test body runs on.
pub struct Dev {
    /// For messages: `cpu avx2 f32`, `cuda:0 (NVIDIA H100 …)`.
    pub name: String,
    /// Relative tolerance against the f32 references.
    pub tol: f32,
    /// Whether its numerics are f32 (greedy paths must then equal the reference's).
    pub exact: bool,
    place: Placer,
}

enum Placer {
    Cpu(Kernels),
    Cuda(CudaBackend, KvDType),
}

impl Dev {
    /// `ckpt` placed on this device.
    pub fn place(&self, ckpt: Checkpoint) -> Model {
        let model = Model::new(ckpt).unwrap();
        match &self.place {
            Placer::Cpu(k) => model.with_kernels(*k),
            Placer::Cuda(gpu, kv) => model
                .on_gpu(gpu, &mut |_, _| {})
                .unwrap_or_else(|e| panic!("{}: upload: {e}", self.name))
                .with_kv_dtype(*kv),
        }
    }

    /// Opens fixture model `dir` on this device.
    pub fn open(&self, dir: impl AsRef<std::path::Path>) -> Model {
        self.place(Checkpoint::open(dir).unwrap())
    }
}

/// The GPU, once per test binary (a context costs ~100 ms).
fn gpu() -> Option<CudaBackend> {
    static GPU: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
    match GPU.get_or_init(|| CudaBackend::new(0).map_err(|e| e.to_string())) {
        Ok(gpu) => Some(gpu.clone()),
        Err(e) if std::env::var_os("MIXTRAL_REQUIRE_GPU").is_some() => {
            panic!("MIXTRAL_REQUIRE_GPU is set but CudaBackend::new(0) failed: {e}")
        }
        Err(e) => {
            println!("skipped on cuda: {e}");
            None
        }
    }
}

/// Every device here, the reference first.
pub fn devices() -> Vec<Dev> {
    let cpu = |kernels: Kernels, tol: f32, exact: bool| Dev {
        name: format!("cpu {kernels:?}"),
        tol,
        exact,
        place: Placer::Cpu(kernels),
    };
    let mut all = vec![cpu(Kernels::Reference, F32_TOL, true)];
    for isa in Isa::available() {
        all.push(cpu(Kernels::Cpu(isa), F32_TOL, true));
    }
    all.push(cpu(
        Kernels::cpu(Isa::detect(), Precision::Bf16),
        BF16_TOL,
        false,
    ));
    if let Some(gpu) = gpu() {
        // Each KV cache type (the attention kernels are templated on it).
        for kv in [KvDType::Bf16, KvDType::F16, KvDType::F32] {
            all.push(Dev {
                name: format!("cuda:0 ({}, {}) kv {kv:?}", gpu.name(), gpu.arch()),
                tol: BF16_TOL,
                exact: false,
                place: Placer::Cuda(gpu.clone(), kv),
            });
        }
    }
    all
}
