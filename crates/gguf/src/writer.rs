//! Writing GGUF v3: metadata, tensor infos, then aligned tensor data.

use crate::error::{ErrorKind, Result};
use crate::reader::{align_up, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::types::GgmlType;
use crate::value::{Array, Value};
use std::io::Write;

/// Collects metadata and tensors, then writes a GGUF v3 file.
///
/// Tensor data is borrowed until [`GgufWriter::write_to`], so a converter can
/// pass slices of a memory-mapped source without copying.
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor<'a>>,
}

struct PendingTensor<'a> {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    data: &'a [u8],
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        GgufWriter {
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds or replaces a metadata pair (order of first insertion is kept).
    pub fn add_metadata(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds a tensor; `dims[0]` is the row length. Checks that the bytes
    /// match the type and dimensions, and that the name is new.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        dims: &[u64],
        data: &'a [u8],
    ) -> Result<()> {
        let fail = |detail: String| Err(ErrorKind::Write { detail }.into());
        if dims.is_empty() || dims.len() > MAX_DIMS as usize || dims.contains(&0) {
            return fail(format!("tensor {name:?}: bad dimensions {dims:?}"));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return fail(format!("tensor {name:?} added twice"));
        }
        let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let want = n.and_then(|n| ty.bytes_for(n));
        if !dims[0].is_multiple_of(ty.block_size()) || want != Some(data.len() as u64) {
            return fail(format!(
                "tensor {name:?}: {} bytes given, {ty} {dims:?} needs {want:?}",
                data.len()
            ));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            ty,
            dims: dims.to_vec(),
            data,
        });
        Ok(())
    }

    fn alignment(&self) -> Result<u64> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, Value::U32(a))) if a.is_power_of_two() => Ok(u64::from(*a)),
            Some((_, v)) => Err(ErrorKind::Write {
                detail: format!("general.alignment must be a power-of-two u32, not {v}"),
            }
            .into()),
        }
    }

    /// Writes the whole file. Returns the number of bytes written.
    pub fn write_to(&self, out: &mut impl Write) -> Result<u64> {
        let alignment = self.alignment()?;
        let mut head = Vec::new();
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut head, k);
            head.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut head, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_str(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = align_up(offset + t.data.len() as u64, alignment).ok_or_else(|| {
                ErrorKind::Write {
                    detail: "tensor data exceeds 2^64 bytes".into(),
                }
            })?;
        }
        let data_start = align_up(head.len() as u64, alignment).unwrap_or(u64::MAX);
        head.resize(data_start as usize, 0);
        let io = |e: std::io::Error| ErrorKind::Write {
            detail: e.to_string(),
        };
        out.write_all(&head).map_err(io)?;
        let mut written = 0u64;
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            let pad = off - written;
            out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
            out.write_all(t.data).map_err(io)?;
            written = off + t.data.len() as u64;
        }
        let end = align_up(written, alignment).unwrap_or(written);
        out.write_all(&vec![0u8; (end - written) as usize])
            .map_err(io)?;
        Ok(data_start + end)
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|x| put_array(out, x)),
    }
}
