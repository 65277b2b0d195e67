//! A from-scratch Rust inference engine for Mixtral: the API a user sees first.
//!
//! This facade composes the tensor, kernels, model, sampler and tokenizer crates.
