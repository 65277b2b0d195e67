//! The launchers' boundary checks as pure functions of shapes and buffer lengths, so they are
//! unit-tested without a GPU. Each returns the launch grid the kernel needs for that shape.
//!
//! The kernels trust what is checked here: buffer extents, expert ids `< E ≤ 256`, inner GEMM
//! sizes that are multiples of 32, `head_dim ≤ 128`, positions inside the cache.

use super::blocks::Storage;
use super::error::{at_least, limit};
use super::{Error, Result};
use crate::attention::Attention;
use crate::matmul::Matmul;
use crate::moe::Moe;
use crate::rmsnorm::RmsNorm;
use crate::rope::Rope;
use crate::router::Router;
use cudarc::driver::LaunchConfig;

/// Rows of one grouped-GEMM tile (`GEMM_BM` in `moe.cu`).
pub const GEMM_TILE_ROWS: usize = 64;
/// Columns of one grouped-GEMM tile (`GEMM_BN`).
pub const GEMM_TILE_COLS: usize = 64;
/// The GEMM walks K in steps of this (`GEMM_BK`): inner sizes must be multiples of it.
pub const GEMM_K_STEP: usize = 32;
/// Most experts `moe_align_u32` handles (`MOE_MAX_EXPERTS`).
pub const MAX_EXPERTS: usize = 256;
/// Most experts the router's one-warp top-k handles (a lane per expert).
pub const ROUTER_MAX_EXPERTS: usize = 32;
/// Most activation rows of one GEMV (`GEMV_MAX_ROWS`); more rows take the tensor-core GEMM.
pub const GEMV_MAX_ROWS: usize = 8;
/// Largest head_dim the attention kernels hold in registers (`ATT_MAX_DH`).
pub const MAX_HEAD_DIM: usize = 128;
/// Largest RMSNorm row (`256 · RMS_MAX_PER_THREAD`).
pub const RMS_MAX_COLS: usize = 8192;
/// Splits flash-decoding cuts the visible keys into, at most (sizes the partials scratch).
pub const DECODE_MAX_SPLITS: usize = 64;

/// A `grid × threads` launch with no dynamic shared memory.
pub fn grid(x: usize, y: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x as u32, y as u32, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `v` as the `int` a kernel takes.
pub fn int(op: &'static str, what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Limit {
        op,
        what,
        value: v,
        rule: "< 2^31",
    })
}

/// Token ids must index the embedding table.
pub fn tokens(ids: &[u32], vocab: usize) -> Result<()> {
    match ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= vocab)
    {
        None => Ok(()),
        Some((i, &id)) => Err(Error::Input {
            op: "upload_tokens",
            what: format!("token id {id} at index {i} is not below the vocabulary of {vocab}"),
        }),
    }
}

/// Positions must increase (the prefill kernel reads the first and last of a block as the
/// block's key range) and fit in `u32`; returns them as `u32` and the last one.
pub fn positions(positions: &[usize]) -> Result<(Vec<u32>, usize)> {
    let increasing = positions.windows(2).all(|w| w[0] < w[1]);
    let last = positions.last().copied().unwrap_or(0);
    if !increasing || last > u32::MAX as usize {
        return Err(Error::Input {
            op: "upload_positions",
            what: format!("positions must increase and fit in u32, got {positions:?}"),
        });
    }
    Ok((positions.iter().map(|&p| p as u32).collect(), last))
}

/// Host-given routing: `[T, K]` ids `< E` with matching weights.
pub fn routing(ids: &[u32], weights: &[f32], n_experts: usize, top_k: usize) -> Result<()> {
    limit(
        (1..=n_experts).contains(&top_k),
        "routing",
        "top_k",
        top_k,
        "1 ≤ K ≤ E",
    )?;
    if ids.len() != weights.len() || !ids.len().is_multiple_of(top_k) {
        return Err(Error::Input {
            op: "upload_routing",
            what: format!(
                "{} ids and {} weights for top_k {top_k}",
                ids.len(),
                weights.len()
            ),
        });
    }
    match ids.iter().find(|&&e| e as usize >= n_experts) {
        None => Ok(()),
        Some(&bad) => Err(Error::Input {
            op: "upload_routing",
            what: format!("expert id {bad} is not below {n_experts}"),
        }),
    }
}

