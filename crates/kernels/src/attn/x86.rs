//! x86-64 attention kernels: AVX2 + FMA + F16C, and AVX-512F.

use super::KvHead;
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

/// [`dot_rows`] for `q.len()` a multiple of 16, 16 lanes at a time:
/// lanes 0..8 of the accumulator are `dot_f16`'s `acc[0]` (even chunks
/// of 8, in order) and lanes 8..16 its `acc[1]`, then the same
/// reduction, so the bits are the same.
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
    let (d, qp) = (q.len(), q.as_ptr());
    for (t, o) in out.iter_mut().enumerate() {
        let kp = k.as_ptr().add(t * stride) as *const __m256i;
        let mut acc = _mm512_setzero_ps();
        for c in 0..d / 16 {
            let kv = _mm512_cvtph_ps(_mm256_loadu_si256(kp.add(c)));
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(16 * c)), kv, acc);
        }
        *o = crate::rowops::x86::hsum16(acc) * scale;
    }
}

/// See [`super::scores`]: the AVX-512 tiles, `G` queries x `NB` blocks of
/// 16 keys, one accumulator each.
///
/// # Safety
/// AVX-512F and F16C; shapes and bounds as [`super::scores`] checks.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn scores_512(
    q: &[f32],
    last: &[usize],
    kv: &KvHead<f16>,
    scale: f32,
    np: usize,
    scores: &mut [f32],
) {
    let d = q.len() / last.len();
    let mut j0 = 0;
    while j0 < last.len() {
        let j1 = (j0 + 8).min(last.len());
        let nb = last[j0..j1].iter().max().map_or(0, |m| m / 16 + 1);
        let t = Tile {
            q: q.as_ptr().add(j0 * d),
            d,
            k: kv.k.as_ptr(),
            k_block: kv.k_block,
            scale,
            out: scores.as_mut_ptr().add(j0 * np),
            np,
        };
        match j1 - j0 {
            1 => blocks_512::<1, 4>(&t, nb),
            2 => blocks_512::<2, 4>(&t, nb),
            3 => blocks_512::<3, 2>(&t, nb),
            4 => blocks_512::<4, 2>(&t, nb),
            5 => blocks_512::<5, 1>(&t, nb),
            6 => blocks_512::<6, 1>(&t, nb),
            7 => blocks_512::<7, 1>(&t, nb),
            _ => blocks_512::<8, 1>(&t, nb),
        }
        j0 = j1;
    }
}

/// One tile's pointers: `G` queries (`d` apart) from `q`, the keys, and
/// the tile's score rows (`np` apart) from `out`.
pub(super) struct Tile {
    pub(super) q: *const f32,
    pub(super) d: usize,
    pub(super) k: *const f16,
    pub(super) k_block: usize,
    pub(super) scale: f32,
    pub(super) out: *mut f32,
    pub(super) np: usize,
}

/// Blocks `0..nb` for a tile of `G` queries, `NB` blocks at a time (the
/// rest one at a time).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn blocks_512<const G: usize, const NB: usize>(t: &Tile, nb: usize) {
    let mut b = 0;
    while b + NB <= nb {
        tile_512::<G, NB>(t, b, nb);
        b += NB;
    }
    while b < nb {
        tile_512::<G, 1>(t, b, nb);
        b += 1;
    }
}

/// Scores of `G` queries against keys `16 b0..16 (b0 + NB)`: for each
/// dimension `i` in order, each block's row `i` (16 keys) is converted
/// once and fused-multiply-added with every query's `q[i]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn tile_512<const G: usize, const NB: usize>(t: &Tile, b0: usize, nb: usize) {
    let mut acc = [[_mm512_setzero_ps(); NB]; G];
    // The blocks `KEYS_AHEAD` tiles on (2 KB each for d = 64, a cache's
    // blocks far apart): one line per two dimensions, fetched while this
    // tile runs; none past the last block `nb` (they would be read for
    // nothing: at a context of 128, 1 tile in 4).
    let ahead = b0 + KEYS_AHEAD * NB;
    let next = t.k.wrapping_add(ahead * t.k_block) as *const i8;
    let fetch = ahead + NB <= nb;
    for i in 0..t.d {
        if fetch && i % 2 == 0 {
            for bb in 0..NB {
                let at = (bb * t.k_block + 16 * i) * 2;
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(at));
            }
        }
        let mut kr = [_mm512_setzero_ps(); NB];
        for (bb, kr) in kr.iter_mut().enumerate() {
            let kp = t.k.add((b0 + bb) * t.k_block + 16 * i) as *const __m256i;
            *kr = _mm512_cvtph_ps(_mm256_loadu_si256(kp));
        }
        for (j, acc) in acc.iter_mut().enumerate() {
            let qv = _mm512_set1_ps(*t.q.add(j * t.d + i));
            for (a, kr) in acc.iter_mut().zip(&kr) {
                *a = _mm512_fmadd_ps(qv, *kr, *a);
            }
        }
    }
    let sv = _mm512_set1_ps(t.scale);
    for (j, acc) in acc.iter().enumerate() {
        for (bb, a) in acc.iter().enumerate() {
            let o = t.out.add(j * t.np + 16 * (b0 + bb));
            _mm512_storeu_ps(o, _mm512_mul_ps(*a, sv));
        }
    }
}

