//! The K-quant scale searches on AVX-512: 16 candidate scales at a time,
//! one per lane, each lane doing exactly the f32 operations of the scalar
//! reference in its order (multiplies and adds apart, never fused), so
//! the sums, and the blocks written, are the same bits
//! (`candidates_match_reference`).

use super::{Qkx2Cands, Qkx2Params, QxCands, QX_STEPS};
use std::arch::x86_64::*;

/// Whether the CPU has AVX-512F, detected once.
pub(super) fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::is_x86_feature_detected!("avx512f"))
}

/// ggml's `nearest_int` per lane: add 1.5 * 2^23, read the mantissa.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn nearest(t: __m512) -> __m512i {
    let v = _mm512_castps_si512(_mm512_add_ps(t, _mm512_set1_ps(12_582_912.0)));
    _mm512_sub_epi32(
        _mm512_and_si512(v, _mm512_set1_epi32(0x007f_ffff)),
        _mm512_set1_epi32(0x0040_0000),
    )
}

/// [`super::qx_candidates_scalar`], 16 steps per vector.
///
/// # Safety
/// AVX-512F; `w.len() >= x.len()`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn qx_candidates_512(nmax: i32, x: &[f32], w: &[f32], max: f32, c: &mut QxCands) {
    let (lo, hi) = (_mm512_set1_epi32(-nmax), _mm512_set1_epi32(nmax - 1));
    for k0 in (0..QX_STEPS.len()).step_by(16) {
        let mut steps = [0i32; 16];
        for (s, is) in steps.iter_mut().zip(&QX_STEPS[k0..]) {
            *s = *is;
        }
        let is = _mm512_cvtepi32_ps(_mm512_loadu_si512(steps.as_ptr() as *const _));
        // -(nmax + 0.1 * is) / max
        let a = _mm512_add_ps(
            _mm512_set1_ps(nmax as f32),
            _mm512_mul_ps(_mm512_set1_ps(0.1), is),
        );
        let neg = _mm512_xor_ps(a, _mm512_set1_ps(-0.0));
        let iscale = _mm512_div_ps(neg, _mm512_set1_ps(max));
        let (mut sumlx, mut suml2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in 0..x.len() {
            let t = _mm512_mul_ps(iscale, _mm512_set1_ps(x[i]));
            let l = _mm512_min_epi32(_mm512_max_epi32(nearest(t), lo), hi);
            let lf = _mm512_cvtepi32_ps(l);
            // (w * x) * l and (w * l) * l
            sumlx = _mm512_add_ps(sumlx, _mm512_mul_ps(_mm512_set1_ps(w[i] * x[i]), lf));
            suml2 = _mm512_add_ps(
                suml2,
                _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(w[i]), lf), lf),
            );
        }
        _mm512_storeu_ps(c.sumlx[k0..].as_mut_ptr(), sumlx);
        _mm512_storeu_ps(c.suml2[k0..].as_mut_ptr(), suml2);
    }
}