/// `embedding_*`: `n` ids into `[n, cols]`, table `[vocab, cols]` of `table` values stored in
/// blocks of `block` values (1 for bf16).
#[expect(
    clippy::too_many_arguments,
    reason = "the op, the call's ids, the table's shape and storage, and the output"
)]
pub fn embedding(
    op: &'static str,
    n: usize,
    vocab: usize,
    cols: usize,
    block: usize,
    table: usize,
    out: usize,
) -> Result<LaunchConfig> {
    limit(
        cols.is_multiple_of(8) && cols.is_multiple_of(block) && cols > 0,
        op,
        "cols",
        cols,
        "a positive multiple of 8 and of the block length",
    )?;
    int(op, "cols", cols)?;
    at_least(op, "table", table, vocab * cols)?;
    at_least(op, "out", out, n * cols)?;
    Ok(grid(n, 1, 128))
}

/// `rmsnorm_*`: every f32 input (`xs`) and the bf16 output `[rows, cols]`, weight `[cols]`.
pub fn rms_norm(
    op: &'static str,
    p: RmsNorm,
    xs: &[usize],
    w: usize,
    y: usize,
) -> Result<LaunchConfig> {
    limit(
        (1..=RMS_MAX_COLS).contains(&p.cols),
        op,
        "cols",
        p.cols,
        "1 ≤ D ≤ 8192",
    )?;
    at_least(op, "w", w, p.cols)?;
    at_least(op, "y", y, p.rows * p.cols)?;
    for &x in xs {
        at_least(op, "x", x, p.rows * p.cols)?;
    }
    Ok(grid(p.rows, 1, 256))
}

/// Threads of a RoPE block: one per pair, rounded up to a warp.
fn rope_threads(op: &'static str, head_dim: usize) -> Result<u32> {
    limit(
        head_dim.is_multiple_of(2) && (2..=2048).contains(&head_dim),
        op,
        "head_dim",
        head_dim,
        "even, 2 ≤ Dh ≤ 2048",
    )?;
    Ok((head_dim / 2).next_multiple_of(32) as u32)
}

/// `rope_f32` over `n` rows of `x`.
pub fn rope(p: Rope, n: usize, x: usize) -> Result<LaunchConfig> {
    const OP: &str = "rope_f32";
    let threads = rope_threads(OP, p.head_dim)?;
    at_least(OP, "x", x, n * p.n_heads * p.head_dim)?;
    Ok(grid(n, 1, threads))
}

/// `rope_kv_bf16`: `n` rows of k and v (`p.n_heads` = G) into cache rows up to `last`.
pub fn rope_kv(
    p: Rope,
    n: usize,
    last: usize,
    kv: [usize; 2],
    caches: [usize; 2],
) -> Result<LaunchConfig> {
    const OP: &str = "rope_kv_bf16";
    let threads = rope_threads(OP, p.head_dim)?;
    let width = p.n_heads * p.head_dim;
    at_least(OP, "k", kv[0], n * width)?;
    at_least(OP, "v", kv[1], n * width)?;
    // The kernel writes row `positions[t]`: the caches must hold the last one.
    at_least(OP, "k_cache", caches[0], (last + 1) * width)?;
    at_least(OP, "v_cache", caches[1], (last + 1) * width)?;
    Ok(grid(n, 1, threads))
}

/// `router_topk_f32` with routing buffers made for `(E, K)` = `made_for`, `ids` long.
pub fn router(
    p: Router,
    made_for: (usize, usize),
    logits: usize,
    ids: usize,
) -> Result<LaunchConfig> {
    const OP: &str = "router_topk_f32";
    limit(
        (1..=ROUTER_MAX_EXPERTS).contains(&p.n_experts),
        OP,
        "n_experts",
        p.n_experts,
        "1 ≤ E ≤ 32",
    )?;
    limit(
        (1..=p.n_experts).contains(&p.top_k),
        OP,
        "top_k",
        p.top_k,
        "1 ≤ K ≤ E",
    )?;
    if made_for != (p.n_experts, p.top_k) {
        return Err(Error::Input {
            op: OP,
            what: format!(
                "routing buffers are for (E, K) = {made_for:?}, the call has ({}, {})",
                p.n_experts, p.top_k
            ),
        });
    }
    int(OP, "n_tokens", p.n_tokens)?;
    at_least(OP, "logits", logits, p.n_tokens * p.n_experts)?;
    at_least(OP, "ids", ids, p.n_tokens * p.top_k)?;
    Ok(grid(p.n_tokens.div_ceil(4), 1, 128))
}

