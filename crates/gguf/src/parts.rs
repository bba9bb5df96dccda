//! A [`GgufFile`] assembled in memory from metadata and tensors whose bytes
//! live elsewhere: ranges of other memory-mapped files (zero-copy) or owned
//! buffers. This is how a foreign checkpoint (a Hugging Face or Meta folder)
//! is presented to the model as if it were a GGUF file, without writing one.
//!
//! The parts are laid out in a virtual address space that starts at the
//! data section (`data_offset() == 0`): tensor `i` sits at an aligned
//! virtual offset, exactly where a GGUF writer would put it.

use crate::error::{ErrorKind, Result};
use crate::reader::{align_up, DEFAULT_ALIGNMENT, MAX_DIMS};
use crate::types::GgmlType;
use crate::value::Value;
use crate::{GgufFile, Metadata, Storage, TensorInfo};
use std::collections::HashMap;
use std::sync::Arc;

/// Where one tensor's bytes are.
pub enum TensorBytes {
    /// `len` bytes at `start` of a shared read-only map (no copy).
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
    /// Bytes made in memory (a permuted or joined tensor, a converted type).
    Owned(Vec<u8>),
}

impl TensorBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            TensorBytes::Mapped { map, start, len } => &map[*start..*start + *len],
            TensorBytes::Owned(v) => v,
        }
    }
}

/// One tensor of a file assembled from parts; `dims[0]` is the row length.
pub struct Part {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    pub bytes: TensorBytes,
}

/// The tensors of an assembled file, sorted by virtual start.
pub(crate) struct Segments {
    starts: Vec<u64>,
    parts: Vec<TensorBytes>,
    size: u64,
}

impl Segments {
    /// `len` bytes at virtual `start`, which must lie inside one tensor
    /// (callers got both from this file's [`TensorInfo`]s).
    pub(crate) fn slice(&self, start: usize, len: usize) -> &[u8] {
        let i = self.starts.partition_point(|&s| s <= start as u64) - 1;
        let off = start - self.starts[i] as usize;
        &self.parts[i].bytes()[off..off + len]
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Drops resident pages of a mapped part (see [`GgufFile::release`]).
    #[cfg(unix)]
    pub(crate) fn release(&self, start: usize, len: usize) {
        let i = self.starts.partition_point(|&s| s <= start as u64);
        if i == 0 {
            return;
        }
        let off = start - self.starts[i - 1] as usize;
        if let TensorBytes::Mapped { map, start: s, .. } = &self.parts[i - 1] {
            crate::release_pages(map, s + off, len);
        }
    }
}

impl GgufFile {
    /// A file from `metadata` (in order) and `parts`, checked like a file
    /// read from disk: unique keys and names, 1 to 4 non-zero dimensions,
    /// whole blocks per row, and bytes that match each type and shape.
    pub fn from_parts(metadata: Vec<(String, Value)>, parts: Vec<Part>) -> Result<GgufFile> {
        let mut index = HashMap::with_capacity(metadata.len());
        for (i, (k, _)) in metadata.iter().enumerate() {
            if index.insert(k.clone(), i).is_some() {
                return Err(ErrorKind::DuplicateKey { key: k.clone() }.into());
            }
        }
        let alignment = DEFAULT_ALIGNMENT;
        let mut tensors = Vec::with_capacity(parts.len());
        let mut tensor_index = HashMap::with_capacity(parts.len());
        let mut starts = Vec::with_capacity(parts.len());
        let mut datas = Vec::with_capacity(parts.len());
        let mut offset = 0u64;
        for p in parts {
            let bad = |detail: String| ErrorKind::BadDimensions {
                tensor: p.name.clone(),
                detail,
            };
            if p.dims.is_empty() || p.dims.len() > MAX_DIMS as usize || p.dims.contains(&0) {
                return Err(bad(format!("bad dimensions {:?}", p.dims)).into());
            }
            let n = p.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let want = n.and_then(|n| p.ty.bytes_for(n));
            let have = p.bytes.bytes().len() as u64;
            if !p.dims[0].is_multiple_of(p.ty.block_size()) || want != Some(have) {
                return Err(bad(format!(
                    "{have} bytes given, {} {:?} needs {want:?}",
                    p.ty, p.dims
                ))
                .into());
            }
            if tensor_index.insert(p.name.clone(), tensors.len()).is_some() {
                return Err(ErrorKind::DuplicateTensor { tensor: p.name }.into());
            }
            starts.push(offset);
            tensors.push(TensorInfo {
                name: p.name,
                ty: p.ty,
                dims: p.dims,
                offset,
                n_elements: n.unwrap_or(0),
                n_bytes: have,
            });
            datas.push(p.bytes);
            offset = align_up(offset + have, alignment).ok_or_else(|| ErrorKind::Write {
                detail: "tensor data exceeds 2^64 bytes".into(),
            })?;
        }
        Ok(GgufFile {
            storage: Storage::Parts(Segments {
                starts,
                parts: datas,
                size: offset,
            }),
            version: 3,
            metadata: Metadata {
                entries: metadata,
                index,
            },
            tensors,
            tensor_index,
            alignment,
            data_offset: 0,
        })
    }
}
