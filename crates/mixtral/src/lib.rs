//! A from-scratch Rust inference engine for Mixtral: the API a user sees first.
//!
//! The top of the crate graph: it composes [`tensor`], [`kernels`], [`model`], [`sampler`]
//! and [`tokenizer`], and is the only crate that re-exports the others.
//!
//! ```
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-f32");
//! let ckpt = mixtral::model::Checkpoint::open(dir)?;
//! println!("{} layers, {} experts", ckpt.config.num_hidden_layers, ckpt.config.num_local_experts);
//! # Ok::<(), mixtral::model::Error>(())
//! ```

pub use mixtral_kernels as kernels;
pub use mixtral_model as model;
pub use mixtral_sampler as sampler;
pub use mixtral_tensor as tensor;
pub use mixtral_tokenizer as tokenizer;
