//! K-quants without an importance matrix: ggml's `quantize_row_q{2..6}_K_ref`
//! and the scale searches they share (`make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants`). One super-block of 256 floats in, one block out.

use super::{fp16, fp16_at, nearest_int};

#[cfg(target_arch = "x86_64")]
mod x86;

/// Groups whose largest magnitude is below this are all zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// Symmetric quants in `-nmax..nmax` (stored as `l + nmax` in `l_out`) and
/// their scale, searching 19 scales around `-nmax / max` to minimise the
/// weighted error. Weights: `qw`, or by `rmse_type` 1: x^2, 2: 1, 3: |x|,
/// else sqrt|x|. A negative `rmse_type` returns after the first fit.
pub(super) fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l_out: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for (l, &v) in l_out.iter_mut().zip(x) {
            *l = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 {
        (-rmse_type, true)
    } else {
        (rmse_type, false)
    };
    let weight = |i: usize| -> f32 {
        match qw {
            Some(w) => w[i],
            None => match rmse_type {
                1 => x[i] * x[i],
                2 => 1.0,
                3 => x[i].abs(),
                _ => x[i].abs().sqrt(),
            },
        }
    };
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weight(i);
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    // The 18 other scales, `is` = -9..=-1, 1..=9: their sums do not depend
    // on each other, so they are computed together (on AVX-512, 16 at a
    // time), then taken in ggml's order.
    let mut c = QxCands::default();
    // The weights once per group, on the stack (every caller's group is at
    // most 32 long: this runs once per 16 or 32 values of every tensor).
    let (mut stack, mut heap) = ([0f32; 32], Vec::new());
    let w: &mut [f32] = if n <= 32 {
        &mut stack[..n]
    } else {
        heap.resize(n, 0f32);
        &mut heap
    };
    for (i, w) in w.iter_mut().enumerate() {
        *w = weight(i);
    }
    qx_candidates(nmax, x, w, max, &mut c);
    let mut chosen = None;
    for (k, is) in QX_STEPS.iter().enumerate() {
        let (sumlx, suml2) = (c.sumlx[k], c.suml2[k]);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
            chosen = Some(*is);
        }
    }
    if let Some(is) = chosen {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
    }
    scale
}

/// The scale steps `make_qx_quants` tries after its first fit, in order.
const QX_STEPS: [i32; 18] = [
    -9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9,
];

/// The weighted sums of `make_qx_quants` for each step of [`QX_STEPS`]
/// (lane `k` for step `k`; 32 lanes, the last 14 unused).
#[derive(Default)]
pub(super) struct QxCands {
    pub sumlx: [f32; 32],
    pub suml2: [f32; 32],
}

/// [`QxCands`] for `x` with weights `w`: on AVX-512 16 steps at a time,
/// with each lane's operations those of [`qx_candidates_scalar`] (the
/// same bits).
fn qx_candidates(nmax: i32, x: &[f32], w: &[f32], max: f32, c: &mut QxCands) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: AVX-512F detected.
        return unsafe { x86::qx_candidates_512(nmax, x, w, max, c) };
    }
    qx_candidates_scalar(nmax, x, w, max, c)
}

/// The reference for [`qx_candidates`]: ggml's loop body, one step at a
/// time.
pub(super) fn qx_candidates_scalar(nmax: i32, x: &[f32], w: &[f32], max: f32, c: &mut QxCands) {
    for (k, &is) in QX_STEPS.iter().enumerate() {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for i in 0..x.len() {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            sumlx += w[i] * x[i] * l as f32;
            suml2 += w[i] * l as f32 * l as f32;
        }
        c.sumlx[k] = sumlx;
        c.suml2[k] = suml2;
    }
}

