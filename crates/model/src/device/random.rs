//! Random weights made on the device at a real shape, in bf16 or in the mix of GGUF block
//! types a llama.cpp file of each type holds: for benchmarks at sizes no test ships a file of.

use super::cuda::{Cuda, DeviceStack, DeviceWeight};
use super::{Layer, Stack};
use crate::{Config, Result};
use mixtral_kernels::cuda::{BlockType, Storage};
use std::sync::Arc;

/// What a file of one type holds, tensor by tensor, as llama.cpp's quantizer
/// (`llama_tensor_get_type`) makes it for an 8-expert Mixtral. The Q4_K_M mix was checked
/// against its own file at the 8x7B layer shape (`mixtral inspect --tensors`): attn_q and
/// the gate/up experts Q4_K, attn_k and attn_v Q8_0 (its 8-expert rule), attn_output Q5_K,
/// the down experts Q6_K on the layers it gives more bits and Q4_K elsewhere, output Q6_K,
/// token_embd Q4_K. Norms and the router stay f32 in files (bf16 here, as uploaded).
#[allow(non_camel_case_types)] // llama.cpp's names for the file types
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightMix {
    /// Every matrix bf16.
    Bf16,
    /// Q8_0 throughout.
    Q8_0,
    /// Q6_K, attn_k / attn_v Q8_0.
    Q6_K,
    /// Q5_K, with Q6_K where llama.cpp gives more bits, attn_k / attn_v Q8_0.
    Q5_K_M,
    /// Q4_K, with Q6_K where llama.cpp gives more bits, attn_k / attn_v Q8_0, attn_output Q5_K.
    Q4_K_M,
    /// Q4_0, attn_k / attn_v Q8_0, output Q6_K.
    Q4_0,
}

/// A weight's role, for [`WeightMix::storage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightRole {
    /// token_embd.
    Embed,
    /// output (the untied head).
    Head,
    /// attn_q.
    Q,
    /// attn_k and attn_v.
    KV,
    /// attn_output.
    O,
    /// The router (ffn_gate_inp).
    Router,
    /// ffn_gate_exps and ffn_up_exps.
    GateUp,
    /// ffn_down_exps.
    Down,
}

impl WeightMix {
    /// Every mix, smallest files last.
    pub const ALL: [WeightMix; 6] = [
        WeightMix::Bf16,
        WeightMix::Q8_0,
        WeightMix::Q6_K,
        WeightMix::Q5_K_M,
        WeightMix::Q4_K_M,
        WeightMix::Q4_0,
    ];

    /// The name llama.cpp gives the file type.
    pub fn name(self) -> &'static str {
        match self {
            WeightMix::Bf16 => "bf16",
            WeightMix::Q8_0 => "Q8_0",
            WeightMix::Q6_K => "Q6_K",
            WeightMix::Q5_K_M => "Q5_K_M",
            WeightMix::Q4_K_M => "Q4_K_M",
            WeightMix::Q4_0 => "Q4_0",
        }
    }

    /// The mix named `s` (case-insensitive), as [`WeightMix::name`] spells it.
    pub fn parse(s: &str) -> Option<WeightMix> {
        WeightMix::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    /// How the mix stores the weight of `role` in `layer` of `layers`.
    pub fn storage(self, role: WeightRole, layer: usize, layers: usize) -> Storage {
        use BlockType as B;
        // llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
        // in between.
        let more_bits = layer < layers / 8
            || layer >= 7 * layers / 8
            || (layer - layers / 8).rem_euclid(3) == 2;
        let base = match self {
            WeightMix::Bf16 => return Storage::Bf16,
            WeightMix::Q8_0 => B::Q8_0,
            WeightMix::Q6_K => B::Q6_K,
            WeightMix::Q5_K_M => B::Q5_K,
            WeightMix::Q4_K_M => B::Q4_K,
            WeightMix::Q4_0 => B::Q4_0,
        };
        let k_m = matches!(self, WeightMix::Q5_K_M | WeightMix::Q4_K_M);
        let t = match role {
            WeightRole::Router => return Storage::Bf16,
            WeightRole::KV if self != WeightMix::Q8_0 => B::Q8_0,
            WeightRole::Head if self != WeightMix::Q8_0 => B::Q6_K,
            WeightRole::O if self == WeightMix::Q4_K_M => B::Q5_K,
            WeightRole::Down if k_m && more_bits => B::Q6_K,
            _ => base,
        };
        Storage::Blocks(t)
    }
}

