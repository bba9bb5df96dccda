//! The crate's error type: what was wrong, with the offending values.

use cria_gguf::GgmlType;
use std::fmt;

/// An error from a kernel entry point. Kernels check shapes at their edge
/// and never panic on bad lengths or unsupported types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// This tensor type has no dequantizer (or matmul) here yet.
    UnsupportedType(GgmlType),
    /// An element count that is not a whole number of blocks of the type.
    NotWholeBlocks {
        ty: GgmlType,
        elements: usize,
        block_size: usize,
    },
    /// A buffer whose length does not match what the shapes require.
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A size that overflows `usize`.
    Overflow { what: &'static str },
    /// Matrices that cannot be multiplied as one group.
    BadGroup { detail: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn length(what: &'static str, expected: usize, got: usize) -> Error {
        ErrorKind::Length {
            what,
            expected,
            got,
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
            ErrorKind::UnsupportedType(ty) => write!(
                f,
                "tensor type {ty} is not supported by cria's kernels \
                 (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K); \
                 re-quantize the model to one of these"
            ),
            ErrorKind::NotWholeBlocks {
                ty,
                elements,
                block_size,
            } => write!(
                f,
                "{elements} elements of {ty} is not a whole number of {block_size}-element blocks"
            ),
            ErrorKind::Length {
                what,
                expected,
                got,
            } => write!(f, "{what} has length {got}, expected {expected}"),
            ErrorKind::Overflow { what } => write!(f, "{what} overflows the address space"),
            ErrorKind::BadGroup { detail } => write!(
                f,
                "cannot multiply these matrices as one group: {detail} \
                 (check with can_group first)"
            ),
        }
    }
}

impl std::error::Error for Error {}