fn matmul_lengths(op: &'static str, p: Matmul, x: usize, w: usize, y: usize) -> Result<()> {
    int(op, "n", p.n)?;
    int(op, "k", p.k)?;
    at_least(op, "x", x, p.rows * p.k)?;
    at_least(op, "w", w, p.n * p.k)?;
    at_least(op, "y", y, p.rows * p.n)
}

/// `matmul_gemv_*` (`op`): 1..=8 rows, `k` a multiple of 8 and of the weight's block length
/// (`block`, 1 for bf16); `w` counts values.
pub fn gemv(
    op: &'static str,
    block: usize,
    p: Matmul,
    x: usize,
    w: usize,
    y: usize,
) -> Result<LaunchConfig> {
    limit(
        (1..=GEMV_MAX_ROWS).contains(&p.rows),
        op,
        "rows",
        p.rows,
        "1 ≤ rows ≤ 8",
    )?;
    limit(
        p.k.is_multiple_of(8) && p.k.is_multiple_of(block) && p.k > 0,
        op,
        "k",
        p.k,
        "a positive multiple of 8 and of the block length",
    )?;
    matmul_lengths(op, p, x, w, y)?;
    Ok(grid(p.n.div_ceil(16), 1, 256))
}

/// The grouped GEMM's grid for `rows` rows over `n_experts` groups and `n` output columns:
/// x bounds the tile count from above (Σ ceil(rows_e / 64) ≤ ceil(rows / 64) + E); blocks
/// past the real count exit at once, so no count is read back.
pub fn gemm_grid(rows: usize, n_experts: usize, n: usize) -> LaunchConfig {
    grid(
        rows.div_ceil(GEMM_TILE_ROWS) + n_experts,
        n.div_ceil(GEMM_TILE_COLS),
        128,
    )
}

/// MoE calls of at most this many (token, expert) assignments run their expert products as
/// GEMVs over 8-row chunks when the weights are blocks (`moe_gemv_*`): decode and small
/// batches, where the tile GEMM's synchronous block loads would leave it latency-bound.
pub const MOE_GEMV_MAX_ASSIGNMENTS: usize = 128;

/// The MoE GEMVs' grid for `assignments` rows over `n_experts` experts and `n` output columns:
/// y bounds the 8-row chunk count from above (Σ ceil(rows_e / 8) ≤ ceil(rows / 8) + E); blocks
/// past the real count exit at once.
pub fn moe_gemv_grid(assignments: usize, n_experts: usize, n: usize) -> LaunchConfig {
    grid(
        n.div_ceil(MOE_GEMV_COLS_PER_BLOCK),
        assignments.div_ceil(MOE_GEMV_ROWS) + n_experts,
        MOE_GEMV_THREADS,
    )
}

/// moe.cu's `MGV_THREADS`, `MGV_ROWS` and columns per block (`MGV_COLS` per warp × 8 warps);
/// a test reads them from the source.
const MOE_GEMV_THREADS: u32 = 256;
const MOE_GEMV_ROWS: usize = 8;
const MOE_GEMV_COLS_PER_BLOCK: usize = 16;

/// A dense GEMM through `moe_gemm_down_*` with one group: `k` a multiple of 32 and of the
/// weight's block length (`block`), even `n`; `w` counts values.
pub fn dense(block: usize, p: Matmul, x: usize, w: usize, y: usize) -> Result<LaunchConfig> {
    const OP: &str = "matmul (moe_gemm_down_*, one group)";
    limit(
        p.k.is_multiple_of(GEMM_K_STEP) && p.k.is_multiple_of(block) && p.k > 0,
        OP,
        "k",
        p.k,
        "a positive multiple of 32 and of the block length",
    )?;
    limit(
        p.n.is_multiple_of(2) && p.n > 0,
        OP,
        "n",
        p.n,
        "positive and even",
    )?;
    int(OP, "rows", p.rows)?;
    matmul_lengths(OP, p, x, w, y)?;
    Ok(gemm_grid(p.rows, 1, p.n))
}

