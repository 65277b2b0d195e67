//! Several GEMVs as one parallel region.
//!
//! A decode step's small matmuls (a layer's q, k and v projections; the chosen experts' up
//! projections, then their down projections) each last 15-300 µs. Run one after another,
//! each pays a region's start and its last-chunk wait; handed out together, the output rows of
//! all of them form one list of chunks and the threads move from one matrix to the next
//! without stopping.

use super::{GEMV_CHUNKS, Matmul, NR_GEMV, Precision, ROUNDED, Scalar, drive};
use crate::qdot::{QuantizedActs, acts_kind};
use crate::threads::{SharedOut, for_each_range};
use crate::{Isa, Weight};
use std::cell::RefCell;
use std::ops::Range;

/// The most GEMVs one [`gemv_many`] call takes (a fixed bound keeps the call allocation-free).
pub const MAX_GEMVS: usize = 8;

/// One GEMV of a batch: `y = W x` for `W`: `[y.len(), x.len()]` (one token's `x Wᵀ`).
#[derive(Debug)]
pub struct Gemv<'a> {
    /// The input, `[k]`.
    pub x: &'a [f32],
    /// The weights, `[n, k]`.
    pub w: Weight<'a>,
    /// The output, `[n]`.
    pub y: &'a mut [f32],
}

