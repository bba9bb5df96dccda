//! The key/value cache: per layer, the rotated keys and the values of every
//! KV head at every position. Independent of the model: it knows only sizes.
//!
//! Keys and values each have their own element type ([`KvTypes`]): f16
//! (llama.cpp's default), f32, or ggml's Q8_0 / Q4_0 blocks of 32 (one f16
//! scale per block; llama.cpp's `-ctk`/`-ctv q8_0|q4_0`).
//!
//! - f16/f32 values are (layer, position, kv_dim); f16/f32 keys are
//!   (layer, position / 16, kv_dim, 16): blocks of 16 positions stored
//!   dimension-major, so attention reads one dimension of 16 keys with one
//!   load ([`cria_kernels::KvHead`]).
//! - Quantized values are (layer, kv_dim / 32, position) ggml blocks;
//!   quantized keys are (layer, kv_dim / 32, position / 16) key tiles of 16
//!   positions x 32 dimensions ([`cria_kernels::QKeys`]): block-major, so
//!   attention over a head reads `head_dim / 32` sequential streams. Q8_0
//!   rows are rounded as llama.cpp's `quantize_row_q8_0` rounds them; Q4_0
//!   rows with a searched scale, never worse than llama.cpp's
//!   `quantize_row_q4_0_ref` ([`cria_kernels::quantize_q4_0_lsq`]).
//!
//! Key blocks and tiles cover `n_ctx` rounded up to a multiple of 16.

use crate::error::{Error, ErrorKind};
use cria_kernels::{Keys, QKeys, QType, QValues, Values, QBLOCK};
use half::f16;
use std::fmt;
use std::str::FromStr;

/// Element type of keys or values in the cache.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
    Q8_0,
    Q4_0,
}

impl KvType {
    /// Every type, as `-ctk`/`-ctv` name them.
    pub const ALL: [KvType; 4] = [KvType::F16, KvType::F32, KvType::Q8_0, KvType::Q4_0];

    /// Bytes per 32 elements (f16 64, f32 128, q8_0 34, q4_0 18).
    pub fn bytes_per_32(self) -> u64 {
        match self {
            KvType::F16 => 64,
            KvType::F32 => 128,
            KvType::Q8_0 => 34,
            KvType::Q4_0 => 18,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    fn quant(self) -> Option<QType> {
        match self {
            KvType::Q8_0 => Some(QType::Q8_0),
            KvType::Q4_0 => Some(QType::Q4_0),
            _ => None,
        }
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvType {
    type Err = Error;
    fn from_str(s: &str) -> Result<KvType, Error> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                ErrorKind::BadArgument {
                    detail: format!("unknown KV cache type {s:?}: use f16, f32, q8_0 or q4_0"),
                }
                .into()
            })
    }
}

/// The element types of the keys and of the values.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KvTypes {
    pub k: KvType,
    pub v: KvType,
}

impl From<KvType> for KvTypes {
    fn from(t: KvType) -> KvTypes {
        KvTypes { k: t, v: t }
    }
}

impl KvTypes {
    /// Refuses quantized types for a head size that is not a whole number
    /// of blocks of 32 (llama.cpp refuses them too).
    pub fn check(self, head_dim: usize) -> Result<(), Error> {
        for (what, t) in [("K", self.k), ("V", self.v)] {
            if t.quant().is_some() && (head_dim == 0 || !head_dim.is_multiple_of(QBLOCK)) {
                return Err(ErrorKind::Unsupported {
                    detail: format!(
                        "a {t} {what} cache needs a head size divisible by {QBLOCK}, \
                         and this model's is {head_dim}: use f16 or f32 for {what}"
                    ),
                }
                .into());
            }
        }
        Ok(())
    }
}

impl KvTypes {
    /// llama.cpp's attention rotation for quantized caches (its
    /// `attn_rot_k`/`attn_rot_v`, on unless `LLAMA_ATTN_ROT_DISABLE`): when
    /// the keys are quantized and the head size is a multiple of 64, queries
    /// and keys are multiplied by an orthonormal Walsh-Hadamard matrix of
    /// size `k` (the largest power of two dividing the head size), which
    /// leaves every score as it was but spreads outliers across a block
    /// before it is rounded; when the values are quantized, values and the
    /// attention output by one of size `v` = 64. Returns `(k, v)`.
    pub fn rotation(self, head_dim: usize) -> (Option<usize>, Option<usize>) {
        let on = |t: KvType| t.quant().is_some() && head_dim > 0 && head_dim.is_multiple_of(64);
        let k = on(self.k).then(|| 1 << head_dim.trailing_zeros());
        let v = on(self.v).then_some(64);
        (k, v)
    }
}

