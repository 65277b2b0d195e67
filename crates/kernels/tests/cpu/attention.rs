//! `cpu::attention` against `reference::attention`.

use crate::{config, dim};
use mixtral_kernels::Isa;
use mixtral_kernels::attention::{Attention, Kv, cpu, reference};
use mixtral_testkit::{Tol, run, uniform};
use proptest::prelude::*;

/// Every ISA on one case; `Err` names it. `positions` must end at `cached - 1` or before.
fn check(p: Attention, positions: &[usize], cached: usize, seed: u64) -> Result<(), String> {
    let (qw, kvw) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
    let q = uniform(positions.len() * qw, seed);
    let k: Vec<f32> = uniform(cached * kvw, seed ^ 1)
        .iter()
        .map(|v| v * 3.0)
        .collect();
    let v = uniform(cached * kvw, seed ^ 2);
    let want = run(q.len(), |o| {
        reference::attention(p, &q, positions, &k, &v, o)
    });
    // The same keys and values by head (the model's cache), with room to spare.
    let capacity = cached + 3;
    let (kh, vh) = (by_head(p, &k, capacity), by_head(p, &v, capacity));
    let heads = Kv::by_head(p, &kh, &vh, cached, capacity);
    let same = run(q.len(), |o| {
        reference::attention_kv(p, &q, positions, heads, o)
    });
    if same != want {
        return Err(format!("{p:?}: the reference differs by layout"));
    }
    for isa in Isa::available() {
        let what = format!("{p:?} positions {positions:?} cached {cached} {isa}");
        let tol = Tol::reduction_f32(cached.max(p.head_dim));
        let got = run(q.len(), |o| {
            cpu::attention(isa, p, &q, positions, &k, &v, o)
        });
        tol.check(&what, &got, &want)?;
        let got = run(q.len(), |o| {
            cpu::attention_kv(isa, p, &q, positions, heads, o)
        });
        tol.check(&format!("{what} by head"), &got, &want)?;
    }
    half_precision::<half::f16>(p, positions, cached, &q, (&kh, &vh), capacity)?;
    half_precision::<half::bf16>(p, positions, cached, &q, (&kh, &vh), capacity)?;
    for page in [1, 3, 16, 64] {
        paged_layout(p, positions, cached, &q, (&k, &v), page, seed, &want)?;
    }
    Ok(())
}

