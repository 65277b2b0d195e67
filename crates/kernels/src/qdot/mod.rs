//! Integer dot products of block-quantized weights with 8-bit quantized activations: the
//! `fast` numerics of the quantized matmuls ([`Precision::Int8`](crate::matmul::Precision)),
//! what llama.cpp computes on its CPU backend.
//!
//! Each activation row is quantized once per matmul, per block, to the type ggml pairs with
//! the weight type (its `vec_dot_type`): **Q8_0** (32 values, one f16 scale) for Q8_0 and
//! Q4_0 weights, **Q8_K** (256 values, an f32 scale and the sums of each 16 quants) for the
//! K-quants. A weight row's dot is then exact integer arithmetic inside each block and one
//! f32 multiply-add per block, so the only error beyond f32 round-off is the activations'
//! 8-bit rounding (about 0.4% of a dot's scale: see the fixtures' README, tolerance (ii)).
//!
//! Types with a fast dot: Q8_0, Q4_0, Q4_K, Q5_K, Q6_K (what llama.cpp's Q8_0, Q4_0 and
//! Q4_K_M/Q5_K_M/Q6_K files hold). Q4_1, Q5_0, Q5_1, Q2_K and Q3_K keep the exact path
//! (dequantized weights, f32 activations) at every precision: [`acts_kind`] is `None` for them.
//!
//! [`reference`](mod@reference) is the specification (ggml's generic C, transcribed); the x86 kernels
//! compute the same integer sums with `vpmaddubsw` (AVX2) or `vpdpbusd` (AVX512-VNNI) and
//! agree with it to f32 round-off of the per-block scaling; the aarch64 kernels compute them
//! with `smull`/`sadalp` (NEON) or `sdot` (the dot-product extension) and scale them in the
//! reference's order, so they return its exact bits.

#[cfg(target_arch = "aarch64")]
mod arm;
pub mod interleave;
#[cfg(target_arch = "aarch64")]
mod mmla;
pub mod reference;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod rows;
#[cfg(target_arch = "x86_64")]
mod rows8;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
mod zmm;

use crate::Isa;
use mixtral_tensor::DType;

/// Values per activation block of the largest kind (Q8_K).
pub const MAX_QK: usize = 256;

/// The block format activations are quantized to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ActsKind {
    /// 32 values, `d` = max|x| / 127 rounded to f16, quants rounded half away from zero.
    #[default]
    Q8_0,
    /// 256 values, `d` = −max / 127 for the value of largest magnitude, quants rounded ties
    /// to even, plus the sum of each 16 quants.
    Q8K,
}

impl ActsKind {
    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            ActsKind::Q8_0 => 32,
            ActsKind::Q8K => 256,
        }
    }
}

/// The activation blocks a weight type's integer dot takes, or `None` when the type has no
/// integer dot here (it then stays on the exact path).
pub fn acts_kind(dtype: DType) -> Option<ActsKind> {
    match dtype {
        DType::Q8_0 | DType::Q4_0 => Some(ActsKind::Q8_0),
        DType::Q4_K | DType::Q5_K | DType::Q6_K => Some(ActsKind::Q8K),
        _ => None,
    }
}

/// Rows of quantized activations, struct of arrays: the quants, one scale per block and (Q8_K)
/// one sum per 16 quants. Reused between calls; [`reference::quantize`] fills it.
#[derive(Clone, Debug, Default)]
pub struct QuantizedActs {
    /// The block format.
    pub kind: ActsKind,
    /// All quants, row after row.
    pub qs: Vec<i8>,
    /// One scale per block.
    pub d: Vec<f32>,
    /// Q8_K only: the sum of each 16 quants.
    pub bsums: Vec<i16>,
}

impl QuantizedActs {
    /// Sized for `len` values of `kind` (contents unspecified until written).
    pub(crate) fn reset(&mut self, kind: ActsKind, len: usize) {
        let blocks = len / kind.block_len();
        self.kind = kind;
        self.qs.resize(len, 0);
        self.d.resize(blocks, 0.0);
        self.bsums
            .resize(if kind == ActsKind::Q8K { len / 16 } else { 0 }, 0);
    }

    /// Quantizes `x` (rows of whole blocks) with [`reference::quantize`]. It stays scalar: a
    /// GEMV quantizes `k` values and then reads `n · k` weights, so its share is under 1%.
    pub fn quantize(&mut self, kind: ActsKind, x: &[f32]) {
        reference::quantize(kind, x, self)
    }

