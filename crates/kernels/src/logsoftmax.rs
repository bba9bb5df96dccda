//! Log-probabilities from a logits row: the one log-softmax of cria, used
//! by perplexity, KL-divergence files and the `logprobs` of the API.
//!
//! The arithmetic is llama.cpp's (`log_softmax` in its perplexity tool):
//! the maximum and each `exp(l - max)` in f32, their sum in f64, and
//! `l - max` in f32 before the f64 logarithm is taken away, so printed
//! digits agree with llama-perplexity's. NaN logits count as -inf and +inf
//! as the largest finite float, so no row gives NaN.

/// The normalizer of one row: `log p(i) = (l_i - max) - ln(sum exp(l - max))`.
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax {
    max: f32,
    sum_exp: f64,
}

fn sanitize(l: f32) -> f32 {
    if l.is_nan() {
        f32::NEG_INFINITY
    } else if l == f32::INFINITY {
        f32::MAX
    } else {
        l
    }
}

impl LogSoftmax {
    pub fn new(row: &[f32]) -> LogSoftmax {
        let max = row
            .iter()
            .map(|&l| sanitize(l))
            .fold(f32::NEG_INFINITY, f32::max);
        let sum_exp = if max == f32::NEG_INFINITY {
            0.0
        } else {
            row.iter().map(|&l| (sanitize(l) - max).exp() as f64).sum()
        };
        LogSoftmax { max, sum_exp }
    }

    /// `log p` of a token whose logit is `logit`; -inf when the whole row
    /// is -inf.
    pub fn of(&self, logit: f32) -> f64 {
        if self.sum_exp == 0.0 {
            return f64::NEG_INFINITY;
        }
        (sanitize(logit) - self.max) as f64 - self.sum_exp.ln()
    }

    /// The row's largest logit.
    pub fn max(&self) -> f32 {
        self.max
    }

    /// `sum exp(l - max)`, in f64.
    pub fn sum_exp(&self) -> f64 {
        self.sum_exp
    }
}

#[cfg(test)]
mod tests {
    use super::LogSoftmax;

    #[test]
    fn probabilities_add_up_to_one() {
        let row = [1.0f32, 2.0, 3.0, -4.0, 0.5];
        let lsm = LogSoftmax::new(&row);
        let total: f64 = row.iter().map(|&l| lsm.of(l).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        // The most likely token: 3 - ln(e^-2 + e^-1 + 1 + e^-7 + e^-2.5).
        let want =
            -(((-2.0f64).exp() + (-1.0f64).exp() + 1.0 + (-7.0f64).exp() + (-2.5f64).exp()).ln());
        assert!((lsm.of(3.0) - want).abs() < 1e-6);
    }

    #[test]
    fn nan_and_infinities() {
        let lsm = LogSoftmax::new(&[f32::NAN, 0.0, f32::NEG_INFINITY]);
        assert!((lsm.of(0.0)).abs() < 1e-12);
        assert_eq!(lsm.of(f32::NAN), f64::NEG_INFINITY);
        let dead = LogSoftmax::new(&[f32::NEG_INFINITY, f32::NAN]);
        assert_eq!(dead.of(1.0), f64::NEG_INFINITY);
        let inf = LogSoftmax::new(&[f32::INFINITY, 0.0]);
        assert!(inf.of(f32::INFINITY).is_finite());
    }
}
