//! The 32-element block types without an importance matrix: ggml's
//! `quantize_row_{q4_0,q4_1,q5_0,q5_1,q8_0}_ref`. One block of 32 floats
//! in, one block of bytes out (layouts in `dequant.rs`).

use super::fp16;

/// C's float-to-integer cast as gcc compiles it on x86-64 (`cvttss2si`,
/// 32 bits): truncate toward zero; NaN and anything outside the i32 range
/// give 0x8000_0000 (Rust's `as` saturates instead, which differs for
/// +inf and values >= 2^31: they reach here when `1 / d` overflows for a
/// block of tiny values).
#[inline]
pub(super) fn c_cvtt(f: f32) -> i32 {
    if f >= 2_147_483_648.0 || f.is_nan() {
        i32::MIN
    } else {
        f as i32
    }
}

/// C's `(int8_t)f`: [`c_cvtt`], keep the low byte.
#[inline]
fn trunc_i8(f: f32) -> i32 {
    c_cvtt(f) as i8 as i32
}

/// The element of largest magnitude (the first one on ties), and that
/// magnitude.
#[inline]
fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Q4_0: d = max / -8; q = min(15, trunc(x / d + 8.5)).
pub(super) fn q4_0(x: &[f32], y: &mut [u8]) {
    let (_, max) = signed_max(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[0..2].copy_from_slice(&fp16(d));
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let q0 = trunc_i8(x0 + 8.5).min(15) as u8;
        let q1 = trunc_i8(x1 + 8.5).min(15) as u8;
        y[2 + j] = q0 | (q1 << 4);
    }
}

/// Q4_1: d = (max - min) / 15, m = min; q = min(15, trunc((x - m) / d + 0.5)).
pub(super) fn q4_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[0..2].copy_from_slice(&fp16(d));
    y[2..4].copy_from_slice(&fp16(min));
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        let q0 = trunc_i8(x0 + 0.5).min(15) as u8;
        let q1 = trunc_i8(x1 + 0.5).min(15) as u8;
        y[4 + j] = q0 | (q1 << 4);
    }
}

/// Writes 32 five-bit quants: low nibbles in `qs`, fifth bits in `qh`.
#[inline]
fn put_q5(q: impl Fn(usize) -> u8, qh: &mut [u8], qs: &mut [u8]) {
    let mut h = 0u32;
    for j in 0..16 {
        let (a, b) = (q(j), q(j + 16));
        qs[j] = (a & 0x0F) | ((b & 0x0F) << 4);
        h |= (u32::from(a & 0x10) >> 4) << j;
        h |= (u32::from(b & 0x10) >> 4) << (j + 16);
    }
    qh.copy_from_slice(&h.to_le_bytes());
}

/// Q5_0: d = max / -16; q = min(31, trunc(x / d + 16.5)).
pub(super) fn q5_0(x: &[f32], y: &mut [u8]) {
    let (_, max) = signed_max(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[0..2].copy_from_slice(&fp16(d));
    let (qh, qs) = y[2..].split_at_mut(4);
    put_q5(|j| trunc_i8(x[j] * id + 16.5).min(31) as u8, qh, qs);
}

/// Q5_1: d = (max - min) / 31, m = min; q = trunc((x - m) / d + 0.5).
pub(super) fn q5_1(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[0..2].copy_from_slice(&fp16(d));
    y[2..4].copy_from_slice(&fp16(min));
    let (qh, qs) = y[4..].split_at_mut(4);
    // C's `(uint8_t)f`: truncate, low byte.
    put_q5(|j| c_cvtt((x[j] - min) * id + 0.5) as u8, qh, qs);
}

/// Q8_0: d = amax / 127; q = (int8_t)roundf(x / d), round half away from
/// zero. The reference for [`super::q8_0_fast`], bit for bit ggml's for
/// every input, NaN and infinities included (tests/fixtures/quant/
/// q8_0-edges.txt).
pub(super) fn q8_0(x: &[f32], y: &mut [u8]) {
    // ggml's `MAX(amax, fabsf(v))` is `amax > a ? amax : a`: a NaN replaces
    // amax, and the next element replaces the NaN (f32::max would skip it).
    let mut amax = 0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    // A NaN d is "true" in C, so id is NaN too.
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[0..2].copy_from_slice(&fp16(d));
    for (q, &v) in y[2..34].iter_mut().zip(x) {
        *q = c_cvtt((v * id).round()) as u8;
    }
}
