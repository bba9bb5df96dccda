//! Q4_0 cache blocks rounded with a searched scale: less error than
//! llama.cpp's plain rounding, and no shrinkage.
//!
//! llama.cpp writes its q4_0 cache with `quantize_row_q4_0_ref`
//! ([`super::quant::quantize_q4_0`]): `d = max / -8` (`max` the element of
//! largest magnitude), each value to the nearest `d * (q - 8)`. That puts
//! the block's extreme exactly on a level and sizes every step by it, which
//! is not the best Q4_0 encoding of the block: a slightly smaller step
//! (the extreme clipped to the outer level) or a slightly larger one (the
//! far side's `+7` level used) usually leaves less error. The format (one
//! f16 scale, 32 nibbles) is fixed: the attention kernels and the prefix
//! cache read it; the scale and the codes are cria's choice.
//!
//! [`quantize_q4_0_lsq`], per block `x` of 32:
//! 1. rounds `x` with each of 8 scales `max / c`, `c` in
//!    `-7.0, -7.25, .., -8.75` ([`STEPS`]), and keeps the codes `l` that
//!    fit it best up to a scale: the largest `sum(x l)^2 / sum(l^2)`;
//! 2. sets `d = sum(x^2) / sum(x l)`, the scale at which the decoded block
//!    `d l` projects onto `x` exactly (`x . d l = |x|^2`), rounds it to f16
//!    (what the block stores) and rounds `x` again to the nearest levels of
//!    the stored scale;
//! 3. keeps that only if its squared error ([`sq_error`]) is below the
//!    plain rounding's, which it returns otherwise: never worse, block by
//!    block.
//!
//! Step 2 is not the least-squares scale `sum(x l) / sum(l^2)`: that one
//! has a little less squared error but shrinks every key and value towards
//! zero by `|e|^2 / |x|^2` (its error is orthogonal to the decoded block,
//! not to `x`), the same fraction for all positions, which acts on
//! attention like a temperature. Measured on the default model (GPL-3,
//! 14 chunks, each against cria's f16 cache, an experimental build
//! switching the two; BENCHMARKS.md): q4_0 keys with f16 values, plain
//! rounding 0.0672 mean KLD, least-squares scale 0.0659, this scale 0.0630
//! (0.0638 with this file's exact arithmetic); values alone 0.0109,
//! 0.0100, 0.0099.
//!
//! On Gaussian blocks the squared error is about 11 % below the plain
//! rounding's (the least-squares scale: 11.3 %; ggml's 19 scales at steps of
//! 0.1: 11.5 %; a search over 2400 scales: 11.7 %).
//!
//! Why a second scale search beside the weight quantizer's
//! `make_qx_quants` (crates/kernels/src/quant/kquants.rs): that one is
//! byte-identical to llama-quantize (19 scales, a weight per element, its
//! sums in ggml's order, the least-squares f32 scale); this one runs for
//! every cached token on the forward pass's serial path, so the AVX2 kernel
//! keeps its 8 candidates in the lanes of one register (the loop over the
//! 32 values is the only loop), and it scores the f16 scale actually
//! stored. [`quantize_q4_0_lsq_scalar`] is the reference; every sum has a
//! fixed order, so the AVX2 kernel gives its bits (tested). Other ISAs run
//! the reference.
//!
//! Edge cases, none of which panics:
//! - a block holding inf or NaN takes the plain rounding unchanged (its
//!   scale is then infinite or its codes arbitrary: the row was not a
//!   number to begin with, and attention over it is NaN in llama.cpp too);
//! - a block whose largest magnitude is below [`TINY`] (denormals
//!   included) is stored as zero (`d = 0`, every code 8): any scale for it
//!   underflows f16 to zero, so it decodes to zeros whichever codes are
//!   stored, and these are in range (the plain rounding's `1 / d`
//!   overflows there and its codes do not fit a nibble);
//! - a block so large that a sum overflows f32 (|x| above ~1e18) gets a
//!   non-finite scale from step 2 and keeps the plain rounding.

