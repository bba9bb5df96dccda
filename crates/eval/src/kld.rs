//! [`KlDivergence`]: the `--kl-divergence` statistics of llama-perplexity.
//!
//! Per scored token it compares the current model's logits with the base
//! model's stored log-probabilities: KL(base || current), whether both agree
//! on the top token, and Δp = p_current(tok) - p_base(tok) of the actual next
//! token. The arithmetic (which parts are f32, which f64) mirrors llama.cpp's
//! `log_softmax(..., kl_divergence_result &)` so printed digits agree.

use std::fmt;

use crate::basefile::{BaseChunk, CompressedLogProbs};
use crate::error::{ErrorKind, Result};
use crate::ppl::ScoredRows;

/// llama.cpp prints the final statistics only from this many tokens on.
pub const MIN_TOKENS_FOR_REPORT: usize = 100;

/// The column header llama.cpp prints before the first per-chunk line.
pub const CHUNK_HEADER: &str = "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p";

/// Running sums, as llama.cpp's `kl_divergence_result`, plus every token's
/// KLD and Δp for the percentiles.
#[derive(Debug, Clone, Default)]
pub struct KlDivergence {
    n_vocab: usize,
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    max_p_diff: f32,
    n_same_top: usize,
    count: usize,
    n_chunks: usize,
    kld_values: Vec<f32>,
    p_diff_values: Vec<f32>,
}

/// One token's contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenKld {
    /// KL(base || current) in nats.
    pub kld: f64,
    /// p_current(tok) - p_base(tok).
    pub p_diff: f32,
}

/// A value and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub uncertainty: f64,
}

/// Everything llama.cpp prints after the last chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct KlReport {
    pub count: usize,
    pub ppl: Estimate,
    pub ppl_base: Estimate,
    /// Correlation of ln PPL(Q) and ln PPL(base), as a fraction.
    pub ln_ppl_correlation: f64,
    pub ln_ppl_ratio: Estimate,
    pub ppl_ratio: Estimate,
    pub ppl_diff: Estimate,
    pub kld: Estimate,
    pub kld_max: f32,
    pub kld_min: f32,
    pub kld_median: f32,
    /// KLD at 99.9, 99, 95, 90, 10, 5, 1 and 0.1 %.
    pub kld_percentiles: [(f32, f32); 8],
    /// Δp mean, as a fraction.
    pub p_diff: Estimate,
    pub p_diff_max: f32,
    pub p_diff_min: f32,
    pub p_diff_median: f32,
    /// Δp at 99.9, 99, 95, 90, 75, 25, 10, 5, 1 and 0.1 %.
    pub p_diff_percentiles: [(f32, f32); 10],
    pub p_diff_rms: Estimate,
    /// Fraction of tokens where both models have the same argmax.
    pub same_top: Estimate,
}

const KLD_FRACTIONS: [f32; 8] = [0.999, 0.990, 0.950, 0.900, 0.100, 0.050, 0.010, 0.001];
const P_DIFF_FRACTIONS: [f32; 10] = [
    0.999, 0.990, 0.950, 0.900, 0.750, 0.250, 0.100, 0.050, 0.010, 0.001,
];

impl KlDivergence {
    pub fn new(n_vocab: usize) -> KlDivergence {
        KlDivergence {
            n_vocab,
            ..KlDivergence::default()
        }
    }

    /// Scored tokens so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds one token: `base` is the stored row for its position, `logits`
    /// the current model's row (n_vocab), `tok` the actual next token.
    pub fn add_token(
        &mut self,
        base: CompressedLogProbs<'_>,
        logits: &[f32],
        tok: u32,
    ) -> Result<TokenKld> {
        let n_vocab = self.n_vocab;
        if logits.len() != n_vocab || base.q.len() != n_vocab {
            return Err(ErrorKind::LogitsShape {
                expected: format!("n_vocab = {n_vocab} logits and stored values"),
                got: logits.len(),
            }
            .into());
        }
        if tok as usize >= n_vocab {
            return Err(ErrorKind::TokenOutOfRange {
                index: 0,
                id: tok,
                n_vocab,
            }
            .into());
        }
        if let Some((index, &value)) = logits
            .iter()
            .enumerate()
            .find(|(_, l)| l.is_nan() || **l == f32::INFINITY)
        {
            return Err(ErrorKind::BadLogit {
                row: 0,
                index,
                value,
            }
            .into());
        }
        Ok(self.add_unchecked(base, logits, tok as usize))
    }

