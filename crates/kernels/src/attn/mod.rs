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

/// Causal attention of `g = last.len()` queries that read one KV head:
/// query `j` (`q[j * d..][..d]`) attends to keys and values `0..=last[j]`
/// (rows `stride` apart in `k` and `v`), and
/// `out[j * d..][..d] = softmax(scale * q_j . K) . V`. `scores` is scratch,
/// grown as needed (keep one per thread to allocate nothing per call).
///
/// Each query's output has the same bits as a call with that query alone,
/// so rows batched together, split across threads, or fed one at a time
/// agree exactly. A group shares its key and value loads: on AVX-512 each
/// block of 16 keys is converted to f32 once for all the queries that see
/// it, and each value row once per 6 queries. The scores are those of
/// [`dot_f16_rows`], the softmax [`crate::softmax_fast`], the sum that of
/// [`axpy_f16_rows`] from zero; [`attend_f16_scalar`] is the reference.
///
/// Panics if `q` and `out` are not `g` rows of the same length or the
/// keys and values are too short.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16(
    q: &[f32],
    last: &[usize],
    k: &[f16],
    v: &[f16],
    stride: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let Some(d) = check_attend(q, last, k, v, stride, out) else {
        return;
    };
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16) && has_f16_simd() && Cpu::get().isa() == Isa::Avx512 {
        // SAFETY: AVX-512F and F16C detected (Cpu names only detected
        // ISAs); shapes and bounds checked above.
        return unsafe { x86::attend_512(q, last, k, v, stride, scale, scores, out) };
    }
    for ((qj, oj), &lj) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)).zip(last) {
        scores.clear();
        scores.resize(lj + 1, 0.0);
        dot_f16_rows(qj, k, stride, scale, scores);
        crate::softmax_fast(scores);
        oj.fill(0.0);
        axpy_f16_rows(oj, scores, v, stride);
    }
}

/// Reference for [`attend_f16`]: scalar dots, [`crate::softmax_inplace`]
/// and scalar sums, one query at a time.
pub fn attend_f16_scalar(
    q: &[f32],
    last: &[usize],
    k: &[f16],
    v: &[f16],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let Some(d) = check_attend(q, last, k, v, stride, out) else {
        return;
    };
    for ((qj, oj), &lj) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)).zip(last) {
        let mut s: Vec<f32> = (0..=lj)
            .map(|t| dot_f16_scalar(qj, &k[t * stride..t * stride + d]) * scale)
            .collect();
        crate::softmax_inplace(&mut s);
        oj.fill(0.0);
        for (t, &p) in s.iter().enumerate() {
            axpy_f16_scalar(oj, p, &v[t * stride..t * stride + d]);
        }
    }
}

/// The head size of an [`attend_f16`] call (`None`: no queries), after
/// checking its shapes and bounds.
fn check_attend(
    q: &[f32],
    last: &[usize],
    k: &[f16],
    v: &[f16],
    stride: usize,
    out: &[f32],
) -> Option<usize> {
    let g = last.len();
    assert_eq!(
        q.len(),
        out.len(),
        "attend: queries and outputs differ in size"
    );
    if g == 0 {
        assert!(q.is_empty(), "attend: queries without positions");
        return None;
    }
    assert!(q.len().is_multiple_of(g), "attend: queries not {g} rows");
    let d = q.len() / g;
    let max = *last.iter().max()?;
    assert!(
        max * stride + d <= k.len() && max * stride + d <= v.len(),
        "attend: keys or values too short"
    );
    Some(d)
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
mod x86;

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
            for (n, stride) in [
                (1, len),
                (5, len + 3),
                (16, len),
                (17, len + 1),
                (40, len + 5),
            ] {
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

    fn random_f16(rng: &mut impl Rng, n: usize) -> Vec<f16> {
        (0..n)
            .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect()
    }

    #[test]
    fn attend_groups_are_bit_identical_to_single_queries() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut sc = Vec::new();
        for d in [7, 8, 16, 48, 64, 80, 128, 144] {
            let stride = 3 * d + 5;
            let n_keys = 70;
            let k = random_f16(&mut rng, n_keys * stride);
            let v = random_f16(&mut rng, n_keys * stride);
            for g in [1, 2, 3, 5, 6, 7, 12, 13] {
                let q: Vec<f32> = (0..g * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let last: Vec<usize> = (0..g)
                    .map(|j| match j % 4 {
                        0 => rng.gen_range(0..n_keys),
                        1 => 15 + j,
                        2 => 16 * (j % 3),
                        _ => n_keys - 1 - j,
                    })
                    .collect();
                let mut out = vec![f32::NAN; g * d];
                attend_f16(&q, &last, &k, &v, stride, 0.125, &mut sc, &mut out);
                let mut want = vec![0f32; g * d];
                attend_f16_scalar(&q, &last, &k, &v, stride, 0.125, &mut want);
                for j in 0..g {
                    let (qj, lj) = (&q[j * d..(j + 1) * d], last[j]);
                    let mut alone = vec![0f32; d];
                    attend_f16(qj, &[lj], &k, &v, stride, 0.125, &mut sc, &mut alone);
                    // The composition the doc names.
                    let mut p = vec![0f32; lj + 1];
                    dot_f16_rows(qj, &k, stride, 0.125, &mut p);
                    crate::softmax_fast(&mut p);
                    let mut composed = vec![0f32; d];
                    axpy_f16_rows(&mut composed, &p, &v, stride);
                    let oj = &out[j * d..(j + 1) * d];
                    for i in 0..d {
                        let ctx = format!("d {d} g {g} query {j} last {lj} lane {i}");
                        assert_eq!(oj[i].to_bits(), alone[i].to_bits(), "{ctx}");
                        assert_eq!(oj[i].to_bits(), composed[i].to_bits(), "{ctx}");
                        let w = want[j * d + i];
                        assert!((oj[i] - w).abs() <= 1e-5, "{ctx}: {} vs {w}", oj[i]);
                    }
                }
            }
        }
    }
}
