//! `cpu::matmul` (GEMV and GEMM) against `reference::matmul`.

use crate::{Weights, config, dim, dtype_name};
use mixtral_kernels::Isa;
use mixtral_kernels::matmul::{Matmul, Precision, cpu, reference};
use mixtral_testkit::{Tol, run, uniform};
use proptest::prelude::*;

/// Runs `f` on an output buffer that starts as NaN, so a kernel that adds into its output
/// instead of storing the first block's sums shows.
fn run_nan(n: usize, f: impl FnOnce(&mut [f32])) -> Vec<f32> {
    let mut y = vec![f32::NAN; n];
    f(&mut y);
    y
}

/// Runs one shape in every dtype and ISA; `Err` names the case.
fn check(p: Matmul, seed: u64) -> Result<(), String> {
    let x = uniform(p.rows * p.k, seed);
    let w = Weights::uniform(p.n * p.k, seed ^ 0x5eed, 1.0);
    for dtype in 0..3 {
        let want = run(p.rows * p.n, |y| reference::matmul(p, &x, w.view(dtype), y));
        for isa in Isa::available() {
            let got = run_nan(p.rows * p.n, |y| cpu::matmul(isa, p, &x, w.view(dtype), y));
            let what = format!("{p:?} {} {isa} seed {seed}", dtype_name(dtype));
            Tol::reduction_f32(p.k).check(&what, &got, &want)?;
        }
    }
    Ok(())
}

/// `matmul_bf16` (activations rounded to bf16 for bf16 weights) in every dtype and ISA
/// against `reference::matmul_bf16`.
fn check_bf16(p: Matmul, seed: u64) -> Result<(), String> {
    let x = uniform(p.rows * p.k, seed);
    let w = Weights::uniform(p.n * p.k, seed ^ 0xbf16, 1.0);
    for dtype in 0..3 {
        let want = run(p.rows * p.n, |y| {
            reference::matmul_bf16(p, &x, w.view(dtype), y)
        });
        for isa in Isa::available() {
            let got = run_nan(p.rows * p.n, |y| {
                cpu::matmul_bf16(isa, p, &x, w.view(dtype), y)
            });
            let what = format!("bf16 {p:?} {} {isa} seed {seed}", dtype_name(dtype));
            Tol::reduction_f32(p.k).check(&what, &got, &want)?;
        }
    }
    Ok(())
}