/// `x <- H x` for each chunk of `n` (a power of two) of `x`, `H` the
/// orthonormal Walsh-Hadamard matrix of size `n` (Sylvester's order, as
/// llama.cpp builds it; its own inverse).
pub fn hadamard(x: &mut [f32], n: usize) {
    let s = 1.0 / (n as f32).sqrt();
    for c in x.chunks_exact_mut(n) {
        let mut h = 1;
        while h < n {
            for i in (0..n).step_by(2 * h) {
                for j in i..i + h {
                    let (a, b) = (c[j], c[j + h]);
                    c[j] = a + b;
                    c[j + h] = a - b;
                }
            }
            h *= 2;
        }
        c.iter_mut().for_each(|v| *v *= s);
    }
}

impl fmt::Display for KvTypes {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "K {} / V {}", self.k, self.v)
    }
}

/// One side (keys or values) of a cache.
enum Buf {
    F16(Vec<f16>),
    F32(Vec<f32>),
    Quant(QType, Vec<u8>),
}

pub struct KvCache {
    pub n_layers: usize,
    pub n_ctx: usize,
    pub kv_dim: usize,
    k: Buf,
    v: Buf,
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

/// A zeroed buffer of `n` elements of `ty` (`n` a multiple of 32 for the
/// quantized types).
///
/// On 2 MiB pages where the system grants them: attention reads a cache in
/// long strides, and with 4 KiB pages the same decode attention took 15-25 %
/// longer (`crates/kernels/examples/attn_decode.rs --huge 0|1`).
fn buf(ty: KvType, n: usize) -> Buf {
    let mut b = match ty {
        KvType::F16 => Buf::F16(zeroed_f16(n)),
        KvType::F32 => Buf::F32(vec![0.0; n]),
        KvType::Q8_0 | KvType::Q4_0 => {
            let q = ty.quant().expect("quantized");
            Buf::Quant(q, vec![0u8; n / QBLOCK * q.block_bytes()])
        }
    };
    // Huge pages for attention's long reads, backed now rather than during
    // the first request (see `populate`).
    fn back<T>(v: &mut [T]) {
        cria_kernels::advise_huge_pages(v);
        cria_kernels::populate(v)
    }
    match &mut b {
        Buf::F16(v) => back(v),
        Buf::F32(v) => back(v),
        Buf::Quant(_, v) => back(v),
    }
    b
}

impl KvCache {
    /// A zeroed cache. Panics if its element count overflows `usize` (no
    /// machine could hold it), or if a quantized type meets a `kv_dim` that
    /// is not a multiple of 32 (check [`KvTypes::check`] first); callers
    /// sizing it from user input should check [`KvCache::bytes_for`]
    /// against their memory budget first.
    pub fn new(n_layers: usize, n_ctx: usize, kv_dim: usize, ty: impl Into<KvTypes>) -> KvCache {
        let ty = ty.into();
        let count = |ctx: usize| {
            n_layers
                .checked_mul(ctx)
                .and_then(|x| x.checked_mul(kv_dim))
                .unwrap_or_else(|| {
                    panic!("a KV cache of {n_layers} layers x {n_ctx} positions x {kv_dim} overflows memory")
                })
        };
        for t in [ty.k, ty.v] {
            assert!(
                t.quant().is_none() || kv_dim.is_multiple_of(QBLOCK),
                "a {t} KV cache needs kv_dim divisible by 32, not {kv_dim}"
            );
        }
        let n = count(n_ctx);
        let nk = count(n_ctx.checked_next_multiple_of(16).unwrap_or(usize::MAX));
        KvCache {
            n_layers,
            n_ctx,
            kv_dim,
            k: buf(ty.k, nk),
            v: buf(ty.v, n),
        }
    }

