//! Fast CPU RoPE over a precomputed cos/sin table ([`RopeTable`]), so the hot loop does no
//! trigonometry. Twin of [`reference::rope`](super::reference::rope).
//!
//! The table holds exactly the reference's f32 values (`sin`/`cos` of `position × inv_freq`
//! computed in f64 from the integer position, then rounded), and both ISAs apply the same
//! f32 products and differences without FMA contraction, so the results are bit-identical to
//! the reference.

use super::Rope;
use crate::Isa;
use crate::threads::for_each_row_mut;

#[cfg(target_arch = "x86_64")]
#[path = "avx2.rs"]
mod avx2;
#[cfg(target_arch = "aarch64")]
#[path = "neon.rs"]
mod neon;

/// `cos` and `sin` of every rotation angle for positions `0..positions`, `[positions, Dh/2]`
/// each. Built once per model (queries and keys share it: it depends only on `Dh` and
/// `theta`); 16 MiB for Mixtral's 32k context.
#[derive(Clone, Debug)]
pub struct RopeTable {
    head_dim: usize,
    theta: f64,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The table for `p`'s `head_dim` and `theta`, positions `0..positions`.
    pub fn new(p: Rope, positions: usize) -> RopeTable {
        let half = p.head_dim / 2;
        let (mut cos, mut sin) = (
            Vec::with_capacity(positions * half),
            Vec::with_capacity(positions * half),
        );
        for pos in 0..positions {
            for i in 0..half {
                let angle = pos as f64 * p.inv_freq(i);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable {
            head_dim: p.head_dim,
            theta: p.theta,
            cos,
            sin,
        }
    }

    /// Positions covered: `0..positions()`.
    pub fn positions(&self) -> usize {
        self.cos.len().checked_div(self.head_dim / 2).unwrap_or(0)
    }

    /// Whether the table was built for `p`'s head size and base frequency.
    pub fn fits(&self, p: Rope) -> bool {
        self.head_dim == p.head_dim && self.theta == p.theta
    }

    /// `(cos, sin)` rows of `pos`, `Dh/2` each.
    fn row(&self, pos: usize) -> (&[f32], &[f32]) {
        let half = self.head_dim / 2;
        (
            &self.cos[pos * half..][..half],
            &self.sin[pos * half..][..half],
        )
    }
}

/// Rotates each head of each row of `x` (`[T, n_heads · head_dim]`) by its row's position:
/// same contract as [`reference::rope`](super::reference::rope), with the angles from
/// `table` (which must [fit](RopeTable::fits) `p` and cover every position).
pub fn rope(isa: Isa, p: Rope, table: &RopeTable, positions: &[usize], x: &mut [f32]) {
    let width = p.n_heads * p.head_dim;
    assert_eq!(x.len(), positions.len() * width, "rope: x length for {p:?}");
    assert!(
        table.fits(p),
        "rope: table built for another head size or theta than {p:?}"
    );
    if width == 0 {
        return;
    }
    let row = |(xr, &pos): (&mut [f32], &usize)| {
        assert!(
            pos < table.positions(),
            "rope: position {pos} past the table"
        );
        let (cos, sin) = table.row(pos);
        for head in xr.chunks_exact_mut(p.head_dim) {
            if p.interleaved {
                // Adjacent pairs: a fraction of a percent of a layer's time, left scalar.
                rotate_pairs(head, cos, sin);
                continue;
            }
            match isa {
                Isa::Scalar => rotate(head, cos, sin),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: both x86 SIMD variants exist only after AVX2, FMA and F16C were detected.
                Isa::Avx2Fma(_) | Isa::Avx512Bf16(_) => unsafe { avx2::rotate(head, cos, sin) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: every aarch64 SIMD variant exists only after NEON was detected.
                Isa::Neon(_) | Isa::Dotprod(_) | Isa::I8mm(_) => unsafe {
                    neon::rotate(head, cos, sin)
                },
            }
        }
    };
    for_each_row_mut(x, width, width, |i, xr| row((xr, &positions[i])));
}

/// One head: element `2i` pairs with `2i + 1`.
fn rotate_pairs(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x1 * c + x0 * s;
    }
}

/// One head: element `i` pairs with `i + Dh/2`.
fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let (lo, hi) = head.split_at_mut(cos.len());
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi).zip(cos).zip(sin) {
        let (x0, x1) = (*a, *b);
        *a = x0 * c - x1 * s;
        *b = x1 * c + x0 * s;
    }
}
