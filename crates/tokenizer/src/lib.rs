//! The Mixtral tokenizer (SentencePiece BPE, 32000 ids, byte fallback) and the v1 instruct format.
//!
//! Stands beside the model in the crate graph and knows nothing of tensors.
