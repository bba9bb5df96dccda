//! The crate's error type: `Error { kind }`, matched through [`Error::kind`].

use std::fmt;

/// An error from chunking, scoring, or reading/writing a KL-divergence base file.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong. Byte offsets are from the start of the base file.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing the base file failed.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The context size cannot score anything: llama-perplexity scores
    /// positions `n_ctx/2 + 1 .. n_ctx`, which needs `n_ctx >= 3`.
    ContextTooSmall { n_ctx: usize },
    /// Fewer than `2 * n_ctx` tokens (llama-perplexity's own requirement).
    NotEnoughTokens {
        have: usize,
        need: usize,
        n_ctx: usize,
    },
    /// A token id does not fit the vocabulary.
    TokenOutOfRange {
        index: usize,
        id: u32,
        n_vocab: usize,
    },
    /// A logits buffer does not have the shape the chunk needs.
    LogitsShape { expected: String, got: usize },
    /// A chunk's token list is not `n_ctx` long.
    ChunkTokens { expected: usize, got: usize },
    /// A scored logit is NaN or +inf (the log-softmax would be NaN).
    BadLogit {
        row: usize,
        index: usize,
        value: f32,
    },
    /// The first 8 bytes of the base file are not `_logits_`.
    BadMagic { found: [u8; 8] },
    /// A header field of the base file is out of range.
    BadHeader { field: &'static str, value: i64 },
    /// The base file ends before `needed` bytes at `offset`.
    Truncated { offset: u64, needed: u64 },
    /// The base file's size does not match its header.
    WrongFileSize { expected: u64, actual: u64 },
    /// A stored row's scale or minimum is not a usable number.
    BadRow {
        offset: u64,
        scale: f32,
        min_log_prob: f32,
    },
    /// The base file was made with a different vocabulary size.
    VocabMismatch { file: usize, model: usize },
    /// The base file's tokens differ from the tokens being evaluated.
    TokensMismatch {
        index: usize,
        file: u32,
        ours: u32,
        file_len: usize,
        ours_len: usize,
    },
    /// The writer got more or fewer chunks than its header announced.
    ChunkCount { expected: usize, got: usize },
    /// Statistics were asked for before any token was added.
    Empty,
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

    pub(crate) fn io(path: impl Into<String>, source: std::io::Error) -> Error {
        ErrorKind::Io {
            path: path.into(),
            source,
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
            Io { path, source } => write!(f, "cannot read or write {path}: {source}"),
            ContextTooSmall { n_ctx } => write!(
                f,
                "context size {n_ctx} is too small to score any token: use a context of at least 3"
            ),
            NotEnoughTokens { have, need, n_ctx } => write!(
                f,
                "the text tokenizes to only {have} tokens, but a context of {n_ctx} needs at least \
                 {need}: use a longer text or a smaller context"
            ),
            TokenOutOfRange { index, id, n_vocab } => write!(
                f,
                "token #{index} has id {id}, outside the vocabulary (n_vocab = {n_vocab})"
            ),
            LogitsShape { expected, got } => {
                write!(f, "logits buffer has {got} values, expected {expected}")
            }
            ChunkTokens { expected, got } => {
                write!(f, "chunk has {got} tokens, expected n_ctx = {expected}")
            }
            BadLogit { row, index, value } => write!(
                f,
                "logit {index} of scored row {row} is {value}: the model produced a non-finite value"
            ),
            BadMagic { found } => write!(
                f,
                "not a llama.cpp log-probabilities file: starts with {:?}, expected \"_logits_\"",
                String::from_utf8_lossy(found)
            ),
            BadHeader { field, value } => {
                write!(f, "base file header field {field} = {value} is out of range")
            }
            Truncated { offset, needed } => write!(
                f,
                "base file is truncated: needed {needed} more bytes at offset {offset}"
            ),
            WrongFileSize { expected, actual } => write!(
                f,
                "base file has {actual} bytes but its header describes {expected}: \
                 it is truncated or not a llama-perplexity base file"
            ),
            BadRow {
                offset,
                scale,
                min_log_prob,
            } => write!(
                f,
                "base file row at offset {offset} has scale {scale} and minimum {min_log_prob}: corrupt data"
            ),
            VocabMismatch { file, model } => write!(
                f,
                "inconsistent vocabulary: the base file has {file} tokens, the model {model}; \
                 compute the base file with a model of the same vocabulary"
            ),
            TokensMismatch {
                index,
                file,
                ours,
                file_len,
                ours_len,
            } => write!(
                f,
                "the base file was computed on other tokens: token #{index} is {file} in the file \
                 but {ours} here ({file_len} vs {ours_len} tokens)"
            ),
            ChunkCount { expected, got } => {
                write!(f, "base file announced {expected} chunks but {got} were written")
            }
            Empty => write!(f, "no token has been scored yet"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
