//! The crate's error type: bad configuration and bad per-call input (logits, history).

/// Everything that can go wrong in this crate.
///
/// Messages are lowercase and name the offending parameter and value, e.g.
/// `top_p must be in (0, 1], got 1.5`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration parameter is out of its valid range.
    #[error("{name} must be {expected}, got {value}")]
    InvalidParameter {
        /// The parameter's name, as spelled in the config struct (e.g. `top_p`).
        name: &'static str,
        /// What the parameter must be (e.g. `in (0, 1]`).
        expected: &'static str,
        /// The rejected value, formatted.
        value: String,
    },
    /// `sample` was given an empty row of logits.
    #[error("logits must not be empty, got 0 entries")]
    EmptyLogits,
    /// The row of logits has more entries than `u32` token ids can name.
    #[error("logits must have at most {} entries, got {len}", u32::MAX)]
    VocabTooLarge {
        /// The number of logits given.
        len: usize,
    },
    /// A logit is NaN or `+inf` (`-inf` is allowed and masks the token).
    #[error("logits must be finite or -inf, got {value} at token {index}")]
    InvalidLogit {
        /// The token id whose logit is bad.
        index: usize,
        /// The bad value.
        value: f32,
    },
    /// Every logit is `-inf`, so there is no token to choose.
    #[error("logits must have at least one entry above -inf, got all -inf")]
    NoCandidates,
    /// A history token id is not a valid index into the logits.
    #[error("history tokens must be below the vocabulary size {vocab}, got {token}")]
    TokenOutOfRange {
        /// The offending token id.
        token: u32,
        /// The vocabulary size (length of the logits row).
        vocab: usize,
    },
    /// A `logit_bias` token id is not a valid index into the logits.
    #[error("logit_bias tokens must be below the vocabulary size {vocab}, got {token}")]
    BiasTokenOutOfRange {
        /// The offending token id.
        token: u32,
        /// The vocabulary size (length of the logits row).
        vocab: usize,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub(crate) fn param(name: &'static str, expected: &'static str, value: impl ToString) -> Self {
        Error::InvalidParameter {
            name,
            expected,
            value: value.to_string(),
        }
    }
}
