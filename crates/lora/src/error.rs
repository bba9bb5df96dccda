//! The adapter crate's error: which file, and what is wrong with it.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

/// A failure to read, check or write an adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The GGUF layer refused the file (truncated, lying sizes...).
    #[error("{}: {source}", path.display())]
    Gguf {
        path: PathBuf,
        source: cria_gguf::Error,
    },
    /// The safetensors layer refused the file.
    #[error("{source}")]
    Import { source: cria_import::Error },
    /// A well-formed file that is not a LoRA adapter, or whose adapter
    /// fields are malformed.
    #[error("{}: {detail}", path.display())]
    Format { path: PathBuf, detail: String },
    /// A valid adapter that does not fit this base model.
    #[error("{}: {detail} (is this adapter for another base model?)", path.display())]
    Mismatch { path: PathBuf, detail: String },
    /// A valid adapter using something cria does not apply.
    #[error("{}: {detail}", path.display())]
    Unsupported { path: PathBuf, detail: String },
}

impl Error {
    pub(crate) fn format(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        Error::Format {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn mismatch(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        Error::Mismatch {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        Error::Unsupported {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
