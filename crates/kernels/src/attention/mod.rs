//! Causal grouped-query attention over a KV cache, with an optional sliding window.

pub mod cpu;
pub mod reference;

use crate::isa::Elem;

/// One attention call: `T` query rows against the first `S` cached positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attention {
    /// `H`: query heads.
    pub n_heads: usize,
    /// `G`: key/value heads; query head `h` reads KV head `h / (H / G)`.
    pub n_kv_heads: usize,
    /// `Dh`.
    pub head_dim: usize,
    /// Position `p` sees positions `p - w + 1 ..= p`; `None` is full causal attention.
    pub window: Option<usize>,
}

impl Attention {
    /// The first position a query at `pos` may attend to.
    pub fn first_visible(&self, pos: usize) -> usize {
        match self.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        }
    }
}

/// A KV cache's keys and values as attention reads them: the `Dh` elements of position `s`
/// and KV head `g` start at `g · group_stride + s · row_stride` in `k` (and in `v`), or, in
/// a paged cache, at `table[s / P] · page_stride + g · group_stride + (s % P) · row_stride`
/// ([`Pages`]). Elements are f32, or f16 / bf16 for a half-precision cache (widened to f32
/// in registers as they are read; the arithmetic stays f32).
#[derive(Clone, Copy, Debug)]
pub struct Kv<'a, T: Elem = f32> {
    /// Keys.
    pub k: &'a [T],
    /// Values, laid out as `k`.
    pub v: &'a [T],
    /// `S`: positions held.
    pub len: usize,
    /// Floats from one position to the next.
    pub row_stride: usize,
    /// Floats from one KV head to the next.
    pub group_stride: usize,
    /// The page table of a paged cache (`None`: one contiguous layout).
    pub pages: Option<Pages<'a>>,
}

/// A paged cache's page table: positions `i·P .. (i+1)·P` live in page `table[i]`, which
/// starts `table[i] · stride` elements into `k` (and `v`). Pages can be anywhere and in any
/// order, so sequences can take pages from one pool as they grow and share the pages of a
/// common prefix.
#[derive(Clone, Copy, Debug)]
pub struct Pages<'a> {
    /// Page of each run of `positions` positions.
    pub table: &'a [u32],
    /// `P`: positions per page.
    pub positions: usize,
    /// Elements from one page to the next.
    pub stride: usize,
}

impl<'a, T: Elem> Kv<'a, T> {
    /// `[S, G·Dh]`: row `s` holds position `s`, its KV heads side by side (what the
    /// projections produce).
    pub fn by_position(p: Attention, k: &'a [T], v: &'a [T]) -> Kv<'a, T> {
        let width = p.n_kv_heads * p.head_dim;
        Kv {
            k,
            v,
            len: k.len().checked_div(width).unwrap_or(0),
            row_stride: width,
            group_stride: p.head_dim,
            pages: None,
        }
    }

    /// `[G, capacity, Dh]` of which the first `len` positions are held: each KV head's keys
    /// are one contiguous run, so a pass over the cache for one head is one sequential read
    /// (the model's cache; by position, each head reads `Dh` floats out of every `G·Dh`, a
    /// new 4 KiB page every position at Mixtral's sizes).
    pub fn by_head(p: Attention, k: &'a [T], v: &'a [T], len: usize, capacity: usize) -> Kv<'a, T> {
        assert!(
            len <= capacity,
            "kv: {len} positions held in a capacity of {capacity}"
        );
        Kv {
            k,
            v,
            len,
            row_stride: p.head_dim,
            group_stride: capacity * p.head_dim,
            pages: None,
        }
    }

    /// Pages of `[G, P, Dh]` (`P` = `positions`), position run `i` in page `table[i]`: within
    /// a page each KV head's positions are one contiguous run, as in [`Kv::by_head`].
    pub fn paged(
        p: Attention,
        k: &'a [T],
        v: &'a [T],
        len: usize,
        table: &'a [u32],
        positions: usize,
    ) -> Kv<'a, T> {
        Kv {
            k,
            v,
            len,
            row_stride: p.head_dim,
            group_stride: positions * p.head_dim,
            pages: Some(Pages {
                table,
                positions,
                stride: p.n_kv_heads * positions * p.head_dim,
            }),
        }
    }

    /// Where position `s` of KV head `g` starts.
    #[inline(always)]
    pub fn offset(&self, g: usize, s: usize) -> usize {
        match self.pages {
            None => g * self.group_stride + s * self.row_stride,
            Some(p) => {
                p.table[s / p.positions] as usize * p.stride
                    + g * self.group_stride
                    + (s % p.positions) * self.row_stride
            }
        }
    }

    /// The first position after `s` that is not `row_stride` on from its predecessor (the
    /// start of the next page): a run of rows the kernels read with one stride ends there.
    #[inline(always)]
    pub fn run_end(&self, s: usize) -> usize {
        match self.pages {
            None => usize::MAX,
            Some(p) => (s / p.positions + 1) * p.positions,
        }
    }

    /// Panics unless every held row of every KV head lies inside `k` and `v`.
    pub(crate) fn check(&self, p: Attention) {
        assert_eq!(
            self.k.len(),
            self.v.len(),
            "attention: k and v lengths differ"
        );
        if self.len == 0 || p.n_kv_heads == 0 {
            return;
        }
        match self.pages {
            None => {
                let end = self.offset(p.n_kv_heads - 1, self.len - 1) + p.head_dim;
                assert!(
                    end <= self.k.len(),
                    "attention: {} cached positions need {end} floats, k holds {}",
                    self.len,
                    self.k.len()
                );
            }
            Some(pages) => {
                assert!(pages.positions > 0, "attention: pages of 0 positions");
                let used = self.len.div_ceil(pages.positions);
                assert!(
                    used <= pages.table.len(),
                    "attention: {} cached positions need {used} pages, the table has {}",
                    self.len,
                    pages.table.len()
                );
                let last = (p.n_kv_heads - 1) * self.group_stride
                    + (pages.positions - 1) * self.row_stride
                    + p.head_dim;
                assert!(
                    last <= pages.stride,
                    "attention: a page's rows overlap the next"
                );
                for &page in &pages.table[..used] {
                    let end = (page as usize + 1) * pages.stride;
                    assert!(
                        end <= self.k.len(),
                        "attention: page {page} ends at {end}, k holds {}",
                        self.k.len()
                    );
                }
            }
        }
    }
}
