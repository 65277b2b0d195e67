//! `mixtral bench`: prefill and decode tokens/s on random tokens, peak memory, and the decode
//! floor of this machine (weight bytes read per token ÷ read bandwidth measured in the same run).

use crate::args::ModelArgs;
use mixtral::{Prompt, SamplerConfig};

/// Arguments of `mixtral bench`.
#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens to prefill.
    #[arg(long, default_value_t = 512)]
    prompt_len: usize,
    /// Tokens to decode.
    #[arg(long = "gen", default_value_t = 128)]
    gen_tokens: usize,
    /// Timed runs after one untimed warm-up run; the median of each figure is reported (as
    /// llama-bench's `-r`).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Keep N threads busy in a separate process during the runs, as on a machine that is not
    /// idle (its speed under competition is what a laptop or a shared server sees).
    #[arg(long, default_value_t = 0)]
    contend: usize,
    /// Run N requests at once through the batch scheduler (what `mixtral serve` runs) at each
    /// N of this list (e.g. `1,4,8,16`), and report aggregate prefill and decode tokens/s and
    /// time to first token at each.
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// With --concurrency: the scheduler's KV budget (`mixtral serve --kv-memory`), e.g.
    /// `256M`.
    #[arg(long, value_parser = crate::serve::parse_bytes, requires = "concurrency")]
    kv_memory: Option<usize>,
    /// With --concurrency: reserve prompt plus generated tokens at admission
    /// (`mixtral serve --reserve-max-tokens`) rather than growing and preempting.
    #[arg(long, requires = "concurrency")]
    reserve_max_tokens: bool,
    /// Decode under this JSON Schema (a file), as `response_format` `json_schema` does: the
    /// cost of constrained decoding is the decode figure against a run without it. The
    /// answer ends when the schema's JSON is complete, so give a schema whose answers are
    /// long (e.g. an array with a large `minItems`).
    #[arg(long, value_name = "FILE")]
    json_schema: Option<std::path::PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The largest schema file `--json-schema` reads.
const MAX_SCHEMA_BYTES: u64 = 1 << 20;

/// The schema `--json-schema` names, read with a size bound.
fn read_schema(path: &std::path::Path) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SCHEMA_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_SCHEMA_BYTES {
        return Err(format!("{}: more than {MAX_SCHEMA_BYTES} bytes", path.display()).into());
    }
    Ok(serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// The most competing threads `--contend` starts.
const MAX_CONTEND: usize = 256;

/// Busy threads in another process, stopped (killed) when dropped.
struct Competitor(std::process::Child);

impl Competitor {
    fn start(threads: usize) -> std::io::Result<Competitor> {
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["spin", &threads.to_string()])
            .stdin(std::process::Stdio::null())
            .spawn()?;
        // Let its threads start before anything is timed.
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(Competitor(child))
    }
}

