//! The CPU's load-time weight layout ([`Placement::repack`](crate::Placement::repack)):
//! matrices of the types with interleaved kernels copied into rows interleaved eight at a
//! time ([`mixtral_kernels::qdot::interleave`]), the file's pages of each released as it is
//! done, so resident memory stays at the file's size plus one tensor.

use crate::{Result, Weights};
use mixtral_kernels::Isa;
use mixtral_kernels::qdot::interleave;
use mixtral_tensor::{DType, Tensor};

/// Whether the interleaved layout is the faster one with `isa`'s kernels: measured on AVX2
/// (Zen 3: prefill and decode both faster, docs/performance.md). AVX-512 machines keep their
/// 512-bit row-major kernels until the interleaved ones are measured against them there; no
/// other ISA has interleaved kernels (their twin is the scalar reference).
pub(crate) fn pays(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    return matches!(isa, Isa::Avx2Fma(_));
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// Whether `isa` has kernels for the interleaved layout (AVX2, also run on AVX-512
/// machines): elsewhere only the reference twin reads it.
pub(crate) fn has_kernels(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    return matches!(isa, Isa::Avx2Fma(_) | Isa::Avx512Bf16(_));
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// The types interleaved at load: those whose interleaved GEMV and GEMM both beat the
/// row-major ones (kernel benchmark, Zen 3, docs/performance.md). Q6_K joined once its GEMV
/// prefetched the block run ahead (it read three interleaved streams that the hardware
/// prefetcher followed late, and was 1.3x slower than the row-major GEMV).
fn repacked_at_load(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_K | DType::Q6_K)
}

/// The matrices a matmul reads whole: attention projections, experts and an untied output
/// head (the embedding, read a row per token, and the router stay as stored).
fn matmul_weights(w: &mut Weights) -> Vec<&mut Tensor> {
    let tied = std::ptr::eq(w.lm_head.as_bytes().as_ptr(), w.embed.as_bytes().as_ptr());
    let mut all = Vec::new();
    if !tied {
        all.push(&mut w.lm_head);
    }
    for l in &mut w.layers {
        all.extend([&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo]);
        all.extend(
            l.experts
                .iter_mut()
                .flat_map(|e| [&mut e.w1, &mut e.w2, &mut e.w3]),
        );
    }
    all
}

/// Interleaves every matrix that fits, one tensor at a time (each on all threads), with
/// `progress(done, total)` in bytes of the candidates; returns the bytes interleaved.
pub(crate) fn interleave_weights(
    weights: &mut Weights,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    let mut tensors = matmul_weights(weights);
    tensors.retain(|t| {
        let d = t.dims();
        d.len() == 2 && repacked_at_load(t.dtype()) && interleave::fits(t.dtype(), d[0], d[1])
    });
    let total: usize = tensors.iter().map(|t| t.as_bytes().len()).sum();
    let mut done = 0;
    for t in tensors {
        let Some(relaid) = interleave::interleaved(t)? else {
            continue;
        };
        let stored = std::mem::replace(t, relaid);
        stored.storage().release_pages();
        done += stored.as_bytes().len();
        progress(done, total);
    }
    Ok(done)
}
