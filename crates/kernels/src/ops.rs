//! Small vector helpers for the forward pass: norms, activations,
//! softmax, f16 conversion. Plain scalar code; sums that feed a
//! normalisation are accumulated in f64 so results track a float64
//! reference closely.

use crate::error::{Error, Result};
use half::f16;

/// RMS normalisation: `out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]`
/// (ggml's `rms_norm` followed by the multiply by the norm weight).
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) -> Result<()> {
    if weight.len() != x.len() {
        return Err(Error::length("rmsnorm weight", x.len(), weight.len()));
    }
    if out.len() != x.len() {
        return Err(Error::length("rmsnorm output", x.len(), out.len()));
    }
    if x.is_empty() {
        return Ok(());
    }
    let sum: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * g;
    }
    Ok(())
}

/// Softmax in place: `x[i] = exp(x[i] - max) / sum`. An empty slice is left
/// alone; `-inf` entries (masked positions) become 0.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if x.is_empty() || max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SiLU (swish) in place: `x * sigmoid(x)`.
pub fn silu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + (-*v).exp();
    }
}

/// f16 -> f32, element by element (exact).
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) -> Result<()> {
    use half::slice::HalfFloatSliceExt;
    if src.len() != dst.len() {
        return Err(Error::length("f32 destination", src.len(), dst.len()));
    }
    src.convert_to_f32_slice(dst);
    Ok(())
}

/// f32 -> f16, rounding to nearest even.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) -> Result<()> {
    use half::slice::HalfFloatSliceExt;
    if src.len() != dst.len() {
        return Err(Error::length("f16 destination", src.len(), dst.len()));
    }
    dst.convert_from_f32_slice(src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-4.0f32..4.0)).collect()
    }

    fn assert_close(got: &[f32], want: &[f64], rel: f64) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= rel * w.abs().max(1e-6),
                "element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn rmsnorm_matches_f64() {
        for n in [1, 7, 33, 576, 1000] {
            let x = random(n, n as u64);
            let g = random(n, 99);
            let mut out = vec![0f32; n];
            rmsnorm(&x, &g, 1e-5, &mut out).unwrap();
            let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
            let s = 1.0 / (ms + 1e-5).sqrt();
            let want: Vec<f64> = x
                .iter()
                .zip(&g)
                .map(|(&v, &g)| v as f64 * s * g as f64)
                .collect();
            assert_close(&out, &want, 1e-5);
        }
        assert!(rmsnorm(&[1.0], &[1.0, 2.0], 1e-5, &mut [0.0]).is_err());
    }

    #[test]
    fn softmax_matches_f64() {
        for n in [1, 7, 33, 1000] {
            let mut x = random(n, n as u64);
            let max = x.iter().copied().fold(f64::MIN, |a, b| a.max(b as f64));
            let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            let want: Vec<f64> = e.iter().map(|v| v / sum).collect();
            softmax_inplace(&mut x);
            assert_close(&x, &want, 1e-5);
        }
        let mut masked = [0.0, f32::NEG_INFINITY, 0.0];
        softmax_inplace(&mut masked);
        assert_eq!(masked, [0.5, 0.0, 0.5]);
    }

    #[test]
    fn silu_matches_f64() {
        let mut x = random(1000, 5);
        let want: Vec<f64> = x
            .iter()
            .map(|&v| v as f64 / (1.0 + (-v as f64).exp()))
            .collect();
        silu(&mut x);
        assert_close(&x, &want, 1e-6);
    }

    #[test]
    fn f16_round_trip() {
        let x = random(37, 6);
        let mut h = vec![f16::ZERO; 37];
        f32_to_f16(&x, &mut h).unwrap();
        let mut back = vec![0f32; 37];
        f16_to_f32(&h, &mut back).unwrap();
        for ((a, b), h) in x.iter().zip(&back).zip(&h) {
            assert_eq!(*h, f16::from_f32(*a));
            assert_eq!(*b, h.to_f32());
            assert!((a - b).abs() <= a.abs() * 1e-3);
        }
        assert!(f16_to_f32(&h, &mut back[..3]).is_err());
    }
}
