//! `cargo xtask gen-model`: write a random-weight Mixtral checkpoint in Hugging Face format,
//! streamed to disk (never the whole model in memory), for benchmarks at any shape.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What can go wrong generating a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line.
    #[error(
        "{0}\nusage: cargo xtask gen-model --preset bench-1b|mixtral-8x7b|tiny --out DIR [--layers N] [--dtype bf16|f32]"
    )]
    Usage(String),
    /// Writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A model shape.
#[derive(Clone, Copy, Debug)]
struct Shape {
    vocab: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    experts: usize,
    top_k: usize,
}

fn preset(name: &str) -> Option<Shape> {
    let s = |vocab, hidden, inter, layers, heads, kv_heads, experts, top_k| Shape {
        vocab,
        hidden,
        inter,
        layers,
        heads,
        kv_heads,
        experts,
        top_k,
    };
    Some(match name {
        // 230 M weights read per decoded token (460 MB in bf16): the CPU benchmark model.
        "bench-1b" => s(32000, 1024, 3584, 8, 16, 4, 8, 2),
        "mixtral-8x7b" => s(32000, 4096, 14336, 32, 32, 8, 8, 2),
        "tiny" => s(32000, 128, 256, 2, 4, 2, 8, 2),
        _ => return None,
    })
}

/// One tensor to write: its name, shape, and how to fill it.
struct Entry {
    name: String,
    dims: Vec<usize>,
    fill: Fill,
}

#[derive(Clone, Copy)]
enum Fill {
    /// Uniform with standard deviation `std` (`±std·√3`).
    Random { std: f32 },
    /// Every element 1 (RMSNorm weights).
    Ones,
}

fn entries(s: &Shape) -> Vec<Entry> {
    let dh = s.hidden / s.heads;
    let std = 0.02;
    let mut out = Vec::new();
    let mut push = |name: String, dims: Vec<usize>, fill| out.push(Entry { name, dims, fill });
    push(
        "model.embed_tokens.weight".into(),
        vec![s.vocab, s.hidden],
        Fill::Random { std },
    );
    for l in 0..s.layers {
        let p = format!("model.layers.{l}.");
        push(
            format!("{p}input_layernorm.weight"),
            vec![s.hidden],
            Fill::Ones,
        );
        push(
            format!("{p}self_attn.q_proj.weight"),
            vec![s.heads * dh, s.hidden],
            Fill::Random { std },
        );
        push(
            format!("{p}self_attn.k_proj.weight"),
            vec![s.kv_heads * dh, s.hidden],
            Fill::Random { std },
        );
        push(
            format!("{p}self_attn.v_proj.weight"),
            vec![s.kv_heads * dh, s.hidden],
            Fill::Random { std },
        );
        push(
            format!("{p}self_attn.o_proj.weight"),
            vec![s.hidden, s.heads * dh],
            Fill::Random { std },
        );
        push(
            format!("{p}post_attention_layernorm.weight"),
            vec![s.hidden],
            Fill::Ones,
        );
        // A wider router spread makes routing vary from token to token, as in a trained model.
        push(
            format!("{p}block_sparse_moe.gate.weight"),
            vec![s.experts, s.hidden],
            Fill::Random { std: 0.1 },
        );
        for e in 0..s.experts {
            let q = format!("{p}block_sparse_moe.experts.{e}.");
            push(
                format!("{q}w1.weight"),
                vec![s.inter, s.hidden],
                Fill::Random { std },
            );
            push(
                format!("{q}w2.weight"),
                vec![s.hidden, s.inter],
                Fill::Random { std },
            );
            push(
                format!("{q}w3.weight"),
                vec![s.inter, s.hidden],
                Fill::Random { std },
            );
        }
    }
    push("model.norm.weight".into(), vec![s.hidden], Fill::Ones);
    push(
        "lm_head.weight".into(),
        vec![s.vocab, s.hidden],
        Fill::Random { std },
    );
    out
}

/// A small, fast generator (xorshift64*): the data only needs to look random.
struct Rng(u64);

impl Rng {
    fn next_unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0 // [-1, 1)
    }
}