use super::quant::{quantize_q4_0, QBLOCK};
use half::f16;

/// The candidate scales are `max / c` for these `c`; `-8` is llama.cpp's.
pub const STEPS: [f32; 8] = [-7.0, -7.25, -7.5, -7.75, -8.0, -8.25, -8.5, -8.75];

/// Below this largest magnitude a block is stored as zero: `max / 7` is
/// below half f16's smallest subnormal (2^-25), so every candidate scale,
/// and the plain rounding's, rounds to zero.
pub const TINY: f32 = 2.0e-7;

/// `1.5 * 2^23`: adding and removing it rounds an f32 of magnitude at most
/// `2^22` to the nearest integer, ties to even (see `round_half_even`).
const MAGIC: f32 = 12_582_912.0;

/// Quantizes the 32 values `x[..32]` to Q4_0 (see the module docs): the
/// f16 scale and the 32 unsigned quants (0..=15, `x ~ d * (q - 8)`).
/// Panics if `x` is shorter than 32 (a caller's bug, not input).
pub fn quantize_q4_0_lsq(x: &[f32], q: &mut [u8; QBLOCK]) -> f16 {
    let x: &[f32; QBLOCK] = x[..QBLOCK].try_into().expect("32 values");
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected.
            return unsafe { lsq_avx2(x, q) };
        }
    }
    quantize_q4_0_lsq_scalar(x, q)
}

