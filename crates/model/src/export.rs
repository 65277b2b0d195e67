//! Writing a checkpoint as a quantized GGUF file in llama.cpp's Mixtral layout (architecture
//! `llama`, merged `ffn_*_exps` experts, q/k rows in adjacent-pair RoPE order), with the
//! tensor types `llama-quantize` picks for Mixtral, quantized by ggml's own algorithm
//! ([`mixtral_kernels::quantize`]), so that llama.cpp's tools load and run the result.
//!
//! The file is streamed: one tensor (for the experts, one expert) is widened to f32,
//! quantized on every thread and written before the next is read, so memory stays at a few
//! hundred MB whatever the model's size.

use crate::names::Layout;
use crate::{Checkpoint, Config, Error, Result, Weights};
use mixtral_kernels::Weight;
use mixtral_kernels::quantize::quantize_rows;
use mixtral_tensor::gguf::{GgufWriter, TensorSink, TensorSpec, Value};
use mixtral_tensor::{DType, Shape, Tensor};
use std::path::Path;

/// What `mixtral quantize` and `--quantize` produce: llama.cpp's file types (the tensor
/// types `llama-quantize` picks for a Mixtral) and two uniform ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantScheme {
    /// Every matrix Q8_0 (llama.cpp's `Q8_0` file).
    Q8_0,
    /// Matrices Q6_K, attention k/v Q8_0 (llama.cpp's `Q6_K` file).
    Q6K,
    /// llama.cpp's `Q5_K_M`: Q5_K, with Q6_K for the output and for `ffn_down` of some layers,
    /// Q8_0 for attention k/v.
    Q5KM,
    /// llama.cpp's `Q4_K_M`: Q4_K, with Q6_K for the output and for `ffn_down` of some layers,
    /// Q5_K for the attention output, Q8_0 for attention k/v.
    Q4KM,
    /// Every matrix Q5_K (no mixing; smaller and less accurate than `Q5_K_M`).
    Q5K,
    /// Every matrix Q4_K (no mixing; smaller and less accurate than `Q4_K_M`).
    Q4K,
}

impl std::str::FromStr for QuantScheme {
    type Err = String;

    /// `q8_0`, `q6_k`, `q5_k_m`, `q4_k_m`, `q5_k`, `q4_k` (any case).
    fn from_str(s: &str) -> std::result::Result<QuantScheme, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "q8_0" => QuantScheme::Q8_0,
            "q6_k" => QuantScheme::Q6K,
            "q5_k_m" => QuantScheme::Q5KM,
            "q4_k_m" => QuantScheme::Q4KM,
            "q5_k" => QuantScheme::Q5K,
            "q4_k" => QuantScheme::Q4K,
            _ => {
                return Err(format!(
                    "unknown quantization `{s}` (expected q8_0, q6_k, q5_k_m, q4_k_m, q5_k or q4_k)"
                ));
            }
        })
    }
}

impl std::fmt::Display for QuantScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuantScheme::Q8_0 => "Q8_0",
            QuantScheme::Q6K => "Q6_K",
            QuantScheme::Q5KM => "Q5_K_M",
            QuantScheme::Q4KM => "Q4_K_M",
            QuantScheme::Q5K => "Q5_K",
            QuantScheme::Q4K => "Q4_K",
        })
    }
}

/// Which matrix a type is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matrix {
    /// `token_embd`.
    Embed,
    /// `output` (the LM head).
    Output,
    /// `attn_q`.
    Q,
    /// `attn_k`.
    K,
    /// `attn_v`.
    V,
    /// `attn_output`.
    O,
    /// `ffn_gate_exps` / `ffn_up_exps` (w1 / w3).
    GateUp,
    /// `ffn_down_exps` (w2) of a layer.
    Down,
}