/// Q3_K's per-16 fit: symmetric quants in `-nmax..nmax` (stored shifted by
/// `nmax`), refined one element at a time with x^2 weights when `do_rmse`.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != l_out[i] as i32 {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
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
        for l in &mut l_out[..n] {
            *l += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// Asymmetric fit `x ~= scale * l - the_min` with `l` in `0..=nmax`,
/// searching `nstep + 1` scales from `rmin` in steps of `rdelta` for the
/// least weighted error (absolute if `use_mad`, else squared). Returns
/// (scale, the_min).
#[allow(clippy::too_many_arguments)]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
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
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let mut diff = scale * l as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    // The steps do not depend on each other until one improves on the
    // best fit: ggml then moves `min`, which every later step reads. So
    // the steps from `first` on are computed together for the current
    // `min` (on AVX-512, 16 at a time), taken in order, and after an
    // improvement the ones after it are computed again.
    let mut c = Qkx2Cands::default();
    let mut chosen = None;
    let mut first = 0;
    while first <= nstep {
        let p = Qkx2Params {
            nmax,
            min,
            max,
            sum_w,
            sum_x,
            rmin,
            rdelta,
            use_mad,
        };
        let last = nstep.min(first + 31);
        qkx2_candidates(&p, x, weights, first, last, &mut c);
        let mut next = last + 1;
        for is in first..=last {
            let k = (is - first) as usize;
            if c.ok[k] && c.err[k] < best_error {
                best_error = c.err[k];
                scale = c.scale[k];
                chosen = Some((is, min));
                min = c.min[k];
                next = is + 1;
                break;
            }
        }
        first = next;
    }
    if let Some((is, old_min)) = chosen {
        // The chosen step's quants, as it computed them (with the `min` of
        // its time).
        let iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - old_min);
        for i in 0..n {
            l_out[i] = nearest_int(iscale * (x[i] - old_min)).clamp(0, nmax) as u8;
        }
    }
    (scale, -min)
}

/// What one search of `make_qkx2_quants` is given.
pub(super) struct Qkx2Params {
    pub nmax: i32,
    pub min: f32,
    pub max: f32,
    pub sum_w: f32,
    pub sum_x: f32,
    pub rmin: f32,
    pub rdelta: f32,
    pub use_mad: bool,
}

/// Per step of `make_qkx2_quants`' search (lane `k` for step `first + k`):
/// whether its fit exists (`d > 0`), its error, scale and min.
#[derive(Default)]
pub(super) struct Qkx2Cands {
    pub ok: [bool; 32],
    pub err: [f32; 32],
    pub scale: [f32; 32],
    pub min: [f32; 32],
}

/// [`Qkx2Cands`] for steps `first..=last` (at most 32): on AVX-512 16 at a
/// time, each lane with the operations of [`qkx2_candidates_scalar`] (the
/// same bits).
fn qkx2_candidates(p: &Qkx2Params, x: &[f32], w: &[f32], first: i32, last: i32, c: &mut Qkx2Cands) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: AVX-512F detected.
        return unsafe { x86::qkx2_candidates_512(p, x, w, first, last, c) };
    }
    qkx2_candidates_scalar(p, x, w, first, last, c)
}