    /// Bytes needed for a cache of these sizes, to report or cap it before
    /// allocating (keys round `n_ctx` up to a multiple of 16: up to 15
    /// positions more than this). Saturates at `u64::MAX` rather than
    /// wrapping, so a caller comparing it with a budget stays right.
    pub fn bytes_for(n_layers: usize, n_ctx: usize, kv_dim: usize, ty: impl Into<KvTypes>) -> u64 {
        let ty = ty.into();
        let elems = [n_layers, n_ctx, kv_dim]
            .iter()
            .fold(1u128, |acc, &x| acc.saturating_mul(x as u128));
        let side = |t: KvType| (elems.saturating_mul(u128::from(t.bytes_per_32()))).div_ceil(32);
        u64::try_from(side(ty.k).saturating_add(side(ty.v))).unwrap_or(u64::MAX)
    }

    /// Writes the key and value rows (`kv_dim` each) of position `pos` in
    /// `layer`, converted or quantized to the cache's types.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        assert!(
            layer < self.n_layers
                && pos < self.n_ctx
                && k.len() == self.kv_dim
                && v.len() == self.kv_dim,
            "KvCache::store out of bounds"
        );
        let (kvd, n_ctx) = (self.kv_dim, self.n_ctx);
        let at = (layer * n_ctx + pos) * kvd;
        match &mut self.v {
            Buf::F16(b) => {
                half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut b[at..at + kvd], v)
            }
            Buf::F32(b) => b[at..at + kvd].copy_from_slice(v),
            Buf::Quant(q, b) => {
                let (bb, nb) = (q.block_bytes(), kvd / QBLOCK);
                for (i, src) in v.chunks_exact(QBLOCK).enumerate() {
                    let at = ((layer * nb + i) * n_ctx + pos) * bb;
                    cria_kernels::quantize_kv_row(*q, src, &mut b[at..at + bb]);
                }
            }
        }
        self.store_key(layer, pos, k);
    }

    fn store_key(&mut self, layer: usize, pos: usize, k: &[f32]) {
        let kvd = self.kv_dim;
        let tiles = self.n_ctx.div_ceil(16);
        match &mut self.k {
            Buf::F16(b) => {
                let kb = (layer * tiles + pos / 16) * 16 * kvd + pos % 16;
                // Converted a vector at a time first (one f16 per call
                // was 1-2 % of 8 sequences' decode step), then scattered.
                const CHUNK: usize = 256;
                let mut h = [f16::ZERO; CHUNK];
                let dst = &mut b[kb..kb + 16 * (kvd - 1) + 1];
                for (c, src) in k.chunks(CHUNK).enumerate() {
                    let h = &mut h[..src.len()];
                    half::slice::HalfFloatSliceExt::convert_from_f32_slice(h, src);
                    scatter16(&mut dst[16 * CHUNK * c..], h, |x| *x);
                }
            }
            Buf::F32(b) => {
                let kb = (layer * tiles + pos / 16) * 16 * kvd + pos % 16;
                scatter16(&mut b[kb..kb + 16 * (kvd - 1) + 1], k, |x| *x);
            }
            Buf::Quant(q, b) => {
                let (tb, nb) = (q.key_tile_bytes(), kvd / QBLOCK);
                for (i, src) in k.chunks_exact(QBLOCK).enumerate() {
                    let at = ((layer * nb + i) * tiles + pos / 16) * tb;
                    cria_kernels::pack_key(*q, &mut b[at..at + tb], pos, src);
                }
            }
        }
    }

    /// Moves positions `from..n_past` of every layer down by `by` (to
    /// `from - by..n_past - by`; `by <= from`), each key row (kv_dim,
    /// dequantized) passed through `rotate` on the way: llama.cpp's
    /// context shift, `rotate` re-roping the keys to their new positions.
    /// Values move as they are (quantized ones byte for byte).
    pub fn shift(
        &mut self,
        from: usize,
        by: usize,
        n_past: usize,
        mut rotate: impl FnMut(&mut [f32]),
    ) {
        assert!(
            by <= from && from <= n_past && n_past <= self.n_ctx,
            "KvCache::shift out of bounds"
        );
        let (kvd, n_ctx) = (self.kv_dim, self.n_ctx);
        let mut row = vec![0f32; kvd];
        for layer in 0..self.n_layers {
            let (a, b) = (layer * n_ctx + from, layer * n_ctx + n_past);
            match &mut self.v {
                Buf::F16(v) => v.copy_within(a * kvd..b * kvd, (a - by) * kvd),
                Buf::F32(v) => v.copy_within(a * kvd..b * kvd, (a - by) * kvd),
                Buf::Quant(q, v) => {
                    let (bb, nb) = (q.block_bytes(), kvd / QBLOCK);
                    for i in 0..nb {
                        let base = (layer * nb + i) * n_ctx;
                        let (a, b) = (base + from, base + n_past);
                        v.copy_within(a * bb..b * bb, (a - by) * bb);
                    }
                }
            }
            for p in from..n_past {
                self.key_row(layer, p, &mut row);
                rotate(&mut row);
                self.store_key(layer, p - by, &row);
            }
        }
    }

    /// Key `pos` of `layer` as f32 (dequantized).
    fn key_row(&self, layer: usize, pos: usize, out: &mut [f32]) {
        let kvd = self.kv_dim;
        let tiles = self.n_ctx.div_ceil(16);
        let kb = (layer * tiles + pos / 16) * 16 * kvd + pos % 16;
        match &self.k {
            Buf::F16(b) => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = b[kb + 16 * i].to_f32();
                }
            }
            Buf::F32(b) => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = b[kb + 16 * i];
                }
            }
            Buf::Quant(q, b) => {
                let (tb, nb) = (q.key_tile_bytes(), kvd / QBLOCK);
                for (i, o) in out.chunks_exact_mut(QBLOCK).enumerate() {
                    let at = ((layer * nb + i) * tiles + pos / 16) * tb;
                    cria_kernels::unpack_key(*q, &b[at..at + tb], pos, o);
                }
            }
        }
    }

    /// The keys and values of the head of `head_dim` whose dimensions start
    /// at `first` (of `kv_dim`) in `layer`.
    pub fn head(&self, layer: usize, first: usize, head_dim: usize) -> (Keys<'_>, Values<'_>) {
        let (kvd, n_ctx) = (self.kv_dim, self.n_ctx);
        let tiles = n_ctx.div_ceil(16);
        let k0 = layer * tiles * 16 * kvd + 16 * first;
        let keys = match &self.k {
            Buf::F16(b) => Keys::F16 {
                k: &b[k0..],
                k_block: 16 * kvd,
            },
            Buf::F32(b) => Keys::F32 {
                k: &b[k0..],
                k_block: 16 * kvd,
            },
            Buf::Quant(q, b) => {
                let (tb, nb) = (q.key_tile_bytes(), kvd / QBLOCK);
                let at = (layer * nb + first / QBLOCK) * tiles * tb;
                Keys::Quant(QKeys {
                    ty: *q,
                    bytes: &b[at..],
                    tile_stride: tb,
                    block_stride: tiles * tb,
                    blocks: head_dim / QBLOCK,
                })
            }
        };
        let v0 = layer * n_ctx * kvd + first;
        let values = match &self.v {
            Buf::F16(b) => Values::F16 {
                v: &b[v0..],
                v_row: kvd,
            },
            Buf::F32(b) => Values::F32 {
                v: &b[v0..],
                v_row: kvd,
            },
            Buf::Quant(q, b) => {
                let (bb, nb) = (q.block_bytes(), kvd / QBLOCK);
                let at = (layer * nb + first / QBLOCK) * n_ctx * bb;
                Values::Quant(QValues {
                    ty: *q,
                    bytes: &b[at..],
                    row_stride: bb,
                    block_stride: n_ctx * bb,
                    blocks: head_dim / QBLOCK,
                })
            }
        };
        (keys, values)
    }

    pub fn ty(&self) -> KvTypes {
        let t = |b: &Buf| match b {
            Buf::F16(_) => KvType::F16,
            Buf::F32(_) => KvType::F32,
            Buf::Quant(QType::Q8_0, _) => KvType::Q8_0,
            Buf::Quant(QType::Q4_0, _) => KvType::Q4_0,
        };
        KvTypes {
            k: t(&self.k),
            v: t(&self.v),
        }
    }
}

