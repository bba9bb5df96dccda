//! What a foreign checkpoint becomes: GGUF metadata plus a list of tensors,
//! each described by where its bytes are (ranges of memory-mapped files)
//! and what must be done to them (nothing, a q/k row permutation, or
//! joining shards). Bytes are produced one tensor at a time.

use crate::error::{Error, Result};
use cria_gguf::{GgmlType, Value};
use cria_kernels::ThreadPool;
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

/// Element types of source checkpoints.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            DType::F32 => GgmlType::F32,
            DType::F16 => GgmlType::F16,
            DType::BF16 => GgmlType::BF16,
        }
    }
}

/// A contiguous row-major array inside a mapped file.
#[derive(Clone)]
pub struct Piece {
    pub map: Arc<memmap2::Mmap>,
    /// The file `map` maps (`convert` may read it directly instead).
    pub path: Arc<PathBuf>,
    /// Byte offset of the first element in the map (and the file).
    pub start: usize,
    /// Torch order (slowest dimension first).
    pub shape: Vec<usize>,
}

impl Piece {
    /// Bytes of the piece's elements.
    pub fn len(&self, dtype: DType) -> usize {
        self.shape.iter().product::<usize>() * dtype.size()
    }

    /// True for a piece of no elements.
    pub fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    fn bytes(&self, dtype: DType) -> &[u8] {
        &self.map[self.start..self.start + self.len(dtype)]
    }
}

/// How a tensor's bytes come from its pieces.
#[derive(Clone, Debug)]
pub enum Layout {
    /// One piece, as is.
    Plain,
    /// One piece whose rows (dim 0) are Hugging Face's rotate-half order of
    /// `n_head` heads; GGUF wants interleaved pairs (llama.cpp's
    /// `LlamaModel.permute`, undone).
    Permute { n_head: usize },
    /// Model-parallel shards joined along torch dimension `axis` (0 or 1).
    Join { axis: usize },
}

#[derive(Clone)]
pub enum Source {
    Pieces {
        dtype: DType,
        pieces: Vec<Piece>,
        layout: Layout,
    },
    /// Computed values (rope frequency factors).
    F32(Vec<f32>),
}

/// One output tensor.
#[derive(Clone)]
pub struct SrcTensor {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Torch order of the final tensor (GGUF dims are this reversed).
    pub shape: Vec<usize>,
    pub source: Source,
    /// Where it came from, for error messages.
    pub origin: PathBuf,
}

/// A checkpoint as GGUF metadata and tensors.
pub struct Plan {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<SrcTensor>,
}

impl Plan {
    pub(crate) fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }
}

impl SrcTensor {
    /// GGUF dimensions: `dims[0]` is the row length.
    pub fn dims(&self) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn dtype(&self) -> DType {
        match &self.source {
            Source::Pieces { dtype, .. } => *dtype,
            Source::F32(_) => DType::F32,
        }
    }

    /// True when the bytes are a range of one mapped file, unchanged.
    pub fn is_zero_copy(&self) -> bool {
        matches!(
            &self.source,
            Source::Pieces {
                layout: Layout::Plain,
                ..
            }
        )
    }

    /// Bytes of mapped source this tensor reads (0 for computed values).
    pub fn source_bytes(&self) -> u64 {
        match &self.source {
            Source::Pieces { dtype, pieces, .. } => pieces
                .iter()
                .map(|p| (p.shape.iter().product::<usize>() * dtype.size()) as u64)
                .sum(),
            Source::F32(_) => 0,
        }
    }

