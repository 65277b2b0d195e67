//! Our quantizers against `llama-quantize` itself (rows of bench-1b quantized by llama.cpp,
//! `tests/fixtures/gen/make_quantize_refs.py`): the same algorithm gives the same blocks, and
//! the quantization error (RMSE against the source) is within 1.05× of llama.cpp's.

use crate::quant::{f32s, raw};
use mixtral_kernels::dequant::dequantize;
use mixtral_kernels::quantize::{quantize_row, quantize_rows, quantized_bytes};
use mixtral_tensor::DType;
use mixtral_testkit::fixtures_dir;

fn rmse(dtype: DType, q: &[u8], source: &[f32]) -> f64 {
    let mut y = vec![0f32; source.len()];
    dequantize(dtype, q, &mut y);
    let sum: f64 = y
        .iter()
        .zip(source)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    (sum / source.len() as f64).sqrt()
}

#[test]
fn quantized_rows_match_llama_quantize() {
    let path = fixtures_dir().join("quant/quantize/llama_quantize.safetensors");
    for (case, dtype) in [
        ("gate", DType::Q4_K),
        ("down", DType::Q6_K),
        ("attn_output", DType::Q5_K),
        ("attn_k", DType::Q8_0),
        ("gate", DType::Q8_0),
    ] {
        let source = f32s(&raw(&path, &format!("{case}.source")));
        let want = raw(&path, &format!("{case}.{dtype}"));
        let k = source.len() / 16;
        let mut got = vec![0u8; quantized_bytes(dtype, source.len()).unwrap()];
        quantize_rows(dtype, &source, k, &mut got);
        // Row by row too, to check the parallel driver against the plain one.
        let mut plain = vec![0u8; got.len()];
        let rb = got.len() / 16;
        for r in 0..16 {
            quantize_row(
                dtype,
                &source[r * k..(r + 1) * k],
                &mut plain[r * rb..(r + 1) * rb],
            );
        }
        assert_eq!(got, plain, "{case} {dtype}: parallel vs plain");
        let bb = dtype.block_bytes();
        let same = got
            .chunks_exact(bb)
            .zip(want.chunks_exact(bb))
            .filter(|(a, b)| a == b)
            .count();
        let blocks = got.len() / bb;
        let (ours, theirs) = (rmse(dtype, &got, &source), rmse(dtype, &want, &source));
        println!(
            "{case} {dtype}: {same}/{blocks} blocks identical to llama-quantize, RMSE {ours:.4e} \
             vs {theirs:.4e} ({:.4}x)",
            ours / theirs
        );
        assert!(
            ours <= 1.05 * theirs,
            "{case} {dtype}: RMSE {ours} vs {theirs}"
        );
        assert_eq!(
            same, blocks,
            "{case} {dtype}: blocks identical to llama-quantize"
        );
    }
}