/// `gemv_many` over GEMVs of the given `(k, n)` shapes, dtypes cycling, at both precisions and
/// every ISA, each output against its own reference GEMV.
fn check_many(shapes: &[(usize, usize)], seed: u64) -> Result<(), String> {
    let xs: Vec<Vec<f32>> = (0..shapes.len() as u64)
        .zip(shapes)
        .map(|(i, &(k, _))| uniform(k, seed ^ i))
        .collect();
    let ws: Vec<Weights> = (0..shapes.len() as u64)
        .zip(shapes)
        .map(|(i, &(k, n))| Weights::uniform(n * k, seed ^ (i + 100), 1.0))
        .collect();
    for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
        for isa in Isa::available() {
            let mut ys: Vec<Vec<f32>> = shapes.iter().map(|&(_, n)| vec![f32::NAN; n]).collect();
            let mut jobs: Vec<cpu::Gemv<'_>> = ys
                .iter_mut()
                .enumerate()
                .map(|(i, y)| cpu::Gemv {
                    x: &xs[i],
                    w: ws[i].view(i % 3),
                    y,
                })
                .collect();
            cpu::gemv_many(isa, precision, &mut jobs);
            for (i, (&(k, n), got)) in shapes.iter().zip(&ys).enumerate() {
                let p = Matmul { rows: 1, k, n };
                let want = run(n, |y| {
                    reference::matmul_at(precision, p, &xs[i], ws[i].view(i % 3), y)
                });
                let what = format!(
                    "gemv {i} of {shapes:?} {} {isa} {precision:?}",
                    dtype_name(i % 3)
                );
                Tol::reduction_f32(k).check(&what, got, &want)?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// One to eight GEMVs of any shape (empty `k` too) as one region.
    #[test]
    fn gemv_many_matches_reference_gemvs(
        shapes in prop::collection::vec((0usize..40, dim()), 1..=8),
        long in 0usize..3,
        seed: u64,
    ) {
        // Now and then one long row (the interleaved path) among them.
        let mut shapes = shapes;
        if long == 0 {
            shapes[0].0 = 2100;
        }
        check_many(&shapes, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn bf16_gemv_matches_reference(k in dim(), n in dim(), seed: u64) {
        check_bf16(Matmul { rows: 1, k, n }, seed).map_err(TestCaseError::fail)?;
    }

    /// Token counts around the 14/8/4/2/1-row tiles, features around the 32-wide panel, odd
    /// `k` (a half-filled last pair) and `k` past the 256-column panels.
    #[test]
    fn bf16_gemm_matches_reference(rows in 2usize..40, k in dim(), n in dim(), seed: u64) {
        check_bf16(Matmul { rows, k, n }, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn gemv_matches_reference(k in dim(), n in dim(), seed: u64) {
        check(Matmul { rows: 1, k, n }, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn gemm_matches_reference(rows in dim(), k in dim(), n in dim(), seed: u64) {
        check(Matmul { rows, k, n }, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn gemm_crosses_k_blocks_and_thread_chunks() {
    // k past two 256-column blocks with a ragged tail; n past several 16-row blocks; enough
    // work that the rayon split runs.
    check(
        Matmul {
            rows: 9,
            k: 600,
            n: 70,
        },
        1,
    )
    .unwrap();
    check(
        Matmul {
            rows: 1,
            k: 1030,
            n: 301,
        },
        2,
    )
    .unwrap();
    // More tokens than one activation block (256): the second block's tiles.
    check(
        Matmul {
            rows: 300,
            k: 600,
            n: 40,
        },
        6,
    )
    .unwrap();
    check_bf16(
        Matmul {
            rows: 33,
            k: 777,
            n: 100,
        },
        4,
    )
    .unwrap();
    check_bf16(
        Matmul {
            rows: 1,
            k: 4099,
            n: 70,
        },
        5,
    )
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..config() })]

    /// Rows longer than the row-by-row limit (2048) take the interleaved GEMV: odd lengths
    /// around it and far past it.
    #[test]
    fn gemv_long_rows_match_reference(k in 2040usize..2100, extra in 0usize..3, n in 1usize..40, seed: u64) {
        check(Matmul { rows: 1, k: k + extra * 1500, n }, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn gemm_runs_inside_a_one_thread_pool() {
    // The caller controls threads: a 1-thread pool takes the sequential path.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        check(
            Matmul {
                rows: 5,
                k: 300,
                n: 40,
            },
            3,
        )
    })
    .unwrap();
}

#[test]
fn gemm_and_gemv_run_inside_a_team() {
    // The engine's threads: helpers that spin between regions, chunks from a shared counter.
    let team = mixtral_kernels::threads::Team::new(3).unwrap();
    team.run(|| {
        for (rows, k, n, seed) in [(1, 300, 257, 1), (1, 2100, 40, 2), (13, 300, 70, 3)] {
            check(Matmul { rows, k, n }, seed).unwrap();
        }
    });
}

#[test]
fn gemv_many_splits_chunks_across_gemvs_inside_a_team() {
    // Large enough to be split: chunks straddle the GEMVs (odd row counts between them).
    let team = mixtral_kernels::threads::Team::new(3).unwrap();
    team.run(|| check_many(&[(512, 1001), (512, 77), (0, 5), (300, 513), (2100, 33)], 4))
        .unwrap();
}

#[test]
fn zero_k_writes_zeros() {
    let p = Matmul {
        rows: 2,
        k: 0,
        n: 3,
    };
    for isa in Isa::available() {
        let mut y = [1f32; 6];
        cpu::matmul(isa, p, &[], mixtral_kernels::Weight::F32(&[]), &mut y);
        assert_eq!(y, [0.0; 6]);
    }
}

/// `matmul_batch_invariant`: every row of a call is the same bits as that row computed alone
/// (a one-row call), at every precision, dtype and ISA, and matches the reference.
fn check_invariant(p: Matmul, seed: u64) -> Result<(), String> {
    let x = uniform(p.rows * p.k, seed);
    let w = Weights::uniform(p.n * p.k, seed ^ 0x1a7, 1.0);
    for dtype in 0..3 {
        for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
            for isa in Isa::available() {
                let what = format!(
                    "{p:?} {} {precision:?} {isa} seed {seed}",
                    dtype_name(dtype)
                );
                let all = run(p.rows * p.n, |y| {
                    cpu::matmul_batch_invariant(isa, precision, p, &x, w.view(dtype), y)
                });
                for t in 0..p.rows {
                    let one = Matmul { rows: 1, ..p };
                    let row = &x[t * p.k..(t + 1) * p.k];
                    let alone = run(p.n, |y| {
                        cpu::matmul_batch_invariant(isa, precision, one, row, w.view(dtype), y)
                    });
                    let batched = &all[t * p.n..(t + 1) * p.n];
                    if alone
                        .iter()
                        .zip(batched)
                        .any(|(a, b)| a.to_bits() != b.to_bits())
                    {
                        return Err(format!("{what}: row {t} differs from the row alone"));
                    }
                }
                let want = run(p.rows * p.n, |y| {
                    reference::matmul_at(precision, p, &x, w.view(dtype), y)
                });
                Tol::reduction_f32(p.k).check(&what, &all, &want)?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Rows 1 to 20, `k` within one block of 256 or across several.
    #[test]
    fn batch_invariant_rows_equal_each_row_alone(
        rows in 1usize..20,
        k in prop_oneof![dim(), 250usize..600],
        n in dim(),
        seed: u64,
    ) {
        check_invariant(Matmul { rows, k, n }, seed).map_err(TestCaseError::fail)?;
    }
}
