//! f32 rows to ggml blocks: the reference quantizers, byte-identical to
//! ggml's (`quantize_row_*_ref`, `quantize_*` in ggml-quants.c).
//!
//! llama-quantize runs these in ggml's base library, which is compiled
//! without FMA and without fast-math, so every expression here is written
//! with the same f32 operations in the same order (`w * x * l` is
//! `(w * x) * l`), never fused, and rounding goes through ggml's own
//! [`nearest_int`] (round half to even via the 1.5 * 2^23 trick), C's
//! truncating casts, and round-to-nearest-even f16 conversion. Change one
//! operation and some block, somewhere, comes out one bit different.
//!
//! With an importance matrix (`weights`, one f32 per column of the row),
//! the types that use one take ggml's weighted paths (`quantize_row_*_impl`).
//!
//! ```
//! use cria_kernels::{dequantize_row, quantize_row, GgmlType};
//! let x: Vec<f32> = (0..32).map(|i| i as f32 / 4.0 - 4.0).collect();
//! let mut q = vec![0u8; 34];
//! quantize_row(GgmlType::Q8_0, &x, None, &mut q).unwrap();
//! let mut y = vec![0f32; 32];
//! dequantize_row(GgmlType::Q8_0, &q, &mut y).unwrap();
//! assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 0.02));
//! ```

// Index loops mirror ggml's C loops one for one, so the two can be read
// side by side; iterator rewrites would hide the operation order.
#![allow(clippy::needless_range_loop)]

mod iq4;
mod kquants;
mod kweighted;
mod legacy;
mod q8_0_fast;

pub(crate) use iq4::KVALUES_IQ4NL;

use crate::dequant::row_bytes;
use crate::error::{Error, ErrorKind, Result};
use cria_gguf::GgmlType;

/// ggml's `nearest_int`: round half to even for |x| < 2^22, by adding
/// 1.5 * 2^23 and reading the mantissa.
#[inline]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let v = f + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// f32 to f16 bits, round to nearest even (ggml's `GGML_FP32_TO_FP16`).
/// ggml's software conversion writes every NaN as 0x7e00 with its sign
/// (`half` and F16C keep the payload's top bits), so NaN is special-cased.
#[inline]
pub(crate) fn fp16(x: f32) -> [u8; 2] {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        return (0x7e00 | sign).to_le_bytes();
    }
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// f16 bits (little-endian at `b[0..2]`) to f32.
#[inline]
pub(crate) fn fp16_at(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// f32 to bf16 bits as ggml's `ggml_compute_fp32_to_bf16`: NaN kept quiet,
/// everything else rounded to nearest even (subnormals included).
#[inline]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// Whether [`quantize_row`] can produce `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
            | IQ4_XS
    )
}

