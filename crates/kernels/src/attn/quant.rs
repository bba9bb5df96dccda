//! Attention over a quantized KV cache: keys and values in ggml's Q8_0 or
//! Q4_0 blocks of 32 (one f16 scale per block), read directly.
//!
//! - Values keep ggml's own block layout, one row of `head_dim / 32`
//!   blocks per position ([`QValues`]).
//! - Keys are regrouped so a score needs no horizontal sum: per 16
//!   positions and 32 dimensions, one *key tile* ([`QType::key_tile_bytes`]
//!   bytes, the same as 16 ggml blocks) holds the 16 scales (f16, 32 bytes)
//!   then the quants as `[8 groups of 4 dims][16 positions][4 dims]`, so one
//!   64-byte load holds 4 dimensions of 16 keys: the operand of `vpdpbusd`
//!   against 4 query bytes broadcast. Q8_0 quants are stored offset by 128
//!   (unsigned); Q4_0 packs group `c` in the low nibbles and group `c + 4`
//!   in the high nibbles of chunk `c` (4 chunks of 64 bytes).
//!
//! The query is quantized to Q8_0 once per call ([`quantize_q8_0`]), as
//! llama.cpp's flash attention converts it to the K type's dot type. The
//! arithmetic is fixed, so every ISA gives the scalar reference's bits:
//! - score = `scale * s`, `s = fma(isum_b, dk_b * dq_b, s)` over blocks `b`
//!   in order from 0, `isum_b` the exact integer dot of the block;
//! - output lane `i` of block `b` = `fma(p_t * dv_tb, v_tbi, acc)` over
//!   positions `t` in order from 0 (`v_tbi` the integer quant, Q4_0's
//!   minus 8).

use super::lsq::quantize_q4_0_lsq;
use half::f16;

/// Elements per quantized block.
pub const QBLOCK: usize = 32;

/// A quantized KV cache element type.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QType {
    /// f16 scale, 32 x int8: `x = d * q`.
    Q8_0,
    /// f16 scale, 16 bytes of nibbles: `x = d * (q - 8)`.
    Q4_0,
}

impl QType {
    /// Bytes of one ggml block of 32 values (34 or 18).
    pub const fn block_bytes(self) -> usize {
        match self {
            QType::Q8_0 => 34,
            QType::Q4_0 => 18,
        }
    }

    /// Bytes of one key tile: 16 positions x 32 dimensions.
    pub const fn key_tile_bytes(self) -> usize {
        16 * self.block_bytes()
    }
}

/// llama.cpp's x86 `quantize_row_q8_0` for one block: `d = amax / 127`
/// (stored as f16), `q = round-half-even(x * (127 / amax))`.
pub fn quantize_q8_0(x: &[f32], q: &mut [i8; QBLOCK]) -> f16 {
    let amax = x[..QBLOCK].iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = round_half_even(v * id).clamp(-128.0, 127.0) as i8;
    }
    f16::from_f32(amax / 127.0)
}

/// `x` rounded to the nearest integer, ties to even, for `|x| <= 2^22`
/// (and NaN stays NaN): adding and removing 1.5 * 2^23 leaves no fraction
/// bits, in the default rounding mode. `f32::round_ties_even` is a libm
/// call without SSE4.1 at compile time.
pub(crate) fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() <= 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}

/// llama.cpp's `quantize_row_q4_0_ref` for one block: `d = max / -8` where
/// `max` is the first element of largest magnitude, `q = min(15, trunc(x /
/// d + 8.5))`. Returns the scale and the 32 unsigned quants (0..=15).
/// The cache stores [`super::lsq::quantize_q4_0_lsq`]'s blocks instead;
/// this is its baseline.
#[inline]
pub fn quantize_q4_0(x: &[f32], q: &mut [u8; QBLOCK]) -> f16 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in &x[..QBLOCK] {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v * id + 8.5) as i8).min(15) as u8;
    }
    f16::from_f32(d)
}