    /// Adds a whole chunk: `base` from [`crate::BaseFileReader::read_chunk`],
    /// `logits` and `chunk_tokens` as for [`crate::PerplexityAccumulator::add_chunk`].
    pub fn add_chunk(
        &mut self,
        base: &BaseChunk,
        logits: &[f32],
        chunk_tokens: &[u32],
    ) -> Result<()> {
        let rows = ScoredRows::new(logits, chunk_tokens, self.n_vocab)?;
        let n = crate::scored_per_chunk(chunk_tokens.len());
        if base.len() != n {
            return Err(ErrorKind::LogitsShape {
                expected: format!("{n} stored rows"),
                got: base.len(),
            }
            .into());
        }
        for ((row, tok), b) in rows.iter().zip(base.rows()) {
            if b.q.len() != self.n_vocab {
                return Err(ErrorKind::VocabMismatch {
                    file: b.q.len(),
                    model: self.n_vocab,
                }
                .into());
            }
            self.add_unchecked(b, row, tok);
        }
        self.n_chunks += 1;
        Ok(())
    }

    /// llama.cpp's per-token arithmetic; f32 where it uses float.
    fn add_unchecked(
        &mut self,
        base: CompressedLogProbs<'_>,
        logits: &[f32],
        tok: usize,
    ) -> TokenKld {
        // The first maximum, as llama.cpp's loop finds it.
        let mut imax = 0;
        for (i, &l) in logits.iter().enumerate().skip(1) {
            if l > logits[imax] {
                imax = i;
            }
        }
        let lsm = cria_kernels::LogSoftmax::new(logits);
        let max_logit = lsm.max();
        let log_sum_exp = lsm.sum_exp().ln() as f32;

        let nll: f32 = max_logit + log_sum_exp - logits[tok];
        self.sum_nll += nll as f64;
        self.sum_nll2 += (nll * nll) as f64;

        let nll_base: f32 = -base.log_prob(tok);
        self.sum_nll_base += nll_base as f64;
        self.sum_nll_base2 += (nll_base * nll_base) as f64;
        self.sum_nll_nll_base += (nll * nll_base) as f64;

        let log_norm = max_logit + log_sum_exp;
        let mut sum = 0.0f64;
        let mut imax_base = 0;
        let mut p_log_base_max = 0.0f32;
        for (i, &logit) in logits.iter().enumerate() {
            let p_log_base = base.log_prob(i);
            if i == 0 || p_log_base > p_log_base_max {
                p_log_base_max = p_log_base;
                imax_base = i;
            }
            // Tokens below e^-16 in the base were stored at the floor; skip them.
            if p_log_base > -16.0 {
                let p_base = p_log_base.exp();
                sum += (p_base * (p_log_base - logit + log_norm)) as f64;
            }
        }
        self.sum_kld += sum;
        self.sum_kld2 += sum * sum;
        self.count += 1;
        if imax == imax_base {
            self.n_same_top += 1;
        }

        let p_diff: f32 = (-nll).exp() - (-nll_base).exp();
        self.sum_p_diff += p_diff as f64;
        let p_diff2 = (p_diff * p_diff) as f64;
        self.sum_p_diff2 += p_diff2;
        self.sum_p_diff4 += p_diff2 * p_diff2;
        self.max_p_diff = self.max_p_diff.max(p_diff.abs());

        self.kld_values.push(sum as f32);
        self.p_diff_values.push(p_diff);
        TokenKld { kld: sum, p_diff }
    }

