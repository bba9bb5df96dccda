//! The bounded GGUF parser. Every count, length, offset and dimension read
//! from the file is checked against the bytes that remain and against
//! overflow before it is used; nothing is allocated from an untrusted count
//! beyond what the remaining bytes could hold.

use crate::error::{ErrorKind, Result};
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};
use crate::{Metadata, TensorInfo};
use std::collections::HashMap;

/// `GGUF` read as a little-endian u32.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest array nesting accepted (real files use at most 2).
const MAX_ARRAY_DEPTH: usize = 8;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;

/// What a parsed header yields: everything but the tensor bytes.
pub(crate) struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(ErrorKind::Truncated {
                at: self.pos as u64,
                what: what(),
                need: n,
                have: self.remaining(),
            }
            .into());
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each could fit
    /// in what remains, so a huge claimed count fails before any allocation.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<usize> {
        let limit = self.remaining() / min_size.max(1);
        if count > limit {
            return Err(ErrorKind::CountTooLarge {
                at: self.pos as u64,
                what: what(),
                count,
                limit,
            }
            .into());
        }
        Ok(count as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos as u64;
        let len = self.u64(&|| format!("the length of {}", what()))?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(ErrorKind::InvalidUtf8 { at, what: what() }.into()),
        }
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType> {
        let at = self.pos as u64;
        let id = self.u32(&|| format!("the type of key {key:?}"))?;
        ValueType::from_id(id).ok_or_else(|| {
            ErrorKind::UnknownValueType {
                at,
                key: key.to_string(),
                type_id: id,
            }
            .into()
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool> {
        let at = self.pos as u64;
        let [b] = self.array::<1>(&|| format!("the value of key {key:?}"))?;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(ErrorKind::InvalidBool {
                at,
                key: key.to_string(),
                value,
            }
            .into()),
        }
    }

    fn value(&mut self, key: &str, ty: ValueType, depth: usize) -> Result<Value> {
        let what = || format!("the value of key {key:?}");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(&what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.string(&what)?),
            ValueType::Array => Value::Array(self.array_value(key, depth + 1)?),
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(ErrorKind::NestingTooDeep {
                at: self.pos as u64,
                key: key.to_string(),
                depth,
            }
            .into());
        }
        let elem = self.value_type(key)?;
        let count = self.u64(&|| format!("the length of array {key:?}"))?;
        let n = self.check_count(count, elem.min_encoded_size(), &|| {
            format!("the length of array {key:?}")
        })?;
        // Fixed-size elements: one bounds check, then decode the slice.
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const W: usize = std::mem::size_of::<$t>();
                let bytes = self.take((n * W) as u64, &|| format!("the items of array {key:?}"))?;
                Array::$variant(
                    bytes
                        .chunks_exact(W)
                        .map(|c| {
                            let mut a = [0u8; W];
                            a.copy_from_slice(c);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => fixed!(U8, u8),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(&|| format!("item {i} of array {key:?}"))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

/// Parses and validates everything before the tensor data. `buf` is the
/// whole file, so tensor extents can be checked against its size.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "the magic number".into())?;
    if magic != MAGIC {
        return Err(ErrorKind::BadMagic { found: magic }.into());
    }
    let version = c.u32(&|| "the version".into())?;
    if version != 2 && version != 3 {
        return Err(ErrorKind::UnsupportedVersion { version }.into());
    }
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv = c.u64(&|| "the metadata count".into())?;

    // A key-value pair is at least a key length, a type and a 1-byte value.
    let n_kv = c.check_count(n_kv, 8 + 4 + 1, &|| "the metadata count".into())?;
    let mut entries = Vec::with_capacity(n_kv);
    let mut index = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&|| format!("the name of metadata key #{i}"))?;
        let ty = c.value_type(&key)?;
        let value = c.value(&key, ty, 0)?;
        if index.insert(key.clone(), entries.len()).is_some() {
            return Err(ErrorKind::DuplicateKey { key }.into());
        }
        entries.push((key, value));
    }
    let metadata = Metadata { entries, index };

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(Value::U32(a)) => {
            return Err(ErrorKind::BadAlignment {
                detail: format!("{a} is not a power of two"),
            }
            .into())
        }
        Some(v) => {
            return Err(ErrorKind::BadAlignment {
                detail: format!("it should be u32 but is {}", v.type_description()),
            }
            .into())
        }
    };

    // A tensor info is at least a name length, n_dims, one dim, type, offset.
    let n_tensors = c.check_count(n_tensors, 8 + 4 + 8 + 4 + 8, &|| "the tensor count".into())?;
    let mut raw = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor #{i}"))?;
        let n_dims = c.u32(&|| format!("the dimension count of tensor {name:?}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(ErrorKind::BadDimensions {
                tensor: name,
                detail: format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
            }
            .into());
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor {name:?}"))?);
        }
        let type_id = c.u32(&|| format!("the type of tensor {name:?}"))?;
        let offset = c.u64(&|| format!("the offset of tensor {name:?}"))?;
        raw.push((name, dims, type_id, offset));
    }

    let data_offset =
        align_up(c.pos as u64, alignment).ok_or_else(|| ErrorKind::CountTooLarge {
            at: c.pos as u64,
            what: "the data section offset".into(),
            count: c.pos as u64,
            limit: u64::MAX - alignment,
        })?;
    let file_size = buf.len() as u64;

    let mut tensors = Vec::with_capacity(raw.len());
    let mut names = HashMap::with_capacity(raw.len());
    for (name, dims, type_id, offset) in raw {
        let ty = GgmlType::from_id(type_id).ok_or_else(|| ErrorKind::UnknownTensorType {
            tensor: name.clone(),
            type_id,
        })?;
        let n_elements = element_count(&name, &dims, ty)?;
        let n_bytes = ty
            .bytes_for(n_elements)
            .ok_or_else(|| ErrorKind::BadDimensions {
                tensor: name.clone(),
                detail: format!("{n_elements} elements of {ty} overflow a 64-bit size"),
            })?;
        if offset % alignment != 0 {
            return Err(ErrorKind::UnalignedTensor {
                tensor: name,
                offset,
                alignment,
            }
            .into());
        }
        let start = data_offset.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_size => {}
            _ => {
                return Err(ErrorKind::TensorOutOfBounds {
                    tensor: name,
                    start: data_offset.saturating_add(offset),
                    end: data_offset.saturating_add(offset).saturating_add(n_bytes),
                    file_size,
                }
                .into())
            }
        }
        if names.insert(name.clone(), tensors.len()).is_some() {
            return Err(ErrorKind::DuplicateTensor { tensor: name }.into());
        }
        tensors.push(TensorInfo {
            name,
            ty,
            dims,
            offset,
            n_elements,
            n_bytes,
        });
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// The product of the dimensions, checked: each dimension non-zero, no
/// overflow, and the first (row) dimension a whole number of blocks.
fn element_count(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64> {
    let bad = |detail: String| {
        Err(ErrorKind::BadDimensions {
            tensor: name.to_string(),
            detail,
        }
        .into())
    };
    let mut n: u64 = 1;
    for (i, &d) in dims.iter().enumerate() {
        if d == 0 {
            return bad(format!("dimension {i} is zero ({dims:?})"));
        }
        // ggml stores dimensions as int64: anything past i64::MAX is corrupt.
        n = match n.checked_mul(d) {
            Some(n) if n <= i64::MAX as u64 => n,
            _ => return bad(format!("{dims:?} overflows the element count")),
        };
    }
    if !dims[0].is_multiple_of(ty.block_size()) {
        return bad(format!(
            "the row length {} is not a multiple of the {ty} block size {}",
            dims[0],
            ty.block_size()
        ));
    }
    Ok(n)
}

pub(crate) fn align_up(x: u64, alignment: u64) -> Option<u64> {
    let rem = x % alignment;
    if rem == 0 {
        Some(x)
    } else {
        x.checked_add(alignment - rem)
    }
}
