//! Tensor storage for the Mixtral engine: dtypes, shapes, and tensors whose bytes are either
//! owned host memory or borrowed from a memory-mapped safetensors file.
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
//! - **Generic safetensors here, Mixtral names elsewhere.** [`TensorStore`] knows files, shards
//!   and names; which names a Mixtral needs and their shapes is the model crate's business.
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
mod save;
mod shape;
mod storage;
mod store;
mod tensor;

pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use file::{MAX_HEADER_BYTES, SafetensorsFile, TensorInfo};
pub use save::save;
pub use shape::Shape;
pub use storage::{AlignedBytes, Storage};
pub use store::{INDEX_FILE, SINGLE_FILE, TensorStore};
pub use tensor::Tensor;