/// The reference for [`quantize_q4_0_lsq`].
pub fn quantize_q4_0_lsq_scalar(x: &[f32; QBLOCK], q: &mut [u8; QBLOCK]) -> f16 {
    let d_ref = quantize_q4_0(x, q);
    let (mut amax, mut max) = (0f32, 0f32);
    let mut finite = true;
    for &v in x {
        finite &= v.is_finite();
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    if !finite {
        return d_ref;
    }
    if amax < TINY {
        *q = [8; QBLOCK];
        return f16::ZERO;
    }
    // (8) candidate inverse scales; |x * iscale| <= 8.75.
    let inv = 1.0 / max;
    let iscale: [f32; 8] = std::array::from_fn(|c| STEPS[c] * inv);
    // (4 partial sums by i % 4, 8 candidates) sums of x l and l l.
    let (mut sxl, mut sll) = ([[0f32; 8]; 4], [[0f32; 8]; 4]);
    for (i, &v) in x.iter().enumerate() {
        for c in 0..8 {
            let l = level(v * iscale[c]);
            sxl[i % 4][c] += v * l;
            sll[i % 4][c] += l * l;
        }
    }
    let fold = |s: &[[f32; 8]; 4]| -> [f32; 8] {
        std::array::from_fn(|c| (s[0][c] + s[1][c]) + (s[2][c] + s[3][c]))
    };
    let (sxl, sll) = (fold(&sxl), fold(&sll));
    let best = best_candidate(&sxl, &sll, inv);
    // (8) lanes of x^2 over the 4 chunks of 8.
    let mut sxx = [0f32; 8];
    for xs in x.chunks_exact(8) {
        for j in 0..8 {
            sxx[j] += xs[j] * xs[j];
        }
    }
    let d16 = f16::from_f32(tree8(sxx) / sxl[best]);
    let d = d16.to_f32();
    if d == 0.0 || !d.is_finite() {
        return d_ref;
    }
    let id = 1.0 / d;
    let mut ql = [0u8; QBLOCK];
    for (o, &v) in ql.iter_mut().zip(x) {
        *o = (level(v * id) + 8.0) as u8;
    }
    if sq_error(x, d, &ql) < sq_error(x, d_ref.to_f32(), q) {
        *q = ql;
        d16
    } else {
        d_ref
    }
}

/// The first candidate with the largest gain `(sxl / max)^2 / sll`
/// (`inv = 1 / max`). `|sxl / max| <= 32 * 8`, so the gains are finite for
/// any finite block, and the largest element rounds to -7 or -8 under
/// every candidate, so `sll >= 49`.
#[inline(always)]
fn best_candidate(sxl: &[f32; 8], sll: &[f32; 8], inv: f32) -> usize {
    let gain: [f32; 8] = std::array::from_fn(|c| {
        let t = sxl[c] * inv;
        (t * t) / sll[c]
    });
    let top = tree_max(gain);
    gain.iter().position(|&g| g == top).unwrap_or(0)
}

/// The largest of 8 finite values (the order does not matter for `max`).
#[inline(always)]
fn tree_max(a: [f32; 8]) -> f32 {
    let m = |a: f32, b: f32| if a > b { a } else { b };
    m(
        m(m(a[0], a[4]), m(a[1], a[5])),
        m(m(a[2], a[6]), m(a[3], a[7])),
    )
}

/// `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`: the order in which
/// a 256-bit register of 8 lanes folds.
#[inline(always)]
fn tree8<T: Copy + std::ops::Add<Output = T>>(a: [T; 8]) -> T {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// `t` clamped to -8..=7 and rounded to the nearest integer, ties to even
/// (a NaN `t` stays NaN; the callers pass finite values).
#[inline(always)]
fn level(t: f32) -> f32 {
    let t = if t < -8.0 { -8.0 } else { t };
    let t = if t > 7.0 { 7.0 } else { t };
    (t + MAGIC) - MAGIC
}

/// The squared error of the block `d * (q - 8)` against `x`, summed in f64
/// in 8 lanes folded by [`tree8`] (the AVX2 kernel's order).
pub fn sq_error(x: &[f32; QBLOCK], d: f32, q: &[u8; QBLOCK]) -> f64 {
    let mut acc = [0f64; 8];
    for (xs, qs) in x.chunks_exact(8).zip(q.chunks_exact(8)) {
        for j in 0..8 {
            let e = f64::from(xs[j]) - f64::from(d) * (f64::from(qs[j]) - 8.0);
            acc[j] += e * e;
        }
    }
    tree8(acc)
}

/// [`quantize_q4_0_lsq_scalar`] with the same arithmetic in AVX2 registers:
/// the 8 candidates in the lanes of one register for the search, the 32
/// values in 4 registers elsewhere. Blocks with inf or NaN, or below
/// [`TINY`], go to the reference.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lsq_avx2(x: &[f32; QBLOCK], q: &mut [u8; QBLOCK]) -> f16 {
    use std::arch::x86_64::*;
    let mut xv = [_mm256_setzero_ps(); 4];
    for (k, v) in xv.iter_mut().enumerate() {
        *v = _mm256_loadu_ps(x.as_ptr().add(8 * k));
    }
    // Finite (x * 0 == 0), the largest magnitude, and its first index.
    let zero = _mm256_setzero_ps();
    let sign = _mm256_set1_ps(-0.0);
    let mut fin = -1i32;
    let mut amv = zero;
    for v in xv {
        fin &= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_mul_ps(v, zero), zero));
        amv = _mm256_max_ps(amv, _mm256_andnot_ps(sign, v));
    }
    let m = _mm_max_ps(_mm256_castps256_ps128(amv), _mm256_extractf128_ps::<1>(amv));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    if fin & 0xff != 0xff || amax < TINY {
        return quantize_q4_0_lsq_scalar(x, q);
    }
    let av = _mm256_set1_ps(amax);
    let mut at = 0u32;
    for (k, v) in xv.iter().enumerate() {
        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, *v), av);
        at |= (_mm256_movemask_ps(eq) as u32) << (8 * k);
    }
    let max = x[at.trailing_zeros() as usize];

    // The plain rounding: q = min(15, trunc(x * id + 8.5)).
    let d_ref = max / -8.0;
    let id = _mm256_set1_ps(1.0 / d_ref);
    let fifteen = _mm256_set1_epi32(15);
    let half8 = _mm256_set1_ps(8.5);
    let mut qr = [_mm256_setzero_si256(); 4];
    for (q, v) in qr.iter_mut().zip(xv) {
        let t = _mm256_add_ps(_mm256_mul_ps(v, id), half8);
        *q = _mm256_min_epi32(_mm256_cvttps_epi32(t), fifteen);
    }
    let d_ref = f16::from_f32(d_ref);

    // The search: lane c is candidate c.
    let inv = 1.0 / max;
    let iscale = _mm256_mul_ps(_mm256_loadu_ps(STEPS.as_ptr()), _mm256_set1_ps(inv));
    // Four independent accumulator pairs (i % 4), unrolled so they stay in
    // registers.
    let (mut sxl, mut sll) = ([zero; 4], [zero; 4]);
    for x4 in x.chunks_exact(4) {
        for j in 0..4 {
            let v = _mm256_set1_ps(x4[j]);
            let l = level_avx2(_mm256_mul_ps(v, iscale));
            sxl[j] = _mm256_add_ps(sxl[j], _mm256_mul_ps(v, l));
            sll[j] = _mm256_add_ps(sll[j], _mm256_mul_ps(l, l));
        }
    }
    let (sxl, sll) = (fold_avx2(sxl), fold_avx2(sll));
    let best = best_avx2(&sxl, &sll, inv);
    let mut sxx = zero;
    for v in xv {
        sxx = _mm256_add_ps(sxx, _mm256_mul_ps(v, v));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sxx);
    let d16 = f16::from_f32(tree8(lanes) / sxl[best]);
    let d = d16.to_f32();
    if d == 0.0 || !d.is_finite() {
        store_codes(qr, q);
        return d_ref;
    }
    let id = _mm256_set1_ps(1.0 / d);
    let eight = _mm256_set1_ps(8.0);
    let mut ql = [_mm256_setzero_si256(); 4];
    for (q, v) in ql.iter_mut().zip(xv) {
        *q = _mm256_cvttps_epi32(_mm256_add_ps(level_avx2(_mm256_mul_ps(v, id)), eight));
    }
    if sq_error_avx2(&xv, d, &ql) < sq_error_avx2(&xv, d_ref.to_f32(), &qr) {
        store_codes(ql, q);
        d16
    } else {
        store_codes(qr, q);
        d_ref
    }
}