/// The reference for [`qkx2_candidates`]: ggml's loop body, one step at a
/// time.
pub(super) fn qkx2_candidates_scalar(
    p: &Qkx2Params,
    x: &[f32],
    w: &[f32],
    first: i32,
    last: i32,
    c: &mut Qkx2Cands,
) {
    let (nmax, min) = (p.nmax, p.min);
    for is in first..=last {
        let k = (is - first) as usize;
        let iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (p.max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..x.len() {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            let lf = l as f32;
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * x[i];
        }
        let d = p.sum_w * sum_l2 - sum_l * sum_l;
        c.ok[k] = d > 0.0;
        if !c.ok[k] {
            continue;
        }
        let mut this_scale = (p.sum_w * sum_xl - p.sum_x * sum_l) / d;
        let mut this_min = (sum_l2 * p.sum_x - sum_l * sum_xl) / d;
        if this_min > 0.0 {
            this_min = 0.0;
            this_scale = sum_xl / sum_l2;
        }
        let mut cur_error = 0f32;
        for i in 0..x.len() {
            let lf = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as f32;
            let mut diff = this_scale * lf + this_min - x[i];
            diff = if p.use_mad { diff.abs() } else { diff * diff };
            cur_error += w[i] * diff;
        }
        c.err[k] = cur_error;
        c.scale[k] = this_scale;
        c.min[k] = this_min;
    }
}

/// ggml's `get_scale_min_k4`: sub-block j's 6-bit scale and min.
#[inline]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs 256 2-bit quants as Q2_K/Q3_K store them: byte `32 c + l` of
/// chunk c holds elements `128 c + l + 32 k` in bits `2k..2k+2`.
pub(super) fn pack_2bit(l: &[u8], qs: &mut [u8]) {
    for (c, j) in (0..256).step_by(128).enumerate() {
        for i in 0..32 {
            qs[32 * c + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

/// Q2_K, 84 bytes: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
pub(super) fn q2_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; 256];
    let mut weights = [0f32; 16];
    let (mut mins, mut scales) = ([0f32; 16], [0f32; 16]);
    let q4scale = 15f32;
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let (sc, rest) = y.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        dd[0..2].copy_from_slice(&fp16(max_scale / q4scale));
    } else {
        sc.fill(0);
        dd[0..2].copy_from_slice(&fp16(0.0));
    }
    if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..16 {
            let m = nearest_int(iscale * mins[j]);
            sc[j] |= (m << 4) as u8;
        }
        dd[2..4].copy_from_slice(&fp16(max_min / q4scale));
    } else {
        dd[2..4].copy_from_slice(&fp16(0.0));
    }
    let (d_all, dmin_all) = (fp16_at(&dd[0..2]), fp16_at(&dd[2..4]));
    for j in 0..16 {
        let d = d_all * (sc[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
            l[16 * j + ii] = q as u8;
        }
    }
    pack_2bit(&l, qs);
}

/// Q3_K's 16 signed 6-bit scales packed in 12 bytes (ggml's layout).
pub(super) fn pack_q3_scales(ls: &[i32; 16], out: &mut [u8]) {
    out[..12].fill(0);
    for (j, &l) in ls.iter().enumerate() {
        let l = l as u8;
        if j < 8 {
            out[j] = l & 0xF;
        } else {
            out[j - 8] |= (l & 0xF) << 4;
        }
        out[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
}

/// Sub-block j's signed scale from Q3_K's 12 packed bytes.
#[inline]
pub(super) fn q3_scale(s: &[u8], j: usize) -> i32 {
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    ((lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32) - 32
}

/// Q3_K's bit 2 of each quant into `hmask`, low 2 bits packed into `qs`.
pub(super) fn pack_q3(l: &mut [u8; 256], hmask: &mut [u8], qs: &mut [u8]) {
    hmask[..32].fill(0);
    let (mut m, mut hm) = (0usize, 1u8);
    for q in l.iter_mut() {
        if *q > 3 {
            hmask[m] |= hm;
            *q -= 4;
        }
        m += 1;
        if m == 32 {
            m = 0;
            hm <<= 1;
        }
    }
    pack_2bit(l, qs);
}

/// Q3_K, 110 bytes: hmask[32], qs[64], scales[12], d.
pub(super) fn q3_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(
            4,
            &x[16 * j..16 * j + 16],
            &mut l[16 * j..16 * j + 16],
            true,
        );
        let s = scales[j].abs();
        if s > amax {
            amax = s;
            max_scale = scales[j];
        }
    }
    let (hmask, rest) = y.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, dd) = rest.split_at_mut(12);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut ls = [0i32; 16];
        for j in 0..16 {
            // C: `int8_t l = nearest_int(..)`, then clamped and shifted.
            let v = nearest_int(iscale * scales[j]) as i8 as i32;
            ls[j] = v.clamp(-32, 31) + 32;
        }
        pack_q3_scales(&ls, sc);
        dd.copy_from_slice(&fp16(1.0 / iscale));
    } else {
        sc.fill(0);
        dd.copy_from_slice(&fp16(0.0));
    }
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

/// Q4_K/Q5_K: 8 (scale, min) pairs as 6-bit values into 12 bytes.
pub(super) fn pack_k4_scales(ls: &[u8; 8], lm: &[u8; 8], s: &mut [u8]) {
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// The scale/min search shared by Q4_K and Q5_K (8 sub-blocks of 32), then
/// the 6-bit scales, d, dmin and the final quants in `l`. `y` starts with
/// d, dmin, scales[12].
fn k4_k5_common(x: &[f32], y: &mut [u8], nmax: i32, rmin: f32, nstep: i32, l: &mut [u8; 256]) {
    let mut weights = [0f32; 32];
    let (mut mins, mut scales) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        // C: `uint8_t ls = nearest_int(..)` keeps the low byte, then MIN(63, ..).
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    pack_k4_scales(&ls, &lm, &mut y[4..16]);
    y[0..2].copy_from_slice(&fp16(max_scale / 63.0));
    y[2..4].copy_from_slice(&fp16(max_min / 63.0));
    requant_k4(x, y, nmax, l);
}

/// Final Q4_K/Q5_K quants from the stored (rounded) scales: `y` starts
/// with d, dmin, scales[12].
pub(super) fn requant_k4(x: &[f32], y: &[u8], nmax: i32, l: &mut [u8; 256]) {
    let (d_all, dmin_all) = (fp16_at(&y[0..2]), fp16_at(&y[2..4]));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &y[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax);
            l[32 * j + ii] = q as u8;
        }
    }
}

/// Q4_K, 144 bytes: d, dmin, scales[12], qs[128].
pub(super) fn q4_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; 256];
    k4_k5_common(x, y, 15, -1.0, 20, &mut l);
    pack_q4k(&l, &mut y[16..144]);
}