impl QuantScheme {
    /// The type this scheme stores `m` of layer `layer` (of `layers`) in, as llama.cpp's
    /// `llama_tensor_get_type` decides for a Mixtral (8 experts): attention k/v are always
    /// Q8_0 ("bumping this to Q8_0 trades just ~128MB"), the output is Q6_K unless the file is
    /// Q8_0, and the `_M` types give `ffn_down` Q6_K on the layers `use_more_bits` names.
    pub fn tensor_type(self, m: Matrix, layer: usize, layers: usize) -> DType {
        let base = match self {
            QuantScheme::Q8_0 => return DType::Q8_0,
            QuantScheme::Q6K => DType::Q6_K,
            QuantScheme::Q5KM | QuantScheme::Q5K => DType::Q5_K,
            QuantScheme::Q4KM | QuantScheme::Q4K => DType::Q4_K,
        };
        let mixed = matches!(
            self,
            QuantScheme::Q4KM | QuantScheme::Q5KM | QuantScheme::Q6K
        );
        if !mixed {
            return base;
        }
        match m {
            Matrix::Output => DType::Q6_K,
            Matrix::K | Matrix::V => DType::Q8_0,
            Matrix::O if self == QuantScheme::Q4KM => DType::Q5_K,
            Matrix::Down if self != QuantScheme::Q6K && use_more_bits(layer, layers) => DType::Q6_K,
            _ => base,
        }
    }

