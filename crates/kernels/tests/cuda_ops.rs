//! The CUDA backend: what runs without a GPU (no driver is an error, not a panic; NVRTC
//! compiles every source through the runtime path when libnvrtc is present), and every op
//! against its reference twin on random data when a GPU is there.
//!
//! Without a GPU the device tests print `skipped: no CUDA driver (…)` and pass; with
//! `MIXTRAL_REQUIRE_GPU=1` (set by the `cargo xtask gpu-check` script) they fail instead.
//! bf16 kernels are compared with references fed the same bf16-rounded inputs, so tolerances
//! measure the kernel (and its one bf16 output rounding), not the input cast.

use half::bf16;
use mixtral_kernels::Weight;
use mixtral_kernels::attention::{Attention, reference as att_ref};
use mixtral_kernels::cuda::{
    CudaBackend, DeviceBuffer, DeviceMatrix, Error, F16, KvElement, Storage, compile, fill,
    library, source,
};
use mixtral_kernels::matmul::{Matmul, reference as mm_ref};
use mixtral_kernels::moe::{Expert, Moe, reference as moe_ref};
use mixtral_kernels::rmsnorm::{RmsNorm, reference as norm_ref};
use mixtral_kernels::rope::{Rope, reference as rope_ref};
use mixtral_kernels::router::{Router, reference as router_ref};
use mixtral_testkit::{argmax, check_close, check_rel, max_abs, uniform};

/// The device, or `None` after printing why the test is skipped.
fn gpu() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("MIXTRAL_REQUIRE_GPU").is_some() => {
            panic!("MIXTRAL_REQUIRE_GPU is set but CudaBackend::new(0) failed: {e}")
        }
        Err(e) => {
            println!("skipped: no CUDA driver ({e})");
            None
        }
    }
}

fn round_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

fn scaled(n: usize, seed: u64, s: f32) -> Vec<f32> {
    uniform(n, seed).into_iter().map(|v| v * s).collect()
}

// ---- no GPU needed ------------------------------------------------------------------------

#[test]
fn no_driver_is_an_error_not_a_panic() {
    let first = CudaBackend::new(0);
    let again = CudaBackend::new(0);
    if library::probe_driver().is_err() {
        // This machine has no libcuda.so.1: exactly `NoDriver`, twice (the probe is cached).
        for r in [&first, &again] {
            match r {
                Err(Error::NoDriver { tried }) => {
                    assert!(
                        tried.iter().any(|t| t.contains("libcuda.so.1")),
                        "{tried:?}"
                    );
                    let msg = r.as_ref().unwrap_err().to_string();
                    assert!(msg.starts_with("no CUDA driver: could not load "), "{msg}");
                }
                other => panic!("expected Err(NoDriver), got {other:?}"),
            }
        }
        println!("CudaBackend::new(0): {}", first.unwrap_err());
    } else {
        match first {
            Ok(b) => println!("device 0: {} (sm_{:?})", b.name(), b.compute_capability()),
            Err(e) => assert!(!matches!(e, Error::Panicked { .. }), "cudarc panicked: {e}"),
        }
    }
}

#[test]
fn nvrtc_compiles_every_source_through_the_runtime_path() {
    let sources: Vec<&'static source::Source> = source::ALL.iter().chain([&fill::SOURCE]).collect();
    for arch in ["compute_80", "compute_90"] {
        for &src in &sources {
            let ptx = match compile::compile_ptx(src, arch) {
                Err(Error::NoNvrtc { tried }) => {
                    println!("skipped: no NVRTC ({})", tried.join(", "));
                    return;
                }
                r => r.unwrap_or_else(|e| panic!("{e}")),
            };
            for name in src.entry_points() {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{} ({arch}): `{name}` missing from the PTX",
                    src.file
                );
            }
            let cached = compile::compile_ptx(src, arch).unwrap();
            assert!(std::sync::Arc::ptr_eq(&ptx, &cached), "compiled twice");
        }
        println!("{arch}: {} sources compiled", sources.len());
    }
}

// ---- GPU: every op against its twin ------------------------------------------------------

#[test]
fn fill_matches_testkit_uniform() {
    let Some(gpu) = gpu() else { return };
    let mut f = gpu.alloc::<f32>(1000, "f").unwrap();
    gpu.fill_uniform_f32(&mut f, 42, 1.0).unwrap();
    assert_eq!(gpu.read(&f, 1000).unwrap(), uniform(1000, 42));
    let mut b = gpu.alloc::<u16>(777, "b").unwrap();
    gpu.fill_uniform_bf16(&mut b, 7, 0.5).unwrap();
    let want = round_bf16(&scaled(777, 7, 0.5));
    assert_eq!(gpu.read_bf16_as_f32(&b, 777).unwrap(), want);
}

