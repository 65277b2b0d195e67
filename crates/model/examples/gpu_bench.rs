//! GPU benchmark at the real Mixtral-8x7B shape (hidden 4096, intermediate 14336, 32/8 heads,
//! 8 experts top-2, vocab 32000) with random weights made on the device, in each weight type
//! a deployment uses: bf16, and the block mixes of llama.cpp's Q8_0, Q6_K, Q5_K_M, Q4_K_M and
//! Q4_0 files (`WeightMix`), as many layers as fit (at most 32).
//!
//! Per type: the device bytes of the weights; prefill of 512 tokens; decode at batch 1, 4, 8
//! and 16 (one token per sequence per step, each sequence after a 128-token prompt), with
//! batch 1 also as a share of its floor: the bytes one token reads (attention, router, two
//! experts per layer, the head; blocks included) at the device-to-device copy bandwidth
//! measured in the same run, and where a batch-1 decode step's device time goes per op group
//! (timing events after each op: attention, each matmul shape, router, MoE, head; an
//! interval is charged to the op that ends it, so host launch gaps show). Then the
//! grouped-expert MoE against one dense GEMM of the same FLOPs, and the lm_head GEMV's
//! bandwidth in bf16 and Q6_K. Timing: stream synchronised before and after, wall clock, mean
//! over the repeats after a warm-up; L2 is not flushed (every weight set timed is far larger
//! than L2).
//!
//! `cargo run --release -p mixtral-model --example gpu_bench [-- --types bf16,q4_k_m]
//! [--layers N] [--quick]`. Without a GPU it prints `skipped: no CUDA driver (…)` and exits 0.

use mixtral_kernels::cuda::{Breakdown, CudaBackend, DeviceBuffer, DeviceMatrix, Storage};
use mixtral_kernels::matmul::Matmul;
use mixtral_kernels::moe::Moe;
use mixtral_model::{BatchItem, BatchScratch, Config, Model, WeightMix, WeightRole};
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
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let layers_arg = value("--layers").map(|s| s.parse::<usize>()).transpose()?;
    let mixes = match value("--types") {
        None => WeightMix::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|t| WeightMix::parse(t).ok_or_else(|| format!("unknown type `{t}`")))
            .collect::<Result<Vec<_>, _>>()?,
    };
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
    let copy = copy_bandwidth(&gpu)?;
    println!(
        "device-to-device copy: {:.0} GB/s (read + write), the floor below\n",
        copy / 1e9
    );
    println!(
        "| type | layers | weights on the device | prefill 512 | decode b=1 | % of floor | b=4 | b=8 | b=16 | b=16 ÷ b=1 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut breakdowns = Vec::new();
    for mix in mixes {
        breakdowns.push(per_type(&gpu, &shape, mix, layers_arg, copy, quick)?);
    }
    for (mix, layers, untimed, b) in breakdowns {
        print_breakdown(mix, layers, untimed, &b);
    }
    println!();
    moe_vs_dense(&gpu, &shape, quick)?;
    lm_head_gemv(&gpu, &shape)?;
    Ok(())
}

/// Bytes of layer `layer`'s weights stored as `mix`: `(all, read by one token)`, the token
/// reading its two experts; norms are bf16.
fn mix_bytes(c: &Config, mix: WeightMix, layer: usize) -> (usize, usize) {
    let (d, f, e) = (c.hidden_size, c.intermediate_size, c.num_local_experts);
    let layers = c.num_hidden_layers;
    let b = |role, values: usize| mix.storage(role, layer, layers).bytes(values);
    let attn = b(WeightRole::Q, c.q_dim() * d)
        + 2 * b(WeightRole::KV, c.kv_dim() * d)
        + b(WeightRole::O, d * c.q_dim())
        + b(WeightRole::Router, e * d)
        + Storage::Bf16.bytes(2 * d);
    let expert = 2 * b(WeightRole::GateUp, f * d) + b(WeightRole::Down, d * f);
    (attn + e * expert, attn + c.num_experts_per_tok * expert)
}

