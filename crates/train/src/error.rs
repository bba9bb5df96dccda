//! The training crate's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct Error {
    kind: ErrorKind,
}

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("{0}")]
    Model(#[from] cria_model::Error),
    #[error("{0}")]
    Gguf(#[from] cria_gguf::Error),
    /// cria-lora refused to encode or write the adapter.
    #[error("{0}")]
    Lora(#[from] cria_lora::Error),
    /// A computation on the model failed (a tensor the kernels refuse).
    #[error("{detail}")]
    #[allow(clippy::enum_variant_names)]
    ModelDetail { detail: String },
    /// A training option out of range.
    #[error("{detail}")]
    BadOption { detail: String },
    /// A line of a JSONL data file that is not a usable record.
    #[error("{path}:{line}: {detail}")]
    BadRecord {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    /// A data file with nothing to train on.
    #[error("{path}: {detail}")]
    BadData { path: PathBuf, detail: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A checkpoint that does not belong to this run.
    #[error("checkpoint {path}: {detail}")]
    BadCheckpoint { path: PathBuf, detail: String },
    #[error("cannot draw the loss plot: {detail}")]
    Plot { detail: String },
}

impl<E: Into<ErrorKind>> From<E> for Error {
    fn from(e: E) -> Error {
        Error { kind: e.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io<'p>(
    what: &'static str,
    path: &'p std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| {
        ErrorKind::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}
