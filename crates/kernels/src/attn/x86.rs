//! x86-64 attention kernels: AVX2 + FMA + F16C, and AVX-512F.

use half::f16;
use std::arch::x86_64::*;

/// # Safety
/// AVX2, FMA and F16C must be available; keys in bounds.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_rows(q: &[f32], k: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    let d = q.len();
    for (t, o) in out.iter_mut().enumerate() {
        let kt = std::slice::from_raw_parts(k.as_ptr().add(t * stride), d);
        *o = dot_f16(q, kt) * scale;
    }
}

/// [`dot_rows`] for `q.len()` a multiple of 16, 16 keys at a time: lanes
/// 0..8 of a key's accumulator are `dot_f16`'s `acc[0]` (even chunks of
/// 8, in order) and lanes 8..16 its `acc[1]`; the 16 accumulators are then
/// summed by [`reduce16`], which adds each one's lanes in `dot_f16`'s
/// order. So the bits are the same as one `dot_f16` per key.
///
/// # Safety
/// AVX-512F, F16C must be available; keys in bounds.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn dot_rows_512(
    q: &[f32],
    k: &[f16],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let (d, n) = (q.len(), out.len());
    let sv = _mm512_set1_ps(scale);
    let mut b = 0;
    while b + 16 <= n {
        let s = dot16_f16(q.as_ptr(), k.as_ptr().add(b * stride), stride, d);
        _mm512_storeu_ps(out.as_mut_ptr().add(b), _mm512_mul_ps(s, sv));
        b += 16;
    }
    // The last keys one by one: the same sums, reduced one at a time.
    for (t, o) in out.iter_mut().enumerate().skip(b) {
        let kp = k.as_ptr().add(t * stride) as *const __m256i;
        let mut acc = _mm512_setzero_ps();
        for c in 0..d / 16 {
            let kv = _mm512_cvtph_ps(_mm256_loadu_si256(kp.add(c)));
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(q.as_ptr().add(16 * c)), kv, acc);
        }
        *o = crate::rowops::x86::hsum16(acc) * scale;
    }
}

/// The key whose accumulator is `acc[i]` in [`dot16_f16`] and
/// [`dot16_f32`]: the order [`reduce16`] puts back in place.
const KEY_OF_ACC: [usize; 16] = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];

/// Dot products of the query at `q` (`d` floats, `d % 16 == 0`) with 16 f16
/// keys `stride` apart from `k`, unscaled, in key order.
///
/// # Safety
/// AVX-512F and F16C; 16 keys of `d` in bounds.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn dot16_f16(q: *const f32, k: *const f16, stride: usize, d: usize) -> __m512 {
    let mut acc = [_mm512_setzero_ps(); 16];
    for c in 0..d / 16 {
        let qv = _mm512_loadu_ps(q.add(16 * c));
        for (a, &t) in acc.iter_mut().zip(&KEY_OF_ACC) {
            let kp = k.add(t * stride + 16 * c) as *const __m256i;
            *a = _mm512_fmadd_ps(qv, _mm512_cvtph_ps(_mm256_loadu_si256(kp)), *a);
        }
    }
    reduce16(&acc)
}

/// [`dot16_f16`] with the 16 keys already in f32, as [`to_f32_block`]
/// lays them out.
///
/// # Safety
/// AVX-512F; `k` holds `16 * d` floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn dot16_f32(q: *const f32, k: *const f32, d: usize) -> __m512 {
    let mut acc = [_mm512_setzero_ps(); 16];
    for c in 0..d / 16 {
        let qv = _mm512_loadu_ps(q.add(16 * c));
        let kc = k.add(256 * c);
        for (a, &t) in acc.iter_mut().zip(&KEY_OF_ACC) {
            *a = _mm512_fmadd_ps(qv, _mm512_loadu_ps(kc.add(16 * t)), *a);
        }
    }
    reduce16(&acc)
}

/// `nb <= 16` f16 keys `stride` apart from `k` into `out` as f32, laid out
/// (d / 16, 16 keys, 16): the 16 keys' floats `16 c..16 c + 16` side by
/// side. Keys `nb..16` are zeros.
///
/// # Safety
/// AVX-512F and F16C; `nb` keys of `d` in bounds; `out.len() >= 16 * d`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn to_f32_block(k: *const f16, stride: usize, d: usize, nb: usize, out: &mut [f32]) {
    let o = out.as_mut_ptr();
    for t in 0..16 {
        for c in 0..d / 16 {
            let v = if t < nb {
                let kp = k.add(t * stride + 16 * c) as *const __m256i;
                _mm512_cvtph_ps(_mm256_loadu_si256(kp))
            } else {
                _mm512_setzero_ps()
            };
            _mm512_storeu_ps(o.add(256 * c + 16 * t), v);
        }
    }
}

