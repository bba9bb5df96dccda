//! x86-64 tiles: AVX-512F (16 lanes) and AVX2 + FMA (8 lanes). See the
//! parent module for the per-element instruction sequence they share.

use std::arch::x86_64::*;

/// # Safety
/// The CPU must support AVX-512F; `w` must hold `R * len` and `x` `N * len`
/// floats.
// Indexed loops keep the R x N register tile explicit.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_avx512<const R: usize, const N: usize>(
    w: &[f32],
    x: &[f32],
    len: usize,
    out: &mut [[f32; N]; R],
) {
    debug_assert!(w.len() >= R * len && x.len() >= N * len);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let full = len / 16 * 16;
    let mut acc = [[_mm512_setzero_ps(); N]; R];
    let mut k = 0;
    while k < full {
        let mut wv = [_mm512_setzero_ps(); R];
        for (r, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(wp.add(r * len + k));
        }
        for j in 0..N {
            let xv = _mm512_loadu_ps(xp.add(j * len + k));
            for r in 0..R {
                acc[r][j] = _mm512_fmadd_ps(wv[r], xv, acc[r][j]);
            }
        }
        k += 16;
    }
    for r in 0..R {
        for j in 0..N {
            let mut s = _mm512_reduce_add_ps(acc[r][j]);
            for t in full..len {
                s += *wp.add(r * len + t) * *xp.add(j * len + t);
            }
            out[r][j] = s;
        }
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA; `w` must hold `R * len` and `x`
/// `N * len` floats.
// Indexed loops keep the R x N register tile explicit.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2<const R: usize, const N: usize>(
    w: &[f32],
    x: &[f32],
    len: usize,
    out: &mut [[f32; N]; R],
) {
    debug_assert!(w.len() >= R * len && x.len() >= N * len);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let full = len / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); N]; R];
    let mut k = 0;
    while k < full {
        let mut wv = [_mm256_setzero_ps(); R];
        for (r, v) in wv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(wp.add(r * len + k));
        }
        for j in 0..N {
            let xv = _mm256_loadu_ps(xp.add(j * len + k));
            for r in 0..R {
                acc[r][j] = _mm256_fmadd_ps(wv[r], xv, acc[r][j]);
            }
        }
        k += 8;
    }
    for r in 0..R {
        for j in 0..N {
            let mut s = hsum256(acc[r][j]);
            for t in full..len {
                s += *wp.add(r * len + t) * *xp.add(j * len + t);
            }
            out[r][j] = s;
        }
    }
}

/// Horizontal sum in a fixed order: (lo + hi) halves, then pairs.
#[target_feature(enable = "avx2")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}