/// [`level`] in 8 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn level_avx2(t: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-8.0)), _mm256_set1_ps(7.0));
    let magic = _mm256_set1_ps(MAGIC);
    _mm256_sub_ps(_mm256_add_ps(t, magic), magic)
}

/// [`best_candidate`] in 8 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn best_avx2(sxl: &[f32; 8], sll: &[f32; 8], inv: f32) -> usize {
    use std::arch::x86_64::*;
    let t = _mm256_mul_ps(_mm256_loadu_ps(sxl.as_ptr()), _mm256_set1_ps(inv));
    let g = _mm256_div_ps(_mm256_mul_ps(t, t), _mm256_loadu_ps(sll.as_ptr()));
    let m = _mm256_max_ps(g, _mm256_permute2f128_ps::<1>(g, g));
    let m = _mm256_max_ps(m, _mm256_shuffle_ps::<0b01_00_11_10>(m, m));
    let m = _mm256_max_ps(m, _mm256_shuffle_ps::<0b10_11_00_01>(m, m));
    let eq = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(g, m));
    (eq as u32 | 0x100).trailing_zeros() as usize & 7
}

/// `(s0 + s1) + (s2 + s3)` lane by lane.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn fold_avx2(s: [std::arch::x86_64::__m256; 4]) -> [f32; 8] {
    use std::arch::x86_64::*;
    let mut o = [0f32; 8];
    let f = _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]));
    _mm256_storeu_ps(o.as_mut_ptr(), f);
    o
}