#[test]
fn matmul_gemv_and_dense_gemm_match_reference() {
    let Some(gpu) = gpu() else { return };
    let shapes = [
        (1, 64, 10),
        (2, 4096, 33),
        (8, 128, 1000),
        (9, 64, 130),
        (63, 96, 62),
        (65, 128, 64),
        (130, 4096, 258),
    ];
    for (i, &(rows, k, n)) in shapes.iter().enumerate() {
        let p = Matmul { rows, k, n };
        let x = round_bf16(&uniform(rows * k, i as u64));
        let w = to_bf16(&uniform(n * k, 100 + i as u64));
        let want = mixtral_testkit::run(rows * n, |y| mm_ref::matmul(p, &x, Weight::BF16(&w), y));
        let dx = gpu.upload_f32_as_bf16(&x, "x").unwrap();
        let dw = DeviceMatrix::Bf16(
            gpu.upload(&w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "w")
                .unwrap(),
        );
        let mut dy = gpu.alloc::<f32>(rows * n, "y").unwrap();
        gpu.matmul(p, &dx, &dw, &mut dy).unwrap();
        let got = gpu.read(&dy, rows * n).unwrap();
        let s = (k as f32).sqrt();
        check_close(&format!("matmul {p:?}"), &got, &want, 2e-5 * s, 1e-4).unwrap();
    }
}

#[test]
fn rms_norm_and_residual_match_reference() {
    let Some(gpu) = gpu() else { return };
    for (i, &(rows, cols, scale)) in [
        (1, 64, 1.0),
        (5, 4096, 1.0),
        (3, 8192, 300.0),
        (7, 130, 1e-3),
    ]
    .iter()
    .enumerate()
    {
        let p = RmsNorm {
            rows,
            cols,
            eps: 1e-5,
        };
        let (h, r) = (
            scaled(rows * cols, i as u64, scale),
            scaled(rows * cols, 50 + i as u64, scale),
        );
        let w = to_bf16(&scaled(cols, 99, 1.4));
        let dw = gpu
            .upload(&w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "w")
            .unwrap();
        let dx = gpu.upload(&h, "x").unwrap();
        let mut dy = gpu.alloc::<u16>(rows * cols, "y").unwrap();
        gpu.rms_norm(p, &dx, &dw, &mut dy).unwrap();
        let want =
            mixtral_testkit::run(h.len(), |y| norm_ref::rms_norm(p, &h, Weight::BF16(&w), y));
        let got = gpu.read_bf16_as_f32(&dy, h.len()).unwrap();
        check_close(&format!("rms_norm {p:?}"), &got, &want, 1e-6, 8e-3).unwrap();

        let mut dh = gpu.upload(&h, "h").unwrap();
        let dr = gpu.upload(&r, "r").unwrap();
        gpu.rms_norm_residual(p, &mut dh, &dr, &dw, &mut dy)
            .unwrap();
        let sum: Vec<f32> = h.iter().zip(&r).map(|(a, b)| a + b).collect();
        assert_eq!(gpu.read(&dh, sum.len()).unwrap(), sum, "h += r");
        let want = mixtral_testkit::run(h.len(), |y| {
            norm_ref::rms_norm(p, &sum, Weight::BF16(&w), y)
        });
        let got = gpu.read_bf16_as_f32(&dy, h.len()).unwrap();
        check_close(&format!("rms_norm_residual {p:?}"), &got, &want, 1e-6, 8e-3).unwrap();
    }
}