    /// Drops the resident pages of this tensor's source ranges: `convert`
    /// reads each tensor once, so its resident set stays near one tensor
    /// instead of growing to the whole model (pages stay in the page cache).
    pub fn release_source(&self) {
        let Source::Pieces { dtype, pieces, .. } = &self.source else {
            return;
        };
        for p in pieces {
            let len = p.shape.iter().product::<usize>() * dtype.size();
            let page = 4096;
            let (s, e) = (p.start.div_ceil(page) * page, (p.start + len) / page * page);
            #[cfg(unix)]
            if e > s {
                // SAFETY: the map is private and read-only, never written, so
                // dropped pages read back the same file contents if needed.
                let _ = unsafe {
                    p.map
                        .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, s, e - s)
                };
            }
            #[cfg(not(unix))]
            let _ = (s, e);
        }
    }

    /// Asks the kernel to start reading this tensor's source ranges
    /// (`MADV_WILLNEED`) and to read ahead in large steps
    /// (`MADV_SEQUENTIAL`): `convert` calls it for the next tensor before
    /// writing the current one, so the read of one overlaps the write of
    /// the other instead of page-faulting 128 KB at a time inside `write`.
    pub fn prefetch_source(&self) {
        let Source::Pieces { dtype, pieces, .. } = &self.source else {
            return;
        };
        for p in pieces {
            let len = p.shape.iter().product::<usize>() * dtype.size();
            #[cfg(unix)]
            for advice in [memmap2::Advice::Sequential, memmap2::Advice::WillNeed] {
                // Advice only: a kernel that refuses it reads on demand.
                let _ = p.map.advise_range(advice, p.start, len);
            }
            #[cfg(not(unix))]
            let _ = len;
        }
    }

    /// The tensor's bytes in its source type, in GGUF (row-major) order.
    pub fn raw(&self) -> Result<Cow<'_, [u8]>> {
        match &self.source {
            Source::Pieces { dtype, pieces, .. } => {
                let bytes: Vec<&[u8]> = pieces.iter().map(|p| p.bytes(*dtype)).collect();
                self.assemble(&bytes)
            }
            Source::F32(_) => self.assemble(&[]),
        }
    }

    /// [`SrcTensor::raw`] from the bytes of each piece (`bytes[i]` holds
    /// piece i's bytes: its shape times the element size) however the
    /// caller read them.
    pub fn assemble<'b>(&self, bytes: &[&'b [u8]]) -> Result<Cow<'b, [u8]>> {
        let (dtype, pieces, layout) = match &self.source {
            Source::F32(v) => {
                return Ok(Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            }
            Source::Pieces {
                dtype,
                pieces,
                layout,
            } => (*dtype, pieces, layout),
        };
        let es = dtype.size();
        let bad = |d: String| Error::bad(&self.origin, format!("tensor {}: {d}", self.name));
        if bytes.len() != pieces.len()
            || pieces
                .iter()
                .zip(bytes)
                .any(|(p, b)| p.len(dtype) != b.len())
        {
            return Err(bad(format!(
                "{} pieces of source bytes given for {} pieces",
                bytes.len(),
                pieces.len()
            )));
        }
        match layout {
            Layout::Plain => Ok(Cow::Borrowed(bytes[0])),
            Layout::Permute { n_head } => {
                let src = bytes[0];
                let rows = self.shape[0];
                let n_head = *n_head;
                if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
                    return Err(bad(format!(
                        "{rows} rows do not split into {n_head} heads of pairs"
                    )));
                }
                let row = src.len() / rows;
                let hd = rows / n_head;
                let half = hd / 2;
                let mut out = vec![0u8; src.len()];
                // GGUF row h*hd + 2j + t is HF row h*hd + t*half + j.
                for h in 0..n_head {
                    for j in 0..half {
                        for t in 0..2 {
                            let o = h * hd + 2 * j + t;
                            let i = h * hd + t * half + j;
                            out[o * row..(o + 1) * row]
                                .copy_from_slice(&src[i * row..(i + 1) * row]);
                        }
                    }
                }
                Ok(Cow::Owned(out))
            }
            Layout::Join { axis: 0 } => {
                let mut out = Vec::with_capacity(self.n_elements() * es);
                for b in bytes {
                    out.extend_from_slice(b);
                }
                Ok(Cow::Owned(out))
            }
            Layout::Join { axis: 1 } => {
                let rows = self.shape[0];
                let mut out = Vec::with_capacity(self.n_elements() * es);
                for r in 0..rows {
                    for (p, b) in pieces.iter().zip(bytes) {
                        let w = p.shape[1..].iter().product::<usize>() * es;
                        out.extend_from_slice(&b[r * w..(r + 1) * w]);
                    }
                }
                Ok(Cow::Owned(out))
            }
            Layout::Join { axis } => Err(bad(format!("cannot join shards along dimension {axis}"))),
        }
    }
}

