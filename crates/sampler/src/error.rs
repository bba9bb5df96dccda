//! The crate's error type: `Error { kind }`, matched through [`Error::kind`].

use std::fmt;

/// An error from building or running a [`crate::Sampler`].
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A [`crate::SamplerConfig`] field is out of its allowed range.
    InvalidConfig {
        /// The field's name, as in `SamplerConfig`.
        field: &'static str,
        /// The offending value, printed.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The vocabulary size given to `Sampler::new` is zero.
    EmptyVocab,
    /// `sample` got a logits row whose length is not the vocabulary size.
    LogitsLength { expected: usize, got: usize },
    /// Every logit is `-inf` or NaN (after logit bias), so no token can be drawn.
    NoCandidates,
    /// A token id (in `accept` or `logit_bias`) is outside the vocabulary.
    TokenOutOfRange { id: u32, n_vocab: usize },
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn invalid(
        field: &'static str,
        value: impl fmt::Display,
        expected: &'static str,
    ) -> Error {
        ErrorKind::InvalidConfig {
            field,
            value: value.to_string(),
            expected,
        }
        .into()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { kind }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match &self.kind {
            InvalidConfig {
                field,
                value,
                expected,
            } => write!(f, "sampler setting {field} = {value} is invalid: expected {expected}"),
            EmptyVocab => write!(f, "cannot sample from an empty vocabulary (n_vocab = 0)"),
            LogitsLength { expected, got } => write!(
                f,
                "logits row has {got} values but the sampler was built for a vocabulary of {expected}"
            ),
            NoCandidates => write!(
                f,
                "every logit is -inf or NaN after logit bias: no token can be sampled \
                 (check the model output and the logit_bias settings)"
            ),
            TokenOutOfRange { id, n_vocab } => {
                write!(f, "token id {id} is outside the vocabulary (n_vocab = {n_vocab})")
            }
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