/// One run of whole units (a key tile or a value position) of one side of
/// one layer, as [`KvCache::export`] lays them out: `units` units of
/// `unit_bytes` bytes starting at unit `first` of the side's buffer.
struct Segment {
    key: bool,
    first: usize,
    units: usize,
    unit_bytes: usize,
}

impl KvCache {
    /// The runs of positions `from..to` (`from` a multiple of 16), in the
    /// canonical order of an exported range: per layer, the keys (f16/f32:
    /// tiles `from / 16 .. ceil(to / 16)`; quantized: those tiles of each
    /// block of 32 dimensions), then the values (positions `from..to`,
    /// per block of 32 dimensions if quantized). Independent of `n_ctx`.
    fn segments(&self, from: usize, to: usize) -> Vec<Segment> {
        let kvd = self.kv_dim;
        let tiles = self.n_ctx.div_ceil(16);
        let (t0, t1) = (from / 16, to.div_ceil(16));
        let nb = kvd / QBLOCK;
        let mut out = Vec::new();
        for layer in 0..self.n_layers {
            match &self.k {
                Buf::F16(_) | Buf::F32(_) => out.push(Segment {
                    key: true,
                    first: layer * tiles + t0,
                    units: t1 - t0,
                    unit_bytes: 16 * kvd * elem_bytes(&self.k),
                }),
                Buf::Quant(q, _) => out.extend((0..nb).map(|i| Segment {
                    key: true,
                    first: (layer * nb + i) * tiles + t0,
                    units: t1 - t0,
                    unit_bytes: q.key_tile_bytes(),
                })),
            }
            match &self.v {
                Buf::F16(_) | Buf::F32(_) => out.push(Segment {
                    key: false,
                    first: layer * self.n_ctx + from,
                    units: to - from,
                    unit_bytes: kvd * elem_bytes(&self.v),
                }),
                Buf::Quant(q, _) => out.extend((0..nb).map(|i| Segment {
                    key: false,
                    first: (layer * nb + i) * self.n_ctx + from,
                    units: to - from,
                    unit_bytes: q.block_bytes(),
                })),
            }
        }
        out
    }