    /// `general.file_type` of llama.cpp's matching file type (a label; each tensor's own type
    /// is what counts).
    pub fn file_type(self) -> u32 {
        match self {
            QuantScheme::Q8_0 => 7,
            QuantScheme::Q6K => 18,
            QuantScheme::Q5KM => 17,
            QuantScheme::Q4KM => 15,
            QuantScheme::Q5K => 16,
            QuantScheme::Q4K => 14,
        }
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one
/// between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// One tensor of the output file and where its values come from.
struct Planned<'a> {
    spec: TensorSpec,
    /// Source matrices, concatenated along rows (the experts of a merged tensor).
    sources: Vec<&'a Tensor>,
    /// q/k rows to move from half-split to adjacent-pair order (heads of `head_dim`).
    permute: Option<usize>,
}

/// The tensors of the GGUF file for `w` under `scheme`, in llama.cpp's order.
fn plan<'a>(w: &'a Weights, cfg: &Config, scheme: QuantScheme) -> Vec<Planned<'a>> {
    let g = Layout::Gguf;
    let layers = cfg.num_hidden_layers;
    let permute = (!cfg.rope_interleaved).then_some(cfg.head_dim);
    let mut out = Vec::new();
    let mut push =
        |name: String, dtype: DType, shape: Vec<usize>, sources: Vec<&'a Tensor>, permute| {
            let spec = TensorSpec {
                name,
                dtype,
                shape: Shape::new(shape),
            };
            out.push(Planned {
                spec,
                sources,
                permute,
            });
        };
    let (v, d, f, e) = (
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_local_experts,
    );
    let q = |m| scheme.tensor_type(m, 0, layers);
    push(
        g.embed().into(),
        q(Matrix::Embed),
        vec![v, d],
        vec![&w.embed],
        None,
    );
    push(
        g.final_norm().into(),
        DType::F32,
        vec![d],
        vec![&w.norm],
        None,
    );
    push(
        g.lm_head().into(),
        q(Matrix::Output),
        vec![v, d],
        vec![&w.lm_head],
        None,
    );
    let (hq, hkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    for (l, lw) in w.layers.iter().enumerate() {
        let t = |m| scheme.tensor_type(m, l, layers);
        push(
            g.attn_norm(l),
            DType::F32,
            vec![d],
            vec![&lw.attn_norm],
            None,
        );
        push(
            g.wq(l),
            t(Matrix::Q),
            vec![hq * hd, d],
            vec![&lw.wq],
            permute,
        );
        push(
            g.wk(l),
            t(Matrix::K),
            vec![hkv * hd, d],
            vec![&lw.wk],
            permute,
        );
        push(g.wv(l), t(Matrix::V), vec![hkv * hd, d], vec![&lw.wv], None);
        push(g.wo(l), t(Matrix::O), vec![d, hq * hd], vec![&lw.wo], None);
        push(g.moe_norm(l), DType::F32, vec![d], vec![&lw.moe_norm], None);
        push(g.router(l), DType::F32, vec![e, d], vec![&lw.router], None);
        let experts = |pick: fn(&'a crate::ExpertWeights) -> &'a Tensor| {
            lw.experts.iter().map(pick).collect::<Vec<_>>()
        };
        use crate::names::ExpertMatrix as X;
        let name = |m| g.merged_experts(l, m).expect("GGUF merges experts");
        push(
            name(X::W1),
            t(Matrix::GateUp),
            vec![e, f, d],
            experts(|x| &x.w1),
            None,
        );
        push(
            name(X::W2),
            t(Matrix::Down),
            vec![e, d, f],
            experts(|x| &x.w2),
            None,
        );
        push(
            name(X::W3),
            t(Matrix::GateUp),
            vec![e, f, d],
            experts(|x| &x.w3),
            None,
        );
    }
    out
}

/// The `llama.*` and `general.*` metadata of a Mixtral with `cfg`.
fn metadata(cfg: &Config, scheme: QuantScheme, name: &str) -> Vec<(String, Value)> {
    let u32v = |n: usize| Value::U32(u32::try_from(n).unwrap_or(u32::MAX));
    vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String(name.into())),
        ("general.file_type".into(), Value::U32(scheme.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
        ("llama.vocab_size".into(), u32v(cfg.vocab_size)),
        (
            "llama.context_length".into(),
            u32v(cfg.max_position_embeddings),
        ),
        ("llama.embedding_length".into(), u32v(cfg.hidden_size)),
        ("llama.block_count".into(), u32v(cfg.num_hidden_layers)),
        (
            "llama.feed_forward_length".into(),
            u32v(cfg.intermediate_size),
        ),
        ("llama.rope.dimension_count".into(), u32v(cfg.head_dim)),
        (
            "llama.attention.head_count".into(),
            u32v(cfg.num_attention_heads),
        ),
        (
            "llama.attention.head_count_kv".into(),
            u32v(cfg.num_key_value_heads),
        ),
        ("llama.attention.key_length".into(), u32v(cfg.head_dim)),
        ("llama.attention.value_length".into(), u32v(cfg.head_dim)),
        (
            "llama.rope.freq_base".into(),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.expert_count".into(), u32v(cfg.num_local_experts)),
        (
            "llama.expert_used_count".into(),
            u32v(cfg.num_experts_per_tok),
        ),
    ]
}

/// Rows of f32 values quantized per chunk: about 16 MiB of f32 per step.
const CHUNK_VALUES: usize = 1 << 22;

/// Writes `ckpt` to `path` (which must not exist) as a GGUF file quantized with `scheme`,
/// with the model's metadata plus `extra` (the tokenizer's keys, which the caller knows).
/// `progress(done, total)` counts output bytes.
///
/// # Errors
/// A source tensor whose rows are not whole blocks of its target type (e.g. a hidden size
/// that is not a multiple of 256 for the K-quants), a sliding window GGUF cannot express, and
/// I/O errors; the partial file is removed.
pub fn write_quantized_gguf(
    ckpt: &Checkpoint,
    scheme: QuantScheme,
    extra: Vec<(String, Value)>,
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<()> {
    let cfg = &ckpt.config;
    if let Some(w) = cfg.sliding_window
        && w < cfg.max_position_embeddings
    {
        return Err(Error::Export {
            path: path.to_path_buf(),
            reason: format!("a sliding window of {w} positions cannot be expressed in GGUF"),
        });
    }
    let planned = plan(&ckpt.weights, cfg, scheme);
    for p in &planned {
        let k = *p.spec.shape.dims().last().expect("rank ≥ 1");
        if !k.is_multiple_of(p.spec.dtype.block_len()) {
            return Err(Error::Export {
                path: path.to_path_buf(),
                reason: format!(
                    "`{}`: rows of {k} values are not whole {} blocks of {}",
                    p.spec.name,
                    p.spec.dtype,
                    p.spec.dtype.block_len()
                ),
            });
        }
    }
    let name = ckpt
        .dir
        .file_stem()
        .map_or("mixtral".into(), |n| n.to_string_lossy().into_owned());
    let mut writer = GgufWriter::new();
    for (k, v) in metadata(cfg, scheme, &name).into_iter().chain(extra) {
        writer.metadata(k, v);
    }
    let specs: Vec<TensorSpec> = planned.iter().map(|p| p.spec.clone()).collect();
    let total: u64 = specs.iter().map(|s| s.bytes() as u64).sum();
    let mut done = 0u64;
    let mut values = Vec::new();
    let mut bytes = Vec::new();
    writer
        .write_streaming(path, &specs, |i, sink| {
            let p = &planned[i];
            write_tensor(p, &mut values, &mut bytes, sink, |n| {
                done += n as u64;
                progress(done, total);
            })
        })
        .map_err(Error::from)
}

/// Streams one planned tensor into `sink`: each source in row chunks, widened, permuted if
/// asked, quantized (or written as f32).
fn write_tensor(
    p: &Planned<'_>,
    values: &mut Vec<f32>,
    bytes: &mut Vec<u8>,
    sink: &mut TensorSink<'_>,
    mut wrote: impl FnMut(usize),
) -> mixtral_tensor::Result<()> {
    let k = *p.spec.shape.dims().last().expect("rank ≥ 1");
    for src in &p.sources {
        let w = Weight::new(src)?;
        let rows = w.len() / k.max(1);
        // Permuted tensors go whole (their rows move within a head); others in chunks.
        let chunk = if p.permute.is_some() {
            rows
        } else {
            (CHUNK_VALUES / k.max(1)).max(1)
        };
        for r0 in (0..rows).step_by(chunk.max(1)) {
            let n = chunk.min(rows - r0);
            values.resize(n * k, 0.0);
            w.row_into(r0 * k, values);
            if let Some(hd) = p.permute {
                permute_to_pairs(values, k, hd);
            }
            if p.spec.dtype == DType::F32 {
                bytes.clear();
                bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            } else {
                let len = mixtral_kernels::quantize::quantized_bytes(p.spec.dtype, values.len())
                    .expect("checked: whole blocks");
                bytes.resize(len, 0);
                quantize_rows(p.spec.dtype, values, k, bytes);
            }
            sink.write(bytes)?;
            wrote(bytes.len());
        }
    }
    Ok(())
}

/// Moves each head's rows from Hugging Face's half-split RoPE order to the adjacent-pair
/// order llama.cpp expects (its converter's `permute`): new row `2i + j` of a head is old
/// row `j · hd/2 + i`.
fn permute_to_pairs(values: &mut [f32], k: usize, hd: usize) {
    let half = hd / 2;
    let mut head = vec![0f32; hd * k];
    for h in values.chunks_exact_mut(hd * k) {
        head.copy_from_slice(h);
        for i in 0..half {
            for j in 0..2 {
                let (dst, src) = (2 * i + j, j * half + i);
                h[dst * k..(dst + 1) * k].copy_from_slice(&head[src * k..(src + 1) * k]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_types_follow_llama_quantize_for_a_mixtral() {
        // The fixtures' tiny-q Q4_K_M file (2 layers) and bench-1b's (8 layers).
        let s = QuantScheme::Q4KM;
        assert_eq!(s.tensor_type(Matrix::Down, 0, 2), DType::Q4_K);
        assert_eq!(s.tensor_type(Matrix::Down, 1, 2), DType::Q6_K);
        let down: Vec<DType> = (0..8).map(|l| s.tensor_type(Matrix::Down, l, 8)).collect();
        let six = [0, 3, 6, 7];
        for (l, t) in down.iter().enumerate() {
            let want = if six.contains(&l) {
                DType::Q6_K
            } else {
                DType::Q4_K
            };
            assert_eq!(*t, want, "layer {l}");
        }
        assert_eq!(s.tensor_type(Matrix::O, 0, 8), DType::Q5_K);
        assert_eq!(s.tensor_type(Matrix::K, 0, 8), DType::Q8_0);
        assert_eq!(s.tensor_type(Matrix::Output, 0, 8), DType::Q6_K);
        assert_eq!(s.tensor_type(Matrix::Embed, 0, 8), DType::Q4_K);
        assert_eq!(
            QuantScheme::Q8_0.tensor_type(Matrix::Output, 0, 8),
            DType::Q8_0
        );
        assert_eq!(QuantScheme::Q4K.tensor_type(Matrix::K, 0, 8), DType::Q4_K);
    }

    #[test]
    fn permutation_matches_the_converter() {
        // One head of 4 rows (hd 4), k = 1: half-split rows [a0, a1, b0, b1] become pairs
        // [a0, b0, a1, b1].
        let mut v = [0.0, 1.0, 2.0, 3.0];
        permute_to_pairs(&mut v, 1, 4);
        assert_eq!(v, [0.0, 2.0, 1.0, 3.0]);
    }
}
