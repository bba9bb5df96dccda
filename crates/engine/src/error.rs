//! The engine's error type.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The prompt does not fit the context with room for one new token.
    PromptTooLong {
        prompt_tokens: usize,
        n_ctx: usize,
    },
    /// An embedding input is longer than the context (it is never cut).
    InputTooLong {
        input_tokens: usize,
        n_ctx: usize,
    },
    /// The prompt has no tokens at all.
    EmptyPrompt,
    /// A prompt token id is not in the vocabulary.
    BadToken {
        id: u32,
        n_vocab: usize,
    },
    /// Something failed inside the engine (a bug, not the request's fault).
    Internal {
        detail: String,
    },
    /// A model file could not be loaded.
    Load {
        path: std::path::PathBuf,
        detail: String,
    },
    /// The engine's settings cannot work (e.g. a KV cache larger than memory).
    Config {
        detail: String,
    },
    /// The engine has stopped (shut down, or its thread died).
    Stopped,
    /// A draft model (`-md`) whose vocabulary is not the target's.
    DraftVocab {
        path: std::path::PathBuf,
        detail: String,
    },
    Model(cria_model::Error),
    Sampler(cria_sampler::Error),
    /// The output constraint (grammar or schema) failed during generation.
    Grammar(cria_grammar::Error),
}

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { kind }
    }
}

impl From<cria_model::Error> for Error {
    fn from(e: cria_model::Error) -> Error {
        ErrorKind::Model(e).into()
    }
}

impl From<cria_sampler::Error> for Error {
    fn from(e: cria_sampler::Error) -> Error {
        ErrorKind::Sampler(e).into()
    }
}

impl From<cria_grammar::Error> for Error {
    fn from(e: cria_grammar::Error) -> Error {
        ErrorKind::Grammar(e).into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::PromptTooLong {
                prompt_tokens,
                n_ctx,
            } => write!(
                f,
                "the prompt has {prompt_tokens} tokens but the context holds {n_ctx} \
                 (and needs room for at least one more): raise --ctx-size or shorten the prompt"
            ),
            ErrorKind::InputTooLong {
                input_tokens,
                n_ctx,
            } => write!(
                f,
                "the input has {input_tokens} tokens but the context holds {n_ctx}: \
                 raise --ctx-size or split the input (it is never cut)"
            ),
            ErrorKind::EmptyPrompt => write!(f, "the prompt is empty: give some text to continue"),
            ErrorKind::BadToken { id, n_vocab } => write!(
                f,
                "token id {id} is not in the vocabulary (ids go from 0 to {})",
                n_vocab.saturating_sub(1)
            ),
            ErrorKind::Internal { detail } => write!(f, "internal error: {detail}"),
            ErrorKind::Load { path, detail } => {
                write!(f, "cannot load {}: {detail}", path.display())
            }
            ErrorKind::Config { detail } => f.write_str(detail),
            ErrorKind::Stopped => write!(f, "the engine has stopped"),
            ErrorKind::DraftVocab { path, detail } => write!(
                f,
                "the draft model {} cannot draft for this model: {detail}; \
                 give -md a model with the target's vocabulary (e.g. a smaller \
                 quantization of the same model)",
                path.display()
            ),
            ErrorKind::Model(e) => write!(f, "{e}"),
            ErrorKind::Sampler(e) => write!(f, "{e}"),
            ErrorKind::Grammar(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