/// What a MoE call touches, besides its [`Moe`] shape.
#[derive(Clone, Copy, Debug)]
pub struct MoeArgs {
    /// `(E, K)` the routing buffers hold, and their length.
    pub routing: (usize, usize, usize),
    /// `(E, D, F)` of the experts, and the fewest values any of w1 / w3 / w2 holds.
    pub experts: (usize, usize, usize, usize),
    /// How w1, w3 and w2 are stored (w1 and w3 alike: one kernel reads both).
    pub storage: [Storage; 3],
    /// Token rows the scratch buffers hold.
    pub capacity: usize,
    /// Lengths of `x` and `y`.
    pub x: usize,
    /// Length of `y`.
    pub y: usize,
}

/// The MoE chain: `E ≤ 256`, `D` and `F` multiples of 32, every extent; returns the grids of
/// (align, swiglu GEMM, down GEMM, combine).
pub fn moe(p: Moe, a: MoeArgs) -> Result<[LaunchConfig; 4]> {
    const OP: &str = "moe";
    let (e, d, f, w_len) = a.experts;
    limit(
        (1..=MAX_EXPERTS).contains(&e),
        OP,
        "n_experts",
        e,
        "1 ≤ E ≤ 256",
    )?;
    if (a.routing.0, a.routing.1) != (e, p.top_k) || (d, f) != (p.hidden, p.ffn) {
        return Err(Error::Input {
            op: OP,
            what: format!(
                "call {p:?} with routing (E, K) = ({}, {}) and experts (E, D, F) = ({e}, {d}, {f})",
                a.routing.0, a.routing.1
            ),
        });
    }
    limit(
        p.hidden.is_multiple_of(GEMM_K_STEP) && p.hidden > 0,
        OP,
        "hidden",
        p.hidden,
        "a positive multiple of 32",
    )?;
    limit(
        p.ffn.is_multiple_of(GEMM_K_STEP) && p.ffn > 0,
        OP,
        "ffn",
        p.ffn,
        "a positive multiple of 32",
    )?;
    if a.storage[0] != a.storage[1] {
        return Err(Error::Input {
            op: OP,
            what: format!(
                "gate stored as {:?} but up as {:?}: one kernel reads both",
                a.storage[0], a.storage[1]
            ),
        });
    }
    // The gate/up GEMMs run along D, the down GEMM along F.
    let (gate_up, down) = (a.storage[0].block_len(), a.storage[2].block_len());
    limit(
        p.hidden.is_multiple_of(gate_up),
        OP,
        "hidden",
        p.hidden,
        "a multiple of the gate/up block length",
    )?;
    limit(
        p.ffn.is_multiple_of(down),
        OP,
        "ffn",
        p.ffn,
        "a multiple of the down block length",
    )?;
    limit(
        p.n_tokens <= a.capacity,
        OP,
        "n_tokens",
        p.n_tokens,
        "≤ the scratch's capacity",
    )?;
    let assignments = p.n_tokens * p.top_k;
    int(OP, "n_tokens · top_k", assignments)?;
    int(OP, "ffn", p.ffn)?;
    at_least(OP, "x", a.x, p.n_tokens * p.hidden)?;
    at_least(OP, "y", a.y, p.n_tokens * p.hidden)?;
    at_least(OP, "routing", a.routing.2, assignments)?;
    at_least(OP, "experts", w_len, e * p.ffn * p.hidden)?;
    Ok([
        grid(1, 1, 1024),
        gemm_grid(assignments, e, p.ffn),
        gemm_grid(assignments, e, p.hidden),
        grid(p.n_tokens, 1, 256),
    ])
}

/// Common attention checks: head_dim even and ≤ 128, `H % G == 0`, caches of `cache_rows`
/// rows, every position inside them.
fn attention(
    op: &'static str,
    p: Attention,
    cache_rows: usize,
    caches: [usize; 2],
    last: usize,
) -> Result<i32> {
    limit(
        p.head_dim.is_multiple_of(2) && (2..=MAX_HEAD_DIM).contains(&p.head_dim),
        op,
        "head_dim",
        p.head_dim,
        "even and ≤ 128",
    )?;
    limit(
        p.n_kv_heads > 0 && p.n_heads.is_multiple_of(p.n_kv_heads),
        op,
        "n_heads",
        p.n_heads,
        "a multiple of n_kv_heads",
    )?;
    int(op, "n_heads", p.n_heads)?;
    let width = p.n_kv_heads * p.head_dim;
    at_least(op, "k_cache", caches[0], cache_rows * width)?;
    at_least(op, "v_cache", caches[1], cache_rows * width)?;
    if last >= cache_rows {
        return Err(Error::Input {
            op,
            what: format!("position {last} is past the {cache_rows} cached rows"),
        });
    }
    match p.window {
        None => Ok(0),
        Some(0) => Err(Error::Limit {
            op,
            what: "sliding_window",
            value: 0,
            rule: "≥ 1",
        }),
        Some(w) => int(op, "sliding_window", w),
    }
}

