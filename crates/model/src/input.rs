//! Checks of a forward call's input shared by the CPU and CUDA models: a typed error for
//! every way user input can be wrong, before any kernel runs.

use crate::{Config, Error, Result};

/// Tokens must be non-empty and below the vocabulary size, positions must continue a cache
/// of `cached` positions, and the sequence must fit `max_position_embeddings`.
pub(crate) fn check_input(
    c: &Config,
    tokens: &[u32],
    positions: &[usize],
    cached: usize,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::EmptyInput);
    }
    assert_eq!(tokens.len(), positions.len(), "one position per token");
    if let Some((index, &id)) = tokens
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= c.vocab_size)
    {
        return Err(Error::TokenOutOfRange {
            id,
            index,
            vocab: c.vocab_size,
        });
    }
    for (i, &p) in positions.iter().enumerate() {
        if p != cached + i {
            return Err(Error::PositionMismatch {
                expected: cached + i,
                found: p,
            });
        }
    }
    let len = cached + tokens.len();
    if len > c.max_position_embeddings {
        return Err(Error::ContextOverflow {
            len,
            max: c.max_position_embeddings,
        });
    }
    Ok(())
}
