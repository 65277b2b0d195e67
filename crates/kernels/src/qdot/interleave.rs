//! The CPU layout made at load ([`BlockLayout::Rows8`](crate::BlockLayout::Rows8)): weight
//! rows interleaved eight at a time, block by block, so that one 256-bit register holds four
//! consecutive quants of each of eight rows. An integer dot then broadcasts four activation
//! quants to every lane, and each i32 lane sums one row: the eight rows' results come out in
//! one register, with no horizontal sums, and a block's eight scales load as one vector.
//! (llama.cpp's `CPU_REPACK` buffers do the same for its AVX2 kernels.)
//!
//! The layout keeps every byte and the size: a group of eight rows takes `8 · row_bytes`
//! bytes, and block `b` of the group (its eight rows' blocks `b`) is one run of
//! `8 · block_bytes`:
//!
//! - **Q8_0** (272 bytes): the eight `d` (f16), then for `i` in 0..8 and row `r` in 0..8 the
//!   quants `4i..4i+4` of row `r`.
//! - **Q4_K** (1152 bytes): the eight `d`, the eight `dmin` (f16), the 12 packed scale bytes as
//!   three little-endian words per row, word-major (`word w` of rows 0..8, then `w + 1`), then
//!   for chunk `c` in 0..4, `i` in 0..8 and row `r` in 0..8 the quant bytes `32c+4i..32c+4i+4`
//!   of row `r` (low nibbles: values `64c+4i..`, sub-block `2c`; high nibbles: values
//!   `64c+32+4i..`, sub-block `2c+1`). The words let the 6-bit scales of all eight rows be
//!   unpacked with ggml's masks in one vector each.
//! - **Q6_K** (1680 bytes): the eight `d` (f16), the sixteen i8 scales as pairs (for pair `p`
//!   in 0..8 and row `r`, scales `2p, 2p+1` of row `r`), then the low-nibble bytes (for `j` in
//!   0..32 and row `r`, bytes `4j..4j+4` of row `r`'s 128), then the high-pair bytes (for `j`
//!   in 0..16 and row `r`, bytes `4j..4j+4` of its 64).
//!
//! [`interleave`] and [`deinterleave`] are exact inverses; [`gemv`] is the reference twin of the
//! interleaved kernels: the blocks put back and dotted by [`super::reference::dot`].

use super::Acts;
use mixtral_tensor::{AlignedBytes, DType, Layout, Storage, Tensor};
use std::sync::Arc;

/// Rows per interleaved group.
pub const ROWS: usize = 8;

/// Bytes of the largest block of a type with the layout (Q6_K).
pub const MAX_BLOCK_BYTES: usize = 210;

/// Whether `dtype` has an interleaved layout (and integer kernels for it).
pub fn interleaves(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_K | DType::Q6_K)
}

/// Whether a `[n, k]` weight of `dtype` can be interleaved: a type with the layout, rows of
/// whole blocks and a row count that is a multiple of [`ROWS`].
pub fn fits(dtype: DType, n: usize, k: usize) -> bool {
    interleaves(dtype) && n > 0 && n.is_multiple_of(ROWS) && k.is_multiple_of(dtype.block_len())
}

/// Byte moves of one block of each of eight rows: `(offset in the row's block, offset in the
/// group's block run, length)`, applied to row `r` at `r · len` past the run offset.
fn moves(dtype: DType) -> &'static [(usize, usize, usize)] {
    // Q8_0: d, then 8 runs of 4 quants.
    const Q8_0: [(usize, usize, usize); 9] = [
        (0, 0, 2),
        (2, 16, 4),
        (6, 48, 4),
        (10, 80, 4),
        (14, 112, 4),
        (18, 144, 4),
        (22, 176, 4),
        (26, 208, 4),
        (30, 240, 4),
    ];
    // Q4_K: d, dmin, 3 scale words, 32 runs of 4 quant bytes.
    const Q4_K: [(usize, usize, usize); 37] = {
        let mut m = [(0, 0, 0); 37];
        m[0] = (0, 0, 2);
        m[1] = (2, 16, 2);
        let mut w = 0;
        while w < 3 {
            m[2 + w] = (4 + 4 * w, 32 + 32 * w, 4);
            w += 1;
        }
        let mut j = 0;
        while j < 32 {
            m[5 + j] = (16 + 4 * j, 128 + 32 * j, 4);
            j += 1;
        }
        m
    };
    // Q6_K: d, 8 scale pairs, 32 runs of 4 low-nibble bytes, 16 runs of 4 high-pair bytes.
    const Q6_K: [(usize, usize, usize); 57] = {
        let mut m = [(0, 0, 0); 57];
        m[0] = (208, 0, 2);
        let mut p = 0;
        while p < 8 {
            m[1 + p] = (192 + 2 * p, 16 + 16 * p, 2);
            p += 1;
        }
        let mut j = 0;
        while j < 32 {
            m[9 + j] = (4 * j, 144 + 32 * j, 4);
            j += 1;
        }
        let mut j = 0;
        while j < 16 {
            m[41 + j] = (128 + 4 * j, 1168 + 32 * j, 4);
            j += 1;
        }
        m
    };
    match dtype {
        DType::Q8_0 => &Q8_0,
        DType::Q4_K => &Q4_K,
        DType::Q6_K => &Q6_K,
        other => panic!("{other} has no interleaved layout"),
    }
}