    /// Bytes of [`KvCache::export`]`(from, to)` for a cache of these sizes
    /// and types, whatever its `n_ctx`; `None` if it overflows `u64`.
    pub fn range_bytes(
        n_layers: usize,
        kv_dim: usize,
        ty: KvTypes,
        from: usize,
        to: usize,
    ) -> Option<u64> {
        let (from, to, n_layers, kvd) = (from as u64, to as u64, n_layers as u64, kv_dim as u64);
        if !from.is_multiple_of(16) || to < from {
            return None;
        }
        let tiles = to.div_ceil(16) - from / 16;
        let side = |t: KvType, units: u64, per_unit: u64| {
            let elems = units.checked_mul(per_unit)?.checked_mul(kvd)?;
            elems.checked_mul(t.bytes_per_32())?.checked_div(32)
        };
        let k = side(ty.k, tiles, 16)?;
        let v = side(ty.v, to - from, 1)?;
        n_layers.checked_mul(k.checked_add(v)?)
    }

    /// Checks that `from..to` is a range [`KvCache::export`] and
    /// [`KvCache::import`] take.
    fn check_range(&self, from: usize, to: usize) -> Result<(), Error> {
        if !from.is_multiple_of(16) || from >= to || to > self.n_ctx {
            return Err(ErrorKind::BadArgument {
                detail: format!(
                    "KV range {from}..{to} is not a non-empty range starting at a multiple \
                     of 16 inside the context of {}",
                    self.n_ctx
                ),
            }
            .into());
        }
        Ok(())
    }

