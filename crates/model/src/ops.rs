//! `Kernels`: which implementation of each op the model runs, and the one place that
//! dispatches between them.

use mixtral_kernels::attention::{self, Attention};
use mixtral_kernels::matmul::{self, Matmul, Precision};
use mixtral_kernels::moe::{self, Expert, Moe};
use mixtral_kernels::rmsnorm::{self, RmsNorm};
use mixtral_kernels::rope::{self, Rope, cpu::RopeTable};
use mixtral_kernels::router::{self, Router};
use mixtral_kernels::{Isa, Weight};

/// The kernels a [`crate::Model`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// The plain reference twins: slow, single-threaded, the specification.
    Reference,
    /// The fast CPU kernels (SIMD for the given ISA, threads from the current rayon pool).
    Cpu(Isa),
    /// The fast CPU kernels with matmul activations rounded to bf16 for bf16 weights
    /// ([`Precision::Bf16`]): what llama.cpp and transformers' native bf16 compute, about 1%
    /// of the logits' range away from the f32 path; the router stays in f32.
    CpuBf16(Isa),
    /// As [`Kernels::CpuBf16`], and quantized weights multiply activations quantized to
    /// 8-bit blocks with integer dot products ([`Precision::Int8`]): llama.cpp's numerics on
    /// its quantized files, a few percent of the logits' range from the exact path.
    CpuInt8(Isa),
}

impl Default for Kernels {
    /// The fast CPU kernels for the best ISA this machine has.
    fn default() -> Kernels {
        Kernels::Cpu(Isa::detect())
    }
}

impl Kernels {
    /// The fast CPU kernels for `isa` at `precision`.
    pub fn cpu(isa: Isa, precision: Precision) -> Kernels {
        match precision {
            Precision::F32 => Kernels::Cpu(isa),
            Precision::Bf16 => Kernels::CpuBf16(isa),
            Precision::Int8 => Kernels::CpuInt8(isa),
        }
    }

    /// The activation precision of the matmuls.
    pub fn precision(self) -> Precision {
        match self {
            Kernels::CpuBf16(_) => Precision::Bf16,
            Kernels::CpuInt8(_) => Precision::Int8,
            Kernels::Reference | Kernels::Cpu(_) => Precision::F32,
        }
    }

    /// The same kernels with f32 activations (for the router, whose choices must not flip
    /// on rounding).
    pub(crate) fn exact(self) -> Kernels {
        match self {
            Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) => Kernels::Cpu(isa),
            other => other,
        }
    }

    /// `y = x Wᵀ`; `invariant`: every row in one summation order whatever the row count
    /// ([`matmul::cpu::matmul_batch_invariant`]; the reference is always).
    pub(crate) fn matmul(
        self,
        p: Matmul,
        x: &[f32],
        w: Weight<'_>,
        y: &mut [f32],
        invariant: bool,
    ) {
        match self {
            Kernels::Reference => matmul::reference::matmul(p, x, w, y),
            Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) if invariant => {
                matmul::cpu::matmul_batch_invariant(isa, self.precision(), p, x, w, y)
            }
            Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) => {
                matmul::cpu::matmul_at(isa, self.precision(), p, x, w, y)
            }
        }
    }

    /// One token's `y = x Wᵀ` for several weights, as one parallel region on the CPU.
    pub(crate) fn gemv_many(self, jobs: &mut [matmul::cpu::Gemv<'_>]) {
        match self {
            Kernels::Reference => {
                for job in jobs {
                    let (k, n) = (job.x.len(), job.y.len());
                    let p = Matmul { rows: 1, k, n };
                    matmul::reference::matmul(p, job.x, job.w, job.y);
                }
            }
            Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) => {
                matmul::cpu::gemv_many(isa, self.precision(), jobs)
            }
        }
    }

    pub(crate) fn rms_norm(self, p: RmsNorm, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
        match self {
            Kernels::Reference => rmsnorm::reference::rms_norm(p, x, w, y),
            Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) => {
                rmsnorm::cpu::rms_norm(isa, p, x, w, y)
            }
        }
    }

    /// RoPE; the fast path reads cos/sin from `table`, which must cover every position.
    pub(crate) fn rope(self, p: Rope, table: &RopeTable, positions: &[usize], x: &mut [f32]) {
        match self {
            Kernels::Reference => rope::reference::rope(p, positions, x),
            Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) => {
                rope::cpu::rope(isa, p, table, positions, x)
            }
        }
    }

    pub(crate) fn router_top_k(
        self,
        p: Router,
        logits: &[f32],
        ids: &mut [u32],
        weights: &mut [f32],
    ) {
        match self {
            Kernels::Reference => router::reference::router_top_k(p, logits, ids, weights),
            Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) => {
                router::cpu::router_top_k(isa, p, logits, ids, weights)
            }
        }
    }

    pub(crate) fn attention(
        self,
        p: Attention,
        q: &[f32],
        positions: &[usize],
        kv: crate::kv_cache::LayerView<'_>,
        out: &mut [f32],
    ) {
        use crate::kv_cache::LayerView;
        match (self, kv) {
            (Kernels::Reference, LayerView::F32(kv)) => {
                attention::reference::attention_kv(p, q, positions, kv, out)
            }
            (Kernels::Reference, LayerView::F16(kv)) => {
                attention::reference::attention_kv(p, q, positions, kv, out)
            }
            (Kernels::Reference, LayerView::Bf16(kv)) => {
                attention::reference::attention_kv(p, q, positions, kv, out)
            }
            (Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa), kv) => match kv {
                LayerView::F32(kv) => attention::cpu::attention_kv(isa, p, q, positions, kv, out),
                LayerView::F16(kv) => attention::cpu::attention_kv(isa, p, q, positions, kv, out),
                LayerView::Bf16(kv) => attention::cpu::attention_kv(isa, p, q, positions, kv, out),
            },
        }
    }

    /// The MoE block: `y = moe(x)` with each token's experts and weights in `input`.
    /// The sparse MoE block; `invariant` as for [`Kernels::matmul`].
    pub(crate) fn moe(
        self,
        p: Moe,
        input: MoeInput<'_>,
        y: &mut [f32],
        scratch: &mut moe::cpu::MoeScratch,
        invariant: bool,
    ) {
        let MoeInput {
            x,
            ids,
            weights,
            experts,
        } = input;
        match self {
            Kernels::Reference => moe::reference::moe(p, x, ids, weights, experts, y),
            Kernels::Cpu(isa) | Kernels::CpuBf16(isa) | Kernels::CpuInt8(isa) => {
                let precision = self.precision();
                let moe = match invariant {
                    true => moe::cpu::moe_batch_invariant,
                    false => moe::cpu::moe,
                };
                moe(isa, precision, p, x, ids, weights, experts, y, scratch)
            }
        }
    }
}

/// The inputs of one MoE call.
pub(crate) struct MoeInput<'a> {
    /// Normed activations `[T, D]`.
    pub x: &'a [f32],
    /// Chosen experts `[T, K]`.
    pub ids: &'a [u32],
    /// Their router weights `[T, K]`.
    pub weights: &'a [f32],
    /// The layer's experts.
    pub experts: &'a [Expert<'a>],
}