/// `dst` (`src.len()` bytes) = the rows of `src` (`row_bytes` each, a multiple of [`ROWS`]
/// rows of whole `dtype` blocks) interleaved.
///
/// # Panics
/// If `dtype` has no interleaved layout or the lengths disagree.
pub fn interleave(dtype: DType, src: &[u8], row_bytes: usize, dst: &mut [u8]) {
    convert(dtype, src, row_bytes, dst, true)
}

/// The inverse of [`interleave`].
///
/// # Panics
/// As [`interleave`].
pub fn deinterleave(dtype: DType, src: &[u8], row_bytes: usize, dst: &mut [u8]) {
    convert(dtype, src, row_bytes, dst, false)
}

fn convert(dtype: DType, src: &[u8], row_bytes: usize, dst: &mut [u8], forward: bool) {
    let bb = dtype.block_bytes();
    assert!(
        row_bytes > 0 && row_bytes.is_multiple_of(bb),
        "{dtype} rows of whole blocks"
    );
    assert_eq!(src.len(), dst.len(), "{dtype} interleave lengths");
    assert!(
        src.len().is_multiple_of(ROWS * row_bytes),
        "{dtype} groups of {ROWS} rows"
    );
    let group = ROWS * row_bytes;
    for (gs, gd) in src.chunks_exact(group).zip(dst.chunks_exact_mut(group)) {
        for b in 0..row_bytes / bb {
            let run = b * ROWS * bb;
            for r in 0..ROWS {
                let block = r * row_bytes + b * bb;
                for &(from, to, len) in moves(dtype) {
                    let (row_at, run_at) = (block + from, run + to + r * len);
                    if forward {
                        copy_run(&mut gd[run_at..run_at + len], &gs[row_at..row_at + len]);
                    } else {
                        copy_run(&mut gd[row_at..row_at + len], &gs[run_at..run_at + len]);
                    }
                }
            }
        }
    }
}

/// One move of 2 or 4 bytes, as fixed-size copies: a `copy_from_slice` of a run-time
/// length is a `memmove` call per move (9% of a load's profile at the 8x7B shape).
#[inline(always)]
fn copy_run(dst: &mut [u8], src: &[u8]) {
    match (dst, src) {
        (&mut [ref mut d0, ref mut d1, ref mut d2, ref mut d3], &[s0, s1, s2, s3]) => {
            (*d0, *d1, *d2, *d3) = (s0, s1, s2, s3)
        }
        (&mut [ref mut d0, ref mut d1], &[s0, s1]) => (*d0, *d1) = (s0, s1),
        (dst, src) => dst.copy_from_slice(src),
    }
}

/// Block `b` of row `r` of an interleaved group (`ROWS` rows), put back
/// in its stored form into `out` (`block_bytes` long).
pub fn block_of(dtype: DType, group: &[u8], r: usize, b: usize, out: &mut [u8]) {
    let bb = dtype.block_bytes();
    let run = b * ROWS * bb;
    assert!(r < ROWS && run + ROWS * bb <= group.len() && out.len() == bb);
    for &(from, to, len) in moves(dtype) {
        let at = run + to + r * len;
        copy_run(&mut out[from..from + len], &group[at..at + len]);
    }
}

/// The reference twin of the interleaved kernels: `y[j] = Σ w_j · a` for the interleaved rows
/// in `w` (`y.len()` rows, a multiple of [`ROWS`]), each block put back and dotted by
/// [`super::reference::dot`].
///
/// # Panics
/// If `dtype` has no interleaved layout or a length disagrees.
pub fn gemv(dtype: DType, w: &[u8], a: Acts<'_>, y: &mut [f32]) {
    let n = y.len();
    if n == 0 {
        return;
    }
    let rb = w.len() / n;
    assert!(
        rb * n == w.len() && n.is_multiple_of(ROWS),
        "{dtype} interleaved shape"
    );
    let mut row = vec![0u8; rb];
    let bb = dtype.block_bytes();
    for (g, group) in w.chunks_exact(ROWS * rb).enumerate() {
        for r in 0..ROWS {
            for (b, out) in row.chunks_exact_mut(bb).enumerate() {
                block_of(dtype, group, r, b, out);
            }
            y[g * ROWS + r] = super::reference::dot(dtype, &row, a);
        }
    }
}

/// `t` with its rows interleaved ([`Layout::Rows8`]): a new owned tensor, its groups of rows
/// copied in parallel. `None` when `t` does not [`fits`] (or already is interleaved): it
/// then stays as it is.
pub fn interleaved(t: &Tensor) -> mixtral_tensor::Result<Option<Tensor>> {
    let (dtype, dims) = (t.dtype(), t.dims());
    let &[n, k] = dims else {
        return Ok(None);
    };
    if t.layout() != Layout::RowMajor || !fits(dtype, n, k) {
        return Ok(None);
    }
    let src = t.as_bytes();
    let rb = src.len() / n;
    let group = ROWS * rb;
    let mut buf = AlignedBytes::zeroed(src.len());
    crate::threads::for_each_row_mut(buf.as_bytes_mut(), group, group, |g, out| {
        interleave(dtype, &src[g * group..(g + 1) * group], rb, out)
    });
    Ok(Some(
        t.relaid(Storage::Owned(Arc::new(buf)), Layout::Rows8)?,
    ))
}
