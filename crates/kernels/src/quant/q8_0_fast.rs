//! Q8_0 rows with SIMD: byte for byte the reference [`super::legacy::q8_0`]
//! (ggml's `quantize_row_q8_0_ref`, what llama-quantize and llama.cpp's
//! converter write) for every input, at a fraction of its cost. It is the
//! Q8_0 arm of [`super::quantize_row`], so `cria convert --outtype q8_0`
//! and `cria quantize ... Q8_0` both run it.
//!
//! Per block of 32, each step gives the reference's exact value:
//! - amax: a vector max of |x|. Max is order-free, except with a NaN (ggml's
//!   `MAX` lets a NaN replace amax and the next element replace the NaN),
//!   so a block holding a NaN goes to the reference instead.
//! - d = amax / 127 and id = 1 / d: the same IEEE divisions, as scalars;
//!   the scale goes through the same f16 conversion ([`super::fp16`]).
//! - `roundf(x * id)`, half away from zero: t = trunc(v), plus sign(v) when
//!   |v - t| >= 0.5. `v - t` is exact for every f32, so ties (v = k + 0.5)
//!   and their neighbours round as roundf does. (Adding 0.5 and truncating
//!   is not exact: 0.49999997 + 0.5 rounds up to 1.)
//! - C's `(int8_t)` cast, as gcc compiles it on x86-64 (`cvttss2si`, keep
//!   the low byte): `cvttps2dq` gives the same 0x8000_0000 for NaN and
//!   infinities (which occur when 1 / d overflows for a block of values
//!   below ~3.7e-37), then the low byte of each lane (`vpmovdb`, or a mask
//!   and unsigned packs on AVX2), never a saturating pack.
//!
//! x86-64 only (AVX-512F, AVX2), chosen at run time by [`Cpu`]; every other
//! CPU runs the reference. Hand-written: no crate quantizes to ggml's Q8_0
//! with its rounding.

use super::legacy;
use crate::simd::Cpu;

/// Quantizes `x` (whole blocks of 32) into `y` (34 bytes per block) on
/// `cpu`'s best path.
pub(super) fn row(cpu: Cpu, x: &[f32], y: &mut [u8]) {
    debug_assert!(x.len().is_multiple_of(32) && y.len() == x.len() / 32 * 34);
    match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine; the
        // kernels touch whole blocks of `x` and `y` only (chunks_exact).
        #[cfg(target_arch = "x86_64")]
        crate::Isa::Avx512 => unsafe { x86::row_avx512(x, y) },
        #[cfg(target_arch = "x86_64")]
        crate::Isa::Avx2 => unsafe { x86::row_avx2(x, y) },
        _ => {
            for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact_mut(34)) {
                legacy::q8_0(xb, yb);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::legacy;
    use std::arch::x86_64::*;

    /// d and id of a block without NaN, from its amax, as the reference
    /// computes them; the f16 scale is written to `yb[0..2]`.
    #[inline(always)]
    fn scale(amax: f32, yb: &mut [u8]) -> f32 {
        let d = amax / 127.0;
        yb[0..2].copy_from_slice(&crate::quant::fp16(d));
        if d != 0.0 {
            1.0 / d
        } else {
            0.0
        }
    }

    const ABS: i32 = 0x7fff_ffff;
    const SIGN: i32 = i32::MIN;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row_avx512(x: &[f32], y: &mut [u8]) {
        for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact_mut(34)) {
            let a = _mm512_loadu_ps(xb.as_ptr());
            let b = _mm512_loadu_ps(xb.as_ptr().add(16));
            // Lane i is unordered when a[i] or b[i] is NaN.
            if _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b) != 0 {
                legacy::q8_0(xb, yb);
                continue;
            }
            let m = _mm512_max_ps(abs512(a), abs512(b));
            let id = _mm512_set1_ps(scale(_mm512_reduce_max_ps(m), yb));
            let p = yb.as_mut_ptr().add(2);
            _mm_storeu_si128(p.cast(), q16(_mm512_mul_ps(a, id)));
            _mm_storeu_si128(p.add(16).cast(), q16(_mm512_mul_ps(b, id)));
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn abs512(v: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(v),
            _mm512_set1_epi32(ABS),
        ))
    }

    /// `(int8_t)roundf(v)` of 16 lanes (see the module doc).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn q16(v: __m512) -> __m128i {
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(abs512(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5));
        // copysign(1, v)
        let one = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(SIGN)),
            _mm512_castps_si512(_mm512_set1_ps(1.0)),
        ));
        let r = _mm512_mask_add_ps(t, up, t, one);
        _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r))
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_avx2(x: &[f32], y: &mut [u8]) {
        for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact_mut(34)) {
            let p = xb.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let nan = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_UNORD_Q>(v[0], v[1]),
                _mm256_cmp_ps::<_CMP_UNORD_Q>(v[2], v[3]),
            );
            if _mm256_movemask_ps(nan) != 0 {
                legacy::q8_0(xb, yb);
                continue;
            }
            let m = _mm256_max_ps(
                _mm256_max_ps(abs256(v[0]), abs256(v[1])),
                _mm256_max_ps(abs256(v[2]), abs256(v[3])),
            );
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
            let id = _mm256_set1_ps(scale(_mm_cvtss_f32(m), yb));
            let q = [
                q8(_mm256_mul_ps(v[0], id)),
                q8(_mm256_mul_ps(v[1], id)),
                q8(_mm256_mul_ps(v[2], id)),
                q8(_mm256_mul_ps(v[3], id)),
            ];
            // Each lane is 0..=255, so the unsigned packs keep it as is.
            // Per 128-bit half they interleave 4-lane groups:
            // q0[0..4] q1[0..4] q2[0..4] q3[0..4] | q0[4..8] q1[4..8] ...
            let packed = _mm256_packus_epi16(
                _mm256_packus_epi32(q[0], q[1]),
                _mm256_packus_epi32(q[2], q[3]),
            );
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            let bytes = _mm256_permutevar8x32_epi32(packed, order);
            _mm256_storeu_si256(yb.as_mut_ptr().add(2).cast(), bytes);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn abs256(v: __m256) -> __m256 {
        _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(ABS)))
    }

    /// The low byte of `(int8_t)roundf(v)` of 8 lanes, in 32-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn q8(v: __m256) -> __m256i {
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(abs256(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5));
        let one = _mm256_or_ps(
            _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(SIGN))),
            _mm256_set1_ps(1.0),
        );
        let r = _mm256_add_ps(t, _mm256_and_ps(up, one));
        _mm256_and_si256(_mm256_cvttps_epi32(r), _mm256_set1_epi32(0xff))
    }
}

#[cfg(test)]
mod tests;