/// Lane `j` of the result is the sum of the lanes of the accumulator of
/// key `j` (`acc[i]` is key `KEY_OF_ACC[i]`), added as `dot_f16` adds:
/// lane `i` + lane `i + 8`, then + 4, then + 2, then + 1. Four rounds of
/// shuffles and adds transpose the 16 sums into one vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn reduce16(acc: &[__m512; 16]) -> __m512 {
    // Halves: quarters 0,1 (+) 2,3 of each; two accumulators per vector.
    let mut h = [_mm512_setzero_ps(); 8];
    for (m, h) in h.iter_mut().enumerate() {
        let (x, y) = (acc[2 * m], acc[2 * m + 1]);
        *h = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(x, y),
            _mm512_shuffle_f32x4::<0xEE>(x, y),
        );
    }
    // Quarters: one accumulator's four partial sums per 128-bit quarter.
    let mut qs = [_mm512_setzero_ps(); 4];
    for (p, qs) in qs.iter_mut().enumerate() {
        let (x, y) = (h[2 * p], h[2 * p + 1]);
        *qs = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(x, y),
            _mm512_shuffle_f32x4::<0xDD>(x, y),
        );
    }
    // Pairs, then singles, within each quarter.
    let pa = _mm512_add_ps(
        _mm512_unpacklo_ps(qs[0], qs[1]),
        _mm512_unpackhi_ps(qs[0], qs[1]),
    );
    let pb = _mm512_add_ps(
        _mm512_unpacklo_ps(qs[2], qs[3]),
        _mm512_unpackhi_ps(qs[2], qs[3]),
    );
    _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(pa, pb),
        _mm512_shuffle_ps::<0xEE>(pa, pb),
    )
}

/// See [`super::attend_f16`]; here `d % 16 == 0`. `sc` is scratch.
///
/// Keys are converted to f32 once per block of 16 and dotted with every
/// query that sees them; value rows are converted once per 16-float slice
/// and added into up to 6 queries' outputs held in registers. Per query
/// the operations are those of a group of one.
///
/// # Safety
/// AVX-512F and F16C; `q` and `out` hold `last.len() * d` floats; keys and
/// values `0..=max(last)` in bounds.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn attend_512(
    q: &[f32],
    last: &[usize],
    k: &[f16],
    v: &[f16],
    stride: usize,
    scale: f32,
    sc: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (g, d) = (last.len(), out.len() / last.len());
    let n = last.iter().max().map_or(0, |&m| m + 1);
    let np = n.next_multiple_of(16);
    // (g, np) scores, then one (16, d) block of keys in f32.
    sc.clear();
    sc.resize(g * np + 16 * d, 0.0);
    let (scores, kf) = sc.split_at_mut(g * np);
    let sv = _mm512_set1_ps(scale);
    let mut b = 0;
    while b < n {
        let nb = (n - b).min(16);
        let kb = k.as_ptr().add(b * stride);
        let direct = g == 1 && nb == 16;
        if !direct {
            to_f32_block(kb, stride, d, nb, kf);
        }
        for (j, &lj) in last.iter().enumerate() {
            if lj < b {
                continue;
            }
            let qp = q.as_ptr().add(j * d);
            let s = if direct {
                dot16_f16(qp, kb, stride, d)
            } else {
                dot16_f32(qp, kf.as_ptr(), d)
            };
            _mm512_storeu_ps(scores.as_mut_ptr().add(j * np + b), _mm512_mul_ps(s, sv));
        }
        b += 16;
    }
    for (j, &lj) in last.iter().enumerate() {
        crate::rowops::x86::softmax_512(&mut scores[j * np..j * np + lj + 1]);
    }
    // out_j = sum over t <= last_j of p_j[t] * v_t, in t order, 16 columns
    // at a time for up to 6 queries.
    let mut j0 = 0;
    while j0 < g {
        let j1 = (j0 + 6).min(g);
        let mut s0 = 0;
        while s0 < d {
            let w = ((d - s0) / 16).min(4);
            let p = (scores.as_ptr().add(j0 * np), np);
            let o = (out.as_mut_ptr().add(j0 * d + s0), d);
            let vp = (v.as_ptr().add(s0), stride);
            let l = &last[j0..j1];
            match (j1 - j0, w) {
                (6, 4) => pv::<6, 4>(p, l, vp, o),
                (5, 4) => pv::<5, 4>(p, l, vp, o),
                (4, 4) => pv::<4, 4>(p, l, vp, o),
                (3, 4) => pv::<3, 4>(p, l, vp, o),
                (2, 4) => pv::<2, 4>(p, l, vp, o),
                (1, 4) => pv::<1, 4>(p, l, vp, o),
                (gg, 3) => pv_dyn::<3>(gg, p, l, vp, o),
                (gg, 2) => pv_dyn::<2>(gg, p, l, vp, o),
                (gg, _) => pv_dyn::<1>(gg, p, l, vp, o),
            }
            s0 += 16 * w;
        }
        j0 = j1;
    }
}

/// [`pv`] for `gg <= 6` queries, one at a time beyond the register tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn pv_dyn<const W: usize>(
    gg: usize,
    p: (*const f32, usize),
    last: &[usize],
    v: (*const f16, usize),
    o: (*mut f32, usize),
) {
    for j in 0..gg {
        let pj = (p.0.add(j * p.1), p.1);
        let oj = (o.0.add(j * o.1), o.1);
        pv::<1, W>(pj, &last[j..j + 1], v, oj);
    }
}

