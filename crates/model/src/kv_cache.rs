//! The key/value cache: per layer, per position, the rotated keys and the
//! values of every KV head. Independent of the model: it knows only sizes.

use half::f16;

/// Element type of the cache. f16 halves its memory (llama.cpp's default);
/// f32 keeps keys and values exactly as computed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

impl KvType {
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

/// A value that can be stored in the cache.
pub trait KvElem: Copy + Send + Sync + 'static {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    /// `dst[i] = from_f32(src[i])` (lengths must match).
    fn from_f32_slice(dst: &mut [Self], src: &[f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(x);
        }
    }
    /// `sum(q[i] * k[i])`.
    fn dot(q: &[f32], k: &[Self]) -> f32 {
        q.iter().zip(k).map(|(a, b)| a * b.to_f32()).sum()
    }
    /// `out[i] += p * v[i]`.
    fn axpy(out: &mut [f32], p: f32, v: &[Self]) {
        for (o, x) in out.iter_mut().zip(v) {
            *o += p * x.to_f32();
        }
    }
    /// `scores[t] = dot(q, k[t * stride..]) * scale` for every t.
    fn dot_rows(q: &[f32], k: &[Self], stride: usize, scale: f32, scores: &mut [f32]) {
        for (t, s) in scores.iter_mut().enumerate() {
            *s = Self::dot(q, &k[t * stride..t * stride + q.len()]) * scale;
        }
    }
    /// `out += p[t] * v[t * stride..]` for every t, in order.
    fn axpy_rows(out: &mut [f32], p: &[f32], v: &[Self], stride: usize) {
        for (t, &pt) in p.iter().enumerate() {
            Self::axpy(out, pt, &v[t * stride..t * stride + out.len()]);
        }
    }
    /// Causal attention of queries that read one KV head (the contract of
    /// [`cria_kernels::attend_f16`]): `q` and `out` are (`last.len()`, d);
    /// query j sees positions `0..=last[j]`; `scores` is scratch. Each
    /// output has the bits of its query evaluated alone.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        q: &[f32],
        last: &[usize],
        k: &[Self],
        v: &[Self],
        stride: usize,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        if last.is_empty() {
            return;
        }
        let d = out.len() / last.len();
        for ((qj, oj), &lj) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)).zip(last) {
            scores.clear();
            scores.resize(lj + 1, 0.0);
            Self::dot_rows(qj, k, stride, scale, scores);
            cria_kernels::softmax_fast(scores);
            oj.fill(0.0);
            Self::axpy_rows(oj, scores, v, stride);
        }
    }
}

impl KvElem for f32 {
    fn from_f32(x: f32) -> f32 {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl KvElem for f16 {
    fn from_f32(x: f32) -> f16 {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32_slice(dst: &mut [f16], src: &[f32]) {
        // F16C when available; the same rounding as `from_f32`.
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(dst, src);
    }
    fn dot(q: &[f32], k: &[f16]) -> f32 {
        cria_kernels::dot_f16(q, k)
    }
    fn axpy(out: &mut [f32], p: f32, v: &[f16]) {
        cria_kernels::axpy_f16(out, p, v)
    }
    fn dot_rows(q: &[f32], k: &[f16], stride: usize, scale: f32, scores: &mut [f32]) {
        cria_kernels::dot_f16_rows(q, k, stride, scale, scores)
    }
    fn axpy_rows(out: &mut [f32], p: &[f32], v: &[f16], stride: usize) {
        cria_kernels::axpy_f16_rows(out, p, v, stride)
    }
    fn attend(
        q: &[f32],
        last: &[usize],
        k: &[f16],
        v: &[f16],
        stride: usize,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        cria_kernels::attend_f16(q, last, k, v, stride, scale, scores, out)
    }
}

/// Storage of one element type: `k` and `v` are (layer, position, kv_dim).
pub struct KvStore<T> {
    pub k: Vec<T>,
    pub v: Vec<T>,
}

pub enum KvData {
    F16(KvStore<f16>),
    F32(KvStore<f32>),
}

pub struct KvCache {
    pub n_layers: usize,
    pub n_ctx: usize,
    pub kv_dim: usize,
    pub data: KvData,
}

/// `n` f16 zeros from a zeroed allocation: the pages of a large cache are
/// only touched (and become resident) as positions are written, not all at
/// creation (`vec![f16::ZERO; n]` writes every element).
fn zeroed_f16(n: usize) -> Vec<f16> {
    let mut bits = std::mem::ManuallyDrop::new(vec![0u16; n]);
    let (ptr, len, cap) = (bits.as_mut_ptr(), bits.len(), bits.capacity());
    // SAFETY: f16 is a transparent u16 (same size and alignment, every bit
    // pattern valid; 0 is +0.0), and the allocation moves over whole.
    unsafe { Vec::from_raw_parts(ptr as *mut f16, len, cap) }
}

impl KvCache {
    pub fn new(n_layers: usize, n_ctx: usize, kv_dim: usize, ty: KvType) -> KvCache {
        let n = n_layers * n_ctx * kv_dim;
        let data = match ty {
            KvType::F16 => KvData::F16(KvStore {
                k: zeroed_f16(n),
                v: zeroed_f16(n),
            }),
            KvType::F32 => KvData::F32(KvStore {
                k: vec![0.0; n],
                v: vec![0.0; n],
            }),
        };
        KvCache {
            n_layers,
            n_ctx,
            kv_dim,
            data,
        }
    }

    /// Bytes needed for a cache of these sizes, to report or cap it before
    /// allocating.
    pub fn bytes_for(n_layers: usize, n_ctx: usize, kv_dim: usize, ty: KvType) -> u64 {
        2 * (n_layers * n_ctx * kv_dim * ty.bytes()) as u64
    }

    pub fn ty(&self) -> KvType {
        match self.data {
            KvData::F16(_) => KvType::F16,
            KvData::F32(_) => KvType::F32,
        }
    }
}