/// [`super::qkx2_candidates_scalar`], 16 steps per vector.
///
/// # Safety
/// AVX-512F; `w.len() >= x.len()`; `last - first < 32`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn qkx2_candidates_512(
    p: &Qkx2Params,
    x: &[f32],
    w: &[f32],
    first: i32,
    last: i32,
    c: &mut Qkx2Cands,
) {
    let count = (last - first + 1).max(0) as usize;
    let (lo, hi) = (_mm512_setzero_si512(), _mm512_set1_epi32(p.nmax));
    let zero = _mm512_setzero_ps();
    let (sum_w, sum_x) = (_mm512_set1_ps(p.sum_w), _mm512_set1_ps(p.sum_x));
    for k0 in (0..count).step_by(16) {
        let mut steps = [0i32; 16];
        for (j, s) in steps.iter_mut().enumerate() {
            *s = first + (k0 + j) as i32;
        }
        let is = _mm512_cvtepi32_ps(_mm512_loadu_si512(steps.as_ptr() as *const _));
        // (rmin + rdelta * is + nmax) / (max - min)
        let a = _mm512_add_ps(
            _mm512_add_ps(
                _mm512_set1_ps(p.rmin),
                _mm512_mul_ps(_mm512_set1_ps(p.rdelta), is),
            ),
            _mm512_set1_ps(p.nmax as f32),
        );
        let iscale = _mm512_div_ps(a, _mm512_set1_ps(p.max - p.min));
        let quants = |i: usize| {
            let t = _mm512_mul_ps(iscale, _mm512_set1_ps(x[i] - p.min));
            _mm512_cvtepi32_ps(_mm512_min_epi32(_mm512_max_epi32(nearest(t), lo), hi))
        };
        let (mut sl, mut sl2, mut sxl) = (zero, zero, zero);
        for i in 0..x.len() {
            let lf = quants(i);
            let wl = _mm512_mul_ps(_mm512_set1_ps(w[i]), lf);
            sl = _mm512_add_ps(sl, wl);
            sl2 = _mm512_add_ps(sl2, _mm512_mul_ps(wl, lf));
            sxl = _mm512_add_ps(sxl, _mm512_mul_ps(wl, _mm512_set1_ps(x[i])));
        }
        let d = _mm512_sub_ps(_mm512_mul_ps(sum_w, sl2), _mm512_mul_ps(sl, sl));
        let ok = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(d, zero);
        let mut scale = _mm512_div_ps(
            _mm512_sub_ps(_mm512_mul_ps(sum_w, sxl), _mm512_mul_ps(sum_x, sl)),
            d,
        );
        let mut min = _mm512_div_ps(
            _mm512_sub_ps(_mm512_mul_ps(sl2, sum_x), _mm512_mul_ps(sl, sxl)),
            d,
        );
        let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(min, zero);
        min = _mm512_mask_blend_ps(pos, min, zero);
        scale = _mm512_mask_blend_ps(pos, scale, _mm512_div_ps(sxl, sl2));
        let mut err = zero;
        for i in 0..x.len() {
            let lf = quants(i);
            let diff = _mm512_sub_ps(
                _mm512_add_ps(_mm512_mul_ps(scale, lf), min),
                _mm512_set1_ps(x[i]),
            );
            let diff = if p.use_mad {
                _mm512_abs_ps(diff)
            } else {
                _mm512_mul_ps(diff, diff)
            };
            err = _mm512_add_ps(err, _mm512_mul_ps(_mm512_set1_ps(w[i]), diff));
        }
        _mm512_storeu_ps(c.err[k0..].as_mut_ptr(), err);
        _mm512_storeu_ps(c.scale[k0..].as_mut_ptr(), scale);
        _mm512_storeu_ps(c.min[k0..].as_mut_ptr(), min);
        for j in 0..16 {
            c.ok[k0 + j] = (ok >> j) & 1 == 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{qkx2_candidates_scalar, qx_candidates_scalar};
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Both searches give the scalar reference's bits in every lane used,
    /// on random groups of the sizes the K-quants use, with the weights
    /// and parameters of their callers, including all-positive groups
    /// (min 0) and groups where a value ties a rounding boundary.
    #[test]
    fn candidates_match_reference() {
        if !available() {
            eprintln!("no AVX-512F: the 512-bit searches are not checked here");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..3000 {
            let n = [16, 32][round % 2];
            let mut x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            if round % 5 == 0 {
                x.iter_mut().for_each(|v| *v = v.abs() + 0.01);
            }
            if round % 7 == 0 {
                // Values on a grid, where iscale * x lands on halves.
                x.iter_mut().for_each(|v| *v = (*v * 8.0).round() / 16.0);
            }
            let w: Vec<f32> = x
                .iter()
                .map(|v| v * v + rng.gen_range(0.0f32..0.1))
                .collect();
            let max = x
                .iter()
                .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
            let (mut a, mut b) = (QxCands::default(), QxCands::default());
            for nmax in [4, 32] {
                qx_candidates_scalar(nmax, &x, &w, max, &mut a);
                // SAFETY: AVX-512F checked.
                unsafe { qx_candidates_512(nmax, &x, &w, max, &mut b) };
                for k in 0..QX_STEPS.len() {
                    assert_eq!(
                        a.sumlx[k].to_bits(),
                        b.sumlx[k].to_bits(),
                        "round {round} step {k}"
                    );
                    assert_eq!(
                        a.suml2[k].to_bits(),
                        b.suml2[k].to_bits(),
                        "round {round} step {k}"
                    );
                }
            }
            let min = x.iter().fold(0f32, |m, v| m.min(*v));
            let hi = x.iter().fold(f32::MIN, |m, v| m.max(*v));
            let (sum_w, sum_x) = x
                .iter()
                .zip(&w)
                .fold((0f32, 0f32), |(sw, sx), (v, w)| (sw + w, sx + w * v));
            for (nmax, rmin, nstep, use_mad) in [
                (3, -0.5, 15, true),
                (15, -1.0, 20, false),
                (31, -0.5, 15, false),
            ] {
                let p = Qkx2Params {
                    nmax,
                    min,
                    max: hi,
                    sum_w,
                    sum_x,
                    rmin,
                    rdelta: 0.1,
                    use_mad,
                };
                for first in [0, 7] {
                    let (mut a, mut b) = (Qkx2Cands::default(), Qkx2Cands::default());
                    qkx2_candidates_scalar(&p, &x, &w, first, nstep, &mut a);
                    // SAFETY: AVX-512F checked; nstep < 32.
                    unsafe { qkx2_candidates_512(&p, &x, &w, first, nstep, &mut b) };
                    for k in 0..=(nstep - first) as usize {
                        assert_eq!(a.ok[k], b.ok[k], "round {round} step {k}");
                        if a.ok[k] {
                            let (ea, eb) = (a.err[k].to_bits(), b.err[k].to_bits());
                            assert_eq!(ea, eb, "round {round} nmax {nmax} step {k}");
                            assert_eq!(a.scale[k].to_bits(), b.scale[k].to_bits());
                            assert_eq!(a.min[k].to_bits(), b.min[k].to_bits());
                        }
                    }
                }
            }
        }
    }
}