    /// Appends the keys and values of positions `from..to` (`from` a
    /// multiple of 16) to `out` in a canonical little-endian layout that
    /// does not depend on `n_ctx` (see `segments`), so a cache of another
    /// context size can [`KvCache::import`] them. Keys go by whole tiles of
    /// 16 positions: positions `to..ceil16(to)` come along as they are
    /// (not yet written, or left from an earlier sequence) and are
    /// overwritten before they are read.
    pub fn export(&self, from: usize, to: usize, out: &mut Vec<u8>) -> Result<(), Error> {
        self.check_range(from, to)?;
        for s in self.segments(from, to) {
            let buf = if s.key { &self.k } else { &self.v };
            let at = out.len();
            out.resize(at + s.units * s.unit_bytes, 0);
            let dst = &mut out[at..];
            match buf {
                Buf::F16(b) => {
                    let n = s.unit_bytes / 2;
                    let src = &b[s.first * n..(s.first + s.units) * n];
                    for (d, x) in dst.chunks_exact_mut(2).zip(src) {
                        d.copy_from_slice(&x.to_bits().to_le_bytes());
                    }
                }
                Buf::F32(b) => {
                    let n = s.unit_bytes / 4;
                    let src = &b[s.first * n..(s.first + s.units) * n];
                    for (d, x) in dst.chunks_exact_mut(4).zip(src) {
                        d.copy_from_slice(&x.to_le_bytes());
                    }
                }
                Buf::Quant(_, b) => dst.copy_from_slice(
                    &b[s.first * s.unit_bytes..(s.first + s.units) * s.unit_bytes],
                ),
            }
        }
        Ok(())
    }

    /// Writes positions `from..upto` from `bytes`, an export of
    /// `from..to` (`upto <= to`) by a cache of the same layers, width and
    /// types (any context size). The sizes are checked before anything is
    /// written, so on an error the cache is unchanged.
    pub fn import(
        &mut self,
        from: usize,
        to: usize,
        upto: usize,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let want = KvCache::range_bytes(self.n_layers, self.kv_dim, self.ty(), from, to);
        if upto > to || want != Some(bytes.len() as u64) {
            return Err(ErrorKind::BadArgument {
                detail: format!(
                    "a KV export of positions {from}..{to} ({} bytes) cannot fill {from}..{upto} \
                     of this cache, which wants {want:?} bytes for that range",
                    bytes.len()
                ),
            }
            .into());
        }
        self.check_range(from, upto)?;
        let (full, part) = (self.segments(from, to), self.segments(from, upto));
        let mut at = 0;
        for (s, p) in full.iter().zip(&part) {
            let src = &bytes[at..at + p.units * p.unit_bytes];
            at += s.units * s.unit_bytes;
            let buf = if p.key { &mut self.k } else { &mut self.v };
            match buf {
                Buf::F16(b) => {
                    let n = p.unit_bytes / 2;
                    let dst = &mut b[p.first * n..(p.first + p.units) * n];
                    for (d, x) in dst.iter_mut().zip(src.chunks_exact(2)) {
                        *d = f16::from_bits(u16::from_le_bytes([x[0], x[1]]));
                    }
                }
                Buf::F32(b) => {
                    let n = p.unit_bytes / 4;
                    let dst = &mut b[p.first * n..(p.first + p.units) * n];
                    for (d, x) in dst.iter_mut().zip(src.chunks_exact(4)) {
                        *d = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                    }
                }
                Buf::Quant(_, b) => b[p.first * p.unit_bytes..(p.first + p.units) * p.unit_bytes]
                    .copy_from_slice(src),
            }
        }
        Ok(())
    }
}

fn elem_bytes(b: &Buf) -> usize {
    match b {
        Buf::F16(_) => 2,
        Buf::F32(_) => 4,
        Buf::Quant(..) => 0,
    }
}

