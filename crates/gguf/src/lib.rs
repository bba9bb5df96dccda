//! Reading and writing GGUF, the model file format of llama.cpp.
//!
//! The main type is [`GgufFile`]: a parsed, validated header ([`Metadata`]
//! and a list of [`TensorInfo`]) over the file's bytes, which are memory-
//! mapped so tensor data is a zero-copy `&[u8]` view ([`GgufFile::tensor_data`]).
//! [`GgufWriter`] writes the same format, for quantizers and converters.
//!
//! The parser is a security boundary: model files come from strangers. Every
//! length, count, offset and dimension is checked against the file size and
//! against overflow before use, and a bad file yields an [`Error`] whose
//! [`ErrorKind`] says what is wrong and at which byte, never a panic.
//!
//! ```
//! use cria_gguf::{GgufFile, GgufWriter, GgmlType, Value};
//!
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", Value::String("llama".into()));
//! w.add_metadata("llama.block_count", Value::U32(2));
//! w.add_tensor("a", GgmlType::F32, &[2], &[0u8; 8]).unwrap();
//! let mut bytes = Vec::new();
//! w.write_to(&mut bytes).unwrap();
//!
//! let f = GgufFile::from_bytes(bytes).unwrap();
//! assert_eq!(f.metadata().get_u32("llama.block_count").unwrap(), 2);
//! assert_eq!(f.tensor_data(f.tensor("a").unwrap()).len(), 8);
//! ```

mod error;
mod parts;
mod reader;
mod stream;
mod types;
mod value;
mod writer;

pub use error::{Error, ErrorKind, Result};
pub use parts::{Part, TensorBytes};
pub use reader::{DEFAULT_ALIGNMENT, MAX_DIMS};
pub use stream::StreamWriter;
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;

use std::collections::HashMap;
use std::path::Path;

/// One tensor's description from the header. `dims[0]` is the row length
/// (ggml's `ne[0]`, the fastest-varying dimension).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    /// Offset of the first byte from the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

/// The metadata key-value pairs, in file order, with lookup by key.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
    /// Assembled from tensors held elsewhere ([`GgufFile::from_parts`]).
    Parts(parts::Segments),
}

impl Storage {
    /// The file's bytes; empty for an assembled file, which has no header.
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
            Storage::Parts(_) => &[],
        }
    }

    fn slice(&self, start: usize, len: usize) -> &[u8] {
        match self {
            Storage::Parts(p) => p.slice(start, len),
            s => &s.bytes()[start..start + len],
        }
    }
}

/// Drops the resident pages of `map` inside `start..start + len` (whole
/// pages only; they fault back in from the file if read again).
#[cfg(unix)]
fn release_pages(map: &memmap2::Mmap, start: usize, len: usize) {
    let page = 4096;
    let s = start.div_ceil(page) * page;
    let e = (start + len) / page * page;
    if e > s {
        // SAFETY: the map is private and read-only, never written, so
        // dropped pages read back the same file contents.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, s, e - s) };
    }
}

