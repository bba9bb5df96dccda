//! Scalar dequantization of ggml blocks to f32: the reference the SIMD and
//! matmul paths are checked against.
//!
//! Results are bit-identical to ggml's `dequantize_row_*` (and to the
//! `gguf` Python package): every value is computed with the same f32
//! operations in the same order, e.g. Q4_1 is `(d * q) + m` as a separate
//! multiply and add, never a fused multiply-add. Block layouts (all
//! little-endian, `d`, `m`, `dmin` are f16) are documented on each function.

use crate::error::{Error, ErrorKind, Result};
use crate::simd::Cpu;
use cria_gguf::GgmlType;
use half::{bf16, f16};

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// Block geometry of the types this crate dequantizes: (elements per block,
/// bytes per block), or an error naming an unsupported type.
pub fn block_geometry(ty: GgmlType) -> Result<(usize, usize)> {
    use GgmlType::*;
    match ty {
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
        | IQ4_NL | IQ4_XS => Ok((ty.block_size() as usize, ty.block_bytes() as usize)),
        _ => Err(ErrorKind::UnsupportedType(ty).into()),
    }
}

/// Bytes taken by `n` elements of `ty`, checking the type is supported and
/// `n` is a whole number of blocks.
pub fn row_bytes(ty: GgmlType, n: usize) -> Result<usize> {
    let (bs, bb) = block_geometry(ty)?;
    if !n.is_multiple_of(bs) {
        return Err(ErrorKind::NotWholeBlocks {
            ty,
            elements: n,
            block_size: bs,
        }
        .into());
    }
    (n / bs).checked_mul(bb).ok_or_else(|| {
        ErrorKind::Overflow {
            what: "row byte size",
        }
        .into()
    })
}

/// Dequantize `dst.len()` elements of type `ty` from `src`, which must hold
/// exactly that many elements (a whole number of blocks).
///
/// ```
/// use cria_kernels::{dequantize_row, GgmlType};
/// // One Q8_0 block: d = 0.5 (f16 0x3800), then 32 int8 quants.
/// let mut block = vec![0x00, 0x38];
/// block.extend((0..32).map(|i| i as u8));
/// let mut out = [0f32; 32];
/// dequantize_row(GgmlType::Q8_0, &block, &mut out).unwrap();
/// assert_eq!(out[3], 1.5);
/// ```
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let expected = row_bytes(ty, dst.len())?;
    if src.len() != expected {
        return Err(Error::length("quantized source", expected, src.len()));
    }
    RowDequantizer::new(ty)?.run(src, dst);
    Ok(())
}

impl Cpu {
    /// [`dequantize_row`] using this CPU's SIMD dequantizer where there is
    /// one (Q4_0, Q4_1, Q8_0, BF16 on AVX2 and AVX-512); bit-identical output.
    pub fn dequantize_row(self, ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
        let expected = row_bytes(ty, dst.len())?;
        if src.len() != expected {
            return Err(Error::length("quantized source", expected, src.len()));
        }
        RowDequantizer::for_cpu(self, ty)?.run(src, dst);
        Ok(())
    }
}

/// The dequantizer of one type, looked up once (e.g. per weight matrix).
#[derive(Copy, Clone)]
pub(crate) struct RowDequantizer {
    block_size: usize,
    block_bytes: usize,
    f: fn(&[u8], &mut [f32]),
    /// A whole-row SIMD version of `f`, bit-identical to it.
    row_simd: Option<crate::simd::RowFn>,
}

impl RowDequantizer {
    pub(crate) fn new(ty: GgmlType) -> Result<RowDequantizer> {
        let (block_size, block_bytes) = block_geometry(ty)?;
        use GgmlType::*;
        let f: fn(&[u8], &mut [f32]) = match ty {
            F32 => f32_block,
            F16 => f16_block,
            BF16 => bf16_block,
            Q4_0 => q4_0,
            Q4_1 => q4_1,
            Q5_0 => q5_0,
            Q5_1 => q5_1,
            Q8_0 => q8_0,
            Q2_K => q2_k,
            Q3_K => q3_k,
            Q4_K => q4_k,
            Q5_K => q5_k,
            Q6_K => q6_k,
            IQ4_NL => iq4_nl,
            IQ4_XS => iq4_xs,
            _ => return Err(ErrorKind::UnsupportedType(ty).into()),
        };
        Ok(RowDequantizer {
            block_size,
            block_bytes,
            f,
            row_simd: None,
        })
    }

    /// As [`RowDequantizer::new`], using `cpu`'s SIMD version if it has one.
    pub(crate) fn for_cpu(cpu: Cpu, ty: GgmlType) -> Result<RowDequantizer> {
        let mut d = RowDequantizer::new(ty)?;
        d.row_simd = crate::simd::row_dequantizer(cpu, ty);
        Ok(d)
    }

