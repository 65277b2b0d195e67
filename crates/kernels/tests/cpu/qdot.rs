//! Integer dots of quantized weights with 8-bit activations (`Precision::Int8`): every ISA's
//! kernel against the reference twin on random blocks and extreme activations, and the whole
//! GEMV/GEMM against ggml's own `mul_mat` on real llama-quantize tensors.

use crate::config;
use crate::quant::{f32s, random_blocks, raw};
use mixtral_kernels::dequant::dequantize;
use mixtral_kernels::matmul::{Matmul, Precision, cpu};
use mixtral_kernels::qdot::{self, Acts, QuantizedActs, acts_kind};
use mixtral_kernels::{Isa, Weight};
use mixtral_tensor::DType;
use mixtral_tensor::gguf::GgufFile;
use mixtral_testkit::{Tol, fixtures_dir, run, uniform};
use proptest::prelude::*;

/// The types with an integer dot.
const DOT_TYPES: [DType; 5] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

/// Activations of one shape: `style` 0 is uniform noise, 1 adds spikes 1000× the rest (one
/// value per block dominates its scale), 2 is all zeros but one block, 3 is tiny (1e-30).
fn activations(len: usize, style: u8, seed: u64) -> Vec<f32> {
    let mut x = uniform(len, seed);
    match style {
        1 => x.iter_mut().step_by(37).for_each(|v| *v *= 1000.0),
        2 => x.iter_mut().skip(32).for_each(|v| *v = 0.0),
        3 => x.iter_mut().for_each(|v| *v *= 1e-30),
        _ => {}
    }
    x
}

