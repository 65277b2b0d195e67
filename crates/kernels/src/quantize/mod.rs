//! Quantization of f32 weights into ggml's block types, for `--quantize` at load and
//! `mixtral quantize`. [`reference`](mod@reference) is ggml's own algorithm (`quantize_row_*_ref`, what
//! `llama-quantize` runs without an importance matrix); [`quantize_rows`] runs it over a
//! matrix's rows on every thread.

pub mod reference;

pub use reference::{QUANTIZABLE, quantize_row};

use mixtral_tensor::DType;

/// Bytes of `values` values of `dtype` (whole blocks), or `None` when they are not whole
/// blocks or the size overflows.
pub fn quantized_bytes(dtype: DType, values: usize) -> Option<usize> {
    let bl = dtype.block_len();
    if !values.is_multiple_of(bl) {
        return None;
    }
    (values / bl).checked_mul(dtype.block_bytes())
}

/// Quantizes `x` (rows of `k` values; `k` whole blocks) into `out`, rows spread over the
/// threads.
///
/// # Panics
/// If `dtype` is not quantizable or the lengths disagree.
pub fn quantize_rows(dtype: DType, x: &[f32], k: usize, out: &mut [u8]) {
    let rb = quantized_bytes(dtype, k).expect("rows of whole blocks");
    if k == 0 {
        return;
    }
    assert_eq!(out.len() / rb.max(1), x.len() / k, "quantize {dtype}: rows");
    crate::threads::for_each_row_mut(out, rb, 64 * k, |r, row| {
        quantize_row(dtype, &x[r * k..(r + 1) * k], row);
    });
}
