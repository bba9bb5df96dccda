//! The prefix cache's error type.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bytes are not a whole, intact entry (bad magic, a length out of
    /// bounds, a checksum that does not match): never used, deleted when
    /// found in a cache directory.
    Corrupt { detail: String },
    /// An intact entry made for something else (another model, KV cache
    /// type, tenant or prefix): never used.
    Mismatch { detail: String },
    /// A file or directory could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A setting that cannot work (e.g. `--prefix-cache-size 12Q`).
    Config { detail: String },
}

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub fn corrupt(detail: impl Into<String>) -> Error {
        ErrorKind::Corrupt {
            detail: detail.into(),
        }
        .into()
    }

    pub fn mismatch(detail: impl Into<String>) -> Error {
        ErrorKind::Mismatch {
            detail: detail.into(),
        }
        .into()
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        ErrorKind::Io {
            path: path.to_path_buf(),
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
        match &self.kind {
            ErrorKind::Corrupt { detail } => write!(f, "corrupt prefix cache entry: {detail}"),
            ErrorKind::Mismatch { detail } => {
                write!(f, "prefix cache entry made for something else: {detail}")
            }
            ErrorKind::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ErrorKind::Config { detail } => f.write_str(detail),
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

pub type Result<T> = std::result::Result<T, Error>;
