//! The Mixtral model graph: config, weights, KV cache, prefill and decode.
//!
//! Sits above the kernels and tensor crates (`tensor ← kernels ← model ← mixtral`). It knows
//! the Hugging Face names and shapes of a Mixtral checkpoint and composes the kernels into
//! the forward pass.
//!
//! # Dimension legend
//! `T` tokens, `S` cached positions, `D` hidden, `H` query heads, `G` KV heads, `Dh` head_dim,
//! `F` FFN width, `E` experts, `K` top-k, `V` vocab. Code uses the words (`n_tokens`,
//! `hidden`, `n_kv_heads`, `top_k`); comments use the letters.
//!
//! # Design decisions
//! - **Everything from `config.json`.** Nothing is hard-coded to 8x7B: [`Config`] carries
//!   every field that changes the math, with transformers' defaults.
//! - **Weights are borrowed.** [`Weights`] holds tensors that point into the mapped
//!   checkpoint; both expert layouts (per-expert tensors and transformers 5.x fused 3-D
//!   tensors) become the same per-expert views without a copy.
//! - **Validate once, at load.** Every tensor's presence, shape and dtype is checked when
//!   the checkpoint opens, so the forward pass never meets a bad shape.
//!
//! ```
//! use mixtral_model::Checkpoint;
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-f32");
//! let ckpt = Checkpoint::open(dir)?;
//! assert_eq!(ckpt.config.num_local_experts, 8);
//! assert_eq!(ckpt.weights.layers[1].experts[7].w2.dims(), &[64, 128]);
//! # Ok::<(), mixtral_model::Error>(())
//! ```

mod cache;
mod checkpoint;
mod config;
mod device;
mod error;
pub mod export;
mod forward;
mod gguf_config;
mod graph;
mod input;
mod kv_cache;
mod kv_pool;
mod mistral_config;
pub mod names;
mod ops;
mod repack;
mod routing;
pub mod steer;
mod weights;

pub use cache::KvCache;
pub use checkpoint::Checkpoint;
pub use config::{Config, MAX_CONTEXT, MAX_DIM};
pub use device::cuda::DeviceWeight;
pub use device::cuda_plan::DevicePlan;
pub use device::random::{WeightMix, WeightRole};
pub use device::{Layer, Stack};
pub use error::{Error, Result};
pub use forward::{
    BatchItem, BatchScratch, DeviceId, ForwardOptions, Logits, Model, Output, Placement, Recorded,
    Step,
};
pub use kv_cache::{KvDType, LayerView};
pub use kv_pool::{KvPool, PAGE_POSITIONS};
pub use ops::Kernels;
pub use routing::{LayerRouting, RoutingTrace};
pub use steer::{ForceRouting, Intervention, RouterHook, RouterLogits};
pub use weights::{ExpertWeights, LayerWeights, Warning, Weights};
