//! SIMD row ops of the forward pass: `exp` over slices and what is built
//! on it, [`softmax_fast`] (attention scores) and [`silu_mul`] (the SwiGLU
//! gate), and [`rmsnorm_fast`].
//!
//! The SIMD exp (AVX-512F, AVX2 + FMA) reduces `x = n ln2 + r` with
//! `|r| <= ln2 / 2` (Cody-Waite, two fused steps), evaluates a degree-7
//! polynomial for `e^r` (SLEEF's `expf` coefficients) by Horner's rule with
//! fused multiply-adds, and scales by `2^n` exactly, rounding once into
//! the subnormal range. It is within 1 ulp of `f32::exp` (a scan of every
//! 13th float in [-104, 89] found 99.5% equal, the rest 1 ulp off);
//! llama.cpp likewise uses its own vector exp, not libm's. Inputs are
//! clamped to `[-104, 89]` first: below, the result rounds to 0 (so
//! `-inf` gives 0); above, to `inf`. NaN stays NaN.
//!
//! Every lane runs the same instructions and a slice's tail goes through the
//! same vector code (masked or padded), so an element's result does not
//! depend on where in a slice it sits: a batch of rows gives the bits of the
//! rows one at a time. Sums (softmax, rmsnorm) are per row, over 16 or 8
//! lanes and then in a fixed order. Without AVX2 the scalar path uses
//! `f32::exp` and left-to-right sums (results then differ from the SIMD
//! paths in the last bits, as the dot products of different ISAs do).

use crate::simd::Cpu;
#[cfg(target_arch = "x86_64")]
use crate::simd::Isa;

/// `x[i] = exp(x[i])`.
pub fn exp_inplace(x: &mut [f32]) {
    exp_with(Cpu::get(), x)
}

/// Softmax in place with an f64 sum (as ggml's): `x[i] = exp(x[i] - max) /
/// sum`, the sum taken over f64 lanes and then reduced in a fixed order.
/// [`crate::softmax_inplace`] (f64 sum, `f32::exp`) is its reference. An empty or all `-inf` slice is left alone.
pub fn softmax_fast(x: &mut [f32]) {
    softmax_with(Cpu::get(), x)
}

/// The SwiGLU gate: `gate[i] = silu(gate[i]) * up[i]`, i.e.
/// `gate[i] / (1 + exp(-gate[i])) * up[i]`. Panics if the lengths differ.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    silu_mul_with(Cpu::get(), gate, up)
}

/// RMS normalisation: `out[i] = x[i] * (1 / sqrt(mean(x^2) + eps)) * weight[i]`,
/// the squares summed in f64 (exact squares, lane-parallel sums) as ggml
/// sums them in double. [`crate::rmsnorm`] (sequential f64 sum) is its
/// reference. Panics if the lengths
/// differ.
pub fn rmsnorm_fast(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    rmsnorm_with(Cpu::get(), out, x, weight, eps)
}

pub(crate) fn rmsnorm_with(cpu: Cpu, out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    assert!(
        out.len() == x.len() && weight.len() == x.len(),
        "rmsnorm of different lengths"
    );
    if x.is_empty() {
        return;
    }
    let ss = match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::sum_squares_512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::sum_squares_256(x) },
        _ => x.iter().map(|&v| v as f64 * v as f64).sum::<f64>(),
    };
    let scale = 1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt();
    // Auto-vectorised: each element is the same two multiplies anyway.
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// Reference for [`silu_mul`]: the same formula with `f32::exp`.
pub fn silu_mul_scalar(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul of different lengths");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

pub(crate) fn exp_with(cpu: Cpu, x: &mut [f32]) {
    match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::exp_512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::exp_256(x) },
        _ => x.iter_mut().for_each(|v| *v = v.exp()),
    }
}

pub(crate) fn softmax_with(cpu: Cpu, x: &mut [f32]) {
    match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::softmax_512(x) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::softmax_256(x) },
        _ => softmax_scalar(x),
    }
}