pub(super) fn pack_q4k(l: &[u8; 256], qs: &mut [u8]) {
    for (c, j) in (0..256).step_by(64).enumerate() {
        for i in 0..32 {
            qs[32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

/// Q5_K, 176 bytes: d, dmin, scales[12], qh[32], qs[128].
pub(super) fn q5_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; 256];
    k4_k5_common(x, y, 31, -0.5, 15, &mut l);
    pack_q5k(&l, &mut y[16..176]);
}

/// Q5_K's qh[32] then qs[128] from 256 quants in 0..32.
pub(super) fn pack_q5k(l: &[u8; 256], out: &mut [u8]) {
    let (qh, ql) = out.split_at_mut(32);
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (c, n) in (0..256).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * c + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// Q6_K, 210 bytes: ql[128], qh[64], scales[16] (int8), d.
pub(super) fn q6_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let s = make_qx_quants(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut l[16 * ib..16 * ib + 16],
            1,
            None,
        );
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    q6_k_finish(x, y, &scales, max_scale, max_abs_scale, &mut l);
}

/// Q6_K from the 16 sub-block scales: the int8 scales, d, the final quants
/// and the packing (shared with the weighted path).
pub(super) fn q6_k_finish(
    x: &[f32],
    y: &mut [u8],
    scales: &[f32; 16],
    max_scale: f32,
    max_abs_scale: f32,
    l: &mut [i8; 256],
) {
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        y[208..210].copy_from_slice(&fp16(0.0));
        return;
    }
    let iscale = -128.0 / max_scale;
    y[208..210].copy_from_slice(&fp16(1.0 / iscale));
    for ib in 0..16 {
        y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = fp16_at(&y[208..210]);
    for j in 0..16 {
        let d = d_all * (y[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for (c, j) in (0..256).step_by(128).enumerate() {
        for i in 0..32 {
            let q = |k: usize| l[j + i + 32 * k] as u8;
            ql[64 * c + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
            ql[64 * c + i + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
            qh[32 * c + i] =
                (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}