/// Output types of `convert`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
    /// Keep each tensor's source type (what `-m DIR` uses).
    Source,
}

impl OutType {
    pub fn parse(s: &str) -> Option<OutType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::BF16,
            "q8_0" => OutType::Q8_0,
            _ => return None,
        })
    }

    /// `general.file_type` (llama_ftype) for a file of this type.
    pub fn file_type(self, source: DType) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q8_0 => 7,
            OutType::BF16 => 32,
            OutType::Source => match source {
                DType::F32 => 0,
                DType::F16 => 1,
                DType::BF16 => 32,
            },
        }
    }

    /// The type a tensor is stored as, by llama.cpp's converter's rules:
    /// 1-D tensors (norms, rope factors) stay F32, and Q8_0 falls back to
    /// F16 when a row is not a whole number of 32-element blocks.
    pub fn for_tensor(self, t: &SrcTensor) -> GgmlType {
        if t.shape.len() <= 1 {
            return GgmlType::F32;
        }
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::BF16 => GgmlType::BF16,
            OutType::Q8_0 if t.shape[t.shape.len() - 1].is_multiple_of(32) => GgmlType::Q8_0,
            OutType::Q8_0 => GgmlType::F16,
            OutType::Source => t.dtype().ggml(),
        }
    }
}

/// Decodes little-endian `bytes` of `dtype` to f32.
pub fn to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::new();
    decode_into(dtype, bytes, &mut out);
    out
}

/// Decodes little-endian `bytes` of `dtype` into `out` (cleared first;
/// its allocation is reused). bf16 goes through the kernels' row
/// dequantizer (AVX-512 / AVX2 when the CPU has them; NaN quieted as
/// `bf16::to_f32` does); f16 goes
/// through `half`'s slice conversion (F16C / FP16 instructions when the CPU
/// has them, detected at run time), a stack block at a time.
fn decode_into(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match dtype {
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        DType::BF16 => {
            let n = bytes.len() / 2;
            out.resize(n, 0.0);
            cria_kernels::Cpu::get()
                .dequantize_row(GgmlType::BF16, &bytes[..2 * n], out)
                .expect("2 bytes per element given for each element asked");
        }
        DType::F16 => {
            const BLOCK: usize = 512;
            let mut h = [f16::ZERO; BLOCK];
            let mut x = [0f32; BLOCK];
            for c in bytes.chunks(2 * BLOCK) {
                let n = c.len() / 2;
                for (d, b) in h[..n].iter_mut().zip(c.chunks_exact(2)) {
                    *d = f16::from_le_bytes([b[0], b[1]]);
                }
                h[..n].convert_to_f32_slice(&mut x[..n]);
                out.extend_from_slice(&x[..n]);
            }
        }
    }
}

/// Elements per pool task of [`encode`]: a whole number of Q8_0 blocks,
/// large enough that a task's work (~0.1-1 ms) dwarfs its dispatch, small
/// enough that a 7B layer's tensors split into dozens of tasks.
const TASK: usize = 1 << 18;
/// Elements decoded to f32 at once inside a task (16 KB, stays in L1/L2).
const BLOCK: usize = 1 << 12;

