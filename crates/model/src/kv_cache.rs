//! The key/value cache: per layer, the rotated keys and the values of every
//! KV head at every position. Independent of the model: it knows only sizes.
//!
//! Values are (layer, position, kv_dim). Keys are (layer, position / 16,
//! kv_dim, 16): blocks of 16 positions stored dimension-major, so attention
//! reads one dimension of 16 keys with one load and a score needs no
//! horizontal sum ([`cria_kernels::KvHead`]). The key blocks cover `n_ctx`
//! rounded up to a multiple of 16.

use cria_kernels::KvHead;
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
pub trait KvElem: Copy + Send + Sync + Into<f32> + 'static {
    fn from_f32(x: f32) -> Self;
    /// `dst[i] = from_f32(src[i])` (lengths must match).
    fn from_f32_slice(dst: &mut [Self], src: &[f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(x);
        }
    }
    /// Causal attention of queries that read one KV head (the contract of
    /// [`cria_kernels::attend_f16`]): `q` and `out` are (`last.len()`, d);
    /// query j sees positions `0..=last[j]`; `scores` is scratch. Each
    /// output has the bits of its query evaluated alone.
    fn attend(
        q: &[f32],
        last: &[usize],
        kv: KvHead<Self>,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        cria_kernels::attend_scalar(q, last, kv, scale, scores, out)
    }
}

impl KvElem for f32 {
    fn from_f32(x: f32) -> f32 {
        x
    }
}

impl KvElem for f16 {
    fn from_f32(x: f32) -> f16 {
        f16::from_f32(x)
    }
    fn from_f32_slice(dst: &mut [f16], src: &[f32]) {
        // F16C when available; the same rounding as `from_f32`.
        half::slice::HalfFloatSliceExt::convert_from_f32_slice(dst, src);
    }
    fn attend(
        q: &[f32],
        last: &[usize],
        kv: KvHead<f16>,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        cria_kernels::attend_f16(q, last, kv, scale, scores, out)
    }
}

/// Storage of one element type: `k` is (layer, position / 16, kv_dim, 16)
/// and `v` (layer, position, kv_dim); see the module docs.
pub struct KvStore<T> {
    pub k: Vec<T>,
    pub v: Vec<T>,
}

impl<T: KvElem> KvStore<T> {
    /// Writes the key and value rows (`kv_dim` each) of position `pos` in
    /// `layer` of a cache of `n_ctx` positions.
    fn store(&mut self, n_ctx: usize, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let kvd = k.len();
        let at = (layer * n_ctx + pos) * kvd;
        T::from_f32_slice(&mut self.v[at..at + kvd], v);
        let kb = (layer * n_ctx.div_ceil(16) + pos / 16) * 16 * kvd + pos % 16;
        let dst = &mut self.k[kb..kb + 16 * (kvd - 1) + 1];
        // Convert 16 at a time, then scatter 16 apart.
        let mut tmp = [T::from_f32(0.0); 16];
        for (c, src) in k.chunks(16).enumerate() {
            T::from_f32_slice(&mut tmp[..src.len()], src);
            for (i, &x) in tmp[..src.len()].iter().enumerate() {
                dst[16 * (16 * c + i)] = x;
            }
        }
    }

    /// The keys and values of the head whose dimensions start at `first`
    /// (of `kv_dim`) in `layer` of a cache of `n_ctx` positions.
    pub(crate) fn head(
        &self,
        n_ctx: usize,
        kv_dim: usize,
        layer: usize,
        first: usize,
    ) -> KvHead<'_, T> {
        let k0 = layer * n_ctx.div_ceil(16) * 16 * kv_dim + 16 * first;
        let v0 = layer * n_ctx * kv_dim + first;
        KvHead {
            k: &self.k[k0..],
            k_block: 16 * kv_dim,
            v: &self.v[v0..],
            v_row: kv_dim,
        }
    }
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
    /// A zeroed cache. Panics if its element count overflows `usize` (no
    /// machine could hold it); callers sizing it from user input should
    /// check [`KvCache::bytes_for`] against their memory budget first.
    pub fn new(n_layers: usize, n_ctx: usize, kv_dim: usize, ty: KvType) -> KvCache {
        let count = |ctx: usize| {
            n_layers
                .checked_mul(ctx)
                .and_then(|x| x.checked_mul(kv_dim))
                .unwrap_or_else(|| {
                    panic!("a KV cache of {n_layers} layers x {n_ctx} positions x {kv_dim} overflows memory")
                })
        };
        let n = count(n_ctx);
        let nk = count(n_ctx.checked_next_multiple_of(16).unwrap_or(usize::MAX));
        let data = match ty {
            KvType::F16 => KvData::F16(KvStore {
                k: zeroed_f16(nk),
                v: zeroed_f16(n),
            }),
            KvType::F32 => KvData::F32(KvStore {
                k: vec![0.0; nk],
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
    /// allocating (keys round `n_ctx` up to a multiple of 16: up to 15
    /// positions more than this). Saturates at `u64::MAX` rather than
    /// wrapping, so a caller comparing it with a budget stays right.
    pub fn bytes_for(n_layers: usize, n_ctx: usize, kv_dim: usize, ty: KvType) -> u64 {
        [n_layers, n_ctx, kv_dim, ty.bytes()]
            .iter()
            .fold(2u64, |acc, &x| acc.saturating_mul(x as u64))
    }

    /// Writes the key and value rows of position `pos` in `layer`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        assert!(
            layer < self.n_layers
                && pos < self.n_ctx
                && k.len() == self.kv_dim
                && v.len() == self.kv_dim,
            "KvCache::store out of bounds"
        );
        match &mut self.data {
            KvData::F16(st) => st.store(self.n_ctx, layer, pos, k, v),
            KvData::F32(st) => st.store(self.n_ctx, layer, pos, k, v),
        }
    }

    pub fn ty(&self) -> KvType {
        match self.data {
            KvData::F16(_) => KvType::F16,
            KvData::F32(_) => KvType::F32,
        }
    }
}
