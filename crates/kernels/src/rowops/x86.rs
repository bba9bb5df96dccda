//! The AVX-512F and AVX2 + FMA row ops (see the module above for the
//! method); each is checked against its scalar twin in `scalar.rs`.

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
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
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
    if full < n {
        // The lanes past the row get the maximum, so their exp is 1, not
        // an underflow: an exp that underflows (e^-104 for a -inf lane)
        // takes a microcode assist, which made this step half of a short
        // row's attention. They are zeroed before the sum (adding +0.0
        // leaves the f64 sum's bits as they were).
        let v = _mm512_mask_loadu_ps(mv, m, p.add(full));
        let e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(v, mv)));
        _mm512_mask_storeu_ps(p.add(full), m, e);
        sum = add(sum, e);
    }
    let inv = _mm512_set1_ps((1.0 / _mm512_reduce_add_pd(sum)) as f32);
    for i in (0..full).step_by(16) {
        _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
    }
    if full < n {
        let v = _mm512_maskz_loadu_ps(m, p.add(full));
        _mm512_mask_storeu_ps(p.add(full), m, _mm512_mul_ps(v, inv));
    }
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
    if !tail.is_empty() {
        // Padding lanes as in softmax_512: exp(0) instead of an underflow
        // (a microcode assist), then zeroed before the sum.
        buf[tail.len()..].fill(max);
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(bp), mv));
        _mm256_storeu_ps(bp, e);
        buf[tail.len()..].fill(0.0);
        sum = add(sum, _mm256_loadu_ps(bp));
    }
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

/// Vectors in flight per argmax loop (independent chains of compare and
/// blend, merged at the end).
const ARG_CHAINS: usize = 4;

/// [`super::argmax`] on 16 lanes x [`ARG_CHAINS`]: each lane keeps its
/// first maximum (strictly greater replaces, so NaN never enters), then
/// the lanes merge by value, ties to the lower index. The tail is loaded
/// masked, its padding -inf.
///
/// # Safety
/// AVX-512F must be available; `x.len() < u32::MAX - 64`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn argmax_512(x: &[f32]) -> Option<usize> {
    let (n, p) = (x.len(), x.as_ptr());
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut best = [ninf; ARG_CHAINS];
    let mut idx = [_mm512_setzero_si512(); ARG_CHAINS];
    let mut at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let step = _mm512_set1_epi32(16);
    let mut i = 0;
    while i + 16 * ARG_CHAINS <= n {
        for c in 0..ARG_CHAINS {
            let v = _mm512_loadu_ps(p.add(i + 16 * c));
            let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best[c]);
            best[c] = _mm512_mask_mov_ps(best[c], m, v);
            idx[c] = _mm512_mask_mov_epi32(idx[c], m, at);
            at = _mm512_add_epi32(at, step);
        }
        i += 16 * ARG_CHAINS;
    }
    // The last 0 to 63: later indices in chain 0, still in order there.
    while i < n {
        let v = _mm512_mask_loadu_ps(ninf, mask16((n - i).min(16)), p.add(i));
        let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best[0]);
        best[0] = _mm512_mask_mov_ps(best[0], m, v);
        idx[0] = _mm512_mask_mov_epi32(idx[0], m, at);
        at = _mm512_add_epi32(at, step);
        i += 16;
    }
    let (mut vals, mut ids) = ([0f32; 16 * ARG_CHAINS], [0u32; 16 * ARG_CHAINS]);
    for c in 0..ARG_CHAINS {
        _mm512_storeu_ps(vals.as_mut_ptr().add(16 * c), best[c]);
        _mm512_storeu_si512(ids.as_mut_ptr().add(16 * c) as *mut _, idx[c]);
    }
    super::scalar::merge_lanes(&vals, &ids)
}

/// [`argmax_512`] on 8 lanes; the tail padded with -inf.
///
/// # Safety
/// AVX2 must be available; `x.len() < u32::MAX - 64`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn argmax_256(x: &[f32]) -> Option<usize> {
    let n = x.len();
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut best = [ninf; ARG_CHAINS];
    let mut idx = [_mm256_setzero_ps(); ARG_CHAINS];
    let mut at = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let step = _mm256_set1_epi32(8);
    let mut step_one = |c: usize, v: __m256, at: &mut __m256i| {
        let m = _mm256_cmp_ps::<_CMP_GT_OQ>(v, best[c]);
        best[c] = _mm256_blendv_ps(best[c], v, m);
        idx[c] = _mm256_blendv_ps(idx[c], _mm256_castsi256_ps(*at), m);
        *at = _mm256_add_epi32(*at, step);
    };
    let mut i = 0;
    while i + 8 * ARG_CHAINS <= n {
        for c in 0..ARG_CHAINS {
            step_one(c, _mm256_loadu_ps(x.as_ptr().add(i + 8 * c)), &mut at);
        }
        i += 8 * ARG_CHAINS;
    }
    while i < n {
        let mut buf = [f32::NEG_INFINITY; 8];
        let k = (n - i).min(8);
        buf[..k].copy_from_slice(&x[i..i + k]);
        step_one(0, _mm256_loadu_ps(buf.as_ptr()), &mut at);
        i += 8;
    }
    let (mut vals, mut ids) = ([0f32; 8 * ARG_CHAINS], [0u32; 8 * ARG_CHAINS]);
    for c in 0..ARG_CHAINS {
        _mm256_storeu_ps(vals.as_mut_ptr().add(8 * c), best[c]);
        _mm256_storeu_ps(ids.as_mut_ptr().add(8 * c) as *mut f32, idx[c]);
    }
    super::scalar::merge_lanes(&vals, &ids)
}
