//! GPU benchmark at the real Mixtral-8x7B layer shape (hidden 4096, intermediate 14336, 32/8
//! heads, 8 experts top-2, vocab 32000) with random bf16 weights made on the device, as many
//! layers as fit (at most 32).
//!
//! Reports: per-layer decode time at batch 1 (greedy, the argmax taken on the host over the
//! one logits row read back, after a 512-token prompt), prefill
//! tokens/s at 512 and 4096 tokens, the grouped-expert MoE (align + two grouped GEMMs +
//! combine) against one dense GEMM of the same FLOPs, the lm_head GEMV's bandwidth, and a
//! device-to-device copy as the bandwidth floor. Timing: stream synchronised before and after,
//! wall clock, mean over the repeats after a warm-up; L2 is not flushed (every weight set
//! timed is far larger than L2).
//!
//! `cargo run --release -p mixtral-model --example gpu_bench [-- --layers N] [--quick]`.
//! Without a GPU it prints `skipped: no CUDA driver (…)` and exits 0.

use mixtral_kernels::cuda::{CudaBackend, DeviceBuffer};
use mixtral_kernels::matmul::Matmul;
use mixtral_kernels::moe::Moe;
use mixtral_model::{Config, Model};
use std::path::Path;
use std::time::Instant;

const GIB: f64 = (1u64 << 30) as f64;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Mean seconds of `reps` runs of `f` after `warm` untimed ones, the stream drained around each.
fn time(gpu: &CudaBackend, warm: usize, reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    for _ in 0..warm {
        f()?;
    }
    gpu.synchronize()?;
    let t = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    gpu.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            let mut s = e.source();
            while let Some(c) = s {
                eprintln!("  caused by: {c}");
                s = c.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let layers_arg = args
        .iter()
        .position(|a| a == "--layers")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<usize>())
        .transpose()?;
    let gpu = match CudaBackend::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("skipped: no CUDA driver ({e})");
            return Ok(());
        }
    };
    let t = Instant::now();
    gpu.load_all()?;
    println!(
        "device: {} (sm_{}{}, {} SMs); kernels compiled and loaded in {:.2} s",
        gpu.name(),
        gpu.compute_capability().0,
        gpu.compute_capability().1,
        gpu.multiprocessors(),
        t.elapsed().as_secs_f64()
    );

    let shape = Config::from_json(
        Path::new("<bench>"),
        br#"{"max_position_embeddings": 32768}"#,
    )?;
    let (d, f, e, v) = (
        shape.hidden_size,
        shape.intermediate_size,
        shape.num_local_experts,
        shape.vocab_size,
    );
    let per_layer =
        2 * (3 * e * f * d + d * (2 * shape.q_dim() + 2 * shape.kv_dim()) + e * d + 2 * d);
    let fixed = 2 * (2 * v * d + d);
    let (free, total) = gpu.memory()?;
    // Room for the 4096-token workspace (MoE activations, logits) and the micro-benchmarks.
    let headroom = 12usize << 30;
    let fit = free.saturating_sub(fixed + headroom) / per_layer;
    let layers = layers_arg.unwrap_or(fit.min(32)).max(1);
    println!(
        "memory: {:.1} of {:.1} GiB free; {:.2} GiB per layer; running {layers} layer(s)",
        free as f64 / GIB,
        total as f64 / GIB,
        per_layer as f64 / GIB
    );
    let json = format!(r#"{{"max_position_embeddings": 32768, "num_hidden_layers": {layers}}}"#);
    let config = Config::from_json(Path::new("<bench>"), json.as_bytes())?;
    let t = Instant::now();
    let model = Model::random_on_gpu(&config, &gpu, 7)?;
    gpu.synchronize()?;
    println!(
        "random weights generated on the device in {:.2} s\n",
        t.elapsed().as_secs_f64()
    );

    println!("| measurement | value |\n| --- | --- |");
    let tokens =
        |n: usize| -> Vec<u32> { (0..n as u32).map(|i| (i * 7919 + 13) % v as u32).collect() };
    let positions = |n: usize| -> Vec<usize> { (0..n).collect() };
    for &n in &[512usize, 4096] {
        let reps = if quick || n == 4096 { 2 } else { 3 };
        let (toks, pos) = (tokens(n), positions(n));
        let mut cache = model.new_cache();
        cache.reserve(n)?;
        let s = time(&gpu, 1, reps, || {
            cache.truncate(0);
            model.greedy(&toks, &pos, &mut cache)?;
            Ok(())
        })?;
        println!(
            "| prefill {n} tokens ({layers} layers) | {:.3} s, {:.0} tokens/s |",
            s,
            n as f64 / s
        );
        println!(
            "| prefill {n} tokens, per layer | {:.3} ms |",
            s * 1e3 / layers as f64
        );
    }

    let prompt = 512;
    let mut cache = model.new_cache();
    cache.reserve(prompt + 128)?;
    let mut next = model.greedy(&tokens(prompt), &positions(prompt), &mut cache)?;
    let steps = if quick { 20 } else { 64 };
    let s = time(&gpu, 4, steps, || {
        let at = cache.len();
        next = model.greedy(&[next], &[at], &mut cache)?;
        Ok(())
    })?;
    println!(
        "| decode, batch 1, context ~{prompt} ({layers} layers + lm_head) | {:.3} ms/token, {:.1} tokens/s |",
        s * 1e3,
        1.0 / s
    );
    let active = 2 * (2 * 3 * f * d + d * (2 * shape.q_dim() + 2 * shape.kv_dim()) + e * d);
    println!(
        "| decode per layer | {:.3} ms ({:.0} GB/s over the layer's active weights) |",
        s * 1e3 / layers as f64,
        active as f64 * layers as f64 / s / 1e9
    );
    drop(cache);
    moe_vs_dense(&gpu, &shape, quick)?;
    bandwidth(&gpu, &shape)?;
    Ok(())
}