    /// Dequantize whole blocks of `src` into `dst`; the caller has checked
    /// that `src` holds exactly `dst.len()` elements (extra is ignored).
    pub(crate) fn run(&self, src: &[u8], dst: &mut [f32]) {
        if let Some(simd) = self.row_simd {
            let blocks = dst.len() / self.block_size;
            simd(
                &src[..blocks * self.block_bytes],
                &mut dst[..blocks * self.block_size],
            );
            return;
        }
        // F32/F16/BF16 have 1-element "blocks": convert the row in one go.
        if self.block_size == 1 {
            (self.f)(src, dst);
            return;
        }
        for (b, y) in src
            .chunks_exact(self.block_bytes)
            .zip(dst.chunks_exact_mut(self.block_size))
        {
            (self.f)(b, y);
        }
    }
}

fn h(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

fn f32_block(src: &[u8], y: &mut [f32]) {
    for (c, y) in src.chunks_exact(4).zip(y) {
        *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn f16_block(src: &[u8], y: &mut [f32]) {
    for (c, y) in src.chunks_exact(2).zip(y) {
        *y = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

fn bf16_block(src: &[u8], y: &mut [f32]) {
    for (c, y) in src.chunks_exact(2).zip(y) {
        *y = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

/// Q4_0, 18 bytes: d, qs[16]. Element j < 16 is the low nibble of qs[j],
/// element j + 16 the high nibble; w = d * (q - 8).
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
        y[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1, 20 bytes: d, m, qs[16]; w = d * q + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let m = h(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = d * (qs[j] & 0x0F) as f32 + m;
        y[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

/// The 5th bits of a Q5 block: bit j of the little-endian u32 is element j's.
fn q5_high(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Q5_0, 22 bytes: d, qh[4], qs[16]; w = d * (q - 16).
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let qh = q5_high(&b[2..6]);
    let qs = &b[6..22];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (lo as i32 - 16) as f32;
        y[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

/// Q5_1, 24 bytes: d, m, qh[4], qs[16]; w = d * q + m.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let m = h(b, 2);
    let qh = q5_high(&b[4..8]);
    let qs = &b[8..24];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * lo as f32 + m;
        y[j + 16] = d * hi as f32 + m;
    }
}

/// Q8_0, 34 bytes: d, qs[32] (int8); w = q * d.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = (q as i8) as f32 * d;
    }
}

/// Q2_K, 84 bytes: scales[16] (low nibble scale, high nibble min, one per
/// 16 elements), qs[64] (2 bits each), d, dmin.
///
/// Elements come in two halves of 128; in half `n`, element `32 j + l`
/// (j < 4, l < 32) is bits `2j..2j+2` of `qs[32 n + l]`.
/// w = (d * scale) * q - (dmin * min).
fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = h(b, 80);
    let dmin = h(b, 82);
    for (e, y) in y.iter_mut().enumerate().take(QK_K) {
        let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
        let q = (qs[32 * n + l] >> (2 * j)) & 3;
        let sc = scales[e / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *y = dl * q as f32 - ml;
    }
}

/// Q3_K, 110 bytes: hmask[32], qs[64], scales[12], d.
///
/// The 16 signed 6-bit scales (one per 16 elements, offset by 32): the low
/// 4 bits of scale k are nibble `k / 8` of `scales[k % 8]`, the high 2 bits
/// are bits `2 (k / 4)..` of `scales[8 + k % 4]`. Element e's low 2 bits are
/// laid out as in Q2_K; its third bit is bit `e / 32` of `hmask[e % 32]`,
/// and a *clear* bit subtracts 4. w = (d * (scale - 32)) * q.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d = h(b, 108);
    let mut scales = [0i32; 16];
    for (k, s) in scales.iter_mut().enumerate() {
        let lo = (sc[k % 8] >> (4 * (k / 8))) & 0x0F;
        let hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 0x03;
        *s = (lo | hi << 4) as i32 - 32;
    }
    for (e, y) in y.iter_mut().enumerate().take(QK_K) {
        let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = ((qs[32 * n + l] >> (2 * j)) & 3) as i32;
        let high = if hmask[l] >> (e / 32) & 1 == 1 { 0 } else { 4 };
        let dl = d * scales[e / 16] as f32;
        *y = dl * (low - high) as f32;
    }
}

/// The 8 (scale, min) pairs of Q4_K/Q5_K, 6 bits each packed in 12 bytes
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(s: &[u8]) -> [(u8, u8); 8] {
    let mut out = [(0, 0); 8];
    for (j, o) in out.iter_mut().enumerate() {
        *o = if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            (
                (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
                (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
            )
        };
    }
    out
}

/// Q4_K, 144 bytes: d, dmin, scales[12], qs[128]. Eight sub-blocks of 32;
/// sub-block `2 c + h` is nibble h of `qs[32 c .. 32 c + 32]`.
/// w = (d * scale) * q - (dmin * min).
fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let dmin = h(b, 2);
    let sm = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for (e, y) in y.iter_mut().enumerate().take(QK_K) {
        let (c, hf, l) = (e / 64, (e % 64) / 32, e % 32);
        let q = (qs[32 * c + l] >> (4 * hf)) & 0x0F;
        let (sc, m) = sm[e / 32];
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        *y = d1 * q as f32 - m1;
    }
}

/// Q5_K, 176 bytes: d, dmin, scales[12], qh[32], qs[128]. As Q4_K, plus a
/// fifth bit: bit `e / 32` of `qh[e % 32]`.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let dmin = h(b, 2);
    let sm = scale_min_k4(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (e, y) in y.iter_mut().enumerate().take(QK_K) {
        let (c, hf, l) = (e / 64, (e % 64) / 32, e % 32);
        let q = ((qs[32 * c + l] >> (4 * hf)) & 0x0F) | ((qh[l] >> (e / 32)) & 1) << 4;
        let (sc, m) = sm[e / 32];
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        *y = d1 * q as f32 - m1;
    }
}

/// Q6_K, 210 bytes: ql[128], qh[64], scales[16] (int8, one per 16), d.
///
/// Two halves of 128; in half n, element `64 hf + l` (l < 64) has low
/// nibble hf of `ql[64 n + l]`, and element `32 j + l` (l < 32) has high
/// bits `2j..2j+2` of `qh[32 n + l]`. w = (d * scale) * (q - 32).
fn q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = h(b, 208);
    for (e, y) in y.iter_mut().enumerate().take(QK_K) {
        let (n, r) = (e / 128, e % 128);
        let lo = (ql[64 * n + r % 64] >> (4 * (r / 64))) & 0x0F;
        let hi = (qh[32 * n + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (lo | hi << 4) as i32 - 32;
        let dl = d * (scales[e / 16] as i8) as f32;
        *y = dl * q as f32;
    }
}

/// IQ4_NL, 18 bytes: d, qs[16]; element j < 16 is T[low nibble of qs[j]],
/// j + 16 the high nibble; w = d * T[q] (T: `kvalues_iq4nl`).
fn iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let t = &crate::quant::KVALUES_IQ4NL;
    for j in 0..16 {
        y[j] = d * t[(b[2 + j] & 0xF) as usize] as f32;
        y[j + 16] = d * t[(b[2 + j] >> 4) as usize] as f32;
    }
}

/// IQ4_XS, 136 bytes: d, scales_h (u16), scales_l[4], qs[128]. Sub-block
/// ib of 32: 6-bit ls from nibble ib % 2 of scales_l[ib / 2] and bits 2 ib
/// of scales_h; w = (d * (ls - 32)) * T[q], nibbles as IQ4_NL.
fn iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let sh = u16::from_le_bytes([b[2], b[3]]);
    let t = &crate::quant::KVALUES_IQ4NL;
    for ib in 0..8 {
        let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) as i32
            | ((((sh >> (2 * ib)) & 3) as i32) << 4);
        let dl = d * (ls - 32) as f32;
        let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
        let yb = &mut y[32 * ib..32 * ib + 32];
        for j in 0..16 {
            yb[j] = dl * t[(qs[j] & 0xF) as usize] as f32;
            yb[j + 16] = dl * t[(qs[j] >> 4) as usize] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_type_is_named() {
        let err = dequantize_row(GgmlType::IQ2_XXS, &[0; 66], &mut [0.0; 256]).unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::UnsupportedType(GgmlType::IQ2_XXS));
        assert!(err.to_string().contains("IQ2_XXS"));
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let err = dequantize_row(GgmlType::Q4_0, &[0; 17], &mut [0.0; 32]).unwrap_err();
        assert!(matches!(
            err.kind(),
            ErrorKind::Length {
                expected: 18,
                got: 17,
                ..
            }
        ));
        let err = dequantize_row(GgmlType::Q4_0, &[0; 18], &mut [0.0; 31]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::NotWholeBlocks { .. }));
        let err = dequantize_row(GgmlType::F32, &[0; 5], &mut [0.0; 1]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Length { .. }));
    }

    #[test]
    fn q4_0_by_hand() {
        // d = 2.0 (f16 0x4000); byte 0x9F: low nibble 15 -> 14, high 9 -> 2.
        let mut b = vec![0x00, 0x40];
        b.extend([0x9F; 16]);
        let mut y = [0f32; 32];
        dequantize_row(GgmlType::Q4_0, &b, &mut y).unwrap();
        assert_eq!(y[0], 14.0);
        assert_eq!(y[16], 2.0);
    }
}
