//! The NEON micro-kernel of the CPU matmul and its `#[target_feature]` entry point: the twin
//! of `avx2.rs`. Each (token, weight row) pair keeps two 4-lane accumulators, so a 4 × 2 tile
//! has sixteen independent FMA chains (enough for cores that issue four FMAs a cycle at a
//! latency of four) in 16 + 4 (weights) + 2 (one token's activations) of the 32 vector
//! registers. (Checked in the disassembly: no tile instance spills a vector to the stack.)

use super::{Tiles, drive};
use crate::isa::{Elem, neon::hsum};
use crate::matmul::Matmul;
use crate::threads::SharedOut;
use std::arch::aarch64::*;
use std::ops::Range;

/// NEON tiles.
pub(super) struct Neon;

impl Tiles for Neon {
    #[inline(always)]
    unsafe fn tile<T: Elem, const M: usize, const N: usize>(
        x: &[f32],
        ldx: usize,
        w: &[T],
        ldw: usize,
        kc: usize,
    ) -> [[f32; N]; M] {
        assert!(x.len() >= (M - 1) * ldx + kc && w.len() >= (N - 1) * ldw + kc);
        let (px, pw) = (x.as_ptr(), w.as_ptr());
        let mut r = [[0f32; N]; M];
        let mut i = 0;
        // SAFETY: every load reads `row · ld + i .. + 8` with `i + 8 <= kc`, inside the slices
        // by the assertion above; the caller guarantees NEON.
        unsafe {
            let mut acc = [[[vdupq_n_f32(0.0); 2]; N]; M];
            while i + 8 <= kc {
                let mut wv = [[vdupq_n_f32(0.0); 2]; N];
                for (j, v) in wv.iter_mut().enumerate() {
                    let p = pw.add(j * ldw + i);
                    *v = [T::load4(p), T::load4(p.add(4))];
                }
                for (t, acc_t) in acc.iter_mut().enumerate() {
                    let p = px.add(t * ldx + i);
                    let xv = [vld1q_f32(p), vld1q_f32(p.add(4))];
                    for (a, v) in acc_t.iter_mut().zip(&wv) {
                        a[0] = vfmaq_f32(a[0], xv[0], v[0]);
                        a[1] = vfmaq_f32(a[1], xv[1], v[1]);
                    }
                }
                i += 8;
            }
            for (rt, acc_t) in r.iter_mut().zip(&acc) {
                for (rv, a) in rt.iter_mut().zip(acc_t) {
                    *rv = hsum(vaddq_f32(a[0], a[1]));
                }
            }
        }
        for (t, rt) in r.iter_mut().enumerate() {
            for (j, rv) in rt.iter_mut().enumerate() {
                for ii in i..kc {
                    *rv += x[t * ldx + ii] * w[j * ldw + ii].widen();
                }
            }
        }
        r
    }

    #[inline(always)]
    unsafe fn widen<T: Elem>(src: &[T], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        // SAFETY: loads and stores cover `i..i + 4 <= n`, inside both slices; the caller
        // guarantees NEON.
        unsafe {
            while i + 4 <= n {
                vst1q_f32(dst.as_mut_ptr().add(i), T::load4(src.as_ptr().add(i)));
                i += 4;
            }
        }
        for j in i..n {
            dst[j] = src[j].widen();
        }
    }

    #[inline(always)]
    unsafe fn dot<T: Elem>(x: &[f32], w: &[T]) -> f32 {
        // SAFETY: the caller guarantees NEON.
        unsafe { crate::isa::neon::dot(x, w) }
    }
}

/// [`drive`] compiled with NEON.
///
/// # Safety
/// The CPU must support NEON; `out` and `cols` as for [`drive`].
#[target_feature(enable = "neon")]
pub(super) unsafe fn drive_neon<T: Elem>(
    p: Matmul,
    x: &[f32],
    w: &[T],
    out: &SharedOut<'_>,
    cols: Range<usize>,
    gemv: bool,
) {
    // SAFETY: this function's features are those `Neon` needs; `out`/`cols` per our contract.
    unsafe { drive::<T, Neon>(p, x, w, out, cols, gemv) }
}
