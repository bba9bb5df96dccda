//! Writing GGUF tensor by tensor: the header (which needs every tensor's
//! type and shape, hence its size) first, then each tensor's bytes as they
//! are produced, so a converter holds one tensor in memory at a time.

use crate::error::{ErrorKind, Result};
use crate::reader::{align_up, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::types::GgmlType;
use crate::value::Value;
use crate::writer::{put_str, put_value};
use std::io::Write;

/// Writes a GGUF v3 file whose tensors are declared up front and written
/// in that order with [`StreamWriter::write_tensor`].
///
/// ```
/// use cria_gguf::{GgmlType, GgufFile, StreamWriter, Value};
/// let meta = vec![("general.architecture".to_string(), Value::String("llama".into()))];
/// let infos = vec![("a".to_string(), GgmlType::F32, vec![2u64])];
/// let mut out = Vec::new();
/// let mut w = StreamWriter::begin(&mut out, &meta, &infos).unwrap();
/// w.write_tensor("a", &[0u8; 8]).unwrap();
/// w.finish().unwrap();
/// assert_eq!(GgufFile::from_bytes(out).unwrap().tensors().len(), 1);
/// ```
pub struct StreamWriter<W: Write> {
    out: W,
    /// (name, bytes expected, offset in the data section), in write order.
    plan: Vec<(String, u64, u64)>,
    next: usize,
    /// Bytes of the data section written so far.
    written: u64,
    alignment: u64,
}

fn fail<T>(detail: String) -> Result<T> {
    Err(ErrorKind::Write { detail }.into())
}

impl<W: Write> StreamWriter<W> {
    /// Checks the tensor list and writes the header. `infos` are
    /// (name, type, dims with `dims[0]` the row length).
    pub fn begin(
        mut out: W,
        metadata: &[(String, Value)],
        infos: &[(String, GgmlType, Vec<u64>)],
    ) -> Result<StreamWriter<W>> {
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, v)) => {
                return fail(format!(
                    "general.alignment must be a power-of-two u32, not {v}"
                ))
            }
        };
        let mut head = Vec::new();
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (i, (k, v)) in metadata.iter().enumerate() {
            if metadata[..i].iter().any(|(k2, _)| k2 == k) {
                return fail(format!("metadata key {k:?} given twice"));
            }
            put_str(&mut head, k);
            head.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut head, v);
        }
        let mut plan: Vec<(String, u64, u64)> = Vec::with_capacity(infos.len());
        let mut offset = 0u64;
        for (name, ty, dims) in infos {
            if dims.is_empty() || dims.len() > MAX_DIMS as usize || dims.contains(&0) {
                return fail(format!("tensor {name:?}: bad dimensions {dims:?}"));
            }
            if plan.iter().any(|p| &p.0 == name) {
                return fail(format!("tensor {name:?} declared twice"));
            }
            let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let Some(size) = n.and_then(|n| ty.bytes_for(n)) else {
                return fail(format!("tensor {name:?}: {dims:?} overflows"));
            };
            if !dims[0].is_multiple_of(ty.block_size()) {
                return fail(format!(
                    "tensor {name:?}: row length {} is not a multiple of the {ty} block size",
                    dims[0]
                ));
            }
            put_str(&mut head, name);
            head.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            plan.push((name.clone(), size, offset));
            offset = match align_up(offset + size, alignment) {
                Some(o) => o,
                None => return fail("tensor data exceeds 2^64 bytes".into()),
            };
        }
        let data_start = align_up(head.len() as u64, alignment).unwrap_or(u64::MAX);
        head.resize(data_start as usize, 0);
        out.write_all(&head).or_else(|e| fail(e.to_string()))?;
        Ok(StreamWriter {
            out,
            plan,
            next: 0,
            written: 0,
            alignment,
        })
    }

    /// Writes the next declared tensor's bytes; `name` must be that tensor.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let Some((want, size, offset)) = self.plan.get(self.next) else {
            return fail(format!("tensor {name:?} was not declared"));
        };
        if want != name {
            return fail(format!(
                "tensor {name:?} written where {want:?} was declared"
            ));
        }
        if *size != data.len() as u64 {
            return fail(format!(
                "tensor {name:?}: {} bytes given, {size} declared",
                data.len()
            ));
        }
        let pad = (offset - self.written) as usize;
        let io = |e: std::io::Error| ErrorKind::Write {
            detail: e.to_string(),
        };
        self.out
            .write_all(&[0u8; 256][..pad.min(256)])
            .map_err(io)?;
        if pad > 256 {
            self.out.write_all(&vec![0u8; pad - 256]).map_err(io)?;
        }
        self.out.write_all(data).map_err(io)?;
        self.written = offset + size;
        self.next += 1;
        Ok(())
    }

    /// Pads the end, flushes, and checks that every tensor was written.
    pub fn finish(mut self) -> Result<W> {
        if let Some((name, ..)) = self.plan.get(self.next) {
            return fail(format!("tensor {name:?} was declared but never written"));
        }
        let end = align_up(self.written, self.alignment).unwrap_or(self.written);
        let io = |e: std::io::Error| ErrorKind::Write {
            detail: e.to_string(),
        };
        self.out
            .write_all(&vec![0u8; (end - self.written) as usize])
            .map_err(io)?;
        self.out.flush().map_err(io)?;
        Ok(self.out)
    }
}
