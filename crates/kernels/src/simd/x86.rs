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

fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// The f16 at `b[off..off + 2]` converted (exactly) and broadcast to 16
/// lanes with AVX-512F's own conversion, not a call per block.
#[inline]
#[target_feature(enable = "avx512f")]
fn f16x16_at(b: &[u8], off: usize) -> __m512 {
    let bits = u16::from_le_bytes([b[off], b[off + 1]]);
    _mm512_cvtph_ps(_mm256_set1_epi16(bits as i16))
}

// Row dequantizers for the common legacy types. Each computes exactly the
// scalar reference's f32 operations (convert, multiply, then add; no FMA),
// so the output is bit-identical to `crate::dequantize_row`. `src` holds
// whole blocks and `dst` the matching number of elements.

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dequant_q4_0_avx512(src: &[u8], dst: &mut [f32]) {
    let mask = _mm_set1_epi8(0x0F);
    let eight = _mm512_set1_epi32(8);
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
        let d = f16x16_at(b, 0);
        let qs = _mm_loadu_si128(b.as_ptr().add(2) as *const __m128i);
        let lo = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(qs, mask)), eight);
        let hi = _mm512_sub_epi32(
            _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(qs), mask)),
            eight,
        );
        _mm512_storeu_ps(y.as_mut_ptr(), _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)));
        _mm512_storeu_ps(
            y.as_mut_ptr().add(16),
            _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)),
        );
    }
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dequant_q4_1_avx512(src: &[u8], dst: &mut [f32]) {
    let mask = _mm_set1_epi8(0x0F);
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(32)) {
        let d = f16x16_at(b, 0);
        let m = f16x16_at(b, 2);
        let qs = _mm_loadu_si128(b.as_ptr().add(4) as *const __m128i);
        let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(qs, mask)));
        let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(
            _mm_srli_epi16::<4>(qs),
            mask,
        )));
        _mm512_storeu_ps(y.as_mut_ptr(), _mm512_add_ps(_mm512_mul_ps(d, lo), m));
        _mm512_storeu_ps(
            y.as_mut_ptr().add(16),
            _mm512_add_ps(_mm512_mul_ps(d, hi), m),
        );
    }
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dequant_q8_0_avx512(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
        let d = f16x16_at(b, 0);
        for half in 0..2 {
            let q = _mm_loadu_si128(b.as_ptr().add(2 + 16 * half) as *const __m128i);
            let q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
            _mm512_storeu_ps(y.as_mut_ptr().add(16 * half), _mm512_mul_ps(q, d));
        }
    }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dequant_q4_0_avx2(src: &[u8], dst: &mut [f32]) {
    let mask = _mm_set1_epi8(0x0F);
    let eight = _mm256_set1_epi32(8);
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let qs = _mm_loadu_si128(b.as_ptr().add(2) as *const __m128i);
        let nib = [
            _mm_and_si128(qs, mask),
            _mm_and_si128(_mm_srli_epi16::<4>(qs), mask),
        ];
        for (h, n) in nib.into_iter().enumerate() {
            for part in 0..2 {
                let n8 = if part == 0 { n } else { _mm_srli_si128::<8>(n) };
                let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(n8), eight);
                let v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
                _mm256_storeu_ps(y.as_mut_ptr().add(16 * h + 8 * part), v);
            }
        }
    }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dequant_q4_1_avx2(src: &[u8], dst: &mut [f32]) {
    let mask = _mm_set1_epi8(0x0F);
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let m = _mm256_set1_ps(f16_at(b, 2));
        let qs = _mm_loadu_si128(b.as_ptr().add(4) as *const __m128i);
        let nib = [
            _mm_and_si128(qs, mask),
            _mm_and_si128(_mm_srli_epi16::<4>(qs), mask),
        ];
        for (h, n) in nib.into_iter().enumerate() {
            for part in 0..2 {
                let n8 = if part == 0 { n } else { _mm_srli_si128::<8>(n) };
                let q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(n8));
                let v = _mm256_add_ps(_mm256_mul_ps(d, q), m);
                _mm256_storeu_ps(y.as_mut_ptr().add(16 * h + 8 * part), v);
            }
        }
    }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dequant_q8_0_avx2(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        for part in 0..4 {
            let q = _mm_loadl_epi64(b.as_ptr().add(2 + 8 * part) as *const __m128i);
            let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_storeu_ps(y.as_mut_ptr().add(8 * part), _mm256_mul_ps(q, d));
        }
    }
}

/// bf16 to f32 as `half::bf16::to_f32` (the scalar dequantizer): the bits
/// shifted up 16, a NaN made quiet (0x0040 set) on the way.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dequant_bf16_avx512(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let full = n / 16 * 16;
    let (abs, inf, quiet) = (
        _mm512_set1_epi32(0x7fff),
        _mm512_set1_epi32(0x7f80),
        _mm512_set1_epi32(0x40),
    );
    let mut i = 0;
    while i < full {
        let h = _mm256_loadu_si256(src.as_ptr().add(2 * i) as *const __m256i);
        let v = _mm512_cvtepu16_epi32(h);
        let nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(v, abs), inf);
        let v = _mm512_mask_or_epi32(v, nan, v, quiet);
        _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), _mm512_slli_epi32::<16>(v));
        i += 16;
    }
    super::bf16_tail(&src[2 * full..], &mut dst[full..n]);
}

/// As [`dequant_bf16_avx512`], 8 lanes.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dequant_bf16_avx2(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let full = n / 8 * 8;
    let (abs, inf, quiet) = (
        _mm256_set1_epi32(0x7fff),
        _mm256_set1_epi32(0x7f80),
        _mm256_set1_epi32(0x40),
    );
    let mut i = 0;
    while i < full {
        let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
        let v = _mm256_cvtepu16_epi32(h);
        let nan = _mm256_cmpgt_epi32(_mm256_and_si256(v, abs), inf);
        let v = _mm256_or_si256(v, _mm256_and_si256(nan, quiet));
        _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), _mm256_slli_epi32::<16>(v));
        i += 8;
    }
    super::bf16_tail(&src[2 * full..], &mut dst[full..n]);
}

/// F16 to f32 with F16C, 16 elements per step (`vcvtph2ps`, exact: every
/// f16 is an f32; the tail per element through the same instruction).
///
/// # Safety
/// The CPU must support AVX-512F and F16C.
#[target_feature(enable = "avx512f,f16c")]
pub(super) unsafe fn dequant_f16_avx512(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let full = n / 16 * 16;
    let mut i = 0;
    while i < full {
        let h = _mm256_loadu_si256(src.as_ptr().add(2 * i) as *const __m256i);
        _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
        i += 16;
    }
    super::f16_tail(&src[2 * full..], &mut dst[full..n]);
}

/// As [`dequant_f16_avx512`], 8 lanes.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn dequant_f16_avx2(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let full = n / 8 * 8;
    let mut i = 0;
    while i < full {
        let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    super::f16_tail(&src[2 * full..], &mut dst[full..n]);
}
