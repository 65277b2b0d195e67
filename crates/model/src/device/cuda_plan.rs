//! What a model takes on a GPU before it is uploaded: its weights as the device stores them
//! (GGUF blocks kept, the rest bf16), the KV cache for a context as the device cache grows,
//! and the working memory of one forward call. `mixtral inspect --device cuda` prints it, and
//! placing a model on a GPU checks it against the card's free memory before copying anything.

use super::cuda::{self, CACHE_BLOCK};
use crate::{Config, KvDType};
use mixtral_kernels::cuda::ops::DECODE_MAX_SPLITS;

/// Device bytes of one model on one GPU, for a context and a call size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    /// The weights, as uploaded.
    pub weights: usize,
    /// One sequence's keys and values at `context` positions, as the cache has grown to
    /// them (it doubles from 256 positions, capped at the model's context).
    pub kv_cache: usize,
    /// The largest the cache holds while growing into `kv_cache` (the old and new copies).
    pub kv_peak: usize,
    /// Activations and kernel work space for a call of `rows` tokens (and the one-token set
    /// held while they are allocated: growing frees the old set and makes a 1-row one first).
    pub scratch: usize,
    /// Positions the cache is sized for.
    pub context: usize,
    /// Tokens per forward call the scratch is sized for.
    pub rows: usize,
    /// The cache's element type.
    pub kv_dtype: KvDType,
}

impl DevicePlan {
    /// Weights, scratch and the cache's peak together (saturating).
    pub fn total(&self) -> usize {
        self.weights
            .saturating_add(self.kv_peak)
            .saturating_add(self.scratch)
    }
}

/// The rows a device cache holds after [`super::KvStore::reserve`] of `positions` when it has
/// `rows` now (as `CudaKv::reserve` grows it).
pub(crate) fn grown_rows(rows: usize, positions: usize, max: usize) -> usize {
    if positions <= rows {
        return rows;
    }
    positions
        .max(rows.saturating_mul(2))
        .max(CACHE_BLOCK)
        .min(max.max(positions))
}

/// Rows of a cache grown one decode step at a time to `context` positions, and the rows it
/// had before its last growth.
fn rows_at(context: usize, max: usize) -> (usize, usize) {
    let (mut before, mut rows) = (0, 0);
    while rows < context {
        before = rows;
        // Each growth jumps to what reserving one more position than now gives.
        rows = grown_rows(rows, rows + 1, max).max(rows + 1);
    }
    (before, rows)
}

/// Bytes of the activations and work space `Cuda::alloc_acts` allocates for `rows` tokens
/// (kept in step with it: one line per buffer, in its order).
pub(crate) fn scratch_bytes(c: &Config, rows: usize) -> usize {
    // Configs are bounded (`MAX_DIM`) and rows capped here, so nothing below overflows.
    let rows = rows.min(MAX_ROWS);
    let (d, e, k, v) = (
        c.hidden_size,
        c.num_local_experts,
        c.num_experts_per_tok,
        c.vocab_size,
    );
    let (qd, kvd, f) = (c.q_dim(), c.kv_dim(), c.intermediate_size);
    let (f32_, bf16_, u32_) = (4, 2, 4);
    let a = rows * k; // MoE assignments
    let per_call = [
        rows * u32_ * 2,           // token ids, positions
        rows * d * f32_,           // h
        rows * d * bf16_,          // x
        rows * qd * f32_,          // q
        rows * kvd * f32_ * 2,     // k, v
        rows * qd * bf16_,         // att
        rows * d * f32_,           // out
        rows * e * f32_,           // router logits
        rows * k * (u32_ + f32_),  // routing ids, weights
        rows * d * (f32_ + bf16_), // last, last_x
        rows * v * f32_,           // logits
        (e + 1) * u32_ * 2,        // moe offsets, tile offsets
        a * u32_ * 2,              // moe slots, row tokens
        a * f * bf16_,             // moe activations [T·K, F]
        a * d * f32_,              // moe expert outputs [T·K, D]
        DECODE_MAX_SPLITS * c.num_attention_heads * (c.head_dim + 2) * f32_, // decode partials
        rows * (qd + 2 * kvd) * f32_ + rows * qd * bf16_, // one sequence's q, k, v, att
    ];
    per_call.iter().sum()
}

/// Rows a plan's call is counted at most (a million tokens in one forward call).
const MAX_ROWS: usize = 1 << 20;

/// Bytes of one cached position: keys and values of every layer.
pub(crate) fn kv_row_bytes(c: &Config, kv_dtype: KvDType) -> usize {
    2 * c.num_hidden_layers * c.kv_dim() * kv_dtype.bytes()
}

/// `bytes` in GiB with two decimals, for messages.
pub(crate) fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The plan for `c` with `weights` (host views of the checkpoint), a cache of `kv_dtype` for
/// `context` positions and calls of `rows` tokens.
pub(crate) fn plan(
    c: &Config,
    weights: &crate::Weights,
    context: usize,
    kv_dtype: KvDType,
    rows: usize,
) -> DevicePlan {
    let (before, at) = rows_at(context, c.max_position_embeddings);
    let per_row = kv_row_bytes(c, kv_dtype);
    DevicePlan {
        weights: cuda::device_weight_bytes(c, weights),
        kv_cache: per_row.saturating_mul(at),
        kv_peak: per_row.saturating_mul(at.saturating_add(before)),
        scratch: scratch_bytes(c, rows.max(1)) + scratch_bytes(c, 1),
        context,
        rows: rows.clamp(1, MAX_ROWS),
        kv_dtype,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_doubles_from_one_block_up_to_the_context_cap() {
        assert_eq!(rows_at(1, 32768), (0, 256));
        assert_eq!(rows_at(256, 32768), (0, 256));
        assert_eq!(rows_at(257, 32768), (256, 512));
        assert_eq!(rows_at(4096, 32768), (2048, 4096));
        assert_eq!(rows_at(4097, 32768), (4096, 8192));
        // Capped at the model's context, never below what was asked.
        assert_eq!(rows_at(20000, 32768), (16384, 32768));
        assert_eq!(rows_at(300, 300), (256, 300));
        assert_eq!(grown_rows(512, 100, 32768), 512);
        assert_eq!(grown_rows(0, 1000, 32768), 1000);
    }

    #[test]
    fn scratch_is_a_fixed_part_plus_rows_dominated_by_logits() {
        let c = Config::from_json(std::path::Path::new("<t>"), b"{}").expect("default shape");
        let s = |rows| scratch_bytes(&c, rows);
        // Fixed: flash-decoding partials and the MoE expert tables.
        let partials = DECODE_MAX_SPLITS * c.num_attention_heads * (c.head_dim + 2) * 4;
        assert_eq!(s(0), partials + (c.num_local_experts + 1) * 8);
        // Then linear in rows, a row costing more than its logits and less than three times.
        assert_eq!(s(256) - s(128), s(128) - s(0));
        let per_row = (s(128) - s(0)) / 128;
        let logits = c.vocab_size * 4;
        assert!(
            per_row > logits && per_row < 3 * logits,
            "{per_row} vs {logits}"
        );
        // Capped: a caller's absurd row count neither overflows nor exceeds the cap's.
        assert_eq!(s(usize::MAX), s(MAX_ROWS));
    }
}
