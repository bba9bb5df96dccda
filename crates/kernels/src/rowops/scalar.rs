//! The scalar references of the row ops: plain loops, `f32::exp`, sums
//! that feed a normalisation accumulated left to right in f64 (as ggml
//! sums them in double). They are also the path taken on machines without
//! AVX2, and what the SIMD versions in `x86.rs` are tested against.

/// RMS normalisation: `out[i] = x[i] * (1 / sqrt(mean(x^2) + eps)) * weight[i]`
/// (ggml's `rms_norm` followed by the multiply by the norm weight).
/// Panics if the lengths differ.
pub fn rmsnorm_scalar(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    assert!(
        out.len() == x.len() && weight.len() == x.len(),
        "rmsnorm of different lengths"
    );
    if x.is_empty() {
        return;
    }
    let ss = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
    scale_rows(out, x, weight, ss, eps);
}

/// `out[i] = x[i] * scale * weight[i]` for the sum of squares `ss`: the
/// second half of every rmsnorm path, so they differ only in `ss`.
#[inline]
pub(crate) fn scale_rows(out: &mut [f32], x: &[f32], weight: &[f32], ss: f64, eps: f32) {
    let scale = 1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt();
    // Auto-vectorised: each element is the same two multiplies anyway.
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// Softmax in place: `x[i] = exp(x[i] - max) / sum`, the sum left to right
/// in f64. An empty or all `-inf` slice is left alone; `-inf` entries
/// (masked positions) become 0.
pub fn softmax_scalar(x: &mut [f32]) {
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

/// The SwiGLU gate: `gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i]`.
/// Panics if the lengths differ.
pub fn silu_mul_scalar(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul of different lengths");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `x[i] = exp(x[i])` with `f32::exp`.
pub fn exp_scalar(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.exp());
}
