//! The one error type of this crate.

use std::fmt;

/// Any failure to build a tokenizer or to encode text.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading the `tokenizer.*` metadata failed (missing key, wrong type).
    Metadata(cria_gguf::Error),
    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    UnsupportedModel { model: String },
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    UnsupportedPre { pre: String },
    /// The vocabulary is unusable (empty, arrays of mismatched length, ...).
    BadVocab { detail: String },
    /// `add_special` was requested but the vocabulary has no such token.
    MissingSpecialToken { which: &'static str },
    /// A token id outside the vocabulary was given to decode.
    TokenOutOfRange { id: u32, vocab_size: usize },
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Takes the kind out, for callers that match on it by value.
    pub fn into_kind(self) -> ErrorKind {
        self.kind
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { kind }
    }
}

impl From<cria_gguf::Error> for Error {
    fn from(e: cria_gguf::Error) -> Error {
        ErrorKind::Metadata(e).into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Metadata(e) => write!(f, "tokenizer metadata: {e}"),
            ErrorKind::UnsupportedModel { model } => write!(
                f,
                "unsupported tokenizer.ggml.model '{model}': cria handles 'llama' (SentencePiece) and 'gpt2' (byte-level BPE)"
            ),
            ErrorKind::UnsupportedPre { pre } => write!(
                f,
                "unsupported pre-tokenizer tokenizer.ggml.pre = '{pre}': cria handles {}",
                crate::pretok::SUPPORTED_NAMES.join(", ")
            ),
            ErrorKind::BadVocab { detail } => write!(f, "unusable vocabulary: {detail}"),
            ErrorKind::MissingSpecialToken { which } => write!(
                f,
                "the vocabulary asks for a {which} token to be added but defines none"
            ),
            ErrorKind::TokenOutOfRange { id, vocab_size } => write!(
                f,
                "token id {id} is outside the vocabulary (size {vocab_size})"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Metadata(e) => Some(e),
            _ => None,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