    /// [`QuantizedActs::quantize`] of `x` as rows of `k` values, the rows spread over the
    /// threads (a prefill GEMM's activations: hundreds of rows).
    pub fn quantize_rows(&mut self, kind: ActsKind, x: &[f32], k: usize) {
        self.reset(kind, x.len());
        if k == 0 {
            return;
        }
        let qk = kind.block_len();
        let sums = if kind == ActsKind::Q8K { k / 16 } else { 0 };
        let mut rows: Vec<_> = self
            .qs
            .chunks_mut(k)
            .zip(self.d.chunks_mut(k / qk))
            .zip(
                self.bsums
                    .chunks_mut(sums.max(1))
                    .chain(std::iter::repeat_with(|| &mut [][..])),
            )
            .map(|((qs, d), bsums)| (qs, d, bsums))
            .collect();
        crate::threads::for_each_row_mut(&mut rows, 1, 4 * k, |r, row| {
            let (qs, d, bsums) = &mut row[0];
            reference::quantize_into(kind, &x[r * k..(r + 1) * k], qs, d, bsums);
        });
    }

    /// The activations of values `start..start + len` (block-aligned): one row.
    pub fn row(&self, start: usize, len: usize) -> Acts<'_> {
        let qk = self.kind.block_len();
        debug_assert!(start.is_multiple_of(qk) && len.is_multiple_of(qk));
        Acts {
            kind: self.kind,
            qs: &self.qs[start..start + len],
            d: &self.d[start / qk..(start + len) / qk],
            bsums: if self.kind == ActsKind::Q8K {
                &self.bsums[start / 16..(start + len) / 16]
            } else {
                &[]
            },
        }
    }
}

/// One row of quantized activations (a view into [`QuantizedActs`]).
#[derive(Clone, Copy, Debug)]
pub struct Acts<'a> {
    /// The block format.
    pub kind: ActsKind,
    /// The quants.
    pub qs: &'a [i8],
    /// One scale per block.
    pub d: &'a [f32],
    /// Q8_K only: the sum of each 16 quants.
    pub bsums: &'a [i16],
}

