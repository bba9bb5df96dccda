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

/// The first index of the largest value of `x`, `None` if every value is
/// -inf or NaN (neither ever wins), one value at a time: the reference of
/// [`super::argmax`].
pub fn argmax_scalar(x: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        let better = match best {
            Some((_, b)) => v > b,
            None => v > f32::NEG_INFINITY,
        };
        if better {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// [`argmax_scalar`]'s answer in 16 portable lanes (each keeps its first
/// maximum, strictly greater replaces), which the compiler turns into
/// vector compares and blends: the path of machines without AVX2.
pub(crate) fn argmax_lanes(x: &[f32]) -> Option<usize> {
    const L: usize = 16;
    let mut best = [f32::NEG_INFINITY; L];
    let mut idx = [0u32; L];
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for (c, ch) in chunks.enumerate() {
        for k in 0..L {
            let gt = ch[k] > best[k];
            best[k] = if gt { ch[k] } else { best[k] };
            idx[k] = if gt { (c * L + k) as u32 } else { idx[k] };
        }
    }
    // The tail's indices follow every lane's: only a larger value wins.
    let base = x.len() - rest.len();
    let tail = argmax_scalar(rest).map(|i| (base + i, rest[i]));
    match (merge_lanes(&best, &idx), tail) {
        (Some(b), Some((t, tv))) if tv > x[b] => Some(t),
        (Some(b), _) => Some(b),
        (None, t) => t.map(|(t, _)| t),
    }
}

/// The lanes' candidates of a vector argmax, merged: the largest value,
/// ties to the lower index; lanes still at -inf never win.
pub(crate) fn merge_lanes(vals: &[f32], idx: &[u32]) -> Option<usize> {
    let mut best: Option<(u32, f32)> = None;
    for (&v, &i) in vals.iter().zip(idx) {
        if v == f32::NEG_INFINITY {
            continue;
        }
        match best {
            Some((bi, bv)) if v < bv || (v == bv && i > bi) => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i as usize)
}