/// The grouped MoE at 4096 tokens, top-2 of 8, against one dense GEMM of the same FLOPs.
fn moe_vs_dense(gpu: &CudaBackend, c: &Config, quick: bool) -> Res<()> {
    let (d, f, e, k, t) = (
        c.hidden_size,
        c.intermediate_size,
        c.num_local_experts,
        2,
        4096,
    );
    let a = t * k;
    let reps = if quick { 3 } else { 10 };
    let mut x = gpu.alloc::<u16>(t * d, "x")?;
    gpu.fill_uniform_bf16(&mut x, 1, 1.0)?;
    let mut experts = gpu.alloc_experts(e, d, f, "bench experts")?;
    for (i, w) in [&mut experts.w1, &mut experts.w3, &mut experts.w2]
        .into_iter()
        .enumerate()
    {
        gpu.fill_uniform_bf16(w, 10 + i as u64, 0.02)?;
    }
    // Balanced random routing: two distinct experts per token from a fixed LCG.
    let mut state = 12345u64;
    let mut ids = Vec::with_capacity(a);
    for _ in 0..t {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let first = (state >> 33) as usize % e;
        let second = (first + 1 + (state >> 40) as usize % (e - 1)) % e;
        ids.extend([first as u32, second as u32]);
    }
    let routing = gpu.upload_routing(&ids, &vec![0.5; a], e, k)?;
    let p = Moe {
        n_tokens: t,
        hidden: d,
        ffn: f,
        top_k: k,
    };
    let mut scratch = gpu.alloc_moe_scratch(p, e)?;
    let mut y: DeviceBuffer<f32> = gpu.alloc(t * d, "y")?;
    let s = time(gpu, 2, reps, || {
        Ok(gpu.moe(p, &x, &routing, &experts, &mut scratch, &mut y)?)
    })?;
    let flops = 6.0 * a as f64 * f as f64 * d as f64;
    println!(
        "| grouped MoE, {t} tokens top-2 of {e} (align + 2 grouped GEMMs + combine) | {:.3} ms, {:.0} TFLOP/s |",
        s * 1e3,
        flops / s / 1e12
    );
    drop((experts, scratch, y));

    // Same FLOPs in one dense GEMM: [A, D] × [3F, D]ᵀ.
    let mut xa = gpu.alloc::<u16>(a * d, "dense x")?;
    gpu.fill_uniform_bf16(&mut xa, 2, 1.0)?;
    let mut w = gpu.alloc::<u16>(3 * f * d, "dense w")?;
    gpu.fill_uniform_bf16(&mut w, 3, 0.02)?;
    let mut out: DeviceBuffer<f32> = gpu.alloc(a * 3 * f, "dense out")?;
    let mm = Matmul {
        rows: a,
        k: d,
        n: 3 * f,
    };
    let s = time(gpu, 2, reps, || Ok(gpu.matmul(mm, &xa, &w, &mut out)?))?;
    println!(
        "| dense GEMM, same FLOPs ({a}×{d} by {}×{d}, one-group tile kernel) | {:.3} ms, {:.0} TFLOP/s |",
        3 * f,
        s * 1e3,
        flops / s / 1e12
    );
    Ok(())
}

/// lm_head GEMV bandwidth and a device-to-device copy (the floor every bandwidth-bound kernel
/// is judged against).
fn bandwidth(gpu: &CudaBackend, c: &Config) -> Res<()> {
    let (d, v) = (c.hidden_size, c.vocab_size);
    let mut w = gpu.alloc::<u16>(v * d, "lm_head")?;
    gpu.fill_uniform_bf16(&mut w, 4, 0.02)?;
    let mut x = gpu.alloc::<u16>(d, "x")?;
    gpu.fill_uniform_bf16(&mut x, 5, 1.0)?;
    let mut y: DeviceBuffer<f32> = gpu.alloc(v, "y")?;
    let mm = Matmul {
        rows: 1,
        k: d,
        n: v,
    };
    let s = time(gpu, 3, 50, || Ok(gpu.matmul_gemv(mm, &x, &w, &mut y)?))?;
    println!(
        "| lm_head GEMV 1×{d} by {v}×{d} | {:.1} µs, {:.0} GB/s |",
        s * 1e6,
        (v * d * 2) as f64 / s / 1e9
    );
    let n = 1usize << 30; // 2 GiB of u16
    let src = gpu.alloc::<u16>(n, "copy src")?;
    let mut dst = gpu.alloc::<u16>(n, "copy dst")?;
    let s = time(gpu, 2, 10, || Ok(gpu.copy(&src, 0, &mut dst, 0, n)?))?;
    println!(
        "| device-to-device copy of {:.0} GiB | {:.0} GB/s (read + write) |",
        (2 * n) as f64 / GIB,
        (4 * n) as f64 / s / 1e9
    );
    Ok(())
}