/// `out[t] = Σ w·a[t]` for one weight row `w` (whole blocks of `dtype`) and `M` activation
/// rows, with `isa`'s kernel (the weight row is decoded once for all `M`).
///
/// # Panics
/// If `dtype` has no integer dot or a length disagrees.
#[inline]
pub fn dot_rows<const M: usize>(isa: Isa, dtype: DType, w: &[u8], a: [Acts<'_>; M]) -> [f32; M] {
    match isa {
        Isa::Scalar => a.map(|a| reference::dot(dtype, w, a)),
        // SAFETY: an `Avx2Fma` exists only after AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(_) => unsafe { x86::dot_rows_avx2(dtype, w, a) },
        // SAFETY: an `Avx512Bf16` exists only after AVX-512 F/BW/VL/VNNI and AVX512-BF16 were
        // detected (and AVX2, FMA, F16C before them).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16(_) => unsafe { x86::dot_rows_vnni(dtype, w, a) },
        // SAFETY: an `Isa::Neon` exists only after NEON was detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon(_) => unsafe { arm::dot_rows_neon(dtype, w, a) },
        // SAFETY: `Isa::Dotprod` and `Isa::I8mm` exist only after NEON and the dot-product
        // extension were detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Dotprod(_) | Isa::I8mm(_) => unsafe { arm::dot_rows_sdot(dtype, w, a) },
    }
}

/// `y[j] = Σ w_j · a` for each of the `y.len()` weight rows in `w` (whole blocks of `dtype`,
/// `w.len() / y.len()` bytes each): a GEMV's rows, one activation row.
///
/// # Panics
/// If `dtype` has no integer dot or a length disagrees.
pub fn gemv(isa: Isa, dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    match isa {
        Isa::Scalar => {
            let rb = w.len() / y.len().max(1);
            for (j, yj) in y.iter_mut().enumerate() {
                *yj = reference::dot(dtype, &w[j * rb..(j + 1) * rb], a);
            }
        }
        // SAFETY: an `Avx2Fma` exists only after AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(_) => unsafe { x86::gemv_avx2(dtype, w, a, y) },
        // SAFETY: an `Avx512Bf16` exists only after AVX-512 F/BW/VL/VNNI and AVX512-BF16 were
        // detected (and AVX2, FMA, F16C before them).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16(_) => unsafe { x86::gemv_vnni(dtype, w, a, y) },
        // SAFETY: an `Isa::Neon` exists only after NEON was detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon(_) => unsafe { arm::gemv_neon(dtype, w, a, y) },
        // SAFETY: `Isa::Dotprod` and `Isa::I8mm` exist only after NEON and the dot-product
        // extension were detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Dotprod(_) | Isa::I8mm(_) => unsafe { arm::gemv_sdot(dtype, w, a, y) },
    }
}

/// `y[t, j] = Σ w_j · a_t` for the weight rows in `w` (whole blocks of `dtype`) and the rows
/// of `acts` (`k` values each): `y` is `[rows, n]` row-major, `n = y.len() / rows`. Each
/// weight block is unpacked once per four tokens.
///
/// # Panics
/// If `dtype` has no integer dot or a length disagrees.
pub fn gemm(isa: Isa, dtype: DType, w: &[u8], acts: &QuantizedActs, k: usize, y: &mut [f32]) {
    match isa {
        Isa::Scalar => {
            let rows = acts.qs.len() / k.max(1);
            let n = y.len() / rows.max(1);
            let rb = w.len() / n.max(1);
            for (t, yt) in y.chunks_exact_mut(n.max(1)).enumerate() {
                for (j, yj) in yt.iter_mut().enumerate() {
                    *yj = reference::dot(dtype, &w[j * rb..(j + 1) * rb], acts.row(t * k, k));
                }
            }
        }
        // SAFETY: an `Avx2Fma` exists only after AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(_) => unsafe { x86::gemm_avx2(dtype, w, acts, k, y) },
        // SAFETY: an `Avx512Bf16` exists only after AVX-512 F/BW/VL/VNNI and AVX512-BF16 were
        // detected (and AVX2, FMA, F16C before them).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16(_) => unsafe { x86::gemm_vnni(dtype, w, acts, k, y) },
        // SAFETY: an `Isa::Neon` exists only after NEON was detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon(_) => unsafe { arm::gemm_neon(dtype, w, acts, k, y) },
        // SAFETY: `Isa::Dotprod` and `Isa::I8mm` exist only after NEON and the dot-product
        // extension were detected.
        #[cfg(target_arch = "aarch64")]
        Isa::Dotprod(_) => unsafe { arm::gemm_sdot(dtype, w, acts, k, y) },
        // SAFETY: an `Isa::I8mm` exists only after NEON, the dot-product extension and i8mm
        // were detected.
        #[cfg(target_arch = "aarch64")]
        Isa::I8mm(_) => unsafe { mmla::gemm_i8mm(dtype, w, acts, k, y) },
    }
}

/// [`gemv`] on rows interleaved eight at a time ([`interleave`]): `y.len()` rows, a multiple
/// of eight. The AVX2 kernels (also on AVX-512 machines: no 512-bit twin yet) take eight rows
/// per register; every other ISA runs the reference twin.
///
/// # Panics
/// If `dtype` has no interleaved layout or a length disagrees.
pub fn gemv_interleaved(isa: Isa, dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    match isa {
        // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe { rows8::gemv_avx2(dtype, w, a, y) },
        _ => interleave::gemv(dtype, w, a, y),
    }
}

/// [`gemm`] on rows interleaved eight at a time ([`interleave`]): tiles of eight rows by four
/// tokens on AVX2, the reference twin row by row elsewhere.
///
/// # Panics
/// If `dtype` has no interleaved layout or a length disagrees.
pub fn gemm_interleaved(
    isa: Isa,
    dtype: DType,
    w: &[u8],
    acts: &QuantizedActs,
    k: usize,
    y: &mut [f32],
) {
    match isa {
        // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe { rows8::gemm_avx2(dtype, w, acts, k, y) },
        _ => {
            if k == 0 || y.is_empty() {
                y.fill(0.0);
                return;
            }
            let rows = acts.qs.len() / k;
            let n = y.len() / rows.max(1);
            assert_eq!(rows * n, y.len(), "gemm {dtype} shape");
            for (t, yt) in y.chunks_exact_mut(n).enumerate() {
                interleave::gemv(dtype, w, acts.row(t * k, k), yt);
            }
        }
    }
}

/// A Q4_K/Q5_K block's eight 6-bit scales and eight 6-bit mins (bytes 4..16), unpacked as
/// ggml does with its `kmask` words: `(scales, mins)`, one byte each.
#[inline(always)]
pub(crate) fn scales_mins_k4(packed: &[u8; 12]) -> ([u8; 8], u64) {
    let word = |i: usize| u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().expect("4"));
    let (k1, k2, k3) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let sc_lo = u0 & k1;
    let sc_hi = (u2 & k2) | (((u0 >> 6) & k3) << 4);
    let m_lo = u1 & k1;
    let m_hi = ((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4);
    let mut scales = [0u8; 8];
    scales[..4].copy_from_slice(&sc_lo.to_le_bytes());
    scales[4..].copy_from_slice(&sc_hi.to_le_bytes());
    (scales, u64::from(m_lo) | (u64::from(m_hi) << 32))
}
