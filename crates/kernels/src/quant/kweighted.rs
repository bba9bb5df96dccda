//! Quantization with an importance matrix: ggml's `quantize_row_*_impl`
//! for Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K..Q6_K. `qw` holds one importance
//! per column; the weighted error of each fit is what the searches minimise.

use super::kquants::{
    make_qx_quants, pack_2bit, pack_k4_scales, pack_q3, pack_q4k, pack_q5k, q3_scale, q6_k_finish,
    requant_k4, GROUP_MAX_EPS,
};
use super::{fp16, fp16_at, nearest_int};
use cria_gguf::GgmlType;

/// `make_qkx2_quants`' variant with weights always given and `max <= min`
/// as the empty test (ggml's `make_qkx3_quants`). Returns (scale, the_min).
#[allow(clippy::too_many_arguments)]
fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_mad += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                mad += weights[i] * (diff * diff);
            }
            if mad < best_mad {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantizes non-negative `x` (sub-block scales or mins) to `0..=nmax`
/// with weights, refining element by element (ggml's `make_qp_quants`).
/// `l_out` holds C's `uint8_t` results (negative values wrap).
fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = qw[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// Q4_0, Q4_1, Q5_0, Q5_1 rows with importance: the weights of a block are
/// `qw * sqrt(sigma2 + x^2)`, sigma2 the row's mean square.
pub(super) fn legacy_row(ty: GgmlType, x: &[f32], qw: &[f32], dst: &mut [u8]) {
    let sigma2 = sum_sq(x) / x.len() as f32;
    let bb = ty.block_bytes() as usize;
    let mut weight = [0f32; 32];
    for (ib, y) in dst.chunks_exact_mut(bb).enumerate() {
        let xb = &x[32 * ib..32 * ib + 32];
        let qb = &qw[32 * ib..32 * ib + 32];
        for j in 0..32 {
            weight[j] = qb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let mut l = [0i8; 32];
                let nmax = if ty == GgmlType::Q4_0 { 8 } else { 16 };
                let d = make_qx_quants(nmax, xb, &mut l, 1, Some(&weight));
                y[0..2].copy_from_slice(&fp16(d));
                let q = |j: usize| l[j] as u8;
                if ty == GgmlType::Q4_0 {
                    for j in 0..16 {
                        y[2 + j] = q(j) | (q(j + 16) << 4);
                    }
                } else {
                    put_q5(q, y, 2);
                }
            }
            _ => {
                let (mut l, mut laux) = ([0u8; 32], [0u8; 32]);
                let nmax = if ty == GgmlType::Q4_1 { 15 } else { 31 };
                let (d, min) =
                    make_qkx3_quants(nmax, xb, &weight, &mut l, &mut laux, -0.9, 0.05, 36);
                y[0..2].copy_from_slice(&fp16(d));
                y[2..4].copy_from_slice(&fp16(-min));
                if ty == GgmlType::Q4_1 {
                    for j in 0..16 {
                        y[4 + j] = l[j] | (l[j + 16] << 4);
                    }
                } else {
                    put_q5(|j| l[j], y, 4);
                }
            }
        }
    }
}

/// 32 five-bit quants: fifth bits as a u32 at `y[at..at + 4]`, nibbles after.
fn put_q5(q: impl Fn(usize) -> u8, y: &mut [u8], at: usize) {
    let mut h = 0u32;
    for j in 0..16 {
        let (a, b) = (q(j), q(j + 16));
        y[at + 4 + j] = (a & 0x0F) | ((b & 0x0F) << 4);
        h |= (u32::from(a & 0x10) >> 4) << j;
        h |= (u32::from(b & 0x10) >> 4) << (j + 16);
    }
    y[at..at + 4].copy_from_slice(&h.to_le_bytes());
}

/// Q2_K with importance (`quantize_row_q2_K_impl`).
pub(super) fn q2_k(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let Some(qw) = qw else {
        return super::kquants::q2_k(x, y);
    };
    let mut l = [0u8; 256];
    let mut laux = [0u8; 16];
    let (mut mins, mut scales, mut sw) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let mut weight = [0f32; 16];
    let sigma2 = sum_sq(x) / 256.0;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for i in 0..16 {
            weight[i] = qw[16 * j + i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        for &w in &weight {
            sw[j] += w;
        }
        let (s, m) = make_qkx3_quants(
            3,
            xs,
            &weight,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            -0.9,
            0.05,
            36,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    let (sc, rest) = y.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    dd[0..2].copy_from_slice(&fp16(dm));
    dd[2..4].copy_from_slice(&fp16(mm));
    let (dm, mm) = (fp16_at(&dd[0..2]), fp16_at(&dd[2..4]));
    for j in 0..16 {
        sc[j] = ls[j] | (lm[j] << 4);
    }
    for j in 0..16 {
        let d = dm * (sc[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + m) / d).clamp(0, 3) as u8;
        }
    }
    pack_2bit(&l, qs);
}

/// Q3_K with importance (`quantize_row_q3_K_impl`).
pub(super) fn q3_k(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0i8; 256];
    let (mut scales, mut sw) = ([0f32; 16], [0f32; 16]);
    let mut weight = [0f32; 16];
    let sigma2 = 2.0 * sum_sq(x) / 256.0;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for i in 0..16 {
            weight[i] = match qw {
                Some(qw) => qw[16 * j + i] * (sigma2 + xs[i] * xs[i]).sqrt(),
                None => xs[i] * xs[i],
            };
        }
        let mut sumw = 0f32;
        for &w in &weight {
            sumw += w;
        }
        sw[j] = sumw;
        scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
    }
    let (hmask, rest) = y.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, dd) = rest.split_at_mut(12);
    let mut ls8 = [0i8; 16];
    let d_block = make_qx_quants(32, &scales, &mut ls8, 1, Some(&sw));
    let mut ls = [0i32; 16];
    for j in 0..16 {
        ls[j] = ls8[j] as i32;
    }
    super::kquants::pack_q3_scales(&ls, sc);
    dd.copy_from_slice(&fp16(d_block));
    let d_all = fp16_at(dd);
    for j in 0..16 {
        let d = d_all * q3_scale(sc, j) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    let mut lu = [0u8; 256];
    for (u, &v) in lu.iter_mut().zip(&l) {
        *u = v as u8;
    }
    pack_q3(&mut lu, hmask, qs);
}

/// Q4_K and Q5_K with importance (`quantize_row_q{4,5}_K_impl`).
fn k4_k5(x: &[f32], qw: Option<&[f32]>, y: &mut [u8], nmax: i32, l: &mut [u8; 256]) {
    let mut laux = [0u8; 32];
    let (mut mins, mut scales, mut sw) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let mut weights = [0f32; 32];
    let sigma2 = 2.0 * sum_sq(x) / 256.0;
    let av_x = sigma2.sqrt();
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        for i in 0..32 {
            weights[i] = match qw {
                Some(qw) => qw[32 * j + i] * (sigma2 + xs[i] * xs[i]).sqrt(),
                None => av_x + xs[i].abs(),
            };
        }
        let mut sumw = 0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (s, m) = make_qkx3_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            -0.9,
            0.05,
            36,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    // Q5_K clamps the stored scales to 6 bits; Q4_K's code does not.
    if nmax == 31 {
        for v in ls.iter_mut().chain(lm.iter_mut()) {
            *v = (*v).min(63);
        }
    }
    pack_k4_scales(&ls, &lm, &mut y[4..16]);
    y[0..2].copy_from_slice(&fp16(d_block));
    y[2..4].copy_from_slice(&fp16(m_block));
    requant_k4(x, y, nmax, l);
}

pub(super) fn q4_k(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; 256];
    k4_k5(x, qw, y, 15, &mut l);
    pack_q4k(&l, &mut y[16..144]);
}

pub(super) fn q5_k(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0u8; 256];
    k4_k5(x, qw, y, 31, &mut l);
    pack_q5k(&l, &mut y[16..176]);
}

/// Q6_K with importance: the per-16 fits weighted by the importance alone.
pub(super) fn q6_k(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let xs = &x[16 * ib..16 * ib + 16];
        let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        let s = make_qx_quants(32, xs, &mut l[16 * ib..16 * ib + 16], 1, w);
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    q6_k_finish(x, y, &scales, max_scale, max_abs_scale, &mut l);
}