/// [`scores_512`] on 8 lanes: each block is two halves of 8 keys, and
/// each lane runs the same chain, so the bits are the same.
///
/// # Safety
/// AVX2, FMA and F16C; shapes and bounds as [`super::scores`] checks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scores_avx2(
    q: &[f32],
    last: &[usize],
    kv: &KvHead<f16>,
    scale: f32,
    np: usize,
    scores: &mut [f32],
) {
    let d = q.len() / last.len();
    let mut j0 = 0;
    while j0 < last.len() {
        let j1 = (j0 + 4).min(last.len());
        let nb = last[j0..j1].iter().max().map_or(0, |m| m / 16 + 1);
        let t = Tile {
            q: q.as_ptr().add(j0 * d),
            d,
            k: kv.k.as_ptr(),
            k_block: kv.k_block,
            scale,
            out: scores.as_mut_ptr().add(j0 * np),
            np,
        };
        for b in 0..nb {
            match j1 - j0 {
                1 => tile_avx2::<1>(&t, b),
                2 => tile_avx2::<2>(&t, b),
                3 => tile_avx2::<3>(&t, b),
                _ => tile_avx2::<4>(&t, b),
            }
        }
        j0 = j1;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const G: usize>(t: &Tile, b: usize) {
    let mut acc = [[_mm256_setzero_ps(); 2]; G];
    for i in 0..t.d {
        let kp = t.k.add(b * t.k_block + 16 * i) as *const __m128i;
        let kr = [
            _mm256_cvtph_ps(_mm_loadu_si128(kp)),
            _mm256_cvtph_ps(_mm_loadu_si128(kp.add(1))),
        ];
        for (j, acc) in acc.iter_mut().enumerate() {
            let qv = _mm256_set1_ps(*t.q.add(j * t.d + i));
            for (a, kr) in acc.iter_mut().zip(&kr) {
                *a = _mm256_fmadd_ps(qv, *kr, *a);
            }
        }
    }
    let sv = _mm256_set1_ps(t.scale);
    for (j, acc) in acc.iter().enumerate() {
        for (h, a) in acc.iter().enumerate() {
            let o = t.out.add(j * t.np + 16 * b + 8 * h);
            _mm256_storeu_ps(o, _mm256_mul_ps(*a, sv));
        }
    }
}

/// `out_j = sum over t <= last_j of p_j[t] * v_t` for every query (scores
/// rows `np` apart in `p`), 16 columns at a time for up to 6 queries;
/// `d % 16 == 0`.
///
/// # Safety
/// AVX-512F and F16C; shapes and bounds as [`super::attend_f16`] checks.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn pv_512(
    p: &[f32],
    np: usize,
    last: &[usize],
    v: &[f16],
    v_row: usize,
    out: &mut [f32],
) {
    let (g, d) = (last.len(), out.len() / last.len());
    let mut j0 = 0;
    while j0 < g {
        let j1 = (j0 + 6).min(g);
        let mut s0 = 0;
        while s0 < d {
            let w = ((d - s0) / 16).min(4);
            let pp = (p.as_ptr().add(j0 * np), np);
            let o = (out.as_mut_ptr().add(j0 * d + s0), d);
            let vp = (v.as_ptr().add(s0), v_row);
            let l = &last[j0..j1];
            match (j1 - j0, w) {
                (6, 4) => pv::<6, 4>(pp, l, vp, o),
                (5, 4) => pv::<5, 4>(pp, l, vp, o),
                (4, 4) => pv::<4, 4>(pp, l, vp, o),
                (3, 4) => pv::<3, 4>(pp, l, vp, o),
                (2, 4) => pv::<2, 4>(pp, l, vp, o),
                (1, 4) => pv::<1, 4>(pp, l, vp, o),
                (gg, 3) => pv_dyn::<3>(gg, pp, l, vp, o),
                (gg, 2) => pv_dyn::<2>(gg, pp, l, vp, o),
                (gg, _) => pv_dyn::<1>(gg, pp, l, vp, o),
            }
            s0 += 16 * w;
        }
        j0 = j1;
    }
}

/// How many value rows ahead [`pv`] prefetches: 32 rows are a few
/// hundred cycles of work for 3 queries, past a miss's latency (8, the
/// old distance, left the loads waiting; `examples/attn_decode.rs`).
const PV_AHEAD: usize = 32;

/// How many tiles of blocks ahead [`tile_512`] prefetches keys (1, the
/// old distance, was about one miss's latency of work).
const KEYS_AHEAD: usize = 2;

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
    let rows = last.iter().max().map_or(0, |&m| m + 1);
    for t in 0..shared {
        let vt = v.0.add(t * v.1) as *const __m256i;
        // Value rows are a cache row apart (384 bytes for 3 KV heads of
        // 64), past what the hardware prefetcher follows across pages.
        // None past the last row (it would be read for nothing).
        if t + PV_AHEAD < rows {
            let ahead = v.0.wrapping_add((t + PV_AHEAD) * v.1) as *const i8;
            for c in (0..32 * W).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(c));
            }
        }
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
