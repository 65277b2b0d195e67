//! Criterion benchmarks of the CPU kernels: group `{op}/{shape}`, one function per
//! implementation (`reference` where affordable, `cpu-scalar`, `cpu-avx2`), each group with a
//! baseline measured in the same run.
//!
//! Throughput is bytes for memory-bound ops (GEMV: the weight bytes; the baseline reads the
//! same bytes once, so the ratio to it is the fraction of bandwidth reached) and FLOPs for
//! GEMM (`2·rows·k·n`, printed by criterion as "elem/s", i.e. FLOP/s).
//! Run: `cargo bench -p mixtral-benches --bench kernels -- gemv` (criterion filter).

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use half::{bf16, f16};
use mixtral_kernels::attention::{self, Attention};
use mixtral_kernels::matmul::{Matmul, Precision, cpu, reference};
use mixtral_kernels::moe::{self, Expert, Moe, cpu::MoeScratch};
use mixtral_kernels::qdot::interleave;
use mixtral_kernels::quantize;
use mixtral_kernels::rmsnorm::{self, RmsNorm};
use mixtral_kernels::rope::{self, Rope, cpu::RopeTable};
use mixtral_kernels::router::{self, Router};
use mixtral_kernels::{BlockLayout, Isa, QuantBlocks, Weight};
use mixtral_tensor::DType;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

/// Weight dtype of a benchmark.
#[derive(Clone, Copy)]
enum Dtype {
    F32,
    Bf16,
    F16,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }

    fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }
}

/// Random weights held as u64 words, so the read baseline can sum the very same bytes.
struct Words(Vec<u64>);

