//! Token sampling: turns a row of logits into the next token id.
//!
//! Stands beside the model in the crate graph and knows nothing of tensors: it works on `&[f32]`.
