//! Block-quantized weights: the reference dequantization bit for bit against gguf-py (random
//! blocks with extreme scales) and against ggml's own output on real llama-quantize tensors;
//! the fast quantized GEMV/GEMM against the reference matmul for every type and ISA.

use crate::config;
use mixtral_kernels::dequant::dequantize;
use mixtral_kernels::matmul::{Matmul, Precision, cpu, reference};
use mixtral_kernels::{Isa, QuantBlocks, Weight};
use mixtral_tensor::gguf::GgufFile;
use mixtral_tensor::{ALL_DTYPES, DType, SafetensorsFile};
use mixtral_testkit::{Tol, fixtures_dir, run, uniform};
use proptest::prelude::*;
use std::path::Path;

/// The ten block types.
fn quant_types() -> Vec<DType> {
    let types: Vec<DType> = ALL_DTYPES
        .into_iter()
        .filter(|d| d.is_quantized())
        .collect();
    assert_eq!(types.len(), 10);
    types
}

/// Byte offsets of each type's f16 scale fields within a block (ggml `ggml-common.h`).
pub(crate) fn scale_offsets(t: DType) -> &'static [usize] {
    match t {
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        _ => unreachable!(),
    }
}

/// Raw bytes of tensor `name` of a safetensors file (any dtype, U8 and F64 included).
pub(crate) fn raw(path: &Path, name: &str) -> Vec<u8> {
    let file = SafetensorsFile::open(path).unwrap();
    let range = file.infos()[name].range.clone();
    std::fs::read(path).unwrap()[range].to_vec()
}

pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn dequantized(t: DType, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![f32::NAN; bytes.len() / t.block_bytes() * t.block_len()];
    dequantize(t, bytes, &mut out);
    out
}

/// Bit-identical, so -0.0 and 0.0 are told apart.
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: value {i}: got {g} want {w}"
        );
    }
}

#[test]
fn random_blocks_dequantize_bit_exactly_as_gguf_py() {
    let path = fixtures_dir().join("quant/blocks.safetensors");
    for t in quant_types() {
        let name = t.name().to_lowercase();
        let bytes = raw(&path, &format!("{name}.raw"));
        let want = f32s(&raw(&path, &format!("{name}.dequant")));
        assert!(
            want.len() >= 12 * t.block_len().min(32),
            "{t}: fixture too small"
        );
        assert_bits(
            &format!("{t} random blocks"),
            &dequantized(t, &bytes),
            &want,
        );
    }
}

#[test]
fn llama_quantize_tensors_dequantize_bit_exactly_as_ggml() {
    let dir = fixtures_dir().join("quant/gguf-types");
    let file = GgufFile::open(dir.join("types.gguf")).unwrap();
    let reference = dir.join("reference.safetensors");
    for name in ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"] {
        let t = file.tensor(name).unwrap();
        assert_eq!(t.dims(), &[8, 512]);
        let mut got = vec![f32::NAN; 8 * 512];
        Weight::new(&t).unwrap().row_into(0, &mut got);
        let want = f32s(&raw(&reference, &format!("{name}.dequant")));
        assert_bits(&format!("{name} of types.gguf"), &got, &want);
    }
}

#[test]
fn quantized_matvec_matches_float64_products() {
    // x [4, 512] times the 8 quantized rows, against numpy's float64 products of the
    // dequantized values: our kernels dequantize exactly and accumulate in f32.
    let dir = fixtures_dir().join("quant/gguf-types");
    let file = GgufFile::open(dir.join("types.gguf")).unwrap();
    let reference = dir.join("reference.safetensors");
    let x = f32s(&raw(&reference, "x"));
    for name in ["q8_0", "q4_0", "q4_k", "q5_k", "q6_k"] {
        let t = file.tensor(name).unwrap();
        let want: Vec<f32> = raw(&reference, &format!("{name}.y_exact"))
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect();
        let p = Matmul {
            rows: 4,
            k: 512,
            n: 8,
        };
        let w = Weight::new(&t).unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let tol = Tol {
            atol: 1e-5 * scale,
            rtol: 1e-5,
        };
        let y = run(32, |y| reference::matmul(p, &x, w, y));
        tol.check(&format!("{name} reference"), &y, &want).unwrap();
        for isa in Isa::available() {
            let y = run(32, |y| cpu::matmul(isa, p, &x, w, y));
            tol.check(&format!("{name} {isa} GEMM"), &y, &want).unwrap();
            let y = run(8, |y| {
                cpu::matmul(isa, Matmul { rows: 1, ..p }, &x[..512], w, y)
            });
            tol.check(&format!("{name} {isa} GEMV"), &y, &want[..8])
                .unwrap();
        }
    }
}

