//! `cpu::moe` (grouped experts) against `reference::moe`, and the named MoE scenarios.

use crate::{Weights, config, dim, dtype_name};
use mixtral_kernels::Isa;
use mixtral_kernels::matmul::Precision;
use mixtral_kernels::moe::cpu::{MoeScratch, moe, silu_mul};
use mixtral_kernels::moe::{Expert, Moe, reference, silu};
use mixtral_testkit::{Tol, run, uniform};
use proptest::prelude::*;

/// Random experts: `[w1, w2, w3]` per expert, scaled so activations stay near 1.
fn experts(n: usize, p: Moe, seed: u64) -> Vec<[Weights; 3]> {
    let (s1, s2) = (1.0 / (p.hidden as f32).sqrt(), 1.0 / (p.ffn as f32).sqrt());
    (0..n as u64)
        .map(|e| {
            let up = p.hidden * p.ffn;
            [
                Weights::uniform(up, seed ^ (e * 3 + 1), 2.0 * s1),
                Weights::uniform(up, seed ^ (e * 3 + 2), 2.0 * s2),
                Weights::uniform(up, seed ^ (e * 3 + 3), 2.0 * s1),
            ]
        })
        .collect()
}

/// Every dtype and ISA on one routing; `Err` names the case.
fn check(p: Moe, n_experts: usize, ids: &[u32], weights: &[f32], seed: u64) -> Result<(), String> {
    let x = uniform(p.n_tokens * p.hidden, seed);
    let ws = experts(n_experts, p, seed);
    let mut scratch = MoeScratch::new();
    for dtype in 0..3 {
        let ex: Vec<Expert<'_>> = ws
            .iter()
            .map(|[w1, w2, w3]| Expert {
                w1: w1.view(dtype),
                w2: w2.view(dtype),
                w3: w3.view(dtype),
            })
            .collect();
        let n = x.len();
        for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
            let want = run(n, |y| {
                reference::moe_at(precision, p, &x, ids, weights, &ex, y)
            });
            for isa in Isa::available() {
                let got = run(n, |y| {
                    moe(isa, precision, p, &x, ids, weights, &ex, y, &mut scratch)
                });
                let what = format!(
                    "{p:?} E={n_experts} ids {ids:?} {} {isa} {precision:?}",
                    dtype_name(dtype)
                );
                let tol = Tol::reduction_f32(p.hidden.max(p.ffn) * p.top_k);
                match precision {
                    Precision::F32 => tol.check(&what, &got, &want)?,
                    Precision::Bf16 | Precision::Int8 => {
                        let flips = bf16_flip_bound(p, &x, ids, weights, &ws);
                        within_flips(&what, tol, &got, &want, &flips)?
                    }
                }
            }
        }
    }
    Ok(())
}