/// `dot_rows` for a run-time `m` (1..=4).
fn dot_rows_dyn(isa: Isa, t: DType, w: &[u8], a: &[Acts<'_>]) -> Vec<f32> {
    match a.len() {
        1 => qdot::dot_rows::<1>(isa, t, w, [a[0]]).to_vec(),
        2 => qdot::dot_rows::<2>(isa, t, w, [a[0], a[1]]).to_vec(),
        3 => qdot::dot_rows::<3>(isa, t, w, [a[0], a[1], a[2]]).to_vec(),
        4 => qdot::dot_rows::<4>(isa, t, w, [a[0], a[1], a[2], a[3]]).to_vec(),
        m => unreachable!("{m} rows"),
    }
}

fn check_dot(t: DType, blocks: usize, m: usize, style: u8, seed: u64) -> Result<(), String> {
    let k = blocks * t.block_len();
    let kind = acts_kind(t).unwrap();
    let w = random_blocks(t, blocks, seed);
    let x = activations(m * k, style, seed ^ 0xac75);
    let mut acts = QuantizedActs::default();
    acts.quantize_rows(kind, &x, k);
    let rows: Vec<Acts<'_>> = (0..m).map(|r| acts.row(r * k, k)).collect();
    // The scale of the sum: Σ |w| · |x|, from the dequantized values.
    let mut wd = vec![0f32; k];
    dequantize(t, &w, &mut wd);
    for isa in Isa::available() {
        let got = dot_rows_dyn(isa, t, &w, &rows);
        for (r, a) in rows.iter().enumerate() {
            let want = qdot::reference::dot(t, &w, *a);
            let xr = &x[r * k..(r + 1) * k];
            let scale: f32 = wd.iter().zip(xr).map(|(w, x)| (w * x).abs()).sum();
            let err = (got[r] - want).abs();
            if err.is_nan() || err > 1e-5 * scale + f32::MIN_POSITIVE {
                return Err(format!(
                    "{t} {isa} blocks {blocks} row {r}/{m} style {style} seed {seed}: \
                     got {} want {want} (scale {scale})",
                    got[r]
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn integer_dots_match_the_reference(
        t in prop::sample::select(DOT_TYPES.to_vec()),
        blocks in 1usize..=5,
        m in 1usize..=4,
        style in 0u8..4,
        seed in any::<u64>(),
    ) {
        check_dot(t, blocks, m, style, seed).map_err(TestCaseError::fail)?;
    }
}

/// The aarch64 kernels (NEON, `sdot`, and `smmla` in the GEMM) sum each block's integers
/// exactly and scale them in the reference's order: every output is the reference's bits.
#[cfg(target_arch = "aarch64")]
fn check_bits(t: DType, blocks: usize, rows: usize, n: usize, seed: u64) -> Result<(), String> {
    let k = blocks * t.block_len();
    let w: Vec<u8> = (0..n as u64)
        .flat_map(|j| random_blocks(t, blocks, seed ^ (j << 32)))
        .collect();
    let x = activations(rows * k, (seed % 4) as u8, seed ^ 0xb175);
    let mut acts = QuantizedActs::default();
    acts.quantize_rows(acts_kind(t).unwrap(), &x, k);
    let rb = w.len() / n;
    let want: Vec<f32> = (0..rows * n)
        .map(|i| qdot::reference::dot(t, &w[i % n * rb..][..rb], acts.row(i / n * k, k)))
        .collect();
    for isa in Isa::available().into_iter().filter(|i| *i != Isa::Scalar) {
        let mut got = vec![0f32; rows * n];
        qdot::gemm(isa, t, &w, &acts, k, &mut got);
        let mut gemv = vec![0f32; n];
        qdot::gemv(isa, t, &w, acts.row(0, k), &mut gemv);
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            if g.to_bits() != r.to_bits()
                || gemv
                    .get(i)
                    .is_some_and(|v| v.to_bits() != want[i].to_bits())
            {
                return Err(format!(
                    "{t} {isa} blocks {blocks} rows {rows} n {n} seed {seed}: output {i}: \
                     gemm {g}, gemv {:?}, reference {r}",
                    gemv.get(i)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(target_arch = "aarch64")]
proptest! {
    #![proptest_config(config())]

    #[test]
    fn aarch64_integer_dots_return_the_reference_bits(
        t in prop::sample::select(DOT_TYPES.to_vec()),
        blocks in 1usize..=3,
        rows in 1usize..=7,
        n in 1usize..=5,
        seed in any::<u64>(),
    ) {
        check_bits(t, blocks, rows, n, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn q4_k_scales_and_mins_of_every_bit_pattern() {
    // The x86 kernels unpack the 6-bit scales word-wise; a one-hot weight per sub-block and
    // activations of 1 read back each scale and min, for bytes with every high-bit pattern.
    for seed in 0..32u64 {
        check_dot(DType::Q4_K, 2, 1, 0, seed).unwrap();
        check_dot(DType::Q5_K, 2, 4, 1, seed).unwrap();
    }
}

/// ggml's `mul_mat` of the `gguf-types` tensors (8 rows of 512) with `x` [4, 512]: ggml
/// quantizes `x` with the same reference quantizers, so results agree to f32 round-off; and
/// within the fixtures' kernel tolerance (1.5e-2 of max |y|) of the exact float64 products.
#[test]
fn int8_matmul_matches_ggml_mul_mat_on_llama_quantize_tensors() {
    let dir = fixtures_dir().join("quant/gguf-types");
    let file = GgufFile::open(dir.join("types.gguf")).unwrap();
    let reference = dir.join("reference.safetensors");
    let x = f32s(&raw(&reference, "x"));
    for name in ["q8_0", "q4_0", "q4_k", "q5_k", "q6_k"] {
        let t = file.tensor(name).unwrap();
        let w = Weight::new(&t).unwrap();
        let ggml_1 = f32s(&raw(&reference, &format!("{name}.y_ggml_1")));
        let ggml_4 = f32s(&raw(&reference, &format!("{name}.y_ggml_4")));
        let exact: Vec<f32> = raw(&reference, &format!("{name}.y_exact"))
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect();
        let max = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        let near_ggml = Tol {
            atol: 2e-6 * max,
            rtol: 0.0,
        };
        let near_exact = Tol {
            atol: 1.5e-2 * max,
            rtol: 0.0,
        };
        let p = Matmul {
            rows: 4,
            k: 512,
            n: 8,
        };
        for isa in Isa::available() {
            let y1 = run(8, |y| {
                cpu::matmul_at(
                    isa,
                    Precision::Int8,
                    Matmul { rows: 1, ..p },
                    &x[..512],
                    w,
                    y,
                )
            });
            near_ggml
                .check(&format!("{name} {isa} GEMV vs ggml"), &y1, &ggml_1)
                .unwrap();
            let y4 = run(32, |y| cpu::matmul_at(isa, Precision::Int8, p, &x, w, y));
            near_ggml
                .check(&format!("{name} {isa} GEMM vs ggml"), &y4, &ggml_4)
                .unwrap();
            near_exact
                .check(&format!("{name} {isa} GEMM vs exact"), &y4, &exact)
                .unwrap();
        }
    }
}

#[test]
fn types_without_an_integer_dot_stay_exact_at_int8() {
    for t in [
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q2_K,
        DType::Q3_K,
    ] {
        assert_eq!(acts_kind(t), None, "{t}");
    }
    let t = DType::Q3_K;
    let w = random_blocks(t, 3, 11);
    let w = Weight::Quant(mixtral_kernels::QuantBlocks::new(t, &w));
    let x = uniform(256, 12);
    let p = Matmul {
        rows: 1,
        k: 256,
        n: 3,
    };
    for isa in Isa::available() {
        let exact = run(3, |y| cpu::matmul_at(isa, Precision::F32, p, &x, w, y));
        let int8 = run(3, |y| cpu::matmul_at(isa, Precision::Int8, p, &x, w, y));
        assert_eq!(exact, int8, "{isa}");
    }
}

/// The interleaved layout ([`qdot::interleave`]): a round trip gives the rows back, and every
/// ISA's GEMV and GEMM on it (tiles of eight rows by up to four tokens) match the reference dot
/// of the rows as stored.
fn check_interleaved(
    t: DType,
    groups: usize,
    blocks: usize,
    m: usize,
    style: u8,
    seed: u64,
) -> Result<(), String> {
    use qdot::interleave;
    let (k, n) = (blocks * t.block_len(), groups * interleave::ROWS);
    let rb = blocks * t.block_bytes();
    let w = random_blocks(t, n * blocks, seed);
    let mut packed = vec![0u8; w.len()];
    interleave::interleave(t, &w, rb, &mut packed);
    let mut back = vec![0u8; w.len()];
    interleave::deinterleave(t, &packed, rb, &mut back);
    if back != w {
        return Err(format!("{t}: the round trip changed the rows"));
    }
    let x = activations(m * k, style, seed ^ 0x1a7e);
    let mut acts = QuantizedActs::default();
    acts.quantize_rows(acts_kind(t).unwrap(), &x, k);
    let mut wd = vec![0f32; n * k];
    dequantize(t, &w, &mut wd);
    let mut want = vec![0f32; m * n];
    let mut bound = vec![0f32; m * n];
    for r in 0..m {
        for j in 0..n {
            want[r * n + j] = qdot::reference::dot(t, &w[j * rb..(j + 1) * rb], acts.row(r * k, k));
            let (wj, xr) = (&wd[j * k..(j + 1) * k], &x[r * k..(r + 1) * k]);
            bound[r * n + j] = 1e-5 * wj.iter().zip(xr).map(|(w, x)| (w * x).abs()).sum::<f32>()
                + f32::MIN_POSITIVE;
        }
    }
    for isa in Isa::available() {
        let mut got = vec![0f32; m * n];
        qdot::gemm_interleaved(isa, t, &packed, &acts, k, &mut got);
        let mut gemv = vec![0f32; n];
        qdot::gemv_interleaved(isa, t, &packed, acts.row(0, k), &mut gemv);
        let checks = got.iter().zip(&want).zip(&bound).enumerate();
        let gemv_checks = gemv.iter().zip(&want[..n]).zip(&bound[..n]).enumerate();
        for (what, (i, ((g, w), b))) in checks
            .map(|c| ("gemm", c))
            .chain(gemv_checks.map(|c| ("gemv", c)))
        {
            let err = (g - w).abs();
            if err.is_nan() || err > *b {
                return Err(format!(
                    "{t} {isa} {what} groups {groups} blocks {blocks} m {m} style {style} seed {seed}: \
                     output {i} got {g} want {w}"
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn interleaved_dots_match_the_reference(
        t in prop::sample::select(vec![DType::Q8_0, DType::Q4_K, DType::Q6_K]),
        groups in 1usize..=3,
        blocks in 1usize..=3,
        m in 1usize..=9,
        style in 0u8..4,
        seed in any::<u64>(),
    ) {
        check_interleaved(t, groups, blocks, m, style, seed).map_err(TestCaseError::fail)?;
    }
}