/// Where one decode step's device time goes, per op group (timing events after each op; an
/// interval is charged to the op that ends it, host launch gaps included).
fn print_breakdown(mix: WeightMix, layers: usize, untimed: f64, b: &Breakdown) {
    println!(
        "\ndecode step, batch 1, {} ({layers} layers): {:.3} ms of stream time per token while \
         timed ({:.3} ms untimed), host gaps included",
        mix.name(),
        b.total_ms,
        untimed * 1e3
    );
    println!("| op group | ms per token | per layer | share | marks per token |");
    println!("| --- | --- | --- | --- | --- |");
    for (group, ms, marks) in &b.groups {
        println!(
            "| {group} | {ms:.3} | {:.4} | {:.1}% | {} |",
            ms / layers as f64,
            100.0 * ms / b.total_ms.max(1e-12),
            marks
        );
    }
}

/// One type's row of the table, and its decode breakdown (per token).
fn per_type(
    gpu: &CudaBackend,
    shape: &Config,
    mix: WeightMix,
    layers_arg: Option<usize>,
    copy: f64,
    quick: bool,
) -> Res<(WeightMix, usize, f64, Breakdown)> {
    let (d, v) = (shape.hidden_size, shape.vocab_size);
    let head = |c: &Config| {
        let at = |role| mix.storage(role, 0, c.num_hidden_layers);
        at(WeightRole::Embed).bytes(v * d) + at(WeightRole::Head).bytes(v * d) + 2 * d
    };
    let layer_bytes = |c: &Config| -> (usize, usize) {
        (0..c.num_hidden_layers)
            .map(|l| mix_bytes(c, mix, l))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (free, _) = gpu.memory()?;
    // Room for the 512-token workspace, 16 caches and the logits.
    let headroom = 6usize << 30;
    let per_layer = layer_bytes(shape).0 / shape.num_hidden_layers;
    let fit = free.saturating_sub(head(shape) + headroom) / per_layer.max(1);
    let layers = layers_arg.unwrap_or(fit.min(32)).max(1);
    let json = format!(r#"{{"max_position_embeddings": 32768, "num_hidden_layers": {layers}}}"#);
    let c = Config::from_json(Path::new("<bench>"), json.as_bytes())?;
    let model = Model::random_on_gpu(&c, gpu, mix, 7)?;
    gpu.synchronize()?;
    let (all, read) = layer_bytes(&c);
    let head_read = mix.storage(WeightRole::Head, 0, layers).bytes(v * d) + 4 * d;
    let weights = all + head(&c);

    let tokens = |n: usize, salt: u32| -> Vec<u32> {
        (0..n as u32)
            .map(|i| (i * 7919 + 13 + salt * 104729) % v as u32)
            .collect()
    };
    let n = 512;
    let (toks, pos) = (tokens(n, 0), (0..n).collect::<Vec<_>>());
    let mut cache = model.new_cache();
    cache.reserve(n + 128)?;
    let prefill = time(gpu, 1, if quick { 1 } else { 3 }, || {
        cache.truncate(0);
        model.greedy(&toks, &pos, &mut cache)?;
        Ok(())
    })?;

    // Decode, batch 1.
    cache.truncate(128);
    let mut next = 1u32;
    let steps = if quick { 16 } else { 48 };
    let one = time(gpu, 4, steps, || {
        let at = cache.len();
        next = model.greedy(&[next], &[at], &mut cache)?;
        Ok(())
    })?;
    // The same steps again with a timing event after every op group.
    const TIMED: usize = 8;
    gpu.open_timeline(TIMED * 64 * (layers + 2))?;
    for _ in 0..TIMED {
        let at = cache.len();
        next = model.greedy(&[next], &[at], &mut cache)?;
    }
    let mut breakdown = gpu.close_timeline()?;
    for g in &mut breakdown.groups {
        g.1 /= TIMED as f64;
        g.2 /= TIMED;
    }
    breakdown.total_ms /= TIMED as f64;
    drop(cache);
    // The floor reads every byte once at the copy's read rate (copy moves each byte twice).
    let floor = (read + head_read) as f64 / (copy / 2.0);

    let mut batched = Vec::new();
    for b in [4usize, 8, 16] {
        let mut caches: Vec<_> = (0..b).map(|_| model.new_cache()).collect();
        let mut scratch = BatchScratch::default();
        for (i, cache) in caches.iter_mut().enumerate() {
            cache.reserve(128 + steps + 8)?;
            let prompt = tokens(128, i as u32 + 1);
            model.greedy(&prompt, &(0..128).collect::<Vec<_>>(), cache)?;
        }
        let next: Vec<u32> = (0..b as u32).map(|i| 100 + i).collect();
        let s = time(gpu, 2, steps / 2, || {
            let mut items: Vec<BatchItem<'_>> = caches
                .iter_mut()
                .zip(&next)
                .map(|(cache, t)| BatchItem {
                    tokens: std::slice::from_ref(t),
                    cache,
                    logits: true,
                })
                .collect();
            model.forward_batch(&mut items, &mut scratch)?;
            Ok(())
        })?;
        batched.push(b as f64 / s);
    }
    println!(
        "| {} | {layers} | {:.2} GiB | {:.0} tokens/s ({:.2} ms/layer) | {:.2} ms/token ({:.3} ms/layer) | {:.0}% | {:.0} tok/s | {:.0} tok/s | {:.0} tok/s | {:.1}× |",
        mix.name(),
        weights as f64 / GIB,
        n as f64 / prefill,
        prefill * 1e3 / layers as f64,
        one * 1e3,
        one * 1e3 / layers as f64,
        100.0 * floor / one,
        batched[0],
        batched[1],
        batched[2],
        batched[2] * one,
    );
    Ok((mix, layers, one, breakdown))
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
    let mut experts = gpu.alloc_experts(e, d, f, [Storage::Bf16; 2], "bench experts")?;
    for (i, w) in [&mut experts.w1, &mut experts.w3, &mut experts.w2]
        .into_iter()
        .enumerate()
    {
        gpu.fill_random(w, 10 + i as u64, 0.02)?;
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
    let mut w = DeviceMatrix::Bf16(gpu.alloc::<u16>(3 * f * d, "dense w")?);
    gpu.fill_random(&mut w, 3, 0.02)?;
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

/// The lm_head GEMV's bandwidth in bf16 and in Q6_K (Q4_K_M files' head).
fn lm_head_gemv(gpu: &CudaBackend, c: &Config) -> Res<()> {
    let (d, v) = (c.hidden_size, c.vocab_size);
    let mut x = gpu.alloc::<u16>(d, "x")?;
    gpu.fill_uniform_bf16(&mut x, 5, 1.0)?;
    let mut y: DeviceBuffer<f32> = gpu.alloc(v, "y")?;
    let mm = Matmul {
        rows: 1,
        k: d,
        n: v,
    };
    let q6k = Storage::Blocks(mixtral_kernels::cuda::BlockType::Q6_K);
    for storage in [Storage::Bf16, q6k] {
        let mut w = gpu.alloc_matrix(storage, v * d, "lm_head")?;
        gpu.fill_random(&mut w, 4, 0.02)?;
        let s = time(gpu, 3, 50, || Ok(gpu.matmul_gemv(mm, &x, &w, &mut y)?))?;
        println!(
            "| lm_head GEMV 1×{d} by {v}×{d}, {storage:?} | {:.1} µs, {:.0} GB/s |",
            s * 1e6,
            w.bytes() as f64 / s / 1e9
        );
    }
    Ok(())
}

/// A device-to-device copy's bandwidth in bytes/s, read and write counted (the floor every
/// bandwidth-bound kernel is judged against).
fn copy_bandwidth(gpu: &CudaBackend) -> Res<f64> {
    let n = 1usize << 30; // 2 GiB of u16
    let src = gpu.alloc::<u16>(n, "copy src")?;
    let mut dst = gpu.alloc::<u16>(n, "copy dst")?;
    let s = time(gpu, 2, 10, || Ok(gpu.copy(&src, 0, &mut dst, 0, n)?))?;
    Ok((4 * n) as f64 / s)
}
