//! RMSNorm, RoPE and the router against their references.

use crate::{Weights, config, dim, dtype_name};
use mixtral_kernels::Isa;
use mixtral_kernels::rmsnorm::{self, RmsNorm};
use mixtral_kernels::rope::{self, Rope, cpu::RopeTable};
use mixtral_kernels::router::{self, Router};
use mixtral_testkit::{Tol, run, uniform};
use proptest::prelude::*;

fn check_rms(p: RmsNorm, scale: f32, seed: u64) -> Result<(), String> {
    let x: Vec<f32> = uniform(p.rows * p.cols, seed)
        .iter()
        .map(|v| v * scale)
        .collect();
    let w = Weights::uniform(p.cols, !seed, 2.0);
    for dtype in 0..3 {
        let want = run(x.len(), |y| {
            rmsnorm::reference::rms_norm(p, &x, w.view(dtype), y)
        });
        for isa in Isa::available() {
            let got = run(x.len(), |y| {
                rmsnorm::cpu::rms_norm(isa, p, &x, w.view(dtype), y)
            });
            let what = format!("{p:?} scale {scale} {} {isa}", dtype_name(dtype));
            Tol::reduction_f32(p.cols).check(&what, &got, &want)?;
        }
    }
    Ok(())
}

fn check_rope(p: Rope, positions: &[usize], seed: u64) -> Result<(), String> {
    let x = uniform(positions.len() * p.n_heads * p.head_dim, seed);
    let mut want = x.clone();
    rope::reference::rope(p, positions, &mut want);
    let table = RopeTable::new(p, positions.iter().max().map_or(0, |m| m + 1));
    for isa in Isa::available() {
        let mut got = x.clone();
        rope::cpu::rope(isa, p, &table, positions, &mut got);
        // The table holds the reference's values and no FMA is used: exact.
        if got != want {
            return Err(format!(
                "{p:?} positions {positions:?} {isa}: differs from the reference"
            ));
        }
    }
    Ok(())
}

fn check_router(p: Router, logits: &[f32]) -> Result<(), String> {
    let n = p.n_tokens * p.top_k;
    let (mut want_ids, mut want_w) = (vec![0u32; n], vec![0f32; n]);
    router::reference::router_top_k(p, logits, &mut want_ids, &mut want_w);
    for isa in Isa::available() {
        let (mut ids, mut w) = (vec![0u32; n], vec![0f32; n]);
        router::cpu::router_top_k(isa, p, logits, &mut ids, &mut w);
        // Same arithmetic in the same order: ids and weights are exact, ties included.
        if ids != want_ids || w != want_w {
            return Err(format!(
                "{p:?} {isa}: got {ids:?} {w:?}, want {want_ids:?} {want_w:?}"
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rms_norm_matches_reference(rows in 1usize..=9, cols in dim(), seed: u64) {
        check_rms(RmsNorm { rows, cols, eps: 1e-5 }, 1.0, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn rope_matches_reference(
        n_heads in 1usize..=5,
        half in dim(),
        positions in prop::collection::vec(0usize..40_000, 1..=6),
        theta in prop::sample::select(vec![1e4f64, 1e6]),
        interleaved in any::<bool>(),
        seed: u64,
    ) {
        check_rope(Rope { n_heads, head_dim: 2 * half, theta, interleaved }, &positions, seed)
            .map_err(TestCaseError::fail)?;
    }

    #[test]
    fn router_matches_reference(
        n_tokens in 1usize..=17,
        n_experts in 1usize..=70,
        k_pick in 0usize..4,
        norm in any::<bool>(),
        coarse in any::<bool>(),
        seed: u64,
    ) {
        let top_k = (k_pick + 1).min(n_experts);
        // `coarse` rounds logits to quarters so exact ties are common.
        let logits: Vec<f32> = uniform(n_tokens * n_experts, seed)
            .iter()
            .map(|v| if coarse { (v * 8.0).round() / 4.0 } else { v * 4.0 })
            .collect();
        let p = Router { n_tokens, n_experts, top_k, norm_topk_prob: norm };
        check_router(p, &logits).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn rms_norm_large_magnitude() {
    // Values near 1e18 square to 1e36, near f32's limit: an f32 sum of squares must not
    // overflow for a 4096-wide row scaled this way... it does not: mean 3e35 < 3.4e38.
    for scale in [1e3f32, 1e10, 1e18] {
        check_rms(
            RmsNorm {
                rows: 3,
                cols: 129,
                eps: 1e-5,
            },
            scale,
            11,
        )
        .unwrap();
    }
    check_rms(
        RmsNorm {
            rows: 64,
            cols: 4096,
            eps: 1e-6,
        },
        1e4,
        12,
    )
    .unwrap();
}

#[test]
fn rope_position_past_4096() {
    let p = Rope {
        n_heads: 8,
        head_dim: 128,
        theta: 1e6,
        interleaved: false,
    };
    check_rope(p, &[4095, 4096, 4097, 32_767, 100_000], 13).unwrap();
    let p = Rope {
        interleaved: true,
        ..p
    };
    check_rope(p, &[4095, 32_767, 100_000], 14).unwrap();
}

#[test]
fn router_tie_prefers_lower_index() {
    let p = Router {
        n_tokens: 2,
        n_experts: 8,
        top_k: 2,
        norm_topk_prob: true,
    };
    let logits = [
        1.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
    ];
    check_router(p, &logits).unwrap();
    for isa in Isa::available() {
        let (mut ids, mut w) = ([0u32; 4], [0f32; 4]);
        router::cpu::router_top_k(isa, p, &logits, &mut ids, &mut w);
        assert_eq!(ids, [1, 2, 0, 1], "{isa}");
        assert_eq!(w, [0.5; 4], "{isa}");
    }
}