/// `dst[16 i] = conv(src[i])`: one key into its block of 16 positions.
fn scatter16<S, T>(dst: &mut [T], src: &[S], conv: impl Fn(&S) -> T) {
    assert!(
        dst.len() > 16 * (src.len().max(1) - 1),
        "scatter16: short block"
    );
    for (d, x) in dst.iter_mut().step_by(16).zip(src) {
        *d = conv(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hadamard_is_orthonormal_and_its_own_inverse() {
        let x: Vec<f32> = (0..128).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        for n in [64, 128] {
            let mut y = x.clone();
            hadamard(&mut y, n);
            let (nx, ny) = (
                x.iter().map(|v| v * v).sum::<f32>(),
                y.iter().map(|v| v * v).sum::<f32>(),
            );
            assert!((nx - ny).abs() < 1e-3 * nx, "{n}: norms {nx} {ny}");
            assert!(y.iter().zip(&x).any(|(a, b)| (a - b).abs() > 0.1));
            hadamard(&mut y, n);
            assert!(y.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-4), "{n}");
        }
        // The first row of H is all 1/sqrt(n): y[0] is the scaled sum.
        let mut y = x[..64].to_vec();
        hadamard(&mut y, 64);
        assert!((y[0] - x[..64].iter().sum::<f32>() / 8.0).abs() < 1e-4);
    }

    /// A cache whose every written position holds distinct values.
    fn filled(ty: KvTypes, n_ctx: usize, upto: usize) -> KvCache {
        let (layers, kvd) = (2, 64);
        let mut c = KvCache::new(layers, n_ctx, kvd, ty);
        for l in 0..layers {
            for p in 0..upto {
                let k: Vec<f32> = (0..kvd)
                    .map(|i| (l * 7 + p * 3 + i) as f32 * 0.01)
                    .collect();
                let v: Vec<f32> = (0..kvd)
                    .map(|i| (l * 5 + p + i * 2) as f32 * -0.02)
                    .collect();
                c.store(l, p, &k, &v);
            }
        }
        c
    }

    #[test]
    fn export_import_round_trips_across_context_sizes() {
        for t in KvType::ALL {
            let ty = KvTypes::from(t);
            let a = filled(ty, 100, 70);
            let mut bytes = Vec::new();
            a.export(16, 70, &mut bytes).unwrap();
            assert_eq!(
                Some(bytes.len() as u64),
                KvCache::range_bytes(2, 64, ty, 16, 70)
            );
            // Into a cache of another context size: the same bytes again.
            let mut b = KvCache::new(2, 300, 64, ty);
            b.import(16, 70, 70, &bytes).unwrap();
            let mut again = Vec::new();
            b.export(16, 70, &mut again).unwrap();
            assert_eq!(bytes, again, "{t}");
            // Only a prefix: positions 16..40 arrive, 40.. stay zero.
            let mut c = KvCache::new(2, 64, 64, ty);
            c.import(16, 70, 40, &bytes).unwrap();
            let (mut want, mut got) = (Vec::new(), Vec::new());
            a.export(16, 40, &mut want).unwrap();
            c.export(16, 40, &mut got).unwrap();
            assert_eq!(want, got, "{t}");
            let mut tail = Vec::new();
            c.export(48, 64, &mut tail).unwrap();
            assert!(tail.iter().all(|&x| x == 0), "{t}");
            let mut row = vec![0f32; 64];
            c.key_row(1, 39, &mut row);
            let mut row_a = vec![0f32; 64];
            a.key_row(1, 39, &mut row_a);
            assert_eq!(row, row_a, "{t}");
        }
    }

    #[test]
    fn import_refuses_wrong_sizes_and_ranges() {
        let ty = KvTypes::from(KvType::F16);
        let a = filled(ty, 64, 32);
        let mut bytes = Vec::new();
        a.export(0, 32, &mut bytes).unwrap();
        let mut b = KvCache::new(2, 64, 64, ty);
        assert!(b.import(0, 32, 32, &bytes[1..]).is_err());
        assert!(b.import(0, 32, 33, &bytes).is_err());
        assert!(b.import(8, 40, 40, &bytes).is_err());
        let mut q = KvCache::new(2, 64, 64, KvType::Q8_0);
        assert!(q.import(0, 32, 32, &bytes).is_err());
        let mut small = KvCache::new(2, 20, 64, ty);
        assert!(small.import(0, 32, 32, &bytes).is_err());
        assert!(a.export(3, 10, &mut Vec::new()).is_err());
        assert!(a.export(0, 65, &mut Vec::new()).is_err());
        assert_eq!(KvCache::range_bytes(2, 64, ty, 3, 10), None);
        assert_eq!(
            KvCache::range_bytes(usize::MAX, usize::MAX, ty, 0, 16),
            None
        );
    }

    #[test]
    fn rotation_follows_llama_cpp() {
        let q8 = KvTypes::from(KvType::Q8_0);
        assert_eq!(q8.rotation(64), (Some(64), Some(64)));
        assert_eq!(q8.rotation(128), (Some(128), Some(64)));
        assert_eq!(q8.rotation(96), (None, None));
        assert_eq!(
            KvTypes {
                k: KvType::F16,
                v: KvType::Q4_0
            }
            .rotation(64),
            (None, Some(64))
        );
        assert_eq!(KvTypes::from(KvType::F16).rotation(64), (None, None));
    }
}
