//! The crate's error type: what was wrong, with the offending value, and
//! what to do about it.

use std::fmt;

/// Any failure to quantize a file or to read or write an importance matrix.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A type or mix name llama-quantize would not accept here.
    UnknownType { name: String, expected: String },
    /// A `--tensor-type` that is not `REGEX=TYPE`, or whose regex is bad.
    BadTensorType { arg: String, detail: String },
    /// A tensor that is already quantized, without `--allow-requantize`.
    Requantize { tensor: String, ty: String },
    /// A target type this build cannot write.
    CannotQuantize { tensor: String, ty: String },
    /// The mix needs an importance matrix for this tensor.
    NeedsImatrix { tensor: String, ty: String },
    /// An importance matrix that does not fit the model or is malformed.
    BadImatrix { path: String, detail: String },
    /// A model whose metadata the rules need is missing or wrong.
    BadModel { detail: String },
    /// Reading or writing a file failed.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The GGUF reader or writer refused something.
    Gguf(cria_gguf::Error),
    /// A kernel refused a shape (a bug in the caller, reported not panicked).
    Kernel(cria_kernels::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn imatrix(path: &str, detail: impl Into<String>) -> Error {
        ErrorKind::BadImatrix {
            path: path.to_string(),
            detail: detail.into(),
        }
        .into()
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        ErrorKind::Io {
            path: path.display().to_string(),
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

impl From<cria_gguf::Error> for Error {
    fn from(e: cria_gguf::Error) -> Error {
        ErrorKind::Gguf(e).into()
    }
}

impl From<cria_kernels::Error> for Error {
    fn from(e: cria_kernels::Error) -> Error {
        ErrorKind::Kernel(e).into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match &self.kind {
            UnknownType { name, expected } => {
                write!(
                    f,
                    "unknown quantization type {name:?} (expected one of: {expected})"
                )
            }
            BadTensorType { arg, detail } => write!(
                f,
                "bad --tensor-type {arg:?}: {detail} (expected REGEX=TYPE, e.g. attn_v=q8_0)"
            ),
            Requantize { tensor, ty } => write!(
                f,
                "tensor {tensor:?} is already quantized ({ty}); requantizing loses quality, \
                 pass --allow-requantize to do it anyway"
            ),
            CannotQuantize { tensor, ty } => {
                write!(f, "tensor {tensor:?}: cria cannot quantize to {ty}")
            }
            NeedsImatrix { tensor, ty } => write!(
                f,
                "tensor {tensor:?} as {ty} needs an importance matrix: pass --imatrix FILE \
                 (made with cria imatrix or llama-imatrix)"
            ),
            BadImatrix { path, detail } => write!(f, "importance matrix {path}: {detail}"),
            BadModel { detail } => write!(f, "model: {detail}"),
            Io { path, source } => write!(f, "{path}: {source}"),
            Gguf(e) => write!(f, "{e}"),
            Kernel(e) => write!(f, "{e}"),
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
