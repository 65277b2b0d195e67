//! Reference MoE: token by token, expert by expert, with the reference matmul. Experts that no
//! token chose are never touched.

use super::{Expert, Moe, silu};
use crate::Weight;
use crate::matmul::{Matmul, reference};

/// `y[t] = Σ_j weights[t, j] · expert[ids[t, j]](x[t])`.
///
/// `x`, `y`: `[T, D]`; `ids`, `weights`: `[T, K]`. The routing weight scales the expert's
/// output after `w2`, as transformers does.
pub fn moe(p: Moe, x: &[f32], ids: &[u32], weights: &[f32], experts: &[Expert<'_>], y: &mut [f32]) {
    moe_with(reference::matmul, p, x, ids, weights, experts, y)
}

/// [`moe`] at [`Precision::Bf16`](crate::matmul::Precision::Bf16): each matmul's input (`x`
/// for `w1`/`w3`, the SwiGLU product for `w2`) rounded to bf16 when its weights are bf16.
pub fn moe_bf16(
    p: Moe,
    x: &[f32],
    ids: &[u32],
    weights: &[f32],
    experts: &[Expert<'_>],
    y: &mut [f32],
) {
    moe_with(reference::matmul_bf16, p, x, ids, weights, experts, y)
}

/// [`moe`] with every matmul at `precision` ([`reference::matmul_at`]).
#[expect(
    clippy::too_many_arguments,
    reason = "the public function's six plus the precision"
)]
pub fn moe_at(
    precision: crate::matmul::Precision,
    p: Moe,
    x: &[f32],
    ids: &[u32],
    weights: &[f32],
    experts: &[Expert<'_>],
    y: &mut [f32],
) {
    match precision {
        crate::matmul::Precision::F32 => moe(p, x, ids, weights, experts, y),
        crate::matmul::Precision::Bf16 => moe_bf16(p, x, ids, weights, experts, y),
        crate::matmul::Precision::Int8 => {
            moe_with(reference::matmul_int8, p, x, ids, weights, experts, y)
        }
    }
}

/// [`moe`] with the given reference matmul.
#[expect(
    clippy::too_many_arguments,
    reason = "the public function's six plus the matmul"
)]
fn moe_with(
    matmul: fn(Matmul, &[f32], Weight<'_>, &mut [f32]),
    p: Moe,
    x: &[f32],
    ids: &[u32],
    weights: &[f32],
    experts: &[Expert<'_>],
    y: &mut [f32],
) {
    p.check(x, ids, weights, y);
    let (d, f) = (p.hidden, p.ffn);
    let up = Matmul {
        rows: 1,
        k: d,
        n: f,
    };
    let down = Matmul {
        rows: 1,
        k: f,
        n: d,
    };
    let (mut gate, mut lin, mut out) = (vec![0f32; f], vec![0f32; f], vec![0f32; d]);
    for t in 0..p.n_tokens {
        let xt = &x[t * d..(t + 1) * d];
        let yt = &mut y[t * d..(t + 1) * d];
        yt.fill(0.0);
        for j in 0..p.top_k {
            let e = &experts[ids[t * p.top_k + j] as usize];
            matmul(up, xt, e.w1, &mut gate); // [F]
            matmul(up, xt, e.w3, &mut lin); // [F]
            gate.iter_mut()
                .zip(&lin)
                .for_each(|(g, &u)| *g = silu(*g) * u);
            matmul(down, &gate, e.w2, &mut out); // [D]
            let w = weights[t * p.top_k + j];
            yt.iter_mut().zip(&out).for_each(|(o, &v)| *o += w * v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Weight;

    #[test]
    fn hand_computed_two_experts() {
        // D = 1, F = 1. Expert 0: w1 = 1, w3 = 2, w2 = 3. Expert 1: w1 = 0, w3 = 1, w2 = 1.
        // x = 2: expert 0 = 3 · silu(2) · 4; expert 1 = silu(0) · 2 = 0.
        let e0 = Expert {
            w1: Weight::F32(&[1.0]),
            w3: Weight::F32(&[2.0]),
            w2: Weight::F32(&[3.0]),
        };
        let e1 = Expert {
            w1: Weight::F32(&[0.0]),
            w3: Weight::F32(&[1.0]),
            w2: Weight::F32(&[1.0]),
        };
        let mut y = [0f32];
        let p = Moe {
            n_tokens: 1,
            hidden: 1,
            ffn: 1,
            top_k: 2,
        };
        moe(p, &[2.0], &[0, 1], &[0.75, 0.25], &[e0, e1], &mut y);
        let want = 0.75 * 3.0 * (2.0 / (1.0 + (-2f32).exp())) * 4.0;
        assert!((y[0] - want).abs() < 1e-5, "{} vs {want}", y[0]);
    }

    #[test]
    fn moe_expert_with_no_tokens_is_never_read() {
        // Expert 1's weights are empty: reading them would panic.
        let e0 = Expert {
            w1: Weight::F32(&[1.0]),
            w3: Weight::F32(&[1.0]),
            w2: Weight::F32(&[1.0]),
        };
        let unused = Expert {
            w1: Weight::F32(&[]),
            w3: Weight::F32(&[]),
            w2: Weight::F32(&[]),
        };
        let mut y = [0f32; 2];
        let p = Moe {
            n_tokens: 2,
            hidden: 1,
            ffn: 1,
            top_k: 1,
        };
        moe(p, &[1.0, -1.0], &[0, 0], &[1.0, 1.0], &[e0, unused], &mut y);
        assert!((y[0] - silu(1.0)).abs() < 1e-7 && (y[1] + silu(-1.0)).abs() < 1e-7);
    }

    #[test]
    fn silu_values() {
        assert_eq!(silu(0.0), 0.0);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
    }
}
