//! Tensor storage for the Mixtral engine: dtypes (plain and ggml's block-quantized ones),
//! shapes, and tensors whose bytes are either owned host memory or borrowed from a
//! memory-mapped safetensors or GGUF file.
//!
//! The bottom of the crate graph: it depends on none of our crates, and everything else
//! depends on it (`tensor ← kernels ← model ← mixtral`).
//!
//! # Design decisions
//! - **Borrow, never copy.** [`SafetensorsFile`] maps the file and parses only the header;
//!   each [`Tensor`] it hands out shares the mapping through an `Arc`, so a 93 GB checkpoint
//!   opens in milliseconds and costs only the pages a kernel touches. bf16 stays bf16.
//! - **Checked views.** [`Tensor::as_slice`] checks dtype and alignment (via bytemuck) and
//!   returns an error instead of reinterpreting bytes it should not.
//! - **No tensor algebra.** Shapes are plain row-major; there are no strides, broadcasting or
//!   autograd. Kernels take slices and explicit sizes.
//! - **Generic formats here, Mixtral names elsewhere.** [`TensorStore`] knows files (safetensors
//!   and [`gguf`]), shards and names; which names a Mixtral needs and their shapes is the model
//!   crate's business. Quantized tensors are bytes with a block dtype; dequantizing them is the
//!   kernels crate's.
//!
//! ```no_run
//! use mixtral_tensor::TensorStore;
//! let store = TensorStore::open_dir("tests/fixtures/models/tiny-bf16")?;
//! let w = store.tensor("model.layers.0.block_sparse_moe.experts.5.w1.weight")?;
//! let rows: &[half::bf16] = w.as_slice()?;
//! println!("{} {} {}", w.shape(), w.dtype(), rows.len());
//! # Ok::<(), mixtral_tensor::Error>(())
//! ```

mod dtype;
mod error;
mod file;
pub mod gguf;
mod read;
mod save;
mod shape;
mod storage;
mod store;
mod tensor;

pub use dtype::{ALL_DTYPES, DType, Element};
pub use error::{Error, Result};
pub use file::{FileDType, MAX_HEADER_BYTES, SafetensorsFile, TensorInfo};
pub use read::{MAX_NAME_SHOWN, escape, read_small_file};
pub use save::{save, write_file_replacing};
pub use shape::Shape;
pub use storage::{AlignedBytes, Storage};
pub use store::{INDEX_FILE, SINGLE_FILE, TensorFile, TensorStore};
pub use tensor::{Layout, Tensor};
