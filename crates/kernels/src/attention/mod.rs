//! Causal grouped-query attention over a KV cache, with an optional sliding window.

pub mod cpu;
pub mod reference;

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
