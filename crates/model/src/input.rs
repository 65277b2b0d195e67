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
    if tokens.len() != positions.len() {
        return Err(Error::PositionsLength {
            tokens: tokens.len(),
            positions: positions.len(),
        });
    }
    check_vocab(c, tokens)?;
    for (i, &p) in positions.iter().enumerate() {
        let expected = cached.saturating_add(i);
        if p != expected {
            return Err(Error::PositionMismatch { expected, found: p });
        }
    }
    check_fits(c, cached, tokens.len())
}

/// A whole prompt for an empty cache, checked before any of it is computed (a batch
/// scheduler checks it when the request is submitted): non-empty, every id in the
/// vocabulary, and fitting the context. The same errors as [`check_input`].
pub(crate) fn check_prompt(c: &Config, tokens: &[u32]) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::EmptyInput);
    }
    check_vocab(c, tokens)?;
    check_fits(c, 0, tokens.len())
}

/// Every id below the vocabulary size.
fn check_vocab(c: &Config, tokens: &[u32]) -> Result<()> {
    match tokens
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= c.vocab_size)
    {
        Some((index, &id)) => Err(Error::TokenOutOfRange {
            id,
            index,
            vocab: c.vocab_size,
        }),
        None => Ok(()),
    }
}

/// `n` more tokens after `cached` fit `max_position_embeddings`.
fn check_fits(c: &Config, cached: usize, n: usize) -> Result<()> {
    let len = cached.saturating_add(n);
    if len > c.max_position_embeddings {
        return Err(Error::ContextOverflow {
            len,
            max: c.max_position_embeddings,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_input_is_a_typed_error() {
        let c = Config::from_json(std::path::Path::new("config.json"), b"{\"vocab_size\": 10}")
            .unwrap();
        let err = check_input(&c, &[1, 2], &[0], 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 tokens but 1 positions: give one position per token"
        );
        assert!(matches!(
            check_input(&c, &[1], &[0, 1], 0),
            Err(Error::PositionsLength {
                tokens: 1,
                positions: 2
            })
        ));
        assert!(matches!(
            check_input(&c, &[], &[], 0),
            Err(Error::EmptyInput)
        ));
        assert!(matches!(
            check_input(&c, &[10], &[0], 0),
            Err(Error::TokenOutOfRange { id: 10, .. })
        ));
        assert!(matches!(
            check_input(&c, &[1], &[usize::MAX], usize::MAX),
            Err(Error::ContextOverflow { .. })
        ));
        assert!(check_input(&c, &[1, 2], &[3, 4], 3).is_ok());
        assert!(matches!(check_prompt(&c, &[]), Err(Error::EmptyInput)));
        assert!(matches!(
            check_prompt(&c, &[1, 10]),
            Err(Error::TokenOutOfRange {
                id: 10,
                index: 1,
                ..
            })
        ));
        let long = vec![1; c.max_position_embeddings + 1];
        assert!(matches!(
            check_prompt(&c, &long),
            Err(Error::ContextOverflow { .. })
        ));
        assert!(check_prompt(&c, &[1, 2]).is_ok());
    }
}