/// One GEMV's input as its kernel takes it.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// The f32 kernel on `x` (as given, or rounded to bf16 for [`Precision::Bf16`]).
    F32(&'a [f32]),
    /// The AVX512-BF16 kernel on `x` rounded to bf16 pairs.
    #[cfg(target_arch = "x86_64")]
    Pairs(&'a [u32]),
    /// The integer dot on `x` quantized to 8-bit blocks ([`Precision::Int8`]).
    Int8(&'a QuantizedActs),
}

/// Where a job's prepared input lives.
#[derive(Clone, Copy)]
enum Prepared {
    AsGiven,
    Rounded(usize),
    #[cfg(target_arch = "x86_64")]
    Pairs(usize),
    Int8(usize),
}

thread_local! {
    /// Quantized activations of [`Precision::Int8`] GEMVs, one per job, reused between calls.
    static ACTS: RefCell<Vec<QuantizedActs>> = const { RefCell::new(Vec::new()) };
}

/// Each GEMV of `jobs` as [`matmul_at`](super::matmul_at) with `rows = 1` computes it, in one
/// parallel region over the output rows of all of them.
///
/// ```
/// use mixtral_kernels::matmul::{Precision, cpu::{Gemv, gemv_many}};
/// use mixtral_kernels::{Isa, Weight};
/// let (x, wa, wb) = ([1.0, 2.0], [1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [2.0, 2.0]);
/// let (mut ya, mut yb) = ([0.0; 3], [0.0; 1]);
/// gemv_many(Isa::detect(), Precision::F32, &mut [
///     Gemv { x: &x, w: Weight::F32(&wa), y: &mut ya },
///     Gemv { x: &x, w: Weight::F32(&wb), y: &mut yb },
/// ]);
/// assert_eq!((ya, yb), ([1.0, 2.0, 3.0], [6.0]));
/// ```
pub fn gemv_many(isa: Isa, precision: Precision, jobs: &mut [Gemv<'_>]) {
    let count = jobs.len();
    assert!(
        count <= MAX_GEMVS,
        "gemv_many: {count} GEMVs, at most {MAX_GEMVS}"
    );
    let (mut k, mut n) = ([0usize; MAX_GEMVS], [0usize; MAX_GEMVS]);
    for (i, job) in jobs.iter().enumerate() {
        (k[i], n[i]) = (job.x.len(), job.y.len());
        Matmul {
            rows: 1,
            k: k[i],
            n: n[i],
        }
        .check(k[i], job.w.len(), n[i]);
    }
    // Inputs first, serially (a few thousand elements), into two reused buffers.
    #[cfg(target_arch = "x86_64")]
    let pairs_kernel = precision.rounds_bf16() && matches!(isa, Isa::Avx512Bf16(_));
    #[cfg(target_arch = "x86_64")]
    let mut pairs = super::avx512::take_buffer();
    let mut rounded = ROUNDED.take();
    rounded.clear();
    let mut acts = ACTS.take();
    acts.resize_with(MAX_GEMVS, QuantizedActs::default);
    let mut prepared = [Prepared::AsGiven; MAX_GEMVS];
    for i in 0..count {
        let job = &jobs[i];
        if let Weight::Quant(q) = job.w
            && precision.quantizes_acts()
            && let Some(kind) = acts_kind(q.dtype)
        {
            // Jobs on the same input (an expert's w1 and w3) share one quantization.
            let same = |j: usize| {
                std::ptr::eq(jobs[j].x, job.x)
                    && matches!(jobs[j].w, Weight::Quant(o) if acts_kind(o.dtype) == Some(kind))
            };
            prepared[i] = match (0..i).find(|&j| same(j)) {
                Some(j) => prepared[j],
                None => {
                    acts[i].quantize(kind, job.x);
                    Prepared::Int8(i)
                }
            };
            continue;
        }
        if !precision.rounds_bf16() || !matches!(job.w, Weight::BF16(_)) {
            continue;
        }
        let slot = &mut prepared[i];
        #[cfg(target_arch = "x86_64")]
        if pairs_kernel {
            // SAFETY: `pairs_kernel` holds only where AVX512-BF16 was detected.
            *slot = Prepared::Pairs(unsafe { super::avx512::round_append(job.x, &mut pairs) });
            continue;
        }
        *slot = Prepared::Rounded(rounded.len());
        rounded.extend(
            job.x
                .iter()
                .map(|&v| super::super::reference::round_bf16(v)),
        );
    }
    let mut inputs = [Input::F32(&[]); MAX_GEMVS];
    let mut weights = [Weight::F32(&[]); MAX_GEMVS];
    let mut starts = [0usize; MAX_GEMVS + 1];
    for (i, job) in jobs.iter().enumerate() {
        inputs[i] = match prepared[i] {
            Prepared::AsGiven => Input::F32(job.x),
            Prepared::Rounded(at) => Input::F32(&rounded[at..at + k[i]]),
            #[cfg(target_arch = "x86_64")]
            Prepared::Pairs(at) => Input::Pairs(&pairs[at..]),
            Prepared::Int8(at) => Input::Int8(&acts[at]),
        };
        weights[i] = job.w;
        if k[i] == 0 {
            n[i] = 0; // nothing to multiply: zeroed below, no rows in the region
        }
        // Every GEMV starts on a multiple of the row tile, so chunk starts stay aligned.
        starts[i + 1] = (starts[i] + n[i]).div_ceil(NR_GEMV) * NR_GEMV;
    }
    let mut views = jobs.iter_mut().map(|job| {
        if job.x.is_empty() {
            job.y.fill(0.0);
        }
        let len = job.y.len();
        SharedOut::new(job.y, 1, len)
    });
    let outs: [Option<SharedOut<'_>>; MAX_GEMVS] = std::array::from_fn(|_| views.next());
    let total = starts[count];
    let macs: usize = (0..count).map(|i| n[i] * k[i]).sum();
    for_each_range(total, NR_GEMV, macs / total.max(1), GEMV_CHUNKS, |range| {
        for i in 0..count {
            let (a, b) = (range.start.max(starts[i]), range.end.min(starts[i] + n[i]));
            if a < b {
                let out = outs[i].as_ref().expect("one output per job");
                let cols = a - starts[i]..b - starts[i];
                rows(isa, (inputs[i], k[i]), weights[i], out, cols);
            }
        }
    });
    #[cfg(target_arch = "x86_64")]
    super::avx512::put_buffer(pairs);
    ROUNDED.set(rounded);
    ACTS.set(acts);
}

/// Output rows `cols` of one GEMV whose input is `k` long.
fn rows(
    isa: Isa,
    (input, k): (Input<'_>, usize),
    w: Weight<'_>,
    out: &SharedOut<'_>,
    cols: Range<usize>,
) {
    let p = Matmul {
        rows: 1,
        k,
        n: w.len() / k,
    };
    match input {
        Input::F32(x) => match w {
            Weight::F32(w) => f32_rows(isa, p, x, w, out, cols),
            Weight::BF16(w) => f32_rows(isa, p, x, w, out, cols),
            Weight::F16(w) => f32_rows(isa, p, x, w, out, cols),
            Weight::Quant(w) => super::quant::gemv_rows(isa, x, w, out, cols),
        },
        #[cfg(target_arch = "x86_64")]
        Input::Pairs(xb) => {
            let Weight::BF16(w) = w else {
                unreachable!("pairs are prepared only for bf16 weights")
            };
            // SAFETY: pairs are prepared only on `Isa::Avx512Bf16`, which exists only after
            // its features were detected; only this chunk writes `cols`.
            unsafe { super::avx512::gemv(xb, w, k, out, cols) }
        }
        Input::Int8(acts) => {
            let Weight::Quant(w) = w else {
                unreachable!("8-bit activations are prepared only for quantized weights")
            };
            super::quant::gemv_rows_int8(isa, acts, w, out, cols)
        }
    }
}

/// [`rows`] for the f32 kernels.
fn f32_rows<T: crate::isa::Elem>(
    isa: Isa,
    p: Matmul,
    x: &[f32],
    w: &[T],
    out: &SharedOut<'_>,
    cols: Range<usize>,
) {
    match isa {
        // SAFETY: the scalar tiles use no target features; only this chunk writes `cols`.
        Isa::Scalar => unsafe { drive::<T, Scalar>(p, x, w, out, cols, true) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
        Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe {
            super::avx2::drive_avx2(p, x, w, out, cols, true)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: every aarch64 SIMD variant exists only after NEON was detected.
        Isa::Neon(_) | Isa::Dotprod(_) | Isa::I8mm(_) => unsafe {
            super::neon::drive_neon(p, x, w, out, cols, true)
        },
    }
}