/// Writes `x` (a multiple of 32 long) as ggml blocks of `ty` to `dst`
/// (`x.len() / 32 * ty.block_bytes()` bytes): a value row of the cache.
pub fn quantize_kv_row(ty: QType, x: &[f32], dst: &mut [u8]) {
    let bb = ty.block_bytes();
    assert!(
        x.len().is_multiple_of(QBLOCK) && dst.len() == x.len() / QBLOCK * bb,
        "quantize_row: sizes"
    );
    for (xb, out) in x.chunks_exact(QBLOCK).zip(dst.chunks_exact_mut(bb)) {
        let d = match ty {
            QType::Q8_0 => {
                let mut q = [0i8; QBLOCK];
                let d = quantize_q8_0(xb, &mut q);
                for (o, q) in out[2..].iter_mut().zip(q) {
                    *o = q as u8;
                }
                d
            }
            QType::Q4_0 => {
                let mut q = [0u8; QBLOCK];
                let d = quantize_q4_0_lsq(xb, &mut q);
                for j in 0..16 {
                    out[2 + j] = q[j] | (q[j + 16] << 4);
                }
                d
            }
        };
        out[..2].copy_from_slice(&d.to_le_bytes());
    }
}

/// Quantizes the 32 key values `x` of position `p % 16` into `tile` (one
/// key tile, [`QType::key_tile_bytes`] long); see the module docs.
pub fn pack_key(ty: QType, tile: &mut [u8], p: usize, x: &[f32]) {
    assert!(
        tile.len() == ty.key_tile_bytes() && x.len() == QBLOCK,
        "pack_key: sizes"
    );
    let p = p % 16;
    match ty {
        QType::Q8_0 => {
            let mut q = [0i8; QBLOCK];
            let d = quantize_q8_0(x, &mut q);
            tile[2 * p..2 * p + 2].copy_from_slice(&d.to_le_bytes());
            for (i, &q) in q.iter().enumerate() {
                tile[32 + 64 * (i / 4) + 4 * p + i % 4] = (q as u8) ^ 0x80;
            }
        }
        QType::Q4_0 => {
            let mut q = [0u8; QBLOCK];
            let d = quantize_q4_0_lsq(x, &mut q);
            tile[2 * p..2 * p + 2].copy_from_slice(&d.to_le_bytes());
            for i in 0..16 {
                let (c, e) = (i / 4, i % 4);
                tile[32 + 64 * c + 4 * p + e] = q[i] | (q[i + 16] << 4);
            }
        }
    }
}

/// The 32 key values of position `p % 16` in `tile`, dequantized (the
/// inverse of [`pack_key`] up to rounding): `d * q`.
pub fn unpack_key(ty: QType, tile: &[u8], p: usize, out: &mut [f32]) {
    assert!(
        tile.len() == ty.key_tile_bytes() && out.len() == QBLOCK,
        "unpack_key: sizes"
    );
    let keys = QKeys {
        ty,
        bytes: tile,
        tile_stride: ty.key_tile_bytes(),
        block_stride: ty.key_tile_bytes(),
        blocks: 1,
    };
    let p = p % 16;
    let d = keys.d(p, 0);
    for (i, o) in out.iter_mut().enumerate() {
        *o = d * keys.q(p, 0, i) as f32;
    }
}

/// The keys of one KV head in a quantized cache: the key tile of positions
/// `16 s..16 s + 16` and dimension block `b` (of `blocks = head_dim / 32`)
/// starts at byte `s * tile_stride + b * block_stride` of `bytes` (the
/// cache keeps each block's tiles together: `tile_stride` is one tile,
/// so a head's keys are `blocks` sequential streams).
#[derive(Copy, Clone, Debug)]
pub struct QKeys<'a> {
    pub ty: QType,
    pub bytes: &'a [u8],
    pub tile_stride: usize,
    pub block_stride: usize,
    pub blocks: usize,
}

