//! The one error type of this crate: what went wrong, and where in the file.

use std::fmt;

/// Any failure to read, validate or write a GGUF file.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong. Byte offsets are from the start of the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be opened or mapped.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    BadMagic { found: [u8; 4] },
    /// A GGUF version this reader does not handle (only 2 and 3 are).
    UnsupportedVersion { version: u32 },
    /// The file ends in the middle of a field.
    Truncated {
        at: u64,
        what: String,
        need: u64,
        have: u64,
    },
    /// A count or length in the header is impossible for a file of this size.
    CountTooLarge {
        at: u64,
        what: String,
        count: u64,
        limit: u64,
    },
    /// A metadata value type id outside 0..=12.
    UnknownValueType { at: u64, key: String, type_id: u32 },
    /// Arrays nested more deeply than the reader allows.
    NestingTooDeep { at: u64, key: String, depth: usize },
    /// A string that is not UTF-8.
    InvalidUtf8 { at: u64, what: String },
    /// A boolean stored as something other than 0 or 1.
    InvalidBool { at: u64, key: String, value: u8 },
    /// The same metadata key appears twice.
    DuplicateKey { key: String },
    /// `general.alignment` is not a power of two, or has the wrong type.
    BadAlignment { detail: String },
    /// A tensor type id that ggml does not define (or no longer defines).
    UnknownTensorType { tensor: String, type_id: u32 },
    /// A tensor's dimensions are unusable (zero, too many, overflowing, or
    /// a row that is not a whole number of quantization blocks).
    BadDimensions { tensor: String, detail: String },
    /// Two tensors share a name.
    DuplicateTensor { tensor: String },
    /// A tensor offset that is not a multiple of the file's alignment.
    UnalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    /// A tensor whose bytes run past the end of the file.
    TensorOutOfBounds {
        tensor: String,
        start: u64,
        end: u64,
        file_size: u64,
    },
    /// A metadata key that a caller required is absent.
    MissingKey { key: String },
    /// A metadata key holds a different type than the caller asked for.
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    /// A tensor that a caller required is absent.
    MissingTensor { tensor: String },
    /// Something the writer was asked to write is inconsistent.
    Write { detail: String },
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match &self.kind {
            Io { path, source } => write!(f, "cannot read {path}: {source}"),
            BadMagic { found } => write!(
                f,
                "not a GGUF file: it starts with {found:02x?} instead of \"GGUF\" \
                 (is it a safetensors, PyTorch or older GGML file?)"
            ),
            UnsupportedVersion { version } => write!(
                f,
                "GGUF version {version} is not supported (cria reads versions 2 and 3; \
                 re-convert the model with a current llama.cpp)"
            ),
            Truncated { at, what, need, have } => write!(
                f,
                "file truncated at byte {at}: reading {what} needs {need} bytes but only \
                 {have} remain (the download may be incomplete)"
            ),
            CountTooLarge { at, what, count, limit } => write!(
                f,
                "corrupt file at byte {at}: {what} is {count}, but the file can hold at most {limit}"
            ),
            UnknownValueType { at, key, type_id } => write!(
                f,
                "corrupt metadata at byte {at}: key {key:?} has unknown value type id {type_id}"
            ),
            NestingTooDeep { at, key, depth } => write!(
                f,
                "corrupt metadata at byte {at}: key {key:?} nests arrays {depth} deep"
            ),
            InvalidUtf8 { at, what } => write!(f, "corrupt file at byte {at}: {what} is not UTF-8"),
            InvalidBool { at, key, value } => write!(
                f,
                "corrupt metadata at byte {at}: key {key:?} is a bool stored as {value} (not 0 or 1)"
            ),
            DuplicateKey { key } => write!(f, "corrupt metadata: key {key:?} appears twice"),
            BadAlignment { detail } => write!(f, "bad general.alignment: {detail}"),
            UnknownTensorType { tensor, type_id } => write!(
                f,
                "tensor {tensor:?} has unknown ggml type id {type_id} (the file may be corrupt \
                 or use a type newer than this cria)"
            ),
            BadDimensions { tensor, detail } => {
                write!(f, "tensor {tensor:?} has bad dimensions: {detail}")
            }
            DuplicateTensor { tensor } => write!(f, "corrupt file: tensor {tensor:?} appears twice"),
            UnalignedTensor { tensor, offset, alignment } => write!(
                f,
                "corrupt file: tensor {tensor:?} starts at data offset {offset}, \
                 not a multiple of the alignment {alignment}"
            ),
            TensorOutOfBounds { tensor, start, end, file_size } => write!(
                f,
                "tensor {tensor:?} occupies bytes {start}..{end} but the file has only \
                 {file_size} bytes (the download may be incomplete)"
            ),
            MissingKey { key } => write!(f, "metadata key {key:?} is missing"),
            WrongType { key, expected, found } => {
                write!(f, "metadata key {key:?} should be {expected} but is {found}")
            }
            MissingTensor { tensor } => write!(f, "tensor {tensor:?} is missing"),
            Write { detail } => write!(f, "cannot write GGUF: {detail}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The I/O cause is already part of the message; returning it here
        // too would print it twice in a context chain.
        None
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
