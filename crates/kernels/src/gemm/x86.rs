//! x86-64 GEMM tiles: AVX-512F (MR x 32: two 16-lane accumulators per row)
//! and AVX2 + FMA (MR x 16: two 8-lane accumulators per row). Each lane of
//! each accumulator is one element of C, fed one fused multiply-add per k,
//! in k order: see the parent module.
//!
//! The C columns past `live` are neither read nor written (masked loads
//! and stores), and the pointers to them are formed with `wrapping_add`, so
//! a tile at the right edge of C never touches memory past it.

use std::arch::x86_64::*;

/// # Safety
/// The CPU must support AVX-512F; see `super::tile` for the pointers.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_avx512<const MR: usize>(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    live: usize,
    load: bool,
) {
    let lanes = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    };
    let (m0, m1) = (lanes(live), lanes(live.saturating_sub(16)));
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if load {
        for i in 0..MR {
            let ci = c.wrapping_add(i * ldc);
            acc[i][0] = _mm512_maskz_loadu_ps(m0, ci);
            acc[i][1] = _mm512_maskz_loadu_ps(m1, ci.wrapping_add(16));
        }
    }
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let b0 = _mm512_loadu_ps(bp);
        let b1 = _mm512_loadu_ps(bp.add(16));
        for i in 0..MR {
            let av = _mm512_set1_ps(*ap.add(i * rs));
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
        ap = ap.wrapping_add(cs);
        bp = bp.add(32);
    }
    for i in 0..MR {
        let ci = c.wrapping_add(i * ldc);
        _mm512_mask_storeu_ps(ci, m0, acc[i][0]);
        _mm512_mask_storeu_ps(ci.wrapping_add(16), m1, acc[i][1]);
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA; see `super::tile` for the pointers.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2<const MR: usize>(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    live: usize,
    load: bool,
) {
    // Lane j of a mask is set (all ones) when column j + off is live.
    let lanes = |off: usize| -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let n = live.saturating_sub(off).min(8) as i32;
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx)
    };
    let (m0, m1) = (lanes(0), lanes(8));
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    if load {
        for i in 0..MR {
            let ci = c.wrapping_add(i * ldc);
            acc[i][0] = _mm256_maskload_ps(ci, m0);
            acc[i][1] = _mm256_maskload_ps(ci.wrapping_add(8), m1);
        }
    }
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for i in 0..MR {
            let av = _mm256_set1_ps(*ap.add(i * rs));
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
        ap = ap.wrapping_add(cs);
        bp = bp.add(16);
    }
    for i in 0..MR {
        let ci = c.wrapping_add(i * ldc);
        _mm256_maskstore_ps(ci, m0, acc[i][0]);
        _mm256_maskstore_ps(ci.wrapping_add(8), m1, acc[i][1]);
    }
}