/// `blocks` random blocks of `t`, scales finite and small (`2^-10 .. 2^-6`, either sign).
pub(crate) fn random_blocks(t: DType, blocks: usize, seed: u64) -> Vec<u8> {
    let noise = uniform(blocks * t.block_bytes(), seed);
    let mut bytes: Vec<u8> = noise.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
    let scales = uniform(blocks * 2, seed ^ 0x5ca1e);
    for (b, block) in bytes.chunks_exact_mut(t.block_bytes()).enumerate() {
        for (i, &at) in scale_offsets(t).iter().enumerate() {
            let s = scales[2 * b + i];
            let v = s.signum() * 2f32.powf(-10.0 + 4.0 * s.abs());
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
        }
    }
    bytes
}

/// The fast matmul (GEMM for `rows > 1`, `gemv_many` for one row, at every precision: the
/// bf16 precision leaves quantized weights at f32 activations, int8 quantizes them for the
/// types with an integer dot) against the reference at the same precision.
fn check(t: DType, p: Matmul, seed: u64) -> Result<(), String> {
    let x = uniform(p.rows * p.k, seed);
    let bytes = random_blocks(t, p.n * p.k / t.block_len(), seed ^ 0xb10c);
    let w = Weight::Quant(QuantBlocks::new(t, &bytes));
    let want = run(p.rows * p.n, |y| reference::matmul(p, &x, w, y));
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let tol = Tol::reduction_f32(p.k);
    let tol = Tol {
        atol: tol.atol * scale,
        rtol: tol.rtol,
    };
    let want_int8 = run(p.rows * p.n, |y| reference::matmul_int8(p, &x, w, y));
    for isa in Isa::available() {
        for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
            let got = run(p.rows * p.n, |y| {
                cpu::matmul_at(isa, precision, p, &x, w, y)
            });
            let want = if precision == Precision::Int8 {
                &want_int8
            } else {
                &want
            };
            tol.check(
                &format!("{t} {p:?} {isa} {precision:?} seed {seed}"),
                &got,
                want,
            )?;
        }
        if p.rows == 1 {
            let mut got = vec![f32::NAN; p.n];
            cpu::gemv_many(
                isa,
                Precision::F32,
                &mut [cpu::Gemv {
                    x: &x,
                    w,
                    y: &mut got,
                }],
            );
            tol.check(
                &format!("{t} gemv_many {p:?} {isa} seed {seed}"),
                &got,
                &want,
            )?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn quantized_matmul_matches_the_reference(
        t in prop::sample::select(quant_types()),
        rows in prop_oneof![Just(1usize), 2usize..=9],
        blocks in 1usize..=3,
        n in prop_oneof![1usize..=17, Just(64usize), Just(67usize)],
        seed in any::<u64>(),
    ) {
        let p = Matmul { rows, k: blocks * t.block_len(), n };
        check(t, p, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn long_quantized_rows_in_a_team_region() {
    // Rows of 4096 (the 8x7B hidden size) split across threads; several GEMM panels.
    for t in [DType::Q4_K, DType::Q8_0, DType::Q6_K] {
        check(
            t,
            Matmul {
                rows: 1,
                k: 4096,
                n: 40,
            },
            7,
        )
        .unwrap();
        check(
            t,
            Matmul {
                rows: 5,
                k: 4096,
                n: 40,
            },
            8,
        )
        .unwrap();
    }
}

#[test]
fn int8_gemms_over_several_token_groups() {
    // Eight-token groups (the AVX-512 K-quant path) and their remainders.
    for t in [
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_0,
        DType::Q4_0,
    ] {
        for rows in [8, 16, 17, 27] {
            check(
                t,
                Matmul {
                    rows,
                    k: 512,
                    n: 19,
                },
                rows as u64,
            )
            .unwrap();
        }
    }
}