/// [`sq_error`] of `x` (4 registers) and the codes `q` (0..=15, 4 registers
/// of 8 i32).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sq_error_avx2(
    x: &[std::arch::x86_64::__m256; 4],
    d: f32,
    q: &[std::arch::x86_64::__m256i; 4],
) -> f64 {
    use std::arch::x86_64::*;
    let dv = _mm256_set1_pd(f64::from(d));
    let eight = _mm256_set1_epi32(8);
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for k in 0..4 {
        let l = _mm256_sub_epi32(q[k], eight);
        for (acc, xs, ls) in [
            (
                &mut lo,
                _mm256_castps256_ps128(x[k]),
                _mm256_castsi256_si128(l),
            ),
            (
                &mut hi,
                _mm256_extractf128_ps::<1>(x[k]),
                _mm256_extracti128_si256::<1>(l),
            ),
        ] {
            let e = _mm256_sub_pd(
                _mm256_cvtps_pd(xs),
                _mm256_mul_pd(dv, _mm256_cvtepi32_pd(ls)),
            );
            *acc = _mm256_add_pd(*acc, _mm256_mul_pd(e, e));
        }
    }
    let mut a = [0f64; 8];
    _mm256_storeu_pd(a.as_mut_ptr(), lo);
    _mm256_storeu_pd(a.as_mut_ptr().add(4), hi);
    tree8(a)
}