impl QKeys<'_> {
    /// The scale of key `t`, block `b`.
    fn d(&self, t: usize, b: usize) -> f32 {
        let at = self.tile(t, b) + 2 * (t % 16);
        f16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]).to_f32()
    }

    /// Quant `i` (0..32) of key `t`, block `b`, as a signed value.
    fn q(&self, t: usize, b: usize, i: usize) -> i32 {
        let base = self.tile(t, b) + 32 + 4 * (t % 16);
        match self.ty {
            QType::Q8_0 => i32::from(self.bytes[base + 64 * (i / 4) + i % 4]) - 128,
            QType::Q4_0 => {
                let (c, e) = ((i % 16) / 4, i % 4);
                let byte = self.bytes[base + 64 * c + e];
                i32::from(if i < 16 { byte & 15 } else { byte >> 4 }) - 8
            }
        }
    }

    fn tile(&self, t: usize, b: usize) -> usize {
        (t / 16) * self.tile_stride + b * self.block_stride
    }
}

/// The values of one KV head in a quantized cache: block `b` of value `t`
/// is the ggml block at byte `t * row_stride + b * block_stride` (the cache
/// keeps each block's positions together: `row_stride` is one block).
#[derive(Copy, Clone, Debug)]
pub struct QValues<'a> {
    pub ty: QType,
    pub bytes: &'a [u8],
    pub row_stride: usize,
    pub block_stride: usize,
    pub blocks: usize,
}

impl QValues<'_> {
    fn d(&self, t: usize, b: usize) -> f32 {
        let at = t * self.row_stride + b * self.block_stride;
        f16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]).to_f32()
    }

    fn q(&self, t: usize, b: usize, i: usize) -> i32 {
        let at = t * self.row_stride + b * self.block_stride + 2;
        match self.ty {
            QType::Q8_0 => i32::from(self.bytes[at + i] as i8),
            QType::Q4_0 => {
                let byte = self.bytes[at + i % 16];
                i32::from(if i < 16 { byte & 15 } else { byte >> 4 }) - 8
            }
        }
    }
}

/// Queries quantized to Q8_0: `g` rows of `blocks` blocks. Reused across
/// calls (it only grows).
#[derive(Default, Debug)]
pub struct QQueries {
    pub(crate) blocks: usize,
    /// (g, blocks, 32) quants.
    pub(crate) qs: Vec<i8>,
    /// (g, blocks) scales, f16-rounded.
    pub(crate) d: Vec<f32>,
    /// (g, blocks) exact sums of the quants.
    pub(crate) sum: Vec<i32>,
}

impl QQueries {
    /// Quantizes `q` (rows of `32 * blocks`).
    pub(crate) fn quantize(&mut self, q: &[f32], blocks: usize) {
        let n = q.len() / QBLOCK;
        self.blocks = blocks;
        self.qs.resize(n * QBLOCK, 0);
        self.d.resize(n, 0.0);
        self.sum.resize(n, 0);
        for (b, xb) in q.chunks_exact(QBLOCK).enumerate() {
            let mut qb = [0i8; QBLOCK];
            self.d[b] = quantize_q8_0(xb, &mut qb).to_f32();
            self.sum[b] = qb.iter().map(|&x| i32::from(x)).sum();
            self.qs[b * QBLOCK..(b + 1) * QBLOCK].copy_from_slice(&qb);
        }
    }
}

/// Which kernels the quantized attention runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QIsa {
    Scalar,
    /// AVX2 + FMA + F16C (`pmaddubsw`).
    Avx2,
    /// AVX-512F/BW + VNNI + F16C (`vpdpbusd`).
    Avx512Vnni,
}

impl QIsa {
    /// The best this machine has.
    pub fn best() -> QIsa {
        *QIsa::available().last().unwrap_or(&QIsa::Scalar)
    }

    /// Every one this machine has, best last (tests run them all).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    pub fn available() -> Vec<QIsa> {
        let mut v = vec![QIsa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            if avx2 {
                v.push(QIsa::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    v.push(QIsa::Avx512Vnni);
                }
            }
        }
        v
    }
}