#[test]
fn rope_and_rope_kv_match_reference() {
    let Some(gpu) = gpu() else { return };
    for (heads, kv_heads, dh, start, n, interleaved) in [
        (4, 2, 16, 0, 5, false),
        (32, 8, 128, 4090, 9, false),
        (2, 1, 128, 0, 40, false),
        (4, 2, 16, 0, 5, true),
        (32, 8, 128, 4090, 9, true),
    ] {
        let positions: Vec<usize> = (start..start + n).collect();
        let dpos = gpu.upload_positions(&positions).unwrap();
        let q = uniform(n * heads * dh, 1);
        let mut dq = gpu.upload(&q, "q").unwrap();
        let pq = Rope {
            n_heads: heads,
            head_dim: dh,
            theta: 1e6,
            interleaved,
        };
        gpu.rope(pq, &dpos, &mut dq).unwrap();
        let mut want = q.clone();
        rope_ref::rope(pq, &positions, &mut want);
        check_close("rope", &gpu.read(&dq, q.len()).unwrap(), &want, 1e-6, 1e-5).unwrap();

        let width = kv_heads * dh;
        let (k, v) = (uniform(n * width, 2), uniform(n * width, 3));
        let (dk, dv) = (gpu.upload(&k, "k").unwrap(), gpu.upload(&v, "v").unwrap());
        let rows = start + n;
        let mut kc = gpu.alloc::<u16>(rows * width, "kc").unwrap();
        let mut vc = gpu.alloc::<u16>(rows * width, "vc").unwrap();
        let pk = Rope {
            n_heads: kv_heads,
            ..pq
        };
        gpu.rope_kv(pk, &dpos, &dk, &dv, &mut kc, &mut vc).unwrap();
        let mut kr = k.clone();
        rope_ref::rope(pk, &positions, &mut kr);
        let got_k = gpu.read_bf16_as_f32(&kc, rows * width).unwrap();
        let got_v = gpu.read_bf16_as_f32(&vc, rows * width).unwrap();
        check_close("rope_kv k", &got_k[start * width..], &kr, 1e-6, 8e-3).unwrap();
        assert_eq!(&got_v[start * width..], &round_bf16(&v)[..], "rope_kv v");
        let bad = gpu.upload_positions(&[rows]).unwrap();
        assert!(matches!(
            gpu.rope_kv(pk, &bad, &dk, &dv, &mut kc, &mut vc),
            Err(Error::Shape { .. })
        ));
    }
}

#[test]
fn router_top_k_matches_reference() {
    let Some(gpu) = gpu() else { return };
    for (t, e, k, norm) in [
        (1, 8, 2, true),
        (37, 8, 2, true),
        (50, 6, 3, true),
        (20, 32, 4, false),
        (9, 5, 5, true),
    ] {
        let p = Router {
            n_tokens: t,
            n_experts: e,
            top_k: k,
            norm_topk_prob: norm,
        };
        let logits = scaled(t * e, 11, 4.0);
        let dl = gpu.upload(&logits, "logits").unwrap();
        let mut routing = gpu.alloc_routing(t, e, k).unwrap();
        gpu.router_top_k(p, &dl, &mut routing).unwrap();
        let (mut ids, mut w) = (vec![0u32; t * k], vec![0f32; t * k]);
        router_ref::router_top_k(p, &logits, &mut ids, &mut w);
        assert_eq!(
            gpu.read(&routing.ids, t * k).unwrap(),
            ids,
            "router ids {p:?}"
        );
        check_close(
            "router weights",
            &gpu.read(&routing.weights, t * k).unwrap(),
            &w,
            1e-6,
            1e-5,
        )
        .unwrap();
    }
}

/// One MoE case on the device against the reference; `ids` given means fixed routing.
fn moe_case(gpu: &CudaBackend, p: Moe, n_experts: usize, ids: Option<Vec<u32>>, seed: u64) {
    let (d, f) = (p.hidden, p.ffn);
    let x = round_bf16(&uniform(p.n_tokens * d, seed));
    let ws: Vec<[Vec<bf16>; 3]> = (0..n_experts as u64)
        .map(|e| {
            [f * d, d * f, f * d].map(|n| to_bf16(&scaled(n, seed * 100 + e * 3 + n as u64, 0.2)))
        })
        .collect();
    let ids = ids.unwrap_or_else(|| {
        uniform(p.n_tokens, seed ^ 5)
            .iter()
            .flat_map(|u| {
                let first = ((u + 1.0) / 2.0 * n_experts as f32) as usize % n_experts;
                (0..p.top_k).map(move |j| ((first + j * 3) % n_experts) as u32)
            })
            .collect()
    });
    let weights: Vec<f32> = uniform(ids.len(), seed ^ 9)
        .iter()
        .map(|v| 0.5 + 0.4 * v)
        .collect();
    let experts: Vec<Expert<'_>> = ws
        .iter()
        .map(|[w1, w2, w3]| Expert {
            w1: Weight::BF16(w1),
            w2: Weight::BF16(w2),
            w3: Weight::BF16(w3),
        })
        .collect();
    let want = mixtral_testkit::run(x.len(), |y| {
        moe_ref::moe(p, &x, &ids, &weights, &experts, y)
    });

    let mut de = gpu
        .alloc_experts(n_experts, d, f, [Storage::Bf16; 2], "experts")
        .unwrap();
    let mut progress_cb = |_: usize, _: usize| {};
    let mut progress = mixtral_kernels::cuda::Progress::new(0, &mut progress_cb);
    for (e, [w1, w2, w3]) in ws.iter().enumerate() {
        gpu.write_matrix(&mut de.w1, e * f * d, Weight::BF16(w1), &mut progress)
            .unwrap();
        gpu.write_matrix(&mut de.w2, e * f * d, Weight::BF16(w2), &mut progress)
            .unwrap();
        gpu.write_matrix(&mut de.w3, e * f * d, Weight::BF16(w3), &mut progress)
            .unwrap();
    }
    let routing = gpu
        .upload_routing(&ids, &weights, n_experts, p.top_k)
        .unwrap();
    let dx = gpu.upload_f32_as_bf16(&x, "x").unwrap();
    let mut scratch = gpu.alloc_moe_scratch(p, n_experts).unwrap();
    let mut dy: DeviceBuffer<f32> = gpu.alloc(x.len(), "y").unwrap();
    gpu.moe(p, &dx, &routing, &de, &mut scratch, &mut dy)
        .unwrap();
    let got = gpu.read(&dy, x.len()).unwrap();
    // The kernel rounds silu(w1 x) ⊙ w3 x to bf16 once; the reference keeps it in f32.
    let w = check_rel(&format!("moe {p:?} E={n_experts}"), &got, &want, 1e-2).unwrap();
    println!(
        "moe {p:?} E={n_experts}: max |diff| / max |ref| = {:.2e}",
        w.rel
    );
}

