//! IQ4_NL and IQ4_XS: 4-bit indices into a fixed non-linear table of 16
//! int8 values, ggml's `quantize_row_iq4_nl_impl` (used with and without an
//! importance matrix, by llama-quantize's `quantize_iq4_nl` and
//! `quantize_iq4_xs`).
//!
//! IQ4_NL, 18 bytes per 32: d (f16), qs[16]; w = d * T[q].
//! IQ4_XS, 136 bytes per 256: d (f16), scales_h (u16), scales_l[4], qs[128];
//! sub-block ib (of 32) has a 6-bit scale `ls` (low 4 bits in nibble ib % 2
//! of `scales_l[ib / 2]`, high 2 bits at bits 2 ib of `scales_h`), and
//! w = d * (ls - 32) * T[q]. In both, element j < 16 of a 32 is the low
//! nibble of `qs[j]`, element j + 16 the high nibble.

use super::kquants::GROUP_MAX_EPS;
use super::{fp16, nearest_int};

/// ggml's `kvalues_iq4nl`.
pub(crate) const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Index of the table value nearest `x` (the upper one on ties): ggml's
/// `best_index_int8`. Its binary search ends at the `mu` with
/// `T[mu - 1] <= x < T[mu]`, i.e. `mu` = how many values are <= x, and as
/// the values are integers that is how many are <= floor(x): a table
/// lookup instead of a search with unpredictable branches (the search
/// dominated IQ4 quantization time). The final comparison is ggml's.
#[inline]
fn best_index(x: f32) -> u8 {
    const T: [f32; 16] = {
        let mut t = [0f32; 16];
        let mut i = 0;
        while i < 16 {
            t[i] = KVALUES_IQ4NL[i] as f32;
            i += 1;
        }
        t
    };
    /// COUNT[k] = how many table values are <= k - 127, for k in 0..=240.
    const COUNT: [u8; 241] = {
        let mut c = [0u8; 241];
        let mut k = 0;
        while k < 241 {
            let mut n = 0;
            let mut i = 0;
            while i < 16 {
                if (KVALUES_IQ4NL[i] as i32) <= k as i32 - 127 {
                    n += 1;
                }
                i += 1;
            }
            c[k] = n;
            k += 1;
        }
        c
    };
    if x <= T[0] {
        return 0;
    }
    if x >= T[15] || x.is_nan() {
        return 15;
    }
    // -127 < x < 113: floor(x) + 127 is in 0..=239. (Truncate, then step
    // down for negative non-integers: `f32::floor` is a libm call here.)
    let t = x as i32;
    let fl = t - (x < t as f32) as i32;
    let mu = COUNT[(fl + 127) as usize] as usize;
    // A coin flip for the branch predictor: select without a branch.
    (mu - (x - T[mu - 1] < T[mu] - x) as usize) as u8
}

/// ggml's binary search, kept as the reference for [`best_index`].
#[cfg(test)]
pub(super) fn best_index_search(x: f32) -> u8 {
    let val = &KVALUES_IQ4NL;
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

#[cfg(test)]
pub(super) fn best_index_pub(x: f32) -> u8 {
    best_index(x)
}

/// The scale of one 32-element block: a first fit from the largest value,
/// then `2 ntry + 1` candidate scales, keeping the best weighted fit.
/// Writes the first fit's indices into `lb`; returns the scale (0 for an
/// all-zero block, whose `lb` is left as it was).
fn block_scale(xb: &[f32], weight: &[f32], lb: &mut [u8], ntry: i32) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let mut d = if ntry > 0 { -max / v0 } else { max / v0 };
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for j in 0..xb.len() {
        let l = best_index(id * xb[j]);
        lb[j] = l;
        let q = KVALUES_IQ4NL[l as usize] as f32;
        let w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -ntry..=ntry {
        id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        sumqx = 0.0;
        sumq2 = 0.0;
        for j in 0..xb.len() {
            let l = best_index(id * xb[j]);
            let q = KVALUES_IQ4NL[l as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// The per-element weights of a block: with an importance matrix
/// `qw * sqrt(sigma2 + x^2)`, without it `x^2`.
fn block_weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32; 32]) {
    match qw {
        Some(qw) => {
            for j in 0..32 {
                weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
        }
        None => {
            for j in 0..32 {
                weight[j] = xb[j] * xb[j];
            }
        }
    }
}

fn sigma2(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s * (2.0 / x.len() as f32)
}

fn pack(l: &[u8], qs: &mut [u8]) {
    for i in 0..l.len() / 32 {
        for j in 0..16 {
            qs[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
}

/// One IQ4_NL block (llama-quantize's path: ntry = 7).
pub(super) fn iq4_nl(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut weight = [0f32; 32];
    // ggml reuses one index buffer across blocks; a block whose scale is
    // 0 ends up re-indexed below anyway, so a fresh buffer is equivalent.
    let mut l = [0u8; 32];
    block_weights(x, qw, sigma2(x), &mut weight);
    let scale = block_scale(x, &weight, &mut l, 7);
    y[0..2].copy_from_slice(&fp16(scale));
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for j in 0..32 {
        l[j] = best_index(id * x[j]);
    }
    pack(&l, &mut y[2..18]);
}

/// One IQ4_XS super-block of 256 (ntry = 7).
pub(super) fn iq4_xs(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let s2 = sigma2(x);
    let mut weight = [0f32; 32];
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        block_weights(xb, qw.map(|w| &w[32 * ib..32 * ib + 32]), s2, &mut weight);
        let d = block_scale(xb, &weight, &mut l[32 * ib..32 * ib + 32], 7);
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    let d = -max_scale / 32.0;
    y[0..2].copy_from_slice(&fp16(d));
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (mut scales_h, mut scales_l) = (0u16, [0u8; 4]);
    for ib in 0..8 {
        let mut ls = nearest_int(id * scales[ib]).clamp(-32, 31);
        let dl = d * ls as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        for j in 0..32 {
            l[32 * ib + j] = best_index(idl * x[32 * ib + j]);
        }
        ls += 32;
        let (lo, hi) = ((ls & 0xF) as u8, (ls >> 4) as u16);
        if ib % 2 == 0 {
            scales_l[ib / 2] = lo;
        } else {
            scales_l[ib / 2] |= lo << 4;
        }
        scales_h |= hi << (2 * (ib % 8));
    }
    y[2..4].copy_from_slice(&scales_h.to_le_bytes());
    y[4..8].copy_from_slice(&scales_l);
    pack(&l, &mut y[8..136]);
}