/// `scores[j * np + t] = scale * q_j . k_t` for every query `j` and
/// `t <= last[j]` (positions past `last[j]` in its last tile of 16 may be
/// written too), `qq` the quantized queries.
pub(crate) fn scores_q(
    isa: QIsa,
    qq: &QQueries,
    last: &[usize],
    keys: &QKeys,
    scale: f32,
    np: usize,
    scores: &mut [f32],
) {
    let max = last.iter().copied().max().unwrap_or(0);
    assert!(
        qq.blocks == keys.blocks
            && qq.d.len() >= last.len() * keys.blocks
            && scores.len() >= last.len() * np
            && np >= (max / 16 + 1) * 16
            && (max / 16) * keys.tile_stride
                + (keys.blocks - 1) * keys.block_stride
                + keys.ty.key_tile_bytes()
                <= keys.bytes.len(),
        "scores_q: shapes"
    );
    match isa {
        // SAFETY (both): the ISA was detected (QIsa::available); shapes
        // and bounds asserted above.
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx512Vnni => unsafe {
            super::quant_x86::scores_512(qq, last, keys, scale, np, scores)
        },
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx2 => unsafe { super::quant_x86::scores_avx2(qq, last, keys, scale, np, scores) },
        _ => scores_q_scalar(qq, last, keys, scale, np, scores),
    }
}

/// Reference for [`scores_q`].
pub(crate) fn scores_q_scalar(
    qq: &QQueries,
    last: &[usize],
    keys: &QKeys,
    scale: f32,
    np: usize,
    scores: &mut [f32],
) {
    let nb = keys.blocks;
    for (j, &lj) in last.iter().enumerate() {
        for t in 0..=lj {
            let mut s = 0f32;
            for b in 0..nb {
                let qb = &qq.qs[(j * nb + b) * QBLOCK..][..QBLOCK];
                let isum: i32 = (0..QBLOCK)
                    .map(|i| keys.q(t, b, i) * i32::from(qb[i]))
                    .sum();
                s = (isum as f32).mul_add(keys.d(t, b) * qq.d[j * nb + b], s);
            }
            scores[j * np + t] = s * scale;
        }
    }
}

/// `out_j = sum over t <= last[j] of p_j[t] * v_t` (`p_j` the row
/// `p[j * np..]`, `out` (g, 32 * blocks)).
pub(crate) fn pv_q(
    isa: QIsa,
    p: &[f32],
    np: usize,
    last: &[usize],
    vals: &QValues,
    out: &mut [f32],
) {
    let max = last.iter().copied().max().unwrap_or(0);
    let d = vals.blocks * QBLOCK;
    assert!(
        out.len() == last.len() * d
            && p.len() > last.len().saturating_sub(1) * np + max
            && max * vals.row_stride
                + (vals.blocks - 1) * vals.block_stride
                + vals.ty.block_bytes()
                <= vals.bytes.len(),
        "pv_q: shapes"
    );
    match isa {
        // SAFETY (both): the ISA was detected; shapes and bounds asserted.
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx512Vnni => unsafe { super::quant_x86::pv_512(p, np, last, vals, out) },
        #[cfg(target_arch = "x86_64")]
        QIsa::Avx2 => unsafe { super::quant_x86::pv_avx2(p, np, last, vals, out) },
        _ => pv_q_scalar(p, np, last, vals, out),
    }
}

/// Reference for [`pv_q`].
pub(crate) fn pv_q_scalar(p: &[f32], np: usize, last: &[usize], vals: &QValues, out: &mut [f32]) {
    let d = vals.blocks * QBLOCK;
    for (j, (&lj, oj)) in last.iter().zip(out.chunks_exact_mut(d)).enumerate() {
        oj.fill(0.0);
        for t in 0..=lj {
            for b in 0..vals.blocks {
                let c = p[j * np + t] * vals.d(t, b);
                for i in 0..QBLOCK {
                    let o = &mut oj[b * QBLOCK + i];
                    *o = c.mul_add(vals.q(t, b, i) as f32, *o);
                }
            }
        }
    }
}