/// Quantize one row `x` to `ty` into `dst` (exactly the row's byte size),
/// with optional importance `weights` (one per element of the row).
///
/// Several rows at once: call it per row; a row is independent of the
/// others, so rows can be spread over threads freely.
pub fn quantize_row(
    ty: GgmlType,
    x: &[f32],
    weights: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<()> {
    quantize_row_on(crate::simd::Cpu::get(), ty, x, weights, dst)
}

/// [`quantize_row`] on `cpu`'s instruction set: the same bytes on every
/// one (Q8_0 has SIMD paths, [`crate::Isa::Scalar`] is the reference).
/// Benches and tests use it to compare them.
pub fn quantize_row_on(
    cpu: crate::simd::Cpu,
    ty: GgmlType,
    x: &[f32],
    weights: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<()> {
    if !can_quantize(ty) {
        return Err(ErrorKind::UnsupportedType(ty).into());
    }
    let expected = row_bytes(ty, x.len())?;
    if dst.len() != expected {
        return Err(Error::length("quantized row", expected, dst.len()));
    }
    if let Some(w) = weights {
        if w.len() != x.len() {
            return Err(Error::length("importance weights", x.len(), w.len()));
        }
    }
    use GgmlType::*;
    match (ty, weights) {
        (F32, _) => {
            for (d, v) in dst.chunks_exact_mut(4).zip(x) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        (F16, _) => f16_row(x, dst),
        (BF16, _) => {
            for (d, v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&bf16_bits(*v).to_le_bytes());
            }
        }
        // ggml's Q8_0 ignores the importance matrix.
        (Q8_0, _) => q8_0_fast::row(cpu, x, dst),
        (Q4_0, None) => blocks(x, dst, 32, 18, legacy::q4_0),
        (Q4_1, None) => blocks(x, dst, 32, 20, legacy::q4_1),
        (Q5_0, None) => blocks(x, dst, 32, 22, legacy::q5_0),
        (Q5_1, None) => blocks(x, dst, 32, 24, legacy::q5_1),
        (Q2_K, None) => blocks(x, dst, 256, 84, kquants::q2_k),
        (Q3_K, None) => blocks(x, dst, 256, 110, kquants::q3_k),
        (Q4_K, None) => blocks(x, dst, 256, 144, kquants::q4_k),
        (Q5_K, None) => blocks(x, dst, 256, 176, kquants::q5_k),
        (Q6_K, None) => blocks(x, dst, 256, 210, kquants::q6_k),
        (IQ4_NL, w) => blocks_w(x, w, dst, 32, 18, iq4::iq4_nl),
        (IQ4_XS, w) => blocks_w(x, w, dst, 256, 136, iq4::iq4_xs),
        (Q4_0, Some(w)) => kweighted::legacy_row(ty, x, w, dst),
        (Q4_1 | Q5_0 | Q5_1, Some(w)) => kweighted::legacy_row(ty, x, w, dst),
        (Q2_K, Some(w)) => blocks_w(x, Some(w), dst, 256, 84, kweighted::q2_k),
        (Q3_K, Some(w)) => blocks_w(x, Some(w), dst, 256, 110, kweighted::q3_k),
        (Q4_K, Some(w)) => blocks_w(x, Some(w), dst, 256, 144, kweighted::q4_k),
        (Q5_K, Some(w)) => blocks_w(x, Some(w), dst, 256, 176, kweighted::q5_k),
        (Q6_K, Some(w)) => blocks_w(x, Some(w), dst, 256, 210, kweighted::q6_k),
        _ => return Err(ErrorKind::UnsupportedType(ty).into()),
    }
    Ok(())
}

/// f32 to little-endian f16, a stack block at a time through `half`'s slice
/// conversion: F16C (x86) or FP16 (aarch64) when the CPU has them, detected
/// at run time, software otherwise. The same round-to-nearest-even as
/// [`fp16`] element by element, 8 lanes per instruction instead of one
/// (`cria convert --outtype f16` spends its CPU time here).
fn f16_row(x: &[f32], dst: &mut [u8]) {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 512;
    let mut h = [half::f16::ZERO; BLOCK];
    for (xs, ds) in x.chunks(BLOCK).zip(dst.chunks_mut(2 * BLOCK)) {
        let h = &mut h[..xs.len()];
        h.convert_from_f32_slice(xs);
        for (d, v) in ds.chunks_exact_mut(2).zip(h.iter()) {
            d.copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
}

fn blocks(x: &[f32], dst: &mut [u8], bs: usize, bb: usize, f: fn(&[f32], &mut [u8])) {
    for (xb, yb) in x.chunks_exact(bs).zip(dst.chunks_exact_mut(bb)) {
        f(xb, yb);
    }
}

/// Blocks with their slice of the importance weights (if any).
fn blocks_w(
    x: &[f32],
    w: Option<&[f32]>,
    dst: &mut [u8],
    bs: usize,
    bb: usize,
    f: fn(&[f32], Option<&[f32]>, &mut [u8]),
) {
    for (i, (xb, yb)) in x.chunks_exact(bs).zip(dst.chunks_exact_mut(bb)).enumerate() {
        f(xb, w.map(|w| &w[i * bs..(i + 1) * bs]), yb);
    }
}

#[cfg(test)]
mod tests;