/// At bf16 precision the SwiGLU output `h` is rounded to bf16 before the down projection, and
/// the kernel's `h` differs from the reference's by f32 rounding (another summation order), so
/// an element lying that close to a bf16 rounding boundary rounds the other way: one bf16 ulp
/// (≤ 2⁻⁸·|h_i|). Per output element, the most all such flips can move it:
/// `Σ_k weight_k · Σ_i |W2[j, i]| · 2⁻⁸ · |h_i|` (from the f32 weights, doubled for slack).
fn bf16_flip_bound(
    p: Moe,
    x: &[f32],
    ids: &[u32],
    weights: &[f32],
    ws: &[[Weights; 3]],
) -> Vec<f32> {
    let (d, f) = (p.hidden, p.ffn);
    let mut bound = vec![0f32; p.n_tokens * d];
    for t in 0..p.n_tokens {
        let xt = &x[t * d..(t + 1) * d];
        for k in 0..p.top_k {
            let [w1, w2, w3] = &ws[ids[t * p.top_k + k] as usize];
            let dot = |w: &[f32], i: usize| -> f32 {
                w[i * d..(i + 1) * d]
                    .iter()
                    .zip(xt)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let h: Vec<f32> = (0..f)
                .map(|i| silu(dot(w1.values(), i)) * dot(w3.values(), i))
                .collect();
            for j in 0..d {
                let row = &w2.values()[j * f..(j + 1) * f];
                let moved: f32 = row.iter().zip(&h).map(|(w, h)| (w * h).abs()).sum();
                bound[t * d + j] += 2.0 * weights[t * p.top_k + k].abs() * moved / 256.0;
            }
        }
    }
    bound
}

/// `tol`, widened element by element by `flips`.
fn within_flips(
    what: &str,
    tol: Tol,
    got: &[f32],
    want: &[f32],
    flips: &[f32],
) -> Result<(), String> {
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(flips).enumerate() {
        let allowed = tol.atol + tol.rtol * w.abs() + b;
        let close = (g - w).abs() <= allowed; // false for NaN
        if !close {
            return Err(format!(
                "{what}: element {i} got {g} want {w} (allowed ±{allowed})"
            ));
        }
    }
    Ok(())
}

/// Distinct expert ids per token (as the router produces) and positive weights.
fn routing(n_tokens: usize, n_experts: usize, top_k: usize, seed: u64) -> (Vec<u32>, Vec<f32>) {
    let r = uniform(n_tokens * (n_experts + top_k), seed);
    let mut ids = Vec::new();
    for t in 0..n_tokens {
        let mut order: Vec<u32> = (0..n_experts as u32).collect();
        order.sort_by(|&a, &b| {
            r[t * n_experts + a as usize].total_cmp(&r[t * n_experts + b as usize])
        });
        ids.extend_from_slice(&order[..top_k]);
    }
    let weights = r[n_tokens * n_experts..]
        .iter()
        .map(|v| v.abs() + 0.1)
        .collect();
    (ids, weights)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn moe_matches_reference(
        n_tokens in 1usize..=17,
        hidden in dim(),
        ffn in dim(),
        n_experts in 1usize..=9,
        k_pick in 0usize..3,
        seed: u64,
    ) {
        let top_k = (k_pick + 1).min(n_experts);
        let p = Moe { n_tokens, hidden, ffn, top_k };
        let (ids, weights) = routing(n_tokens, n_experts, top_k, seed);
        check(p, n_experts, &ids, &weights, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn silu_mul_matches_silu(n in dim(), scale in prop::sample::select(vec![1.0f32, 10.0, 100.0]), seed: u64) {
        let g: Vec<f32> = uniform(n, seed).iter().map(|v| v * scale).collect();
        let u = uniform(n, !seed);
        let want: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| silu(g) * u).collect();
        for isa in Isa::available() {
            let mut got = g.clone();
            silu_mul(isa, &mut got, &u);
            mixtral_testkit::check_close(&format!("silu_mul {isa}"), &got, &want, 1e-6, 1e-5)
                .map_err(TestCaseError::fail)?;
        }
    }
}

const SMALL: Moe = Moe {
    n_tokens: 6,
    hidden: 33,
    ffn: 20,
    top_k: 2,
};

#[test]
fn moe_expert_with_no_tokens() {
    // Experts 1 and 3 get no token; their weights are empty, so reading them would panic.
    let p = SMALL;
    let x = uniform(p.n_tokens * p.hidden, 1);
    let ws = experts(4, p, 2);
    let empty = Expert {
        w1: mixtral_kernels::Weight::F32(&[]),
        w2: mixtral_kernels::Weight::F32(&[]),
        w3: mixtral_kernels::Weight::F32(&[]),
    };
    let ex: Vec<Expert<'_>> = ws
        .iter()
        .enumerate()
        .map(|(e, [w1, w2, w3])| {
            if e % 2 == 1 {
                empty
            } else {
                Expert {
                    w1: w1.view(1),
                    w2: w2.view(1),
                    w3: w3.view(1),
                }
            }
        })
        .collect();
    let ids = [0, 2, 2, 0, 0, 2, 2, 0, 0, 2, 2, 0];
    let weights = uniform(12, 3).iter().map(|v| v.abs()).collect::<Vec<_>>();
    let want = run(x.len(), |y| reference::moe(p, &x, &ids, &weights, &ex, y));
    for isa in Isa::available() {
        let got = run(x.len(), |y| {
            let s = &mut MoeScratch::new();
            moe(isa, Precision::F32, p, &x, &ids, &weights, &ex, y, s)
        });
        Tol::reduction_f32(66)
            .check(&format!("{isa}"), &got, &want)
            .unwrap();
    }
}

#[test]
fn moe_all_tokens_to_one_expert() {
    let p = Moe { top_k: 1, ..SMALL };
    check(p, 4, &[3; 6], &[1.0, 0.5, 0.25, 2.0, 1.0, 1.0], 4).unwrap();
}

#[test]
fn moe_top_k_equals_num_experts() {
    let p = Moe { top_k: 3, ..SMALL };
    let (ids, weights) = routing(p.n_tokens, 3, 3, 5);
    check(p, 3, &ids, &weights, 5).unwrap();
}

#[test]
fn moe_more_tokens_per_expert_than_one_gemm_block() {
    // 300 tokens all on expert 0 exceed the 256-row group limit: two GEMM chunks.
    let p = Moe {
        n_tokens: 300,
        hidden: 16,
        ffn: 8,
        top_k: 1,
    };
    check(p, 2, &[0; 300], &uniform(300, 6), 6).unwrap();
}

#[test]
fn moe_decode_reuses_the_scratch() {
    // A 1-token call after a larger one runs on the already-sized buffers.
    let p = SMALL;
    let (ids, weights) = routing(p.n_tokens, 4, 2, 7);
    check(p, 4, &ids, &weights, 7).unwrap();
    let one = Moe {
        n_tokens: 1,
        ..SMALL
    };
    check(one, 4, &ids[..2], &weights[..2], 8).unwrap();
}