pub(crate) fn silu_mul_with(cpu: Cpu, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul of different lengths");
    match cpu.isa() {
        // SAFETY: a Cpu names only an ISA detected on this machine;
        // lengths checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::silu_mul_512(gate, up) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::silu_mul_256(gate, up) },
        _ => silu_mul_scalar(gate, up),
    }
}

/// The scalar path of [`softmax_fast`]: a left-to-right f64 sum.
fn softmax_scalar(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    const LO: f32 = -104.0;
    const HI: f32 = 89.0;
    const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
    // ln2 = LN2_HI + LN2_LO, LN2_HI the f32 nearest ln2.
    const LN2_HI: f32 = f32::from_bits(0x3f31_7218);
    const LN2_LO: f32 = f32::from_bits(0xb102_e308);
    /// e^r ~ 1 + r (1 + r (1/2 + r (C[0] + r (C[1] + ...)))), highest first.
    const C: [f32; 5] = [
        0.000_198_527_62,
        0.001_393_043_6,
        0.008_333_361,
        0.041_666_485,
        0.166_666_67,
    ];

    /// exp of 16 lanes.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_set1_ps(HI), _mm512_max_ps(_mm512_set1_ps(LO), x));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(C[0]);
        for c in &C[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }

    /// exp of 8 lanes; the same steps as [`exp16`], the scaling by `2^n`
    /// done as two exact powers of two (`n = n1 + n2`, each normal) so the
    /// result rounds once, also into the subnormal range.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_set1_ps(HI), _mm256_max_ps(_mm256_set1_ps(LO), x));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(C[0]);
        for c in &C[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        // n is in [-150, 129]: n1 in [-75, 64], n2 in [-75, 65].
        let ni = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32::<1>(ni);
        let n2 = _mm256_sub_epi32(ni, n1);
        let pow2 = |k: __m256i| {
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                k,
                _mm256_set1_epi32(127),
            )))
        };
        _mm256_mul_ps(_mm256_mul_ps(p, pow2(n1)), pow2(n2))
    }

    /// Sum of 16 lanes: halves, then quarters, then pairs (the order of
    /// [`crate::attn`]'s dot products).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn hsum16(v: __m512) -> f32 {
        let v = _mm256_add_ps(
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
        );
        hsum8(v)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum8(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    /// Lanes `0..n` set (`n <= 16`).
    #[inline]
    fn mask16(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// Sum of `x[i]^2` in f64 (each square exact), one fused multiply-add
    /// chain per f64 lane, the tail padded with zeros.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_squares_512(x: &[f32]) -> f64 {
        let mut acc = _mm512_setzero_pd();
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            let v = _mm512_cvtps_pd(_mm256_loadu_ps(c.as_ptr()));
            acc = _mm512_fmadd_pd(v, v, acc);
        }
        let mut buf = [0f32; 8];
        buf[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        let v = _mm512_cvtps_pd(_mm256_loadu_ps(buf.as_ptr()));
        _mm512_reduce_add_pd(_mm512_fmadd_pd(v, v, acc))
    }

    /// [`sum_squares_512`] on 4 f64 lanes.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_squares_256(x: &[f32]) -> f64 {
        let mut acc = _mm256_setzero_pd();
        let mut chunks = x.chunks_exact(4);
        for c in &mut chunks {
            let v = _mm256_cvtps_pd(_mm_loadu_ps(c.as_ptr()));
            acc = _mm256_fmadd_pd(v, v, acc);
        }
        let mut buf = [0f32; 4];
        buf[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        let v = _mm256_cvtps_pd(_mm_loadu_ps(buf.as_ptr()));
        let mut lanes = [0f64; 4];
        _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_fmadd_pd(v, v, acc));
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    }

    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_512(x: &mut [f32]) {
        let (n, p) = (x.len(), x.as_mut_ptr());
        let mut i = 0;
        while i + 16 <= n {
            _mm512_storeu_ps(p.add(i), exp16(_mm512_loadu_ps(p.add(i))));
            i += 16;
        }
        if i < n {
            let m = mask16(n - i);
            let v = _mm512_maskz_loadu_ps(m, p.add(i));
            _mm512_mask_storeu_ps(p.add(i), m, exp16(v));
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_256(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            _mm256_storeu_ps(c.as_mut_ptr(), exp8(_mm256_loadu_ps(c.as_ptr())));
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut buf = [0f32; 8];
            buf[..tail.len()].copy_from_slice(tail);
            _mm256_storeu_ps(buf.as_mut_ptr(), exp8(_mm256_loadu_ps(buf.as_ptr())));
            let k = tail.len();
            tail.copy_from_slice(&buf[..k]);
        }
    }

    /// Softmax of one row of attention scores; see [`super::softmax_fast`].
    /// The tail is loaded with `-inf` in the missing lanes, whose exp is 0.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn softmax_512(x: &mut [f32]) {
        let (n, p) = (x.len(), x.as_mut_ptr());
        let (full, m) = (n / 16 * 16, mask16(n % 16));
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut mx = ninf;
        for i in (0..full).step_by(16) {
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(p.add(i)));
        }
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, m, p.add(full)));
        let max = _mm512_reduce_max_ps(mx);
        if max == f32::NEG_INFINITY {
            return;
        }
        let mv = _mm512_set1_ps(max);
        // The sum in f64 lanes, as ggml sums the softmax in double.
        let mut sum = _mm512_setzero_pd();
        let add = |sum: __m512d, e: __m512| {
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(e),
            )));
            _mm512_add_pd(_mm512_add_pd(sum, lo), hi)
        };
        for i in (0..full).step_by(16) {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), mv));
            _mm512_storeu_ps(p.add(i), e);
            sum = add(sum, e);
        }
        let e = exp16(_mm512_sub_ps(
            _mm512_mask_loadu_ps(ninf, m, p.add(full)),
            mv,
        ));
        _mm512_mask_storeu_ps(p.add(full), m, e);
        sum = add(sum, e);
        let inv = _mm512_set1_ps((1.0 / _mm512_reduce_add_pd(sum)) as f32);
        for i in (0..full).step_by(16) {
            _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
        }
        let v = _mm512_maskz_loadu_ps(m, p.add(full));
        _mm512_mask_storeu_ps(p.add(full), m, _mm512_mul_ps(v, inv));
    }

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_256(x: &mut [f32]) {
        let full = x.len() / 8 * 8;
        let (head, tail) = x.split_at_mut(full);
        let mut buf = [f32::NEG_INFINITY; 8];
        buf[..tail.len()].copy_from_slice(tail);
        let bp = buf.as_mut_ptr();
        let mut mx = _mm256_loadu_ps(bp);
        for c in head.chunks_exact(8) {
            mx = _mm256_max_ps(mx, _mm256_loadu_ps(c.as_ptr()));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), mx);
        let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return;
        }
        let mv = _mm256_set1_ps(max);
        // The sum in f64 lanes, as ggml sums the softmax in double.
        let mut sum = _mm256_setzero_pd();
        let add = |sum: __m256d, e: __m256| {
            let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(e));
            let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e));
            _mm256_add_pd(_mm256_add_pd(sum, lo), hi)
        };
        for c in head.chunks_exact_mut(8) {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            sum = add(sum, e);
        }
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(bp), mv));
        _mm256_storeu_ps(bp, e);
        sum = add(sum, e);
        let mut lanes = [0f64; 4];
        _mm256_storeu_pd(lanes.as_mut_ptr(), sum);
        let inv = (1.0 / ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))) as f32;
        let iv = _mm256_set1_ps(inv);
        for c in head.chunks_exact_mut(8) {
            _mm256_storeu_ps(
                c.as_mut_ptr(),
                _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), iv),
            );
        }
        for (t, b) in tail.iter_mut().zip(&buf) {
            *t = b * inv;
        }
    }

    /// # Safety
    /// AVX-512F must be available; `gate.len() == up.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn silu_mul_512(gate: &mut [f32], up: &[f32]) {
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn one(g: __m512, u: __m512) -> __m512 {
            let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let s = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e));
            _mm512_mul_ps(s, u)
        }
        let (n, gp, up) = (gate.len(), gate.as_mut_ptr(), up.as_ptr());
        let mut i = 0;
        while i + 16 <= n {
            let v = one(_mm512_loadu_ps(gp.add(i)), _mm512_loadu_ps(up.add(i)));
            _mm512_storeu_ps(gp.add(i), v);
            i += 16;
        }
        if i < n {
            let m = mask16(n - i);
            let v = one(
                _mm512_maskz_loadu_ps(m, gp.add(i)),
                _mm512_maskz_loadu_ps(m, up.add(i)),
            );
            _mm512_mask_storeu_ps(gp.add(i), m, v);
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; `gate.len() == up.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul_256(gate: &mut [f32], up: &[f32]) {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn one(g: *mut f32, u: *const f32) {
            let gv = _mm256_loadu_ps(g);
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            let s = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0), e));
            _mm256_storeu_ps(g, _mm256_mul_ps(s, _mm256_loadu_ps(u)));
        }
        let full = gate.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            one(gate.as_mut_ptr().add(i), up.as_ptr().add(i));
        }
        let k = gate.len() - full;
        if k > 0 {
            let (mut g, mut u) = ([0f32; 8], [0f32; 8]);
            g[..k].copy_from_slice(&gate[full..]);
            u[..k].copy_from_slice(&up[full..]);
            one(g.as_mut_ptr(), u.as_ptr());
            gate[full..].copy_from_slice(&g[..k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;
    use rand::{Rng, SeedableRng};

    /// Distance in units in the last place between two finite floats of
    /// the same sign (0 and subnormals included).
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    fn simd_cpus() -> Vec<Cpu> {
        Cpu::all_available()
            .into_iter()
            .filter(|c| matches!(c.isa(), Isa::Avx2 | Isa::Avx512))
            .collect()
    }

    #[test]
    fn exp_is_within_one_ulp_of_std() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut xs: Vec<f32> = (0..200_000).map(|_| rng.gen_range(-110.0..90.0)).collect();
        xs.extend((0..100_000).map(|_| rng.gen_range(-1.0f32..1.0)));
        xs.extend((0..100_000).map(|_| rng.gen_range(-20.0f32..0.0)));
        // Every float in [-1, 1] near 0, the ends of the range and the
        // rounding boundaries of n.
        xs.extend((0..1000).map(|i| i as f32 * 1e-7));
        xs.extend([
            0.0, -0.0, 88.72, 88.73, 89.0, -87.3, -87.4, -103.9, -104.0, -200.0,
        ]);
        xs.extend((-300..300).map(|k| (k as f32 + 0.5) * std::f32::consts::LN_2));
        for cpu in simd_cpus() {
            let mut got = xs.clone();
            exp_with(cpu, &mut got);
            let mut worst = 0;
            for (&x, &g) in xs.iter().zip(&got) {
                let want = x.exp();
                let d = ulps(g, want);
                assert!(d <= 1, "{:?}: exp({x}) = {g}, std {want}", cpu.isa());
                worst = worst.max(d);
            }
            assert!(worst <= 1);
        }
    }

    #[test]
    fn exp_special_values() {
        for cpu in Cpu::all_available() {
            let mut x = [
                f32::NEG_INFINITY,
                -1000.0,
                f32::INFINITY,
                1000.0,
                0.0,
                f32::NAN,
            ];
            exp_with(cpu, &mut x);
            assert_eq!(x[0], 0.0, "{:?}", cpu.isa());
            assert_eq!(x[1], 0.0);
            assert_eq!(x[2], f32::INFINITY);
            assert_eq!(x[3], f32::INFINITY);
            assert_eq!(x[4], 1.0);
            assert!(x[5].is_nan());
        }
    }

    #[test]
    fn results_do_not_depend_on_position_in_the_slice() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let x: Vec<f32> = (0..100).map(|_| rng.gen_range(-12.0..12.0)).collect();
        let u: Vec<f32> = (0..100).map(|_| rng.gen_range(-2.0..2.0)).collect();
        for cpu in Cpu::all_available() {
            let mut whole = x.clone();
            exp_with(cpu, &mut whole);
            let mut gate = x.clone();
            silu_mul_with(cpu, &mut gate, &u);
            for start in 0..x.len() {
                for len in [1, 3, 8, 17] {
                    let end = (start + len).min(x.len());
                    let mut part = x[start..end].to_vec();
                    exp_with(cpu, &mut part);
                    assert_eq!(part, whole[start..end], "{:?}", cpu.isa());
                    let mut g = x[start..end].to_vec();
                    silu_mul_with(cpu, &mut g, &u[start..end]);
                    assert_eq!(g, gate[start..end]);
                }
            }
        }
    }

    #[test]
    fn silu_mul_matches_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 33, 1536] {
            let g: Vec<f32> = (0..len).map(|_| rng.gen_range(-30.0..30.0)).collect();
            let u: Vec<f32> = (0..len).map(|_| rng.gen_range(-3.0..3.0)).collect();
            let mut want = g.clone();
            silu_mul_scalar(&mut want, &u);
            for cpu in Cpu::all_available() {
                let mut got = g.clone();
                silu_mul_with(cpu, &mut got, &u);
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-30),
                        "{:?} {len}: {a} vs {b}",
                        cpu.isa()
                    );
                }
            }
        }
    }

    #[test]
    fn rmsnorm_matches_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        for len in [1, 7, 8, 9, 15, 16, 17, 64, 576, 1000] {
            let x: Vec<f32> = (0..len).map(|_| rng.gen_range(-4.0..4.0)).collect();
            let w: Vec<f32> = (0..len).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let mut want = vec![0f32; len];
            crate::rmsnorm(&x, &w, 1e-5, &mut want).unwrap();
            for cpu in Cpu::all_available() {
                let mut got = vec![0f32; len];
                rmsnorm_with(cpu, &mut got, &x, &w, 1e-5);
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs() + 1e-30,
                        "{:?} {len}: {a} vs {b}",
                        cpu.isa()
                    );
                }
            }
        }
    }

    #[test]
    fn softmax_matches_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for len in [1, 2, 7, 8, 9, 15, 16, 17, 31, 64, 65, 257, 1000] {
            let x: Vec<f32> = (0..len).map(|_| rng.gen_range(-20.0..20.0)).collect();
            let mut want = x.clone();
            crate::softmax_inplace(&mut want);
            for cpu in Cpu::all_available() {
                let mut got = x.clone();
                softmax_with(cpu, &mut got);
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs() + 1e-30 + (len as f32) * 1e-9 * b,
                        "{:?} {len}: {a} vs {b}",
                        cpu.isa()
                    );
                }
            }
        }
        for cpu in Cpu::all_available() {
            let mut masked = [0.0, f32::NEG_INFINITY, 0.0];
            softmax_with(cpu, &mut masked);
            assert_eq!(masked, [0.5, 0.0, 0.5]);
            let mut all = [f32::NEG_INFINITY; 3];
            softmax_with(cpu, &mut all);
            assert!(all.iter().all(|v| *v == f32::NEG_INFINITY));
            softmax_with(cpu, &mut []);
        }
    }
}