#[test]
fn moe_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let p = |n_tokens, hidden, ffn, top_k| Moe {
        n_tokens,
        hidden,
        ffn,
        top_k,
    };
    // One token: six of eight experts get nothing (the decode shape).
    moe_case(&gpu, p(1, 64, 128, 2), 8, None, 1);
    moe_case(&gpu, p(5, 64, 96, 3), 6, None, 2);
    moe_case(&gpu, p(33, 128, 256, 2), 8, None, 3);
    moe_case(&gpu, p(130, 256, 512, 2), 8, None, 4);
    // An expert with more than one 64-row tile and experts with none.
    moe_case(
        &gpu,
        p(100, 64, 128, 2),
        8,
        Some((0..100).flat_map(|_| [3, 5]).collect()),
        5,
    );
    // Every expert for every token (top_k = E).
    moe_case(
        &gpu,
        p(9, 64, 64, 4),
        4,
        Some((0..9).flat_map(|_| [2, 0, 3, 1]).collect()),
        6,
    );
}

#[allow(clippy::too_many_arguments)]
/// A KV cache element type's rounding, for the references: `to` the device type and back.
#[derive(Clone, Copy)]
struct Round<T> {
    to: fn(f32) -> T,
    from: fn(T) -> f32,
}

const BF16: Round<u16> = Round {
    to: |x| bf16::from_f32(x).to_bits(),
    from: |b| bf16::from_bits(b).to_f32(),
};

const F16_: Round<F16> = Round {
    to: |x| F16(half::f16::from_f32(x).to_bits()),
    from: |h| half::f16::from_bits(h.0).to_f32(),
};

const F32_: Round<f32> = Round {
    to: |x| x,
    from: |x| x,
};

fn attention_case(gpu: &CudaBackend, p: Attention, start: usize, n: usize, seed: u64) {
    attention_case_as(gpu, p, start, n, seed, BF16);
}

/// Prefill and decode attention over caches of `T` holding `start + n` random rows, against
/// the reference given the same rounded keys and values.
fn attention_case_as<T: KvElement>(
    gpu: &CudaBackend,
    p: Attention,
    start: usize,
    n: usize,
    seed: u64,
    r: Round<T>,
) {
    let (qw, kvw) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
    let rows = start + n;
    let q = uniform(n * qw, seed);
    let k: Vec<T> = scaled(rows * kvw, seed ^ 1, 3.0)
        .into_iter()
        .map(r.to)
        .collect();
    let v: Vec<T> = uniform(rows * kvw, seed ^ 2)
        .into_iter()
        .map(r.to)
        .collect();
    let (kf, vf): (Vec<f32>, Vec<f32>) = (
        k.iter().map(|&x| (r.from)(x)).collect(),
        v.iter().map(|&x| (r.from)(x)).collect(),
    );
    let positions: Vec<usize> = (start..rows).collect();
    let want = mixtral_testkit::run(q.len(), |o| {
        att_ref::attention(p, &q, &positions, &kf, &vf, o)
    });
    let (kc, vc) = (gpu.upload(&k, "kc").unwrap(), gpu.upload(&v, "vc").unwrap());
    let dq = gpu.upload(&q, "q").unwrap();
    let mut out = gpu.alloc::<u16>(q.len(), "out").unwrap();
    let dpos = gpu.upload_positions(&positions).unwrap();
    gpu.attention_prefill(p, &dq, &dpos, &kc, &vc, rows, &mut out)
        .unwrap();
    let got = gpu.read_bf16_as_f32(&out, q.len()).unwrap();
    let name = std::any::type_name::<T>();
    check_close(
        &format!("attention_prefill {name} {p:?} {start}+{n}"),
        &got,
        &want,
        1e-4,
        8e-3,
    )
    .unwrap();
    // Decode: the last query alone.
    let mut scratch = gpu.alloc_decode_scratch(p.n_heads, p.head_dim).unwrap();
    let last = gpu.upload_positions(&[rows - 1]).unwrap();
    let dq1 = gpu.upload(&q[(n - 1) * qw..], "q1").unwrap();
    gpu.attention_decode(p, &dq1, &last, &kc, &vc, rows, &mut scratch, &mut out)
        .unwrap();
    let got = gpu.read_bf16_as_f32(&out, qw).unwrap();
    check_close(
        &format!("attention_decode {name} {p:?} at {}", rows - 1),
        &got,
        &want[(n - 1) * qw..],
        1e-4,
        8e-3,
    )
    .unwrap();
}