/// The tensor's bytes as `ty` (F32, F16, BF16 or Q8_0), converted in
/// tasks of [`TASK`] elements spread over `pool`; see [`encode_into`].
pub fn encode<'a>(
    dtype: DType,
    raw: Cow<'a, [u8]>,
    ty: GgmlType,
    pool: &ThreadPool,
) -> Cow<'a, [u8]> {
    if ty == dtype.ggml() {
        return raw;
    }
    let mut out = Vec::new();
    encode_into(dtype, &raw, ty, pool, &mut out);
    Cow::Owned(out)
}

/// Converts `src` (elements of `dtype`) to `ty` into `out`, which is
/// resized to the output's length: a reused buffer of that length is
/// written over without being cleared (every byte is written), so its
/// pages need no fresh zeroing. Each task of [`TASK`] elements decodes
/// [`BLOCK`] elements at a time to f32 and encodes them with the kernels'
/// quantizers (byte-identical to ggml's), so memory holds the output and a
/// block of f32 per thread, and the bytes do not depend on the thread
/// count: every element (and every Q8_0 block, all inside one task) is
/// converted on its own.
pub fn encode_into(dtype: DType, src: &[u8], ty: GgmlType, pool: &ThreadPool, out: &mut Vec<u8>) {
    let es = dtype.size();
    let n = src.len() / es;
    let bytes = |k: usize| ty.bytes_for(k as u64).unwrap_or(0) as usize;
    out.resize(bytes(n), 0);
    pool.for_each_chunk_mut(out, bytes(TASK), |i, dst| {
        let from = i * TASK * es;
        let src = &src[from..(from + TASK * es).min(src.len())];
        let mut x = Vec::with_capacity(BLOCK);
        let mut at = 0;
        for c in src.chunks(BLOCK * es) {
            decode_into(dtype, c, &mut x);
            let len = bytes(x.len());
            cria_kernels::quantize_row(ty, &x, None, &mut dst[at..at + len])
                .expect("the plan only chooses types the kernels quantize, in whole blocks");
            at += len;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// The slice conversions give, for every 16-bit pattern (NaNs,
    /// infinities, subnormals included), the element conversion's value.
    #[test]
    fn to_f32_matches_element_conversion_for_every_pattern() {
        // Odd count: no multiple of any SIMD width.
        let bits: Vec<u16> = (0..=u16::MAX).chain([0x3c00]).collect();
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let f = to_f32(DType::F16, &bytes);
        let b = to_f32(DType::BF16, &bytes);
        for (i, &v) in bits.iter().enumerate() {
            let (ef, eb) = (f16::from_bits(v).to_f32(), bf16::from_bits(v).to_f32());
            assert_eq!(f[i].to_bits(), ef.to_bits(), "f16 {v:#06x}");
            assert_eq!(b[i].to_bits(), eb.to_bits(), "bf16 {v:#06x}");
        }
    }

    /// `convert --outtype f16` of a bf16 tensor of several pool tasks (and
    /// a short last one), every bf16 pattern in it, on 3 threads: each
    /// output element is the element-by-element bf16 -> f32 -> f16 value,
    /// at its place.
    #[test]
    fn encode_bf16_to_f16_across_tasks_matches_element_conversion() {
        let bits: Vec<u16> = (0..(1usize << 20) + 3 * 65_536 + 7)
            .map(|i| (i as u32).wrapping_mul(40_503) as u16)
            .collect();
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let out = encode(
            DType::BF16,
            Cow::Borrowed(&bytes),
            GgmlType::F16,
            &ThreadPool::new(3),
        );
        assert_eq!(out.len(), bytes.len());
        for (i, &b) in bits.iter().enumerate() {
            let want = f16::from_f32(bf16::from_bits(b).to_f32()).to_bits();
            let got = u16::from_le_bytes([out[2 * i], out[2 * i + 1]]);
            assert_eq!(got, want, "element {i}: bf16 {b:#06x}");
        }
    }
}