impl Drop for Competitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mixtral spin N`: N threads that never stop computing (until the process is killed).
pub(crate) fn spin(threads: usize) -> Result<(), Box<dyn std::error::Error>> {
    if threads == 0 || threads > MAX_CONTEND {
        return Err(format!("spin: 1 to {MAX_CONTEND} threads").into());
    }
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            std::thread::spawn(move || {
                let mut x = i as u64 | 1;
                loop {
                    // xorshift: pure ALU work, no memory traffic beyond this core.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// `bench --concurrency`: the scheduler at each level, as a table or JSON.
fn concurrency(
    engine: mixtral::Engine,
    prompt: &dyn Fn(usize) -> Vec<u32>,
    params: &mixtral::GenerateParams,
    levels: &[usize],
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    let (model, threads) = (engine.dir().display().to_string(), engine.threads());
    let precision = format!("{:?}", engine.model().precision()).to_lowercase();
    let kv = format!("{:?}", engine.model().kv_dtype()).to_lowercase();
    let repeat = args.repeat.max(1);
    let setup = crate::bench_batch::Setup {
        kv_memory: args.kv_memory,
        reserve_max_tokens: args.reserve_max_tokens,
    };
    let results = crate::bench_batch::run(engine, prompt, params, levels, repeat, setup)?;
    let base = results[0].decode_tokens_per_s;
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|l| {
                serde_json::json!({
                    "concurrency": l.concurrency,
                    "prefill_tokens_per_s": l.prefill_tokens_per_s,
                    "decode_tokens_per_s": l.decode_tokens_per_s,
                    "decode_vs_first": l.decode_tokens_per_s / base,
                    "ttft_s": l.ttft.as_secs_f64(),
                    "total_tokens_per_s": l.total_tokens_per_s,
                    "preemptions": l.preemptions,
                })
            })
            .collect();
        let out = serde_json::json!({
            "model": model, "device": "cpu", "threads": threads, "precision": precision, "kv_dtype": kv,
            "prompt_len": args.prompt_len, "gen": args.gen_tokens, "repeat": repeat,
            "kv_memory": args.kv_memory, "reserve_max_tokens": args.reserve_max_tokens,
            "levels": rows,
        });
        println!("{out}");
    } else {
        println!("model        {model}");
        println!("threads      {threads}, precision {precision}, KV cache {kv}");
        println!(
            "requests     {} prompt tokens + {} generated each, median of {repeat}",
            args.prompt_len, args.gen_tokens
        );
        println!(
            "concurrency  prefill tok/s  decode tok/s  decode ×  TTFT      all tok/s  preempted"
        );
        for l in &results {
            println!(
                "{:>11}  {:>13.1}  {:>12.1}  {:>7.2}×  {:.3} s  {:>9.1}  {:>9}",
                l.concurrency,
                l.prefill_tokens_per_s,
                l.decode_tokens_per_s,
                l.decode_tokens_per_s / base,
                l.ttft.as_secs_f64(),
                l.total_tokens_per_s,
                l.preemptions
            );
        }
    }
    Ok(())
}

/// The median of `v` (the mean of the middle two for an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let engine = args.model.load()?;
    let c = engine.config();
    // The whole run must fit the context: checked before anything is allocated for it.
    let (prompt_len, gen_len) = (args.prompt_len.max(1), args.gen_tokens.max(1));
    let needed = prompt_len.saturating_add(gen_len);
    if needed > c.max_position_embeddings {
        return Err(format!(
            "--prompt-len {prompt_len} + --gen {gen_len} = {needed} positions, more than the \
             model's context of {}",
            c.max_position_embeddings
        )
        .into());
    }
    // Deterministic pseudo-random prompt ids (no tokenizer needed), past the first three ids
    // (`<unk>`, BOS, EOS in Mixtral's vocabulary) when the vocabulary has more.
    let (first, span) = match c.vocab_size {
        v if v > 3 => (3, v as u64 - 3),
        v => (0, v as u64),
    };
    let prompt = |seed: usize| -> Vec<u32> {
        let mut state = 0x2545_F491_4F6C_DD1Du64 ^ (seed as u64).wrapping_mul(0x9E37_79B9);
        (0..prompt_len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                first + (state % span) as u32
            })
            .collect()
    };
    let ids = prompt(0);
    let mut params = engine.params();
    params.sampling = SamplerConfig::default();
    params.max_new_tokens = gen_len;
    params.ignore_eos = true;
    if let Some(path) = &args.json_schema {
        params.constraint = Some(mixtral::Constraint::JsonSchema(read_schema(path)?));
    }
    if let Some(levels) = &args.concurrency {
        if levels.is_empty() || levels.iter().any(|&n| n == 0 || n > 1024) {
            return Err("--concurrency: a list of 1 to 1024 (e.g. 1,4,8,16)".into());
        }
        return concurrency(engine, &prompt, &params, levels, &args);
    }
    if args.contend > MAX_CONTEND {
        return Err(format!("--contend {}: at most {MAX_CONTEND}", args.contend).into());
    }
    let competitor = match args.contend {
        0 => None,
        n => Some(Competitor::start(n)?),
    };
    let m = measure(&engine, &ids, &params, args.repeat.max(1), competitor)?;
    match args.json {
        true => print_json(&engine, &args, &m),
        false => print_text(&engine, &args, &m),
    }
    Ok(())
}

/// What one `mixtral bench` run measured.
struct Measured {
    stats: mixtral::Stats,
    /// Medians over the timed runs, tokens/s.
    prefill: f64,
    decode: f64,
    preemptions: u64,
    peak: Option<u64>,
    bytes_per_token: u64,
    bandwidth: f64,
    floor: f64,
}

/// One untimed run, then `repeat` timed ones (with `competitor` busy, if any), then the
/// read-bandwidth probe on a quiet machine.
fn measure(
    engine: &mixtral::Engine,
    ids: &[u32],
    params: &mixtral::GenerateParams,
    repeat: usize,
    competitor: Option<Competitor>,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let c = engine.config();
    let preempted_before = engine.preemptions();
    // One untimed run first: buffers sized, pages touched, threads woken, as llama-bench does.
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    let mut stats = None;
    for run in 0..=repeat {
        let mut generation = engine.generate(&Prompt::Tokens(ids.to_vec()), params)?;
        for token in generation.by_ref() {
            token?;
        }
        let s = generation.stats();
        if run > 0 {
            prefill.push(s.prefill_tokens_per_s());
            decode.push(s.decode_tokens_per_s());
        }
        stats = Some(s);
    }
    let stats = stats.expect("at least one run");
    let preemptions = engine.preemptions() - preempted_before;
    drop(competitor); // the bandwidth probe below runs on a quiet machine
    let bytes_per_token = engine
        .model()
        .weights()
        .bytes_read_per_token(c.num_experts_per_tok);
    // Peak memory of the generation itself, before the bandwidth probe allocates its buffer.
    let peak = mixtral::bench::peak_rss_bytes();
    let bandwidth = mixtral::bench::read_bandwidth(engine, 1 << 30, 3);
    Ok(Measured {
        stats,
        prefill: median(prefill),
        decode: median(decode),
        preemptions,
        peak,
        bytes_per_token,
        bandwidth,
        floor: bandwidth / bytes_per_token as f64,
    })
}

/// `--json`: one object.
fn print_json(engine: &mixtral::Engine, args: &Args, m: &Measured) {
    let out = serde_json::json!({
        "model": engine.dir().display().to_string(),
        "device": engine.device().to_string(),
        "cpu_isa": cpu_isa(engine),
        "prompt_len": m.stats.prompt_tokens,
        "gen": m.stats.generated_tokens,
        "threads": engine.threads(),
        "repeat": args.repeat.max(1),
        "precision": format!("{:?}", engine.model().precision()).to_lowercase(),
        "kv_dtype": format!("{:?}", engine.model().kv_dtype()).to_lowercase(),
        "interleaved_weight_bytes": engine.model().interleaved_weight_bytes(),
        "json_schema": args.json_schema.as_ref().map(|p| p.display().to_string()),
        "contend": args.contend,
        "preemptions": m.preemptions,
        "prefill_tokens_per_s": m.prefill,
        "decode_tokens_per_s": m.decode,
        "peak_rss_bytes": m.peak,
        "weight_bytes_per_token": m.bytes_per_token,
        "read_bandwidth_bytes_per_s": m.bandwidth,
        "decode_floor_tokens_per_s": m.floor,
        "decode_fraction_of_floor": m.decode / m.floor,
    });
    println!("{out}");
}

/// The instruction set the CPU kernels run with (`avx512bf16`, `avx2`, `i8mm`, `neon`, ...),
/// or `None` on a GPU.
fn cpu_isa(engine: &mixtral::Engine) -> Option<&'static str> {
    (engine.device() == mixtral::Device::Cpu).then(|| mixtral::kernels::Isa::detect().name())
}

/// The report for people.
fn print_text(engine: &mixtral::Engine, args: &Args, m: &Measured) {
    let (prefill, decode, floor, preemptions) = (m.prefill, m.decode, m.floor, m.preemptions);
    println!("model         {}", engine.dir().display());
    println!("threads       {}", engine.threads());
    if let Some(isa) = cpu_isa(engine) {
        println!(
            "cpu kernels   {isa} (of {}; {} caps it)",
            mixtral::kernels::Isa::available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", "),
            mixtral::kernels::isa::ISA_ENV
        );
    }
    println!(
        "precision     {} (activations of the matmuls), KV cache {}",
        format!("{:?}", engine.model().precision()).to_lowercase(),
        format!("{:?}", engine.model().kv_dtype()).to_lowercase()
    );
    let interleaved = engine.model().interleaved_weight_bytes();
    println!(
        "weights       {} MB interleaved at load (--repack)",
        interleaved / 1_000_000
    );
    if let Some(path) = &args.json_schema {
        println!("constraint    JSON Schema {}", path.display());
    }
    if args.contend > 0 {
        println!(
            "competition   {} busy threads in another process; {preemptions} regions found a helper preempted",
            args.contend
        );
    }
    println!(
        "prefill       {prefill:.1} tokens/s ({} tokens, median of {})",
        m.stats.prompt_tokens,
        args.repeat.max(1)
    );
    println!(
        "decode        {decode:.1} tokens/s ({} tokens)",
        m.stats.generated_tokens
    );
    println!(
        "decode floor  {floor:.1} tokens/s = {:.1} MB read per token / {:.1} GB/s measured read bandwidth",
        m.bytes_per_token as f64 / 1e6,
        m.bandwidth / 1e9
    );
    println!("of floor      {:.0}%", 100.0 * decode / floor);
    if let Some(p) = m.peak {
        println!("peak RSS      {}", crate::report::bytes(p));
    }
}