#[test]
fn attention_prefill_and_decode_match_reference() {
    let Some(gpu) = gpu() else { return };
    let p = |h, g, dh, window| Attention {
        n_heads: h,
        n_kv_heads: g,
        head_dim: dh,
        window,
    };
    attention_case(&gpu, p(4, 2, 16, None), 0, 5, 1);
    attention_case(&gpu, p(4, 1, 16, Some(16)), 0, 130, 2);
    attention_case(&gpu, p(2, 1, 128, None), 0, 40, 3);
    attention_case(&gpu, p(32, 8, 128, None), 0, 77, 4);
    attention_case(&gpu, p(32, 8, 128, None), 20, 20, 5); // continuing a cache
    attention_case(&gpu, p(32, 8, 128, None), 2047, 1, 6); // long context, decode splits
    attention_case(&gpu, p(32, 8, 128, Some(4096)), 5000, 3, 7); // window past the start
}

/// rope_kv into a cache of `T` against the reference rotation rounded as `T` rounds.
fn rope_kv_case<T: KvElement>(gpu: &CudaBackend, r: Round<T>) {
    let name = std::any::type_name::<T>();
    let pk = Rope {
        n_heads: 8,
        head_dim: 128,
        theta: 1e6,
        interleaved: false,
    };
    let (n, kvw) = (37, 8 * 128);
    let positions: Vec<usize> = (0..n).collect();
    let dpos = gpu.upload_positions(&positions).unwrap();
    let (k, v) = (scaled(n * kvw, 11, 3.0), uniform(n * kvw, 12));
    let (dk, dv) = (gpu.upload(&k, "k").unwrap(), gpu.upload(&v, "v").unwrap());
    let mut kc = gpu.alloc::<T>(n * kvw, "kc").unwrap();
    let mut vc = gpu.alloc::<T>(n * kvw, "vc").unwrap();
    gpu.rope_kv(pk, &dpos, &dk, &dv, &mut kc, &mut vc).unwrap();
    let round = |x: &[f32]| -> Vec<f32> { x.iter().map(|&x| (r.from)((r.to)(x))).collect() };
    let back = |b: &DeviceBuffer<T>| -> Vec<f32> {
        gpu.read(b, n * kvw)
            .unwrap()
            .into_iter()
            .map(r.from)
            .collect()
    };
    let mut kr = k.clone();
    rope_ref::rope(pk, &positions, &mut kr);
    check_close(
        &format!("rope_kv k {name}"),
        &back(&kc),
        &round(&kr),
        1e-6,
        8e-3,
    )
    .unwrap();
    assert_eq!(back(&vc), round(&v), "rope_kv v {name}");
}

#[test]
fn f16_and_f32_kv_caches_match_reference() {
    let Some(gpu) = gpu() else { return };
    let p = Attention {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
        window: None,
    };
    rope_kv_case(&gpu, F16_);
    rope_kv_case(&gpu, F32_);
    attention_case_as(&gpu, p, 0, 37, 8, F16_);
    attention_case_as(&gpu, p, 2047, 1, 9, F16_); // decode splits
    attention_case_as(&gpu, p, 0, 37, 10, F32_);
    attention_case_as(&gpu, p, 2047, 1, 11, F32_);
}