pub fn run(args: &[String]) -> Result<ExitCode, Error> {
    let (mut shape, mut out, mut bf16) = (None, None, true);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--preset" => {
                let name = value()?;
                shape = Some(
                    preset(&name)
                        .ok_or_else(|| Error::Usage(format!("unknown preset `{name}`")))?,
                );
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            "--layers" => {
                let v = value()?;
                let n = v
                    .parse()
                    .map_err(|_| Error::Usage(format!("--layers: `{v}` is not a number")))?;
                shape
                    .as_mut()
                    .ok_or_else(|| Error::Usage("--layers must follow --preset".into()))?
                    .layers = n;
            }
            "--dtype" => {
                bf16 = match value()?.as_str() {
                    "bf16" => true,
                    "f32" => false,
                    other => {
                        return Err(Error::Usage(format!(
                            "--dtype: `{other}` is not bf16 or f32"
                        )));
                    }
                }
            }
            other => return Err(Error::Usage(format!("unknown argument `{other}`"))),
        }
    }
    let shape = shape.ok_or_else(|| Error::Usage("--preset is required".into()))?;
    let out = out.ok_or_else(|| Error::Usage("--out is required".into()))?;
    std::fs::create_dir_all(&out).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    write_config(&out, &shape, bf16)?;
    let bytes = write_weights(&out.join("model.safetensors"), &entries(&shape), bf16)?;
    copy_tokenizer(&out, &shape)?;
    println!(
        "wrote {} ({:.2} GB of weights)",
        out.display(),
        bytes as f64 / 1e9
    );
    Ok(ExitCode::SUCCESS)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_config(dir: &Path, s: &Shape, bf16: bool) -> Result<(), Error> {
    let config = format!(
        r#"{{
  "architectures": ["MixtralForCausalLM"],
  "model_type": "mixtral",
  "vocab_size": {},
  "hidden_size": {},
  "intermediate_size": {},
  "num_hidden_layers": {},
  "num_attention_heads": {},
  "num_key_value_heads": {},
  "num_local_experts": {},
  "num_experts_per_tok": {},
  "max_position_embeddings": 32768,
  "rope_theta": 1000000.0,
  "rms_norm_eps": 1e-05,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "hidden_act": "silu",
  "bos_token_id": 1,
  "eos_token_id": 2,
  "torch_dtype": "{}"
}}
"#,
        s.vocab,
        s.hidden,
        s.inter,
        s.layers,
        s.heads,
        s.kv_heads,
        s.experts,
        s.top_k,
        if bf16 { "bfloat16" } else { "float32" }
    );
    let path = dir.join("config.json");
    std::fs::write(&path, config).map_err(io(&path))?;
    let path = dir.join("generation_config.json");
    std::fs::write(&path, "{\"bos_token_id\": 1, \"eos_token_id\": 2}\n").map_err(io(&path))
}

/// Writes the safetensors header, then each tensor's random bytes in 1 MiB chunks.
fn write_weights(path: &Path, entries: &[Entry], bf16: bool) -> Result<u64, Error> {
    let elem = if bf16 { 2 } else { 4 };
    let mut header = String::from("{");
    let mut offset = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let n: usize = e.dims.iter().product();
        let end = offset + (n * elem) as u64;
        let dims: Vec<String> = e.dims.iter().map(|d| d.to_string()).collect();
        let dtype = if bf16 { "BF16" } else { "F32" };
        let sep = if i == 0 { "" } else { "," };
        header += &format!(
            "{sep}\"{}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            e.name,
            dims.join(",")
        );
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' '); // 8-byte alignment of the data, as the safetensors writer does
    }
    let file = File::create(path).map_err(io(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io(path))?;
    w.write_all(header.as_bytes()).map_err(io(path))?;
    let mut chunk = Vec::with_capacity(1 << 20);
    for (i, e) in entries.iter().enumerate() {
        let mut rng =
            Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
        let mut left: usize = e.dims.iter().product();
        while left > 0 {
            let n = left.min((1 << 20) / elem);
            chunk.clear();
            for _ in 0..n {
                let v = match e.fill {
                    Fill::Random { std } => rng.next_unit() * std * 3f32.sqrt(),
                    Fill::Ones => 1.0,
                };
                if bf16 {
                    // Round to nearest even: add half an ulp of bf16 plus the tie bit, truncate.
                    let b = v.to_bits();
                    let rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16;
                    chunk.extend_from_slice(&(rounded as u16).to_le_bytes());
                } else {
                    chunk.extend_from_slice(&v.to_le_bytes());
                }
            }
            w.write_all(&chunk).map_err(io(path))?;
            left -= n;
        }
    }
    w.flush().map_err(io(path))?;
    Ok(offset)
}

/// Copies the shipped Mixtral tokenizer when the vocabulary is Mixtral's, so text prompts work.
fn copy_tokenizer(dir: &Path, s: &Shape) -> Result<(), Error> {
    if s.vocab != 32000 {
        return Ok(());
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/tiny-bf16");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let to = dir.join(f);
        std::fs::copy(src.join(f), &to).map_err(io(&to))?;
    }
    Ok(())
}