impl Cuda {
    /// A model of `c`'s shape with random weights stored as `mix` says, made on the device (no
    /// host copy): for benchmarks at real sizes. Each matrix is scaled by `1/√fan_in` so the
    /// activations keep a sane magnitude through the layers.
    pub(crate) fn random(&self, c: &Config, mix: WeightMix, seed: u64) -> Result<DeviceStack> {
        let gpu = &self.gpu;
        let (d, v, e, f) = (
            c.hidden_size,
            c.vocab_size,
            c.num_local_experts,
            c.intermediate_size,
        );
        let layers_n = c.num_hidden_layers;
        // A distinct seed per tensor, so no two matrices repeat each other's values.
        let count = std::cell::Cell::new(0u64);
        let next_seed = || {
            count.set(count.get() + 1);
            seed.wrapping_add(count.get() << 32)
        };
        let scale = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        let fill = |s: Storage, n: usize, k: usize, fan_in: usize, what: &str| {
            let mut buf = gpu.alloc_matrix(s, n * k, what)?;
            gpu.fill_random(&mut buf, next_seed(), scale(fan_in))?;
            let buf = Arc::new(buf);
            Ok::<_, crate::Error>(DeviceWeight::new(buf, n, k))
        };
        let norm = |what: &str| fill(Storage::Bf16, d, 1, 1, what);
        let mut layers = Vec::new();
        for l in 0..layers_n {
            let what = |n: &str| format!("layer {l} {n}");
            let at = |role| mix.storage(role, l, layers_n);
            let storage = [at(WeightRole::GateUp), at(WeightRole::Down)];
            let mut experts = gpu.alloc_experts(e, d, f, storage, &what("experts"))?;
            for (m, fan_in) in [
                (&mut experts.w1, d),
                (&mut experts.w3, d),
                (&mut experts.w2, f),
            ] {
                gpu.fill_random(m, next_seed(), scale(fan_in))?;
            }
            let (qd, kvd) = (c.q_dim(), c.kv_dim());
            layers.push(Layer {
                attn_norm: norm(&what("input_layernorm"))?,
                wq: fill(at(WeightRole::Q), qd, d, d, &what("q_proj"))?,
                wk: fill(at(WeightRole::KV), kvd, d, d, &what("k_proj"))?,
                wv: fill(at(WeightRole::KV), kvd, d, d, &what("v_proj"))?,
                wo: fill(at(WeightRole::O), d, qd, qd, &what("o_proj"))?,
                moe_norm: norm(&what("post_attention_layernorm"))?,
                router: fill(at(WeightRole::Router), e, d, d, &what("gate"))?,
                experts,
            });
        }
        let top = |role| mix.storage(role, 0, layers_n);
        Ok(Stack {
            embed: fill(top(WeightRole::Embed), v, d, 1, "embed_tokens")?,
            layers,
            norm: norm("norm")?,
            lm_head: fill(top(WeightRole::Head), v, d, d, "lm_head")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_matches_llama_cpps_file_at_two_layers() {
        // m87-Q4_K_M.gguf (llama.cpp's quantizer, 2 layers of the 8x7B shape).
        let m = WeightMix::Q4_K_M;
        let b = Storage::Blocks;
        assert_eq!(m.storage(WeightRole::Q, 0, 2), b(BlockType::Q4_K));
        assert_eq!(m.storage(WeightRole::KV, 1, 2), b(BlockType::Q8_0));
        assert_eq!(m.storage(WeightRole::O, 0, 2), b(BlockType::Q5_K));
        assert_eq!(m.storage(WeightRole::GateUp, 1, 2), b(BlockType::Q4_K));
        assert_eq!(m.storage(WeightRole::Down, 0, 2), b(BlockType::Q4_K));
        assert_eq!(m.storage(WeightRole::Down, 1, 2), b(BlockType::Q6_K));
        assert_eq!(m.storage(WeightRole::Head, 0, 2), b(BlockType::Q6_K));
        assert_eq!(m.storage(WeightRole::Embed, 0, 2), b(BlockType::Q4_K));
        assert_eq!(m.storage(WeightRole::Router, 0, 2), Storage::Bf16);
    }

    #[test]
    fn more_bits_follows_llama_cpp_at_32_layers() {
        let down: Vec<usize> = (0..32)
            .filter(|&l| {
                WeightMix::Q4_K_M.storage(WeightRole::Down, l, 32)
                    == Storage::Blocks(BlockType::Q6_K)
            })
            .collect();
        // i < 4, i >= 28, (i - 4) % 3 == 2.
        let want: Vec<usize> = (0..32)
            .filter(|&i| !(4..28).contains(&i) || (i - 4) % 3 == 2)
            .collect();
        assert_eq!(down, want);
        assert_eq!(WeightMix::parse("q4_k_m"), Some(WeightMix::Q4_K_M));
        assert_eq!(WeightMix::parse("BF16"), Some(WeightMix::Bf16));
        assert_eq!(WeightMix::parse("q3_k"), None);
        assert!(
            WeightMix::ALL
                .iter()
                .all(|m| WeightMix::parse(m.name()) == Some(*m))
        );
    }
}
