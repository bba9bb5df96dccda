//! The import crate's error: which file, and what is wrong with it.

use std::fmt;
use std::path::PathBuf;

/// A failure to read or convert a foreign checkpoint.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file could not be opened, mapped or read.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file's contents are malformed or lie (sizes, offsets, types).
    Bad { path: PathBuf, detail: String },
    /// Well-formed input that cria does not handle (an architecture, a
    /// tokenizer kind, a pre-tokenizer regex, a pickle global...).
    Unsupported { path: PathBuf, detail: String },
    /// The folder is not a layout cria knows.
    UnknownLayout { path: PathBuf, detail: String },
    /// Writing the GGUF file failed.
    Gguf(cria_gguf::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        ErrorKind::Io {
            path: path.into(),
            source,
        }
        .into()
    }

    pub(crate) fn bad(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        ErrorKind::Bad {
            path: path.into(),
            detail: detail.into(),
        }
        .into()
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        ErrorKind::Unsupported {
            path: path.into(),
            detail: detail.into(),
        }
        .into()
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
            Io { path, source } => write!(f, "{}: {source}", path.display()),
            Bad { path, detail } => write!(f, "{}: {detail}", path.display()),
            Unsupported { path, detail } => {
                write!(f, "{}: not supported: {detail}", path.display())
            }
            UnknownLayout { path, detail } => write!(
                f,
                "{}: this directory is not a model cria can read: {detail}. A model is a GGUF file, a Hugging Face \
                 folder (config.json, *.safetensors, tokenizer.json) or a Meta folder \
                 (params.json, consolidated.NN.pth, tokenizer.model)",
                path.display()
            ),
            Gguf(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io { source, .. } => Some(source),
            ErrorKind::Gguf(e) => Some(e),
            _ => None,
        }
    }
}