impl Words {
    fn new(elems: usize, dtype: Dtype) -> Words {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut words = vec![0u64; (elems * dtype.bytes()).div_ceil(8)];
        for w in &mut words {
            // Four (or two) small finite values per word: exponent bits kept tame.
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = |s: u64| (((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5) * 0.1;
            *w = match dtype {
                Dtype::F32 => {
                    u64::from(v(state).to_bits()) | (u64::from(v(!state).to_bits()) << 32)
                }
                Dtype::Bf16 => (0..4).fold(0, |a, l| {
                    a | (u64::from(bf16::from_f32(v(state.rotate_left(l * 16))).to_bits())
                        << (16 * l))
                }),
                Dtype::F16 => (0..4).fold(0, |a, l| {
                    a | (u64::from(f16::from_f32(v(state.rotate_left(l * 16))).to_bits())
                        << (16 * l))
                }),
            };
        }
        Words(words)
    }

    fn view(&self, dtype: Dtype, elems: usize) -> Weight<'_> {
        match dtype {
            Dtype::F32 => Weight::F32(&bytemuck::cast_slice(&self.0)[..elems]),
            Dtype::Bf16 => Weight::BF16(&bytemuck::cast_slice(&self.0)[..elems]),
            Dtype::F16 => Weight::F16(&bytemuck::cast_slice(&self.0)[..elems]),
        }
    }

    /// The bandwidth floor: every word read once, on all threads, as the GEMV does.
    fn read_all(&self) -> u64 {
        self.0
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, u64::wrapping_add)
    }
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn activations(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// `matmul/…` groups: `rows == 1` is named `gemv/…` and measured in bytes against the read
/// baseline; larger `rows` are `gemm/…`, measured in FLOPs.
fn matmul_group(c: &mut Criterion, dtype: Dtype, p: Matmul, with_reference: bool) {
    let words = Words::new(p.n * p.k, dtype);
    let w = words.view(dtype, p.n * p.k);
    let x = activations(p.rows * p.k);
    let mut y = vec![0f32; p.rows * p.n];
    let name = if p.rows == 1 {
        format!("gemv/{}-{}x{}", dtype.name(), p.n, p.k)
    } else {
        format!("gemm/{}-{}x{}x{}", dtype.name(), p.rows, p.k, p.n)
    };
    let mut g = c.benchmark_group(name);
    configure(&mut g);
    if p.rows == 1 {
        g.throughput(Throughput::Bytes((p.n * p.k * dtype.bytes()) as u64));
        g.bench_function("read-baseline", |b| b.iter(|| black_box(words.read_all())));
    } else {
        g.throughput(Throughput::Elements((2 * p.rows * p.k * p.n) as u64));
    }
    if with_reference {
        g.bench_function("reference", |b| {
            b.iter(|| reference::matmul(p, black_box(&x), w, &mut y))
        });
    }
    for isa in Isa::available() {
        g.bench_function(format!("cpu-{isa}"), |b| {
            b.iter(|| cpu::matmul(isa, p, black_box(&x), w, &mut y))
        });
        if matches!(w, Weight::BF16(_)) {
            // Activations rounded to bf16 (`Precision::Bf16`), as llama.cpp computes.
            g.bench_function(format!("cpu-{isa}-bf16-activations"), |b| {
                b.iter(|| cpu::matmul_bf16(isa, p, black_box(&x), w, &mut y))
            });
        }
    }
    g.finish();
}

fn gemv(c: &mut Criterion) {
    let mm = |n, k| Matmul { rows: 1, k, n };
    matmul_group(c, Dtype::Bf16, mm(14336, 4096), true);
    matmul_group(c, Dtype::Bf16, mm(4096, 14336), false);
    matmul_group(c, Dtype::F16, mm(14336, 4096), false);
    matmul_group(c, Dtype::F32, mm(4096, 4096), false);
}

/// Quantized weights of `dtype` (ggml's quantizer on smooth random rows) held as u64 words,
/// so the read baseline sums the very same bytes.
fn quantized_words(dtype: DType, n: usize, k: usize) -> Words {
    let x: Vec<f32> = (0..n * k)
        .map(|i| ((i.wrapping_mul(2654435761) % 2000) as f32 / 1000.0 - 1.0) * 0.05)
        .collect();
    let mut bytes = vec![0u8; quantize::quantized_bytes(dtype, n * k).expect("whole blocks")];
    quantize::quantize_rows(dtype, &x, k, &mut bytes);
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    Words(words)
}

/// `gemv/{type}-{n}x{k}` and `gemm/{type}-{rows}x{k}x{n}` on quantized weights: the exact
/// path (`-exact`, dequantized weights × f32 activations) and the integer dots (`-int8`), with
/// the read baseline over the same bytes for the GEMV.
fn quant_group(c: &mut Criterion, dtype: DType, p: Matmul) {
    let words = quantized_words(dtype, p.n, p.k);
    let len = quantize::quantized_bytes(dtype, p.n * p.k).expect("whole blocks");
    let w = Weight::Quant(QuantBlocks::new(
        dtype,
        &bytemuck::cast_slice(&words.0)[..len],
    ));
    let x = activations(p.rows * p.k);
    let mut y = vec![0f32; p.rows * p.n];
    let t = dtype.name().to_lowercase();
    let name = if p.rows == 1 {
        format!("gemv/{t}-{}x{}", p.n, p.k)
    } else {
        format!("gemm/{t}-{}x{}x{}", p.rows, p.k, p.n)
    };
    let mut g = c.benchmark_group(name);
    configure(&mut g);
    if p.rows == 1 {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function("read-baseline", |b| b.iter(|| black_box(words.read_all())));
    } else {
        g.throughput(Throughput::Elements((2 * p.rows * p.k * p.n) as u64));
    }
    for isa in Isa::available() {
        for (label, precision) in [("exact", Precision::F32), ("int8", Precision::Int8)] {
            if p.rows > 1 && isa == Isa::Scalar && precision == Precision::F32 {
                continue; // minutes per sample
            }
            g.bench_function(format!("cpu-{isa}-{label}"), |b| {
                b.iter(|| cpu::matmul_at(isa, precision, p, black_box(&x), w, &mut y))
            });
        }
        if interleave::fits(dtype, p.n, p.k) {
            let mut packed = vec![0u8; len];
            interleave::interleave(
                dtype,
                &bytemuck::cast_slice(&words.0)[..len],
                len / p.n,
                &mut packed,
            );
            let w = Weight::Quant(QuantBlocks {
                layout: BlockLayout::Rows8 {
                    blocks: p.k / dtype.block_len(),
                },
                ..QuantBlocks::new(dtype, &packed)
            });
            g.bench_function(format!("cpu-{isa}-int8-rows8"), |b| {
                b.iter(|| cpu::matmul_at(isa, Precision::Int8, p, black_box(&x), w, &mut y))
            });
        }
    }
    g.finish();
}

/// The quantized types of llama.cpp's Mixtral files at the 8x7B expert shapes.
fn quantized(c: &mut Criterion) {
    let mm = |rows, n, k| Matmul { rows, k, n };
    for dtype in [DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_0] {
        quant_group(c, dtype, mm(1, 14336, 4096));
    }
    quant_group(c, DType::Q4_K, mm(1, 4096, 14336));
    quant_group(c, DType::Q4_K, mm(128, 14336, 4096));
    quant_group(c, DType::Q8_0, mm(128, 14336, 4096));
    quant_group(c, DType::Q6_K, mm(128, 4096, 14336));
}

fn gemm(c: &mut Criterion) {
    let mm = |rows, k, n| Matmul { rows, k, n };
    matmul_group(c, Dtype::Bf16, mm(64, 1024, 1024), true);
    matmul_group(c, Dtype::Bf16, mm(512, 1024, 3584), false);
    matmul_group(c, Dtype::F32, mm(512, 1024, 3584), false);
    matmul_group(c, Dtype::Bf16, mm(128, 4096, 1024), false);
    // One 8x7B expert's gate/up and down projections over a 512-token prompt's share
    // (top-2 of 8: 128 tokens on average).
    matmul_group(c, Dtype::Bf16, mm(128, 4096, 14336), false);
    matmul_group(c, Dtype::Bf16, mm(128, 14336, 4096), false);
}

/// The memory-bound ops' baseline: copy `src` into `dst` (reads and writes the same bytes).
fn memcpy_baseline(g: &mut BenchmarkGroup<'_, WallTime>, src: &[f32], dst: &mut [f32]) {
    g.bench_function("memcpy", |b| b.iter(|| dst.copy_from_slice(black_box(src))));
}

fn rmsnorm(c: &mut Criterion) {
    for rows in [1, 512] {
        let p = RmsNorm {
            rows,
            cols: 4096,
            eps: 1e-5,
        };
        let x = activations(rows * p.cols);
        let words = Words::new(p.cols, Dtype::Bf16);
        let w = words.view(Dtype::Bf16, p.cols);
        let mut y = vec![0f32; x.len()];
        let mut g = c.benchmark_group(format!("rmsnorm/4096x{rows}"));
        configure(&mut g);
        g.throughput(Throughput::Bytes((x.len() * 8 + p.cols * 2) as u64));
        memcpy_baseline(&mut g, &x, &mut y);
        g.bench_function("reference", |b| {
            b.iter(|| rmsnorm::reference::rms_norm(p, black_box(&x), w, &mut y))
        });
        for isa in Isa::available() {
            g.bench_function(format!("cpu-{isa}"), |b| {
                b.iter(|| rmsnorm::cpu::rms_norm(isa, p, black_box(&x), w, &mut y))
            });
        }
        g.finish();
    }
}

fn rope_and_silu(c: &mut Criterion) {
    let p = Rope {
        n_heads: 32,
        head_dim: 128,
        theta: 1e6,
        interleaved: false,
    };
    let positions: Vec<usize> = (1000..1512).collect();
    let table = RopeTable::new(p, 1512);
    let mut x = activations(positions.len() * 32 * 128);
    let mut copy = x.clone();
    let mut g = c.benchmark_group("rope/32x128x512");
    configure(&mut g);
    g.throughput(Throughput::Bytes((x.len() * 8) as u64));
    memcpy_baseline(&mut g, &x, &mut copy);
    g.bench_function("reference", |b| {
        b.iter(|| rope::reference::rope(p, &positions, black_box(&mut x)))
    });
    for isa in Isa::available() {
        g.bench_function(format!("cpu-{isa}"), |b| {
            b.iter(|| rope::cpu::rope(isa, p, &table, &positions, black_box(&mut x)))
        });
    }
    g.finish();

    let up = activations(14336);
    let mut gate = activations(14336);
    let mut g = c.benchmark_group("silu_mul/14336");
    configure(&mut g);
    g.throughput(Throughput::Bytes((14336 * 12) as u64));
    memcpy_baseline(&mut g, &up, &mut gate);
    for isa in Isa::available() {
        g.bench_function(format!("cpu-{isa}"), |b| {
            b.iter(|| moe::cpu::silu_mul(isa, black_box(&mut gate), &up))
        });
    }
    g.finish();

    let p = Router {
        n_tokens: 512,
        n_experts: 8,
        top_k: 2,
        norm_topk_prob: true,
    };
    let logits = activations(512 * 8);
    let (mut ids, mut w) = (vec![0u32; 1024], vec![0f32; 1024]);
    let mut g = c.benchmark_group("router/8x512");
    configure(&mut g);
    g.throughput(Throughput::Elements(512));
    g.bench_function("reference", |b| {
        b.iter(|| router::reference::router_top_k(p, black_box(&logits), &mut ids, &mut w))
    });
    for isa in Isa::available() {
        g.bench_function(format!("cpu-{isa}"), |b| {
            b.iter(|| router::cpu::router_top_k(isa, p, black_box(&logits), &mut ids, &mut w))
        });
    }
    g.finish();
}

fn attention(c: &mut Criterion) {
    let p = Attention {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
        window: None,
    };
    for (name, positions, cached, with_reference) in [
        ("decode-4096", vec![4095usize], 4096usize, true),
        ("prefill-512", (0..512).collect::<Vec<_>>(), 512, false),
    ] {
        let k = activations(cached * 1024);
        let v = activations(cached * 1024);
        let q = activations(positions.len() * 4096);
        let mut out = vec![0f32; q.len()];
        let mut g = c.benchmark_group(format!("attention/{name}"));
        configure(&mut g);
        if positions.len() == 1 {
            // Decode reads the whole cache once: bytes, against a read of K and V.
            g.throughput(Throughput::Bytes((k.len() * 8) as u64));
            let mut copy = vec![0f32; k.len()];
            memcpy_baseline(&mut g, &k, &mut copy);
        } else {
            let pairs: usize = positions.iter().map(|&s| s + 1).sum();
            g.throughput(Throughput::Elements((pairs * 32 * 128 * 4) as u64));
        }
        if with_reference {
            g.bench_function("reference", |b| {
                b.iter(|| {
                    attention::reference::attention(p, black_box(&q), &positions, &k, &v, &mut out)
                })
            });
        }
        for isa in Isa::available() {
            g.bench_function(format!("cpu-{isa}"), |b| {
                b.iter(|| {
                    attention::cpu::attention(isa, p, black_box(&q), &positions, &k, &v, &mut out)
                })
            });
        }
        g.finish();
    }
}

/// MoE at a quarter of Mixtral's width (D = 1024, F = 3584, bf16, E = 8, K = 2) so the
/// weights (176 MB) are cheap to build yet far larger than the caches.
fn moe_block(c: &mut Criterion) {
    let (d, f, n_exp) = (1024, 3584, 8);
    let words: Vec<Words> = (0..n_exp * 3)
        .map(|_| Words::new(d * f, Dtype::Bf16))
        .collect();
    let experts: Vec<Expert<'_>> = words
        .chunks_exact(3)
        .map(|w| Expert {
            w1: w[0].view(Dtype::Bf16, d * f),
            w2: w[1].view(Dtype::Bf16, d * f),
            w3: w[2].view(Dtype::Bf16, d * f),
        })
        .collect();
    for n_tokens in [1usize, 64] {
        let p = Moe {
            n_tokens,
            hidden: d,
            ffn: f,
            top_k: 2,
        };
        let x = activations(n_tokens * d);
        let ids: Vec<u32> = (0..n_tokens * 2)
            .map(|i| ((i * 5 + i / 2) % n_exp) as u32)
            .collect();
        let weights = vec![0.5f32; ids.len()];
        let mut y = vec![0f32; x.len()];
        let mut scratch = MoeScratch::with_capacity(p, n_exp);
        let mut g = c.benchmark_group(format!("moe/bf16-{n_tokens}x{d}x{f}-e8k2"));
        configure(&mut g);
        if n_tokens == 1 {
            g.throughput(Throughput::Bytes((ids.len() * 3 * d * f * 2) as u64));
            // The same bytes the kernel must read: the chosen experts' three matrices.
            let chosen: Vec<&Words> = ids
                .iter()
                .flat_map(|&e| &words[e as usize * 3..e as usize * 3 + 3])
                .collect();
            g.bench_function("read-baseline", |b| {
                b.iter(|| chosen.iter().map(|w| black_box(w.read_all())).sum::<u64>())
            });
            g.bench_function("reference", |b| {
                b.iter(|| moe::reference::moe(p, black_box(&x), &ids, &weights, &experts, &mut y))
            });
        } else {
            g.throughput(Throughput::Elements((n_tokens * 2 * 3 * 2 * d * f) as u64));
        }
        for isa in Isa::available() {
            g.bench_function(format!("cpu-{isa}"), |b| {
                b.iter(|| {
                    moe::cpu::moe(
                        isa,
                        Precision::F32,
                        p,
                        black_box(&x),
                        &ids,
                        &weights,
                        &experts,
                        &mut y,
                        &mut scratch,
                    )
                })
            });
        }
        g.finish();
    }
}

criterion_group!(
    benches,
    gemv,
    gemm,
    quantized,
    rmsnorm,
    rope_and_silu,
    attention,
    moe_block
);
criterion_main!(benches);