    fn ln_ppl(&self) -> (Estimate, Estimate, f64) {
        let q = mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count);
        let base = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count);
        let cov = covariance(
            self.sum_nll,
            self.sum_nll_base,
            self.sum_nll_nll_base,
            self.count,
        );
        (q, base, cov)
    }

    /// The line llama.cpp prints after each chunk (after [`CHUNK_HEADER`]),
    /// numbered by the chunks added with [`KlDivergence::add_chunk`].
    pub fn chunk_line(&self) -> String {
        let (q, base, cov) = self.ln_ppl();
        let ppl = q.value.exp();
        let ratio = q.value - base.value;
        let ratio_unc = (q.uncertainty * q.uncertainty + base.uncertainty * base.uncertainty
            - 2.0 * cov)
            .sqrt();
        let kl = mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count);
        let rms = rms(mean_and_uncertainty(
            self.sum_p_diff2,
            self.sum_p_diff4,
            self.count,
        ));
        let top = same_top(self.n_same_top, self.count);
        format!(
            "{:4}    {} ± {}    {} ± {}    {} ± {}    {} ± {} %    {} ± {} %",
            self.n_chunks,
            cf(ppl, 9, 4),
            cf(ppl * q.uncertainty, 9, 4),
            cf(ratio, 10, 5),
            cf(ratio_unc, 10, 5),
            cf(kl.value, 10, 5),
            cf(kl.uncertainty, 10, 5),
            cf(100.0 * rms.value, 6, 3),
            cf(100.0 * rms.uncertainty, 6, 3),
            cf(100.0 * top.value, 6, 3),
            cf(100.0 * top.uncertainty, 6, 3),
        )
    }

    /// Final statistics. llama.cpp prints them only when
    /// `count() >= MIN_TOKENS_FOR_REPORT`; this errors only with no token.
    pub fn report(&self) -> Result<KlReport> {
        if self.count == 0 {
            return Err(ErrorKind::Empty.into());
        }
        let mut kld = self.kld_values.clone();
        let mut dp = self.p_diff_values.clone();
        kld.sort_by(f32::total_cmp);
        dp.sort_by(f32::total_cmp);

        let (q, base, cov) = self.ln_ppl();
        let ppl = exp_estimate(q);
        let ppl_base = exp_estimate(base);
        let ln_ratio = Estimate {
            value: q.value - base.value,
            uncertainty: (q.uncertainty * q.uncertainty + base.uncertainty * base.uncertainty
                - 2.0 * cov)
                .sqrt(),
        };
        let ppl_cov = ppl.value * ppl_base.value * cov;
        Ok(KlReport {
            count: self.count,
            ppl,
            ppl_base,
            ln_ppl_correlation: cov / (q.uncertainty * base.uncertainty),
            ln_ppl_ratio: ln_ratio,
            ppl_ratio: exp_estimate(ln_ratio),
            ppl_diff: Estimate {
                value: ppl.value - ppl_base.value,
                uncertainty: (ppl.uncertainty * ppl.uncertainty
                    + ppl_base.uncertainty * ppl_base.uncertainty
                    - 2.0 * ppl_cov)
                    .sqrt(),
            },
            kld: mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count),
            kld_max: kld[kld.len() - 1],
            kld_min: kld[0],
            kld_median: median(&kld),
            kld_percentiles: KLD_FRACTIONS.map(|f| (f, percentile(&kld, f))),
            p_diff: mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, self.count),
            p_diff_max: dp[dp.len() - 1],
            p_diff_min: dp[0],
            p_diff_median: median(&dp),
            p_diff_percentiles: P_DIFF_FRACTIONS.map(|f| (f, percentile(&dp, f))),
            p_diff_rms: rms(mean_and_uncertainty(
                self.sum_p_diff2,
                self.sum_p_diff4,
                self.count,
            )),
            same_top: same_top(self.n_same_top, self.count),
        })
    }
}

/// llama.cpp's `mean_and_uncertainty`: standard error only from 11 values on.
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> Estimate {
    if count < 1 {
        return Estimate {
            value: 0.0,
            uncertainty: 0.0,
        };
    }
    let n = count as f64;
    let f = sum / n;
    let df = sum2 / n - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Estimate {
        value: f,
        uncertainty: df,
    }
}

/// llama.cpp's `covariance` of the two means (0 below 10 values).
fn covariance(a: f64, b: f64, ab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (ab / n - (a / n) * (b / n)) / (n - 1.0)
}

/// `exp` of an estimate, uncertainty by first-order propagation.
fn exp_estimate(e: Estimate) -> Estimate {
    let v = e.value.exp();
    Estimate {
        value: v,
        uncertainty: v * e.uncertainty,
    }
}

fn rms(mse: Estimate) -> Estimate {
    let v = mse.value.sqrt();
    Estimate {
        value: v,
        uncertainty: 0.5 / v * mse.uncertainty,
    }
}

fn same_top(n_same: usize, count: usize) -> Estimate {
    let p = n_same as f64 / count as f64;
    Estimate {
        value: p,
        uncertainty: (p * (1.0 - p) / (count as f64 - 1.0)).sqrt(),
    }
}

/// llama.cpp's `percentile`: linear interpolation, in f32. `v` sorted, non-empty.
fn percentile(v: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return v[0];
    }
    if fraction >= 1.0 {
        return v[v.len() - 1];
    }
    let mut p = fraction * (v.len() - 1) as f32;
    let ip = p as usize;
    p -= ip as f32;
    (1.0 - p) * v[ip] + p * v[(ip + 1).min(v.len() - 1)]
}

fn median(v: &[f32]) -> f32 {
    let n = v.len();
    if n.is_multiple_of(2) {
        0.5 * (v[n / 2] + v[n / 2 - 1])
    } else {
        v[n / 2]
    }
}

/// printf's `%W.Plf`, including glibc's spelling of non-finite values
/// (`nan`, `-nan`, `inf`), which Rust's `{}` spells differently.
fn cf(v: f64, width: usize, prec: usize) -> String {
    let s = if v.is_nan() {
        if v.is_sign_negative() { "-nan" } else { "nan" }.to_string()
    } else if v.is_infinite() {
        if v < 0.0 { "-inf" } else { "inf" }.to_string()
    } else {
        format!("{v:.prec$}")
    };
    format!("{s:>width$}")
}

