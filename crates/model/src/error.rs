//! The model crate's error type.

use std::fmt;

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The GGUF file itself is unreadable or lacks a key.
    Gguf(cria_gguf::Error),
    /// `general.architecture` names something this crate does not run.
    UnsupportedArchitecture { arch: String },
    /// A hyperparameter out of range, or contradicted by the tensors.
    BadHyperparameter {
        /// The metadata key (`llama.block_count`).
        key: String,
        /// Its value in the file.
        value: String,
        /// What the value must be, or what the tensors say instead.
        reason: String,
    },
    /// A tensor has a shape other than the configuration implies.
    BadTensorShape {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    /// A tensor of a type the kernels cannot compute with.
    UnsupportedTensorType {
        tensor: String,
        ty: cria_gguf::GgmlType,
    },
    /// A feature of the file (rope scaling kind, experts...) not implemented.
    Unsupported { detail: String },
    /// Positions past the end of the KV cache.
    ContextFull { needed: usize, n_ctx: usize },
    /// A token id outside the vocabulary.
    BadToken { token: u32, n_vocab: usize },
    /// Anything else the caller passed that does not fit.
    BadArgument { detail: String },
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

impl From<cria_gguf::Error> for Error {
    fn from(e: cria_gguf::Error) -> Error {
        ErrorKind::Gguf(e).into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match &self.kind {
            Gguf(e) => write!(f, "{e}"),
            UnsupportedArchitecture { arch } => write!(
                f,
                "model architecture {arch:?} is not supported (cria runs \"llama\": LLaMA 1/2/3, \
                 Mistral, TinyLlama, SmolLM and their fine-tunes)"
            ),
            BadHyperparameter { key, value, reason } => {
                write!(f, "bad model configuration: {key} = {value}: {reason}")
            }
            BadTensorShape { tensor, expected, found } => write!(
                f,
                "tensor {tensor:?} has shape {found:?} but the model configuration implies {expected:?}"
            ),
            UnsupportedTensorType { tensor, ty } => write!(
                f,
                "tensor {tensor:?} is of type {ty}, which cria cannot compute with yet \
                 (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS; \
                 requantize with cria quantize)"
            ),
            Unsupported { detail } => write!(f, "not supported: {detail}"),
            ContextFull { needed, n_ctx } => write!(
                f,
                "the context is full: {needed} positions needed but the context holds {n_ctx} \
                 (raise --ctx-size, or shorten the prompt)"
            ),
            BadToken { token, n_vocab } => {
                write!(f, "token id {token} is outside the vocabulary (0..{n_vocab})")
            }
            BadArgument { detail } => write!(f, "{detail}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
