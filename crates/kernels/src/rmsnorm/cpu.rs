//! Fast CPU RMSNorm: vectorised sum of squares and scaling, rows split across the rayon
//! pool for prefill. Twin of [`reference::rms_norm`](super::reference::rms_norm).

use super::RmsNorm;
use crate::isa::Elem;
use crate::threads::for_each_row_mut;
use crate::{Isa, Weight};

#[cfg(target_arch = "x86_64")]
#[path = "avx2.rs"]
mod avx2;
#[cfg(target_arch = "aarch64")]
#[path = "neon.rs"]
mod neon;

/// `y[r] = x[r] · (1 / sqrt(mean(x[r]²) + eps)) · w`: same contract as
/// [`reference::rms_norm`](super::reference::rms_norm); the sum of squares is accumulated
/// in f32 in a different order.
pub fn rms_norm(isa: Isa, p: RmsNorm, x: &[f32], w: Weight<'_>, y: &mut [f32]) {
    assert_eq!(x.len(), p.rows * p.cols, "rms_norm: x length for {p:?}");
    assert_eq!(w.len(), p.cols, "rms_norm: w length for {p:?}");
    assert_eq!(y.len(), x.len(), "rms_norm: y length for {p:?}");
    match w {
        Weight::F32(w) => rows(isa, p, x, w, y),
        Weight::BF16(w) => rows(isa, p, x, w, y),
        Weight::F16(w) => rows(isa, p, x, w, y),
        Weight::Quant(q) => {
            // Norm weights are never quantized in practice (llama.cpp keeps them f32); decode
            // the one row rather than refuse.
            let mut w = vec![0f32; q.len()];
            q.decode_into(0, &mut w);
            rows(isa, p, x, &w[..], y)
        }
    }
}

fn rows<T: Elem>(isa: Isa, p: RmsNorm, x: &[f32], w: &[T], y: &mut [f32]) {
    if p.cols == 0 {
        return;
    }
    let row = |(xr, yr): (&[f32], &mut [f32])| match isa {
        Isa::Scalar => scalar_row(p.eps, xr, w, yr),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
        Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe { avx2::row(p.eps, xr, w, yr) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: every aarch64 SIMD variant exists only after NEON was detected.
        Isa::Neon(_) | Isa::Dotprod(_) | Isa::I8mm(_) => unsafe { neon::row(p.eps, xr, w, yr) },
    };
    for_each_row_mut(y, p.cols, p.cols, |i, yr| {
        row((&x[i * p.cols..(i + 1) * p.cols], yr))
    });
}

/// One row; eight partial sums that the compiler keeps in vector lanes.
fn scalar_row<T: Elem>(eps: f32, x: &[f32], w: &[T], y: &mut [f32]) {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l] * c[l];
        }
    }
    let mean_sq = (acc.iter().sum::<f32>() + tail) / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &wi) in y.iter_mut().zip(x).zip(w) {
        *o = wi.widen() * (v * inv);
    }
}