/// Writes 4 registers of 8 codes (i32 in 0..=15) to `q` in order.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_codes(c: [std::arch::x86_64::__m256i; 4], q: &mut [u8; QBLOCK]) {
    use std::arch::x86_64::*;
    // packs interleave 128-bit lanes: dwords a0-3 b0-3 c0-3 d0-3 a4-7 ..
    let ab = _mm256_packs_epi32(c[0], c[1]);
    let cd = _mm256_packs_epi32(c[2], c[3]);
    let bytes = _mm256_packus_epi16(ab, cd);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let bytes = _mm256_permutevar8x32_epi32(bytes, order);
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::cmp::Ordering::{Equal, Less};

    fn check(x: &[f32; QBLOCK]) -> (f16, [u8; QBLOCK]) {
        let mut q = [0u8; QBLOCK];
        let d = quantize_q4_0_lsq(x, &mut q);
        let mut qp = [0u8; QBLOCK];
        let dp = quantize_q4_0_lsq_scalar(x, &mut qp);
        assert_eq!((d.to_bits(), q), (dp.to_bits(), qp), "{x:?}");
        assert!(q.iter().all(|&q| q <= 15), "{q:?}");
        let mut qr = [0u8; QBLOCK];
        let dr = quantize_q4_0(x, &mut qr);
        let (e, er) = (sq_error(x, d.to_f32(), &q), sq_error(x, dr.to_f32(), &qr));
        // sq_error against a plain sequential sum.
        let naive: f64 = (0..QBLOCK)
            .map(|i| {
                let e = f64::from(x[i]) - f64::from(d.to_f32()) * (f64::from(q[i]) - 8.0);
                e * e
            })
            .sum();
        if naive.is_finite() {
            assert!((naive - e).abs() <= 1e-12 * naive, "{naive} {e}");
        }
        // NaN errors (non-finite blocks) must come with the plain bytes.
        if !matches!(e.partial_cmp(&er), Some(Less | Equal)) {
            assert_eq!((d.to_bits(), q), (dr.to_bits(), qr), "{x:?}");
        }
        (d, q)
    }

    /// The plain rounding's squared error over the new one's, summed over
    /// many blocks of `gen`.
    fn gain(rng: &mut impl Rng, mut gen: impl FnMut(&mut dyn rand::RngCore) -> f32) -> f64 {
        let (mut new, mut old) = (0f64, 0f64);
        for _ in 0..4000 {
            let x: [f32; QBLOCK] = std::array::from_fn(|_| gen(rng));
            let (d, q) = check(&x);
            let mut qr = [0u8; QBLOCK];
            let dr = quantize_q4_0(&x, &mut qr);
            new += sq_error(&x, d.to_f32(), &q);
            old += sq_error(&x, dr.to_f32(), &qr);
        }
        old / new
    }

    #[test]
    fn never_worse_than_the_plain_rounding_on_random_blocks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        // Gaussian (sum of uniforms), uniform, heavy-tailed, scaled.
        let gauss = gain(&mut rng, |r| {
            (0..12).map(|_| r.gen::<f32>()).sum::<f32>() - 6.0
        });
        let uniform = gain(&mut rng, |r| r.gen_range(-3.0..3.0));
        let heavy = gain(&mut rng, |r| {
            let u: f32 = r.gen_range(0.001..1.0);
            (1.0 / u - 1.0) * if r.gen::<bool>() { 1.0 } else { -1.0 }
        });
        let tiny = gain(&mut rng, |r| r.gen_range(-1e-3..1e-3));
        eprintln!("error ratio plain / search: Gaussian {gauss:.4}, uniform {uniform:.4}, heavy-tailed {heavy:.4}, small {tiny:.4}");
        // The search must pay for itself on the shapes a cache holds.
        assert!(gauss > 1.10, "Gaussian: {gauss}");
        assert!(
            uniform > 1.0 && heavy > 1.0 && tiny > 1.0,
            "{uniform} {heavy} {tiny}"
        );
    }

    #[test]
    fn adversarial_blocks() {
        let one = |at: usize, v: f32, rest: f32| -> [f32; QBLOCK] {
            let mut x = [rest; QBLOCK];
            x[at] = v;
            x
        };
        // All zeros: scale 0, every quant 8 (the plain rounding's bytes).
        let (d, q) = check(&[0.0; QBLOCK]);
        assert_eq!((d.to_f32(), q), (0.0, [8; QBLOCK]));
        // All equal: exact either way.
        for v in [1.0f32, -3.5, 0.75, 60000.0] {
            let x = [v; QBLOCK];
            let (d, q) = check(&x);
            assert_eq!(sq_error(&x, d.to_f32(), &q), 0.0, "{v}");
        }
        // One outlier, the rest zero or small noise.
        check(&one(5, 100.0, 0.0));
        check(&one(31, -7.0, 0.01));
        check(&one(0, 1e4, 1.0));
        // Two extremes of opposite sign.
        let mut x = [0.1f32; QBLOCK];
        x[3] = 8.0;
        x[9] = -7.9;
        check(&x);
        // Denormals and blocks below TINY: zero, as the plain rounding
        // decodes them.
        for x in [
            [1e-40f32; QBLOCK],
            one(7, 1e-39, -1e-41),
            one(1, 1.9e-7, 1e-8),
        ] {
            let (d, q) = check(&x);
            assert_eq!((d.to_bits(), q), (0, [8; QBLOCK]), "{x:?}");
            let mut qr = [0u8; QBLOCK];
            assert_eq!(quantize_q4_0(&x, &mut qr).to_f32(), 0.0, "{x:?}");
        }
        // Just above TINY: a scale f16 can hold (a few subnormal steps).
        check(&one(1, 9e-7, 1e-7));
        // Near f32's range: the stored scale overflows f16 either way.
        check(&one(2, 3e38, -1e38));
        check(&[-65504.0 * 8.0; QBLOCK]);
        // inf and NaN: no panic, the plain rounding's bytes.
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let x = one(4, bad, 0.5);
            let (d, q) = check(&x);
            let mut qr = [0u8; QBLOCK];
            assert_eq!((d.to_bits(), q), (quantize_q4_0(&x, &mut qr).to_bits(), qr));
        }
    }

    #[test]
    fn is_a_better_fit_on_a_known_block() {
        // A ramp 0..31: the plain rounding puts 31 on -8 steps of 31/8;
        // the search finds a step with lower error and says so.
        let x: [f32; QBLOCK] = std::array::from_fn(|i| i as f32);
        let (d, q) = check(&x);
        let mut qr = [0u8; QBLOCK];
        let dr = quantize_q4_0(&x, &mut qr);
        assert!(sq_error(&x, d.to_f32(), &q) < sq_error(&x, dr.to_f32(), &qr));
    }
}