/// For `G` queries: `out_j[0..16 W] = sum over t <= last_j of p_j[t] *
/// v_t[0..16 W]`, each lane a chain of fused multiply-adds from 0 in `t`
/// order (the chain of [`axpy_f16`]). `p` and `o` are (pointer, row
/// stride); `v` is (pointer to column 0 of key 0, key stride). Keys up to
/// the smallest `last` are shared; the rest run per query.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn pv<const G: usize, const W: usize>(
    p: (*const f32, usize),
    last: &[usize],
    v: (*const f16, usize),
    o: (*mut f32, usize),
) {
    let mut acc = [[_mm512_setzero_ps(); W]; G];
    let shared = last.iter().min().map_or(0, |&m| m + 1);
    for t in 0..shared {
        let vt = v.0.add(t * v.1) as *const __m256i;
        let mut vv = [_mm512_setzero_ps(); W];
        for (c, x) in vv.iter_mut().enumerate() {
            *x = _mm512_cvtph_ps(_mm256_loadu_si256(vt.add(c)));
        }
        for (j, a) in acc.iter_mut().enumerate() {
            let pt = _mm512_set1_ps(*p.0.add(j * p.1 + t));
            for (a, x) in a.iter_mut().zip(&vv) {
                *a = _mm512_fmadd_ps(pt, *x, *a);
            }
        }
    }
    for (j, a) in acc.iter_mut().enumerate() {
        for t in shared..last[j] + 1 {
            let vt = v.0.add(t * v.1) as *const __m256i;
            let pt = _mm512_set1_ps(*p.0.add(j * p.1 + t));
            for (c, a) in a.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(pt, _mm512_cvtph_ps(_mm256_loadu_si256(vt.add(c))), *a);
            }
        }
        for (c, a) in a.iter().enumerate() {
            _mm512_storeu_ps(o.0.add(j * o.1 + 16 * c), *a);
        }
    }
}

/// # Safety
/// AVX2, FMA and F16C must be available; values in bounds.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn axpy_rows(y: &mut [f32], p: &[f32], v: &[f16], stride: usize) {
    match y.len() {
        64 => axpy_rows_fixed::<8>(y, p, v, stride),
        128 => axpy_rows_fixed::<16>(y, p, v, stride),
        d => {
            for (t, &pt) in p.iter().enumerate() {
                axpy_f16(
                    y,
                    pt,
                    std::slice::from_raw_parts(v.as_ptr().add(t * stride), d),
                );
            }
        }
    }
}

/// `y` (`8 C` long) held in `C` registers across all rows; each lane
/// sees the same fused multiply-adds in the same order as [`axpy_f16`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_rows_fixed<const C: usize>(y: &mut [f32], p: &[f32], v: &[f16], stride: usize) {
    let yp = y.as_mut_ptr();
    let mut acc = [_mm256_setzero_ps(); C];
    for (c, a) in acc.iter_mut().enumerate() {
        *a = _mm256_loadu_ps(yp.add(8 * c));
    }
    for (t, &pt) in p.iter().enumerate() {
        let xp = v.as_ptr().add(t * stride) as *const __m128i;
        let av = _mm256_set1_ps(pt);
        for (c, a) in acc.iter_mut().enumerate() {
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(c)));
            *a = _mm256_fmadd_ps(av, xv, *a);
        }
    }
    for (c, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(yp.add(8 * c), *a);
    }
}

/// # Safety
/// AVX2, FMA and F16C must be available; `a.len() == b.len()`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let n = a.len() / 8 * 8;
    let (ap, bp) = (a.as_ptr(), b.as_ptr() as *const __m128i);
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut k = 0;
    while k < n {
        let bv = _mm256_cvtph_ps(_mm_loadu_si128(bp.add(k / 8)));
        acc[(k / 8) & 1] = _mm256_fmadd_ps(_mm256_loadu_ps(ap.add(k)), bv, acc[(k / 8) & 1]);
        k += 8;
    }
    let v = _mm256_add_ps(acc[0], acc[1]);
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let mut s = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)));
    for t in n..a.len() {
        s += a[t] * b[t].to_f32();
    }
    s
}

/// # Safety
/// AVX2, FMA and F16C must be available; `y.len() == x.len()`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn axpy_f16(y: &mut [f32], alpha: f32, x: &[f16]) {
    let n = y.len() / 8 * 8;
    let (yp, xp) = (y.as_mut_ptr(), x.as_ptr() as *const __m128i);
    let av = _mm256_set1_ps(alpha);
    let mut k = 0;
    while k < n {
        let xv = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(k / 8)));
        _mm256_storeu_ps(
            yp.add(k),
            _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(yp.add(k))),
        );
        k += 8;
    }
    for t in n..y.len() {
        y[t] += alpha * x[t].to_f32();
    }
}