impl fmt::Display for KlReport {
    /// The final block of `llama-perplexity --kl-divergence`, line for line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = |x: Estimate, w: usize, p: usize| {
            format!("{} ± {}", cf(x.value, w, p), cf(x.uncertainty, w, p))
        };
        writeln!(f, "====== Perplexity statistics ======")?;
        writeln!(f, "Mean PPL(Q)                   : {}", e(self.ppl, 10, 6))?;
        writeln!(
            f,
            "Mean PPL(base)                : {}",
            e(self.ppl_base, 10, 6)
        )?;
        writeln!(
            f,
            "Cor(ln(PPL(Q)), ln(PPL(base))): {}%",
            cf(100.0 * self.ln_ppl_correlation, 6, 2)
        )?;
        writeln!(
            f,
            "Mean ln(PPL(Q)/PPL(base))     : {}",
            e(self.ln_ppl_ratio, 10, 6)
        )?;
        writeln!(
            f,
            "Mean PPL(Q)/PPL(base)         : {}",
            e(self.ppl_ratio, 10, 6)
        )?;
        writeln!(
            f,
            "Mean PPL(Q)-PPL(base)         : {}",
            e(self.ppl_diff, 10, 6)
        )?;
        writeln!(f)?;
        writeln!(f, "====== KL divergence statistics ======")?;
        writeln!(f, "Mean    KLD: {}", e(self.kld, 10, 6))?;
        let kv = |x: f32| cf(x as f64, 10, 6);
        let [k999, k99, k95, k90, k10, k5, k1, k01] = self.kld_percentiles.map(|(_, v)| kv(v));
        writeln!(f, "Maximum KLD: {}", kv(self.kld_max))?;
        writeln!(f, "99.9%   KLD: {k999}")?;
        writeln!(f, "99.0%   KLD: {k99}")?;
        writeln!(f, "95.0%   KLD: {k95}")?;
        writeln!(f, "90.0%   KLD: {k90}")?;
        writeln!(f, "Median  KLD: {}", kv(self.kld_median))?;
        writeln!(f, "10.0%   KLD: {k10}")?;
        writeln!(f, " 5.0%   KLD: {k5}")?;
        writeln!(f, " 1.0%   KLD: {k1}")?;
        writeln!(f, " 0.1%   KLD: {k01}")?;
        writeln!(f, "Minimum KLD: {}", kv(self.kld_min))?;
        writeln!(f)?;
        writeln!(f, "====== Token probability statistics ======")?;
        writeln!(
            f,
            "Mean    Δp: {} ± {} %",
            cf(100.0 * self.p_diff.value, 6, 3),
            cf(100.0 * self.p_diff.uncertainty, 5, 3)
        )?;
        let pv = |x: f32| cf(100.0 * x as f64, 6, 3);
        let [p999, p99, p95, p90, p75, p25, p10, p5, p1, p01] =
            self.p_diff_percentiles.map(|(_, v)| pv(v));
        writeln!(f, "Maximum Δp: {}%", pv(self.p_diff_max))?;
        writeln!(f, "99.9%   Δp: {p999}%")?;
        writeln!(f, "99.0%   Δp: {p99}%")?;
        writeln!(f, "95.0%   Δp: {p95}%")?;
        writeln!(f, "90.0%   Δp: {p90}%")?;
        writeln!(f, "75.0%   Δp: {p75}%")?;
        writeln!(f, "Median  Δp: {}%", pv(self.p_diff_median))?;
        writeln!(f, "25.0%   Δp: {p25}%")?;
        writeln!(f, "10.0%   Δp: {p10}%")?;
        writeln!(f, " 5.0%   Δp: {p5}%")?;
        writeln!(f, " 1.0%   Δp: {p1}%")?;
        writeln!(f, " 0.1%   Δp: {p01}%")?;
        writeln!(f, "Minimum Δp: {}%", pv(self.p_diff_min))?;
        writeln!(
            f,
            "RMS Δp    : {} ± {} %",
            cf(100.0 * self.p_diff_rms.value, 6, 3),
            cf(100.0 * self.p_diff_rms.uncertainty, 5, 3)
        )?;
        writeln!(
            f,
            "Same top p: {} ± {} %",
            cf(100.0 * self.same_top.value, 6, 3),
            cf(100.0 * self.same_top.uncertainty, 5, 3)
        )
    }
}

#[cfg(test)]
pub(crate) fn test_percentile(v: &[f32], fraction: f32) -> f32 {
    percentile(v, fraction)
}

#[cfg(test)]
pub(crate) fn test_cf(v: f64, width: usize, prec: usize) -> String {
    cf(v, width, prec)
}