#[test]
fn embedding_and_argmax_are_exact() {
    let Some(gpu) = gpu() else { return };
    let (vocab, cols) = (1000, 64);
    let table = round_bf16(&uniform(vocab * cols, 3));
    let dt = gpu.upload_f32_as_bf16(&table, "table").unwrap();
    let ids = [0u32, 999, 5, 5, 17];
    let dids = gpu.upload_tokens(&ids, vocab).unwrap();
    let mut out = gpu.alloc::<f32>(ids.len() * cols, "out").unwrap();
    let dt = DeviceMatrix::Bf16(dt);
    gpu.embedding(&dids, &dt, cols, &mut out).unwrap();
    let dt = dt.as_bf16().expect("bf16");
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| table[i as usize * cols..][..cols].to_vec())
        .collect();
    assert_eq!(gpu.read(&out, want.len()).unwrap(), want);
    let mut out16 = gpu.alloc::<u16>(ids.len() * cols, "out16").unwrap();
    gpu.embedding_bf16(&dids, dt, cols, &mut out16).unwrap();
    assert_eq!(gpu.read_bf16_as_f32(&out16, want.len()).unwrap(), want);
    assert!(matches!(
        gpu.upload_tokens(&[1000], vocab),
        Err(Error::Input { .. })
    ));

    for (rows, cols) in [(1, 32000), (3, 1024), (2, 7)] {
        let mut logits = uniform(rows * cols, rows as u64);
        logits[cols - 1] = 2.0; // a tie-free maximum at the end of row 0
        let dl = gpu.upload(&logits, "logits").unwrap();
        let mut ids = gpu.alloc::<u32>(rows, "ids").unwrap();
        gpu.argmax(&dl, rows, cols, &mut ids).unwrap();
        let want: Vec<u32> = logits.chunks(cols).map(|r| argmax(r) as u32).collect();
        assert_eq!(gpu.read(&ids, rows).unwrap(), want);
    }
    let ties = vec![1.0f32; 100];
    let dl = gpu.upload(&ties, "ties").unwrap();
    let mut ids = gpu.alloc::<u32>(1, "ids").unwrap();
    gpu.argmax(&dl, 1, 100, &mut ids).unwrap();
    assert_eq!(
        gpu.read(&ids, 1).unwrap(),
        [0],
        "ties go to the lower index"
    );
    assert!(max_abs(&ties) == 1.0);
}

#[test]
fn residual_add_is_exact() {
    let Some(gpu) = gpu() else { return };
    for n in [1usize, 255, 256, 257, 4096 * 3 + 5] {
        let (h, y) = (uniform(n, 1), uniform(n, 2));
        let mut dh = gpu.upload(&h, "h").unwrap();
        let dy = gpu.upload(&y, "y").unwrap();
        // Only the first n - 1 elements: the last one must stay as it was.
        gpu.add(&mut dh, &dy, n - 1).unwrap();
        let mut want: Vec<f32> = h.iter().zip(&y).map(|(a, b)| a + b).collect();
        want[n - 1] = h[n - 1];
        assert_eq!(gpu.read(&dh, n).unwrap(), want, "n = {n}");
    }
    let mut short = gpu.alloc::<f32>(4, "h").unwrap();
    let y = gpu.alloc::<f32>(8, "y").unwrap();
    assert!(gpu.add(&mut short, &y, 8).is_err(), "h shorter than n");
}

