//! Fast CPU router: the reference's softmax and top-k without its per-call allocation or its
//! quadratic "already taken?" scan. Twin of
//! [`reference::router_top_k`](super::reference::router_top_k).
//!
//! With `E = 8` experts there is nothing worth vectorising (a few dozen flops per token), so
//! every ISA runs this code; the arithmetic is the reference's, in the same order, so the
//! chosen ids and the weights are bit-identical, ties included (the lower index wins).

use super::Router;
use crate::Isa;

/// Experts handled with stack buffers; more fall back to a heap buffer per call.
const STACK_EXPERTS: usize = 64;

/// Same contract as [`reference::router_top_k`](super::reference::router_top_k): each
/// token's chosen experts (`ids`, `[T, K]`, most probable first) and their weights.
pub fn router_top_k(_isa: Isa, p: Router, logits: &[f32], ids: &mut [u32], weights: &mut [f32]) {
    assert!(p.top_k <= p.n_experts, "router: {p:?}");
    assert_eq!(
        logits.len(),
        p.n_tokens * p.n_experts,
        "router: logits length for {p:?}"
    );
    assert_eq!(
        ids.len(),
        p.n_tokens * p.top_k,
        "router: ids length for {p:?}"
    );
    assert_eq!(weights.len(), ids.len(), "router: weights length for {p:?}");
    if p.top_k == 0 {
        return;
    }
    let (mut probs_stack, mut taken_stack) = ([0f32; STACK_EXPERTS], [false; STACK_EXPERTS]);
    let (mut probs_heap, mut taken_heap);
    let (probs, taken): (&mut [f32], &mut [bool]) = if p.n_experts <= STACK_EXPERTS {
        (
            &mut probs_stack[..p.n_experts],
            &mut taken_stack[..p.n_experts],
        )
    } else {
        probs_heap = vec![0f32; p.n_experts];
        taken_heap = vec![false; p.n_experts];
        (&mut probs_heap, &mut taken_heap)
    };
    for ((row, ids), weights) in logits
        .chunks_exact(p.n_experts)
        .zip(ids.chunks_exact_mut(p.top_k))
        .zip(weights.chunks_exact_mut(p.top_k))
    {
        softmax(row, probs);
        taken.fill(false);
        for (id, w) in ids.iter_mut().zip(weights.iter_mut()) {
            // The largest probability not yet taken; strict `>` keeps the lowest index.
            let mut best = usize::MAX;
            for (e, &pr) in probs.iter().enumerate() {
                if !taken[e] && (best == usize::MAX || pr > probs[best]) {
                    best = e;
                }
            }
            taken[best] = true;
            *id = best as u32;
            *w = probs[best];
        }
        if p.norm_topk_prob {
            let sum: f32 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
        }
    }
}

/// The reference's numerically stable f32 softmax, operation for operation.
fn softmax(x: &[f32], out: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - max).exp();
        sum += *o;
    }
    out.iter_mut().for_each(|o| *o /= sum);
}