/// `attention_prefill_bf16` for `n` query rows; returns the window argument and the grid.
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill(
    p: Attention,
    cache_rows: usize,
    caches: [usize; 2],
    n: usize,
    last: usize,
    q: usize,
    out: usize,
) -> Result<(i32, LaunchConfig)> {
    const OP: &str = "attention_prefill_bf16";
    let window = attention(OP, p, cache_rows, caches, last)?;
    int(OP, "n_tokens", n)?;
    at_least(OP, "q", q, n * p.n_heads * p.head_dim)?;
    at_least(OP, "out", out, n * p.n_heads * p.head_dim)?;
    let group = p.n_heads / p.n_kv_heads;
    Ok((window, grid((n * group).div_ceil(8), p.n_kv_heads, 256)))
}

/// Flash-decoding's plan for one query at `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodePlan {
    /// The window argument (0: none).
    pub window: i32,
    /// Keys per split, a multiple of the kernel's 32-key tile.
    pub split_len: usize,
    /// Splits (≤ [`DECODE_MAX_SPLITS`]).
    pub splits: usize,
}

/// `attention_decode_bf16` + `attention_reduce_bf16` for one query at `pos`; `scratch` holds
/// the lengths of the partial accumulators and (max, sum) pairs.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    p: Attention,
    cache_rows: usize,
    caches: [usize; 2],
    n: usize,
    pos: usize,
    q: usize,
    out: usize,
    scratch: [usize; 2],
) -> Result<DecodePlan> {
    const OP: &str = "attention_decode_bf16";
    limit(n == 1, OP, "positions", n, "exactly one")?;
    let window = attention(OP, p, cache_rows, caches, pos)?;
    let group = p.n_heads / p.n_kv_heads;
    limit(
        group <= 8,
        OP,
        "n_heads / n_kv_heads",
        group,
        "≤ 8 (one warp per head)",
    )?;
    let width = p.n_heads * p.head_dim;
    at_least(OP, "q", q, width)?;
    at_least(OP, "out", out, width)?;
    at_least(OP, "scratch", scratch[0], DECODE_MAX_SPLITS * width)?;
    at_least(OP, "scratch", scratch[1], DECODE_MAX_SPLITS * p.n_heads * 2)?;
    let visible = pos + 1 - p.first_visible(pos);
    // Enough splits to spread a long context over the device, each a whole number of tiles.
    let split_len = visible.div_ceil(DECODE_MAX_SPLITS).next_multiple_of(32);
    int(OP, "split_len", split_len)?;
    Ok(DecodePlan {
        window,
        split_len,
        splits: visible.div_ceil(split_len),
    })
}

/// `add_f32` over the first `n` elements of `h` and `y`.
pub fn add(n: usize, h: usize, y: usize) -> Result<LaunchConfig> {
    const OP: &str = "add_f32";
    int(OP, "n", n)?;
    at_least(OP, "h", h, n)?;
    at_least(OP, "y", y, n)?;
    Ok(grid(n.div_ceil(256), 1, 256))
}