#[test]
fn launchers_reject_bad_shapes_on_the_device() {
    let Some(gpu) = gpu() else { return };
    let x = gpu.alloc::<u16>(9 * 64, "x").unwrap();
    let w = DeviceMatrix::Bf16(gpu.alloc::<u16>(64 * 10, "w").unwrap());
    let mut y = gpu.alloc::<f32>(9 * 10, "y").unwrap();
    let gemv = gpu.matmul_gemv(
        Matmul {
            rows: 9,
            k: 64,
            n: 10,
        },
        &x,
        &w,
        &mut y,
    );
    assert!(matches!(gemv, Err(Error::Limit { .. })), "{gemv:?}");
    let short = gpu.matmul(
        Matmul {
            rows: 9,
            k: 64,
            n: 11,
        },
        &x,
        &w,
        &mut y,
    );
    assert!(
        matches!(short, Err(Error::Limit { .. } | Error::Shape { .. })),
        "{short:?}"
    );
    let huge = gpu.alloc::<u8>(1 << 50, "a petabyte");
    match huge {
        Err(Error::OutOfMemory { bytes, .. }) => assert_eq!(bytes, 1 << 50),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

// ---- GPU: weights kept in GGUF blocks ------------------------------------------------------

use mixtral_kernels::QuantBlocks;
use mixtral_kernels::cuda::BlockType;
use mixtral_kernels::dequant::{dequantize, random_blocks};

/// Random blocks of `t` for `values` values, and the matrix they make on the device.
fn block_matrix(
    gpu: &CudaBackend,
    t: BlockType,
    values: usize,
    seed: u64,
) -> (Vec<u8>, DeviceMatrix) {
    let dtype = t.dtype();
    let bytes = random_blocks(dtype, values / dtype.block_len(), seed, 0.5).expect("a block type");
    let w = Weight::Quant(QuantBlocks::new(dtype, &bytes));
    let mut cb = |_: usize, _: usize| {};
    let mut progress = mixtral_kernels::cuda::Progress::new(bytes.len(), &mut cb);
    let m = gpu
        .upload_matrix(Storage::Blocks(t), w, "blocks", &mut progress)
        .unwrap();
    assert_eq!((m.values(), m.bytes()), (values, bytes.len()));
    (bytes, m)
}

#[test]
fn quantized_matmul_matches_reference_on_every_block_type() {
    let Some(gpu) = gpu() else { return };
    // GEMV (≤ 8 rows) and the dense tensor-core GEMM (> 8 rows, weights rounded to bf16 in
    // shared memory).
    let shapes = [
        (1, 256, 10),
        (3, 512, 33),
        (8, 256, 130),
        (9, 512, 64),
        (70, 256, 130),
    ];
    for t in BlockType::ALL {
        for (i, &(rows, k, n)) in shapes.iter().enumerate() {
            let p = Matmul { rows, k, n };
            let seed = 1000 * t as u64 + i as u64;
            let x = round_bf16(&uniform(rows * k, seed));
            let (bytes, dw) = block_matrix(&gpu, t, n * k, seed + 7);
            let w = Weight::Quant(QuantBlocks::new(t.dtype(), &bytes));
            let want = mixtral_testkit::run(rows * n, |y| mm_ref::matmul(p, &x, w, y));
            let dx = gpu.upload_f32_as_bf16(&x, "x").unwrap();
            let mut dy = gpu.alloc::<f32>(rows * n, "y").unwrap();
            gpu.matmul(p, &dx, &dw, &mut dy).unwrap();
            let got = gpu.read(&dy, rows * n).unwrap();
            let what = format!("matmul {t:?} {p:?}");
            if rows <= 8 {
                // Exact weights, f32 sums in another order.
                check_close(&what, &got, &want, 2e-5 * (k as f32).sqrt(), 1e-4).unwrap();
            } else {
                check_rel(&what, &got, &want, 1e-2).unwrap();
            }
        }
    }
}

#[test]
fn quantized_moe_matches_reference() {
    let Some(gpu) = gpu() else { return };
    // D = 512: gate/up rows of two K-quant blocks.
    let (d, f, n_experts) = (512, 512, 8);
    // Q4_K_M's pair (Q4_K gate/up, Q6_K down), and each type alone.
    let mut pairs = vec![(BlockType::Q4_K, BlockType::Q6_K)];
    pairs.extend(BlockType::ALL.map(|t| (t, t)));
    for (c, &(gate_up, down)) in pairs.iter().enumerate() {
        // 1 and 3 tokens: the MoE GEMVs; 64 (128 assignments, experts over 8 rows): the last
        // GEMV size; 70: the tile GEMMs.
        for n_tokens in [1, 3, 64, 70] {
            let p = Moe {
                n_tokens,
                hidden: d,
                ffn: f,
                top_k: 2,
            };
            let seed = 100 * c as u64 + n_tokens as u64;
            let x = round_bf16(&uniform(n_tokens * d, seed));
            // Skewed: expert 0 takes 15 of every 16 tokens (over 64 rows at 70 tokens: a
            // second GEMM tile, and eight GEMV chunks at 64), the rest spread.
            let ids: Vec<u32> = (0..n_tokens)
                .flat_map(|t| {
                    let first = if t % 16 != 15 { 0 } else { 1 + t % 7 };
                    let mut second = 1 + (t * 3 + 1) % 7;
                    if second == first {
                        second = 1 + second % 7;
                    }
                    [first as u32, second as u32]
                })
                .collect();
            let weights: Vec<f32> = (0..ids.len()).map(|a| 0.3 + 0.1 * (a % 3) as f32).collect();
            let mut de = gpu
                .alloc_experts(
                    n_experts,
                    d,
                    f,
                    [Storage::Blocks(gate_up), Storage::Blocks(down)],
                    "experts",
                )
                .unwrap();
            let mut host = Vec::new();
            for e in 0..n_experts as u64 {
                let s = seed * 1000 + e * 3;
                let blocks = |t: BlockType, s| {
                    random_blocks(t.dtype(), f * d / t.dtype().block_len(), s, 0.2).unwrap()
                };
                host.push([
                    blocks(gate_up, s),
                    blocks(down, s + 1),
                    blocks(gate_up, s + 2),
                ]);
            }
            let mut cb = |_: usize, _: usize| {};
            let mut progress = mixtral_kernels::cuda::Progress::new(0, &mut cb);
            for (e, [w1, w2, w3]) in host.iter().enumerate() {
                let q = |t: BlockType, b| Weight::Quant(QuantBlocks::new(t.dtype(), b));
                gpu.write_matrix(&mut de.w1, e * f * d, q(gate_up, w1), &mut progress)
                    .unwrap();
                gpu.write_matrix(&mut de.w2, e * f * d, q(down, w2), &mut progress)
                    .unwrap();
                gpu.write_matrix(&mut de.w3, e * f * d, q(gate_up, w3), &mut progress)
                    .unwrap();
            }
            let experts: Vec<Expert<'_>> = host
                .iter()
                .map(|[w1, w2, w3]| Expert {
                    w1: Weight::Quant(QuantBlocks::new(gate_up.dtype(), w1)),
                    w2: Weight::Quant(QuantBlocks::new(down.dtype(), w2)),
                    w3: Weight::Quant(QuantBlocks::new(gate_up.dtype(), w3)),
                })
                .collect();
            let want = mixtral_testkit::run(x.len(), |y| {
                moe_ref::moe(p, &x, &ids, &weights, &experts, y)
            });
            let routing = gpu.upload_routing(&ids, &weights, n_experts, 2).unwrap();
            let dx = gpu.upload_f32_as_bf16(&x, "x").unwrap();
            let mut scratch = gpu.alloc_moe_scratch(p, n_experts).unwrap();
            let mut dy: DeviceBuffer<f32> = gpu.alloc(x.len(), "y").unwrap();
            gpu.moe(p, &dx, &routing, &de, &mut scratch, &mut dy)
                .unwrap();
            let got = gpu.read(&dy, x.len()).unwrap();
            // Weights and the SwiGLU product are rounded to bf16 on the way to the tensor cores.
            let what = format!("moe {gate_up:?}/{down:?} {p:?}");
            let w = check_rel(&what, &got, &want, 2e-2).unwrap();
            println!("{what}: max |diff| / max |ref| = {:.2e}", w.rel);
        }
    }
}

#[test]
fn quantized_embedding_is_exact() {
    let Some(gpu) = gpu() else { return };
    let (vocab, cols) = (40, 512);
    let ids = [0u32, 39, 5, 5, 17];
    let dids = gpu.upload_tokens(&ids, vocab).unwrap();
    for t in BlockType::ALL {
        let (bytes, table) = block_matrix(&gpu, t, vocab * cols, 77 + t as u64);
        let mut all = vec![0f32; vocab * cols];
        dequantize(t.dtype(), &bytes, &mut all);
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| all[i as usize * cols..][..cols].to_vec())
            .collect();
        let mut out = gpu.alloc::<f32>(want.len(), "out").unwrap();
        gpu.embedding(&dids, &table, cols, &mut out).unwrap();
        // quant.cuh decodes in the reference's order with no FMA contraction: bit-equal.
        assert_eq!(gpu.read(&out, want.len()).unwrap(), want, "{t:?}");
    }
    // A matrix of one type refuses another's blocks, and rows the block length does not divide.
    let q8 = random_blocks(mixtral_tensor::DType::Q8_0, 4, 1, 1.0).unwrap();
    let mut m = gpu
        .alloc_matrix(Storage::Blocks(BlockType::Q4_K), 256, "m")
        .unwrap();
    let mut cb = |_: usize, _: usize| {};
    let mut progress = mixtral_kernels::cuda::Progress::new(0, &mut cb);
    let wrong = Weight::Quant(QuantBlocks::new(mixtral_tensor::DType::Q8_0, &q8));
    assert!(matches!(
        gpu.write_matrix(&mut m, 0, wrong, &mut progress),
        Err(Error::Input { .. })
    ));
    let (_, m) = block_matrix(&gpu, BlockType::Q4_K, 4 * 256, 5);
    let x = gpu.alloc::<u16>(128, "x").unwrap();
    let mut y = gpu.alloc::<f32>(8, "y").unwrap();
    let p = Matmul {
        rows: 1,
        k: 128,
        n: 8,
    };
    assert!(matches!(
        gpu.matmul(p, &x, &m, &mut y),
        Err(Error::Limit { .. })
    ));
}