/// The same keys and values in pages of `page` positions, in a shuffled order among spare
/// NaN pages (a read through the wrong page poisons the result): the reference gives the
/// contiguous result's bits (it sums in the same order), every ISA is within tolerance of it.
#[expect(clippy::too_many_arguments, reason = "one test case's parts")]
fn paged_layout(
    p: Attention,
    positions: &[usize],
    cached: usize,
    q: &[f32],
    (k, v): (&[f32], &[f32]),
    page: usize,
    seed: u64,
    want: &[f32],
) -> Result<(), String> {
    let used = cached.div_ceil(page);
    let n_pages = used * 2 + 1;
    // Page i of the sequence goes to slot table[i]: a seeded shuffle of the pool's slots.
    let mut slots: Vec<u32> = (0..n_pages as u32).collect();
    let mut x = seed | 1;
    for i in (1..slots.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        slots.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let table = &slots[..used];
    let (kp, vp) = (
        paged(p, k, page, table, n_pages),
        paged(p, v, page, table, n_pages),
    );
    let kv = Kv::paged(p, &kp, &vp, cached, table, page);
    let what = format!("{p:?} pages of {page}, cached {cached}");
    let got = run(q.len(), |o| reference::attention_kv(p, q, positions, kv, o));
    if got != want {
        return Err(format!("{what}: the reference differs when paged"));
    }
    for isa in Isa::available() {
        let got = run(q.len(), |o| cpu::attention_kv(isa, p, q, positions, kv, o));
        Tol::reduction_f32(cached.max(p.head_dim)).check(&format!("{what} {isa}"), &got, want)?;
    }
    Ok(())
}

/// `[S, G·Dh]` rows laid out in `n_pages` pages of `[G, page, Dh]`, run `i` of `page`
/// positions in page `table[i]`; everything else NaN.
fn paged(p: Attention, rows: &[f32], page: usize, table: &[u32], n_pages: usize) -> Vec<f32> {
    let (g_n, dh) = (p.n_kv_heads, p.head_dim);
    let stride = g_n * page * dh;
    let mut out = vec![f32::NAN; n_pages * stride];
    for (s, row) in rows.chunks_exact(g_n * dh).enumerate() {
        for (g, head) in row.chunks_exact(dh).enumerate() {
            let at = table[s / page] as usize * stride + (g * page + s % page) * dh;
            out[at..at + dh].copy_from_slice(head);
        }
    }
    out
}

/// The same cache rounded to f16 or bf16 (the model's half-precision KV cache): every ISA
/// against the reference reading the same rounded values.
fn half_precision<T: mixtral_kernels::isa::Elem + HalfFrom>(
    p: Attention,
    positions: &[usize],
    cached: usize,
    q: &[f32],
    (kh, vh): (&[f32], &[f32]),
    capacity: usize,
) -> Result<(), String> {
    // NaN padding stays NaN after rounding: a read past the held positions still poisons.
    let (k, v): (Vec<T>, Vec<T>) = (
        kh.iter().map(|&x| T::round(x)).collect(),
        vh.iter().map(|&x| T::round(x)).collect(),
    );
    let kv = Kv::by_head(p, &k, &v, cached, capacity);
    let want = run(q.len(), |o| reference::attention_kv(p, q, positions, kv, o));
    for isa in Isa::available() {
        let what = format!(
            "{p:?} {} cache, cached {cached} {isa}",
            std::any::type_name::<T>()
        );
        let got = run(q.len(), |o| cpu::attention_kv(isa, p, q, positions, kv, o));
        Tol::reduction_f32(cached.max(p.head_dim)).check(&what, &got, &want)?;
    }
    Ok(())
}

/// Rounding an f32 to a half-precision type (nearest even).
trait HalfFrom {
    fn round(x: f32) -> Self;
}

impl HalfFrom for half::f16 {
    fn round(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

impl HalfFrom for half::bf16 {
    fn round(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

/// `[S, G·Dh]` rows re-laid out as `[G, capacity, Dh]`, the unused positions NaN (read by
/// mistake, they poison the result).
fn by_head(p: Attention, rows: &[f32], capacity: usize) -> Vec<f32> {
    let (g_n, dh) = (p.n_kv_heads, p.head_dim);
    let mut out = vec![f32::NAN; g_n * capacity * dh];
    for (s, row) in rows.chunks_exact(g_n * dh).enumerate() {
        for (g, head) in row.chunks_exact(dh).enumerate() {
            let at = (g * capacity + s) * dh;
            out[at..at + dh].copy_from_slice(head);
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn attention_matches_reference(
        n_kv_heads in 1usize..=3,
        group in prop::sample::select(vec![1usize, 2, 4, 9]),
        head_dim in dim(),
        n_tokens in 1usize..=9,
        past in prop_oneof![0usize..=17, 60usize..=140],
        window in prop::option::of(1usize..=70),
        seed: u64,
    ) {
        let p = Attention { n_heads: n_kv_heads * group, n_kv_heads, head_dim, window };
        let positions: Vec<usize> = (past..past + n_tokens).collect();
        check(p, &positions, past + n_tokens, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn attention_window_edge() {
    // Window 64 = one online-softmax block: positions just below, at and past the edge.
    let p = Attention {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        window: Some(64),
    };
    for last in [62, 63, 64, 65, 128, 129] {
        check(p, &[last], last + 1, last as u64).unwrap();
    }
}

#[test]
fn attention_mixtral_head_shape_in_parallel() {
    // Dh = 128, H = 8, G = 2: enough work for the rayon split, several KV blocks.
    let p = Attention {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 128,
        window: None,
    };
    let positions: Vec<usize> = (200..204).collect();
    check(p, &positions, 210, 9).unwrap();
}

#[test]
fn attention_vector_paths_for_head_widths_and_group_sizes() {
    // Dh a multiple of 16 (two columns per pass), of 8 only (one), and neither (per-pair
    // fallback); groups of 4 (heads reduced together), 5 (4 + 1) and 3 (one at a time); more
    // than one KV block.
    for (i, (head_dim, group)) in [(16, 4), (24, 4), (64, 5), (8, 3), (20, 4)]
        .into_iter()
        .enumerate()
    {
        let p = Attention {
            n_heads: 2 * group,
            n_kv_heads: 2,
            head_dim,
            window: None,
        };
        check(p, &[150, 151], 152, i as u64).unwrap();
    }
}

#[test]
#[should_panic(expected = "page 2 ends at")]
fn a_page_table_naming_a_page_past_the_cache_is_refused() {
    let p = Attention {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 4,
        window: None,
    };
    // Two pages of 2 positions hold 16 floats; the table's second entry names a third.
    let (k, v) = (vec![0f32; 16], vec![0f32; 16]);
    let kv = Kv::paged(p, &k, &v, 3, &[0, 2], 2);
    let mut out = vec![0f32; 4];
    cpu::attention_kv(Isa::Scalar, p, &[1.0; 4], &[2], kv, &mut out);
}