/// A validated GGUF file: header parsed, tensor bytes left in place.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Maps and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| ErrorKind::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.is_dir() {
            return Err(io(std::io::Error::other("it is a directory, not a file")).into());
        }
        // SAFETY: the map is read-only. If another process truncates the
        // file while it is mapped, reads may fault; that is the documented
        // hazard of every mmap-based model loader (llama.cpp included).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_storage(Storage::Mapped(map))
    }

    /// Hint that the bytes `start..start + len` will not be read soon: a
    /// mapped file's pages there leave this process's resident set (they
    /// stay in the page cache and fault back in if read). Best effort; a
    /// no-op for files held in memory.
    pub fn release(&self, start: usize, len: usize) {
        #[cfg(unix)]
        match &self.storage {
            Storage::Mapped(m) => release_pages(m, start, len),
            Storage::Parts(p) => p.release(start, len),
            Storage::Owned(_) => {}
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }

    /// Validates a file already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile> {
        let h = reader::parse_header(storage.bytes())?;
        let tensor_index = h
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            storage,
            version: h.version,
            metadata: h.metadata,
            tensors: h.tensors,
            tensor_index,
            alignment: h.alignment,
            data_offset: h.data_offset,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Bytes in the file (for an assembled file: its data section).
    pub fn file_size(&self) -> u64 {
        match &self.storage {
            Storage::Parts(p) => p.size(),
            s => s.bytes().len() as u64,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Like [`GgufFile::tensor`], but a missing tensor is an error naming it.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| {
            ErrorKind::MissingTensor {
                tensor: name.to_string(),
            }
            .into()
        })
    }

    /// The tensor's bytes, in place in the map. Bounds were checked when the
    /// file was opened, so this cannot fail for an info from this file.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        self.storage.slice(start, info.n_bytes as usize)
    }

    /// `len` bytes at absolute offset `start`, which must lie inside one
    /// tensor's data (as computed from [`GgufFile::data_offset`] and a
    /// [`TensorInfo`] of this file). Works for assembled files too.
    pub fn data_at(&self, start: usize, len: usize) -> &[u8] {
        self.storage.slice(start, len)
    }

    /// The whole file's bytes; empty for a file assembled by
    /// [`GgufFile::from_parts`], which has no header bytes (use
    /// [`GgufFile::tensor_data`] or [`GgufFile::data_at`]).
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}

macro_rules! int_getter {
    ($name:ident, $opt:ident, $t:ty, $label:literal) => {
        #[doc = concat!("The value of `key` as ", $label, ": any integer type whose value fits.")]
        pub fn $name(&self, key: &str) -> Result<$t> {
            self.$opt(key)?.ok_or_else(|| Self::missing(key))
        }

        #[doc = concat!("Like the getter without `try_`, but `Ok(None)` when `key` is absent.")]
        pub fn $opt(&self, key: &str) -> Result<Option<$t>> {
            let Some(v) = self.get(key) else {
                return Ok(None);
            };
            v.as_integer()
                .and_then(|i| <$t>::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| Self::wrong(key, $label, v))
        }
    };
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Key-value pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn missing(key: &str) -> Error {
        ErrorKind::MissingKey {
            key: key.to_string(),
        }
        .into()
    }

    fn wrong(key: &str, expected: &'static str, found: &Value) -> Error {
        let found = match found.as_integer() {
            Some(i) => format!("{} {i}", found.type_description()),
            None => found.type_description(),
        };
        ErrorKind::WrongType {
            key: key.to_string(),
            expected,
            found,
        }
        .into()
    }

    fn wrong_array(key: &str, expected: &'static str, found: &Array) -> Error {
        ErrorKind::WrongType {
            key: key.to_string(),
            expected,
            found: format!("array of {}", found.element_type().name()),
        }
        .into()
    }

    int_getter!(get_u32, try_u32, u32, "u32");
    int_getter!(get_u64, try_u64, u64, "u64");
    int_getter!(get_i32, try_i32, i32, "i32");

    /// The value of `key` as f32 (an f32, or an f64 narrowed).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.try_f32(key)?.ok_or_else(|| Self::missing(key))
    }

    pub fn try_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(Self::wrong(key, "f32", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.try_bool(key)?.ok_or_else(|| Self::missing(key))
    }

    pub fn try_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong(key, "bool", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.try_str(key)?.ok_or_else(|| Self::missing(key))
    }

    pub fn try_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong(key, "string", v)),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&Array> {
        match self.get(key) {
            None => Err(Self::missing(key)),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(Self::wrong(key, "array", v)),
        }
    }

    /// An array of strings (vocabularies, merges).
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.get_array(key)? {
            Array::String(v) => Ok(v),
            a => Err(Self::wrong_array(key, "array of string", a)),
        }
    }

    /// An array of f32 (token scores, rope factors).
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.get_array(key)? {
            Array::F32(v) => Ok(v),
            a => Err(Self::wrong_array(key, "array of f32", a)),
        }
    }

    /// An array of i32 (token types).
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.get_array(key)? {
            Array::I32(v) => Ok(v),
            a => Err(Self::wrong_array(key, "array of i32", a)),
        }
    }
}

#[cfg(test)]
mod tests;
