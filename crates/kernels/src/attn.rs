//! Vector ops of attention over an f16 or f32 KV cache: `q . k_t` and
//! `out += p * v_t`, with the f16 -> f32 conversion done in registers
//! (F16C / AVX-512) instead of one call per element.

use crate::simd::{Cpu, Isa};
use half::f16;

/// Sum of `a[i] * b[i]` (lengths must match; panics otherwise).
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16 of vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { x86::dot_f16(a, b) };
    }
    dot_f16_scalar(a, b)
}

/// `y[i] += alpha * x[i]` (lengths must match; panics otherwise).
pub fn axpy_f16(y: &mut [f32], alpha: f32, x: &[f16]) {
    assert_eq!(y.len(), x.len(), "axpy_f16 of vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { x86::axpy_f16(y, alpha, x) };
    }
    axpy_f16_scalar(y, alpha, x)
}

/// `out[t] = dot_f16(q, k[t * stride..][..q.len()]) * scale` for every
/// `t < out.len()`: the same bits as the one-key calls, dispatched once.
pub fn dot_f16_rows(q: &[f32], k: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    assert!(
        (n - 1) * stride + q.len() <= k.len(),
        "dot_f16_rows: keys too short"
    );
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        if q.len().is_multiple_of(16) && Cpu::get().isa() == Isa::Avx512 {
            // SAFETY: AVX-512F detected (Cpu names only detected ISAs);
            // bounds asserted.
            return unsafe { x86::dot_rows_512(q, k, stride, scale, out) };
        }
        // SAFETY: AVX2, FMA and F16C were detected; bounds asserted.
        return unsafe { x86::dot_rows(q, k, stride, scale, out) };
    }
    for (t, o) in out.iter_mut().enumerate() {
        *o = dot_f16_scalar(q, &k[t * stride..t * stride + q.len()]) * scale;
    }
}

/// `y += p[t] * v[t * stride..][..y.len()]` for every `t < p.len()`, in
/// order: the same bits as one [`axpy_f16`] per `t`, dispatched once and
/// with `y` kept in registers for head sizes 64 and 128.
pub fn axpy_f16_rows(y: &mut [f32], p: &[f32], v: &[f16], stride: usize) {
    let n = p.len();
    if n == 0 {
        return;
    }
    assert!(
        (n - 1) * stride + y.len() <= v.len(),
        "axpy_f16_rows: values too short"
    );
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        // SAFETY: AVX2, FMA and F16C were detected; bounds asserted.
        return unsafe { x86::axpy_rows(y, p, v, stride) };
    }
    for (t, &pt) in p.iter().enumerate() {
        axpy_f16_scalar(y, pt, &v[t * stride..t * stride + y.len()]);
    }
}

/// Reference for [`dot_f16`].
pub fn dot_f16_scalar(a: &[f32], b: &[f16]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

/// Reference for [`axpy_f16`].
pub fn axpy_f16_scalar(y: &mut [f32], alpha: f32, x: &[f16]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
fn has_f16_simd() -> bool {
    matches!(Cpu::get().isa(), Isa::Avx2 | Isa::Avx512) && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(dead_code)]
fn has_f16_simd() -> bool {
    let _ = (Cpu::get(), Isa::Scalar);
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2, FMA and F16C must be available; keys in bounds.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows(
        q: &[f32],
        k: &[f16],
        stride: usize,
        scale: f32,
        out: &mut [f32],
    ) {
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
            let v = _mm256_add_ps(
                _mm512_castps512_ps256(acc),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc))),
            );
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            *o = _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s))) * scale;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn f16_ops_match_reference_on_awkward_lengths() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 128, 200] {
            let a: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f16> = (0..len)
                .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
                .collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * y.to_f64()).sum();
            let got = dot_f16(&a, &b) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * (len as f64 + 1.0),
                "{len}: {got} vs {want}"
            );
            for (n, stride) in [(1, len), (5, len + 3)] {
                let kv: Vec<f16> = (0..n * stride)
                    .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
                    .collect();
                let mut s1 = vec![0f32; n];
                dot_f16_rows(&a, &kv, stride, 0.3, &mut s1);
                let mut y1 = a.clone();
                let mut y2 = a.clone();
                let p: Vec<f32> = (0..n).map(|_| rng.gen_range(0.0..1.0)).collect();
                axpy_f16_rows(&mut y1, &p, &kv, stride);
                for t in 0..n {
                    let kt = &kv[t * stride..t * stride + len];
                    assert_eq!(s1[t].to_bits(), (dot_f16(&a, kt) * 0.3).to_bits());
                    axpy_f16(&mut y2, p[t], kt);
                }
                for (p, q) in y1.iter().zip(&y2) {
                    assert_eq!(p.to_bits(), q.to_bits(), "{len}");
                }
            }
            let mut y1 = a.clone();
            let mut y2 = a.clone();
            axpy_f16(&mut y1, 0.37, &b);
            axpy_f16_scalar(&mut y2, 0.37, &b);
            for (p, q) in y1.iter().zip(&y2) {
                assert!((p - q).abs() <= 1e-6, "{len}: {p} vs {q}");
            }
        }
    }
}