/// `argmax_f32` over `rows` rows of `cols`.
pub fn argmax(rows: usize, cols: usize, logits: usize, out: usize) -> Result<LaunchConfig> {
    const OP: &str = "argmax_f32";
    limit(cols > 0, OP, "cols", cols, "≥ 1")?;
    int(OP, "cols", cols)?;
    at_least(OP, "logits", logits, rows * cols)?;
    at_least(OP, "out", out, rows)?;
    Ok(grid(rows, 1, 1024))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::BlockType;

    fn is_limit(r: Result<impl std::fmt::Debug>, what: &str) {
        match r {
            Err(Error::Limit { what: w, .. }) => assert_eq!(w, what),
            other => panic!("expected a Limit error on `{what}`, got {other:?}"),
        }
    }

    fn is_shape(r: Result<impl std::fmt::Debug>, arg: &str) {
        match r {
            Err(Error::Shape { arg: a, .. }) => assert_eq!(a, arg),
            other => panic!("expected a Shape error on `{arg}`, got {other:?}"),
        }
    }

    const ATT: Attention = Attention {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
        window: None,
    };

    const G: &str = "matmul_gemv_bf16";

    #[test]
    fn gemv_limits() {
        let p = Matmul {
            rows: 9,
            k: 64,
            n: 10,
        };
        is_limit(gemv(G, 1, p, 9 * 64, 640, 90), "rows");
        is_limit(
            gemv(
                G,
                1,
                Matmul {
                    rows: 1,
                    k: 12,
                    n: 10,
                },
                12,
                120,
                10,
            ),
            "k",
        );
        is_shape(
            gemv(
                G,
                1,
                Matmul {
                    rows: 2,
                    k: 64,
                    n: 10,
                },
                127,
                640,
                20,
            ),
            "x",
        );
        is_shape(
            gemv(
                G,
                1,
                Matmul {
                    rows: 2,
                    k: 64,
                    n: 10,
                },
                128,
                639,
                20,
            ),
            "w",
        );
        let cfg = gemv(
            G,
            1,
            Matmul {
                rows: 8,
                k: 4096,
                n: 32000,
            },
            8 * 4096,
            32000 * 4096,
            8 * 32000,
        )
        .unwrap();
        assert_eq!(cfg.grid_dim, (2000, 1, 1));
    }

    #[test]
    fn dense_gemm_needs_k_multiple_of_32_and_even_n() {
        is_limit(
            dense(
                1,
                Matmul {
                    rows: 100,
                    k: 48,
                    n: 64,
                },
                4800,
                48 * 64,
                6400,
            ),
            "k",
        );
        is_limit(
            dense(
                1,
                Matmul {
                    rows: 100,
                    k: 64,
                    n: 63,
                },
                6400,
                63 * 64,
                6300,
            ),
            "n",
        );
        let cfg = dense(
            1,
            Matmul {
                rows: 100,
                k: 64,
                n: 130,
            },
            6400,
            130 * 64,
            13000,
        )
        .unwrap();
        assert_eq!(cfg.grid_dim, (2 + 1, 3, 1));
    }

    fn moe_args(e: usize, k: usize, d: usize, f: usize, t: usize) -> MoeArgs {
        MoeArgs {
            routing: (e, k, t * k),
            experts: (e, d, f, e * d * f),
            storage: [Storage::Bf16; 3],
            capacity: t,
            x: t * d,
            y: t * d,
        }
    }

    #[test]
    fn block_lengths_bound_k_and_the_moe_dims() {
        let q4k = Storage::Blocks(BlockType::Q4_K);
        let p = Matmul {
            rows: 1,
            k: 128,
            n: 4,
        };
        is_limit(gemv("matmul_gemv_q4k", 256, p, 128, 512, 4), "k");
        is_limit(dense(256, Matmul { rows: 20, ..p }, 2560, 512, 80), "k");
        is_limit(
            embedding("embedding_f32_q4k", 1, 4, 128, 256, 512, 128),
            "cols",
        );
        assert!(gemv("matmul_gemv_q4k", 256, Matmul { k: 256, ..p }, 256, 1024, 4).is_ok());
        let m = Moe {
            n_tokens: 4,
            hidden: 256,
            ffn: 128,
            top_k: 2,
        };
        let mut a = moe_args(8, 2, 256, 128, 4);
        a.storage = [q4k, q4k, Storage::Blocks(BlockType::Q6_K)];
        is_limit(moe(m, a), "ffn");
        a.storage[2] = Storage::Blocks(BlockType::Q8_0);
        assert!(moe(m, a).is_ok());
        a.storage[1] = Storage::Bf16;
        assert!(matches!(moe(m, a), Err(Error::Input { .. })));
        let mut narrow = moe_args(8, 2, 128, 128, 4);
        narrow.storage = [q4k, q4k, Storage::Bf16];
        is_limit(moe(Moe { hidden: 128, ..m }, narrow), "hidden");
    }

    #[test]
    fn moe_gemv_grid_matches_the_kernel_constants() {
        let code = crate::cuda::source::find("moe.cu").expect("listed").code;
        let define = |name: &str| -> usize {
            let line = code
                .lines()
                .find(|l| l.starts_with(&format!("#define {name} ")))
                .unwrap_or_else(|| panic!("moe.cu defines {name}"));
            line.split_whitespace().nth(2).unwrap().parse().unwrap()
        };
        assert_eq!(define("MGV_THREADS"), MOE_GEMV_THREADS as usize);
        assert_eq!(define("MGV_ROWS"), MOE_GEMV_ROWS);
        let warps = define("MGV_THREADS") / 32;
        assert_eq!(define("MGV_COLS") * warps, MOE_GEMV_COLS_PER_BLOCK);
    }

    #[test]
    fn moe_gemv_grid_covers_every_chunk_of_any_split() {
        // Σ ceil(rows_e / 8) over any split of A rows among E experts is ≤ ceil(A / 8) + E.
        let mut state = 7u64;
        for _ in 0..500 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let e = 1 + (state >> 59) as usize; // 1..=32
            let a = 1 + (state >> 40) as usize % MOE_GEMV_MAX_ASSIGNMENTS;
            let mut counts = vec![0usize; e];
            for i in 0..a {
                counts[(state as usize).wrapping_add(i * i * 31) % e] += 1;
            }
            let chunks: usize = counts.iter().map(|c| c.div_ceil(GEMV_MAX_ROWS)).sum();
            let cfg = moe_gemv_grid(a, e, 4096);
            assert!(chunks <= cfg.grid_dim.1 as usize, "{counts:?}");
            assert_eq!(cfg.grid_dim.0, 256);
        }
    }

    #[test]
    fn moe_limits() {
        let p = |t, d, f| Moe {
            n_tokens: t,
            hidden: d,
            ffn: f,
            top_k: 2,
        };
        is_limit(
            moe(p(4, 64, 128), moe_args(257, 2, 64, 128, 4)),
            "n_experts",
        );
        is_limit(moe(p(4, 48, 128), moe_args(8, 2, 48, 128, 4)), "hidden");
        is_limit(moe(p(4, 64, 100), moe_args(8, 2, 64, 100, 4)), "ffn");
        let mut small = moe_args(8, 2, 64, 128, 4);
        small.capacity = 3;
        is_limit(moe(p(4, 64, 128), small), "n_tokens");
        let mut short = moe_args(8, 2, 64, 128, 4);
        short.experts.3 -= 1;
        is_shape(moe(p(4, 64, 128), short), "experts");
        assert!(matches!(
            moe(p(4, 64, 128), moe_args(8, 3, 64, 128, 4)),
            Err(Error::Input { .. })
        ));
        let grids = moe(p(4096, 4096, 14336), moe_args(8, 2, 4096, 14336, 4096)).unwrap();
        assert_eq!(grids[1].grid_dim, (128 + 8, 224, 1));
        assert_eq!(grids[2].grid_dim, (128 + 8, 64, 1));
        assert_eq!(grids[3].grid_dim, (4096, 1, 1));
    }

    #[test]
    fn router_limits() {
        let p = |e, k| Router {
            n_tokens: 5,
            n_experts: e,
            top_k: k,
            norm_topk_prob: true,
        };
        is_limit(router(p(33, 2), (33, 2), 5 * 33, 10), "n_experts");
        is_limit(router(p(8, 9), (8, 9), 40, 45), "top_k");
        assert!(matches!(
            router(p(8, 2), (8, 3), 40, 10),
            Err(Error::Input { .. })
        ));
        is_shape(router(p(8, 2), (8, 2), 39, 10), "logits");
        assert_eq!(router(p(8, 2), (8, 2), 40, 10).unwrap().grid_dim, (2, 1, 1));
    }

    #[test]
    fn attention_limits() {
        let big = Attention {
            head_dim: 256,
            ..ATT
        };
        is_limit(
            attention_prefill(big, 16, [1 << 20; 2], 1, 0, 1 << 20, 1 << 20),
            "head_dim",
        );
        let odd = Attention { n_heads: 30, ..ATT };
        is_limit(
            attention_prefill(odd, 16, [1 << 20; 2], 1, 0, 1 << 20, 1 << 20),
            "n_heads",
        );
        let past = attention_prefill(ATT, 16, [16 * 1024; 2], 1, 16, 4096, 4096);
        assert!(matches!(past, Err(Error::Input { .. })), "{past:?}");
        is_shape(
            attention_prefill(ATT, 16, [16 * 1024 - 1, 16 * 1024], 1, 3, 4096, 4096),
            "k_cache",
        );
        let no_window = Attention {
            window: Some(0),
            ..ATT
        };
        is_limit(
            attention_prefill(no_window, 16, [16 * 1024; 2], 1, 3, 4096, 4096),
            "sliding_window",
        );
        let wide = Attention {
            n_heads: 32,
            n_kv_heads: 2,
            ..ATT
        };
        let r = attention_decode(wide, 16, [16 * 256; 2], 1, 3, 4096, 4096, [1 << 20; 2]);
        is_limit(r, "n_heads / n_kv_heads");
        let r = attention_decode(ATT, 16, [16 * 1024; 2], 2, 3, 4096, 4096, [1 << 20; 2]);
        is_limit(r, "positions");
        let (_, cfg) =
            attention_prefill(ATT, 512, [512 * 1024; 2], 100, 99, 409600, 409600).unwrap();
        assert_eq!(cfg.grid_dim, (50, 8, 1));
    }

    #[test]
    fn decode_splits_cover_the_visible_keys() {
        for (pos, window) in [
            (0, None),
            (31, None),
            (32, None),
            (4095, None),
            (32767, None),
            (100, Some(16)),
        ] {
            let p = Attention { window, ..ATT };
            let plan = attention_decode(
                p,
                32768,
                [32768 * 1024; 2],
                1,
                pos,
                4096,
                4096,
                [1 << 20; 2],
            )
            .unwrap();
            let visible = pos + 1 - p.first_visible(pos);
            assert_eq!(plan.split_len % 32, 0);
            assert!(plan.splits <= DECODE_MAX_SPLITS && plan.splits >= 1);
            assert!(plan.splits * plan.split_len >= visible);
            assert!(
                (plan.splits - 1) * plan.split_len < visible,
                "{plan:?} for {visible}"
            );
        }
    }

    #[test]
    fn host_inputs_are_checked() {
        assert!(tokens(&[0, 5, 1023], 1024).is_ok());
        assert!(matches!(tokens(&[0, 1024], 1024), Err(Error::Input { .. })));
        assert_eq!(positions(&[3, 4, 5]).unwrap(), (vec![3, 4, 5], 5));
        assert!(positions(&[3, 3]).is_err() && positions(&[4, 3]).is_err());
        assert!(positions(&[1 << 32]).is_err());
        assert!(routing(&[0, 7], &[0.5, 0.5], 8, 2).is_ok());
        assert!(routing(&[0, 8], &[0.5, 0.5], 8, 2).is_err());
        assert!(routing(&[0, 1, 2], &[0.5, 0.5, 0.1], 8, 2).is_err());
        is_limit(routing(&[0, 1], &[0.5, 0.5], 8, 0), "top_k");
    }

    #[test]
    fn other_kernels() {
        is_limit(embedding("embedding_bf16", 3, 10, 12, 1, 120, 36), "cols");
        is_shape(embedding("embedding_bf16", 3, 10, 16, 1, 159, 48), "table");
        let norm = RmsNorm {
            rows: 2,
            cols: 8193,
            eps: 1e-5,
        };
        is_limit(
            rms_norm("rmsnorm_bf16", norm, &[1 << 20], 8193, 1 << 20),
            "cols",
        );
        let norm = RmsNorm {
            rows: 2,
            cols: 64,
            eps: 1e-5,
        };
        is_shape(
            rms_norm("rmsnorm_residual_bf16", norm, &[128, 127], 64, 128),
            "x",
        );
        let rope_p = Rope {
            n_heads: 8,
            head_dim: 15,
            theta: 1e6,
            interleaved: false,
        };
        is_limit(rope(rope_p, 1, 1 << 20), "head_dim");
        let rope_p = Rope {
            n_heads: 8,
            head_dim: 128,
            theta: 1e6,
            interleaved: false,
        };
        assert_eq!(rope(rope_p, 3, 3 * 1024).unwrap().block_dim, (64, 1, 1));
        is_shape(
            rope_kv(rope_p, 1, 9, [1024, 1024], [10 * 1024 - 1, 10 * 1024]),
            "k_cache",
        );
        is_shape(argmax(2, 100, 199, 2), "logits");
        is_limit(argmax(2, 0, 199, 2), "cols");
        is_shape(add(10, 9, 10), "h");
        is_shape(add(10, 10, 9), "y");
        assert_eq!(add(257, 257, 300).unwrap().grid_dim, (2, 1, 1));
        assert!(add(1 << 31, 1 << 31, 1 << 31).is_err(), "n past an int");
    }
}
