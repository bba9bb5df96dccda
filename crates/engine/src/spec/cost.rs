//! How many draft tokens are worth verifying: a cost model.
//!
//! A step that verifies `k` draft tokens after the pending one costs
//! `1 + c * k` one-row steps, where `c` is what one more row costs
//! ([`RowCost`], measured while the engine runs: it depends on the machine,
//! the model and the load). It yields the pending token's successor plus
//! every draft token accepted before the first rejection. With a
//! per-token acceptance probability `p` (given the earlier ones were
//! accepted; [`Acceptance`], kept per request and per n-gram match length,
//! since a longer match predicts better, and apart after a draft accepted
//! whole, see [`super::SpecState::source_of`]), it yields on average
//! `1 + p + p^2 + ... + p^k` tokens. [`best_draft_len`] picks the `k`
//! with the most tokens per unit of cost, and 0 when no draft beats the
//! plain step (the expected gain is below 1).
//!
//! With `n` sequences decoding in one step, a draft row still costs `c`,
//! but the step's tokens already cost `(1 + c * (n - 1)) / n` each, so a
//! draft token must be likelier to pay off: [`batch_row_cost`].
//!
//! A replay of the task set's greedy outputs (bench/spec-tasks) through
//! this model, with `c` = 0.13 (the measured figure on the quiet machine),
//! gives 1.86x against 1.80x for the earlier grow-by-2 / shrink-to-accepted
//! rule, and it never drafts where rows are too dear for the acceptance seen.

/// The row cost assumed until [`RowCost`] has seen enough steps: a
/// verification row cost 0.13 one-row steps on the default model at 2
/// threads on the development machine (BENCHMARKS.md, "Speculative
/// decoding").
pub const DEFAULT_ROW_COST: f64 = 0.13;

/// Bounds of the row cost estimate: a noisy estimate (a step preempted by
/// another process) must neither make drafts free nor stop them for good
/// (with no drafts there is nothing to measure a row by).
pub const MIN_ROW_COST: f64 = 0.03;
pub const MAX_ROW_COST: f64 = 0.4;

/// Weight kept by older steps at each new one (about the last 30 steps
/// count).
const FORGET: f64 = 0.97;

/// Steps (weighted) before the estimate replaces [`DEFAULT_ROW_COST`].
const MIN_STEPS: f64 = 6.0;

/// The draft length `k` in `0..=max` with the most expected tokens per
/// unit of cost, `(1 + p + ... + p^k) / (1 + row_cost * k)`; 0 when no `k`
/// beats 1 (not drafting).
pub fn best_draft_len(p: f64, row_cost: f64, max: usize) -> usize {
    let (mut best, mut best_rate) = (0, 1.0);
    let (mut tokens, mut reach) = (1.0, 1.0);
    for k in 1..=max {
        reach *= p;
        tokens += reach;
        let rate = tokens / (1.0 + row_cost * k as f64);
        if rate > best_rate {
            (best, best_rate) = (k, rate);
        }
    }
    best
}

/// The cost of one draft row, in tokens of the step, when `n` sequences
/// decode together: a row costs `c`, the step's `n` tokens `1 + c (n - 1)`.
pub fn batch_row_cost(c: f64, n: usize) -> f64 {
    let n = n.max(1) as f64;
    c * n / (1.0 + c * (n - 1.0))
}

/// Draft tokens accepted and tried (a token is tried when every token
/// before it in its draft was accepted), per source: 0 a draft model,
/// `1..` the n-gram match length the draft came from.
#[derive(Clone, Debug)]
pub struct Acceptance {
    hits: Vec<u32>,
    tries: Vec<u32>,
}

impl Acceptance {
    pub fn new(sources: usize) -> Acceptance {
        Acceptance {
            hits: vec![0; sources],
            tries: vec![0; sources],
        }
    }

    /// The probability that a token from `source` is accepted, given the
    /// ones before it were: (hits + 1) / (tries + 2), so an untried
    /// source starts at one half.
    pub fn p(&self, source: usize) -> f64 {
        let (h, t) = match (self.hits.get(source), self.tries.get(source)) {
            (Some(&h), Some(&t)) => (h, t),
            _ => (0, 0),
        };
        (h as f64 + 1.0) / (t as f64 + 2.0)
    }

    /// Records a verified draft of `len` tokens from `source`, of which
    /// the first `accepted` were accepted.
    pub fn record(&mut self, source: usize, len: usize, accepted: usize) {
        let tried = (accepted + usize::from(accepted < len)) as u32;
        if let (Some(h), Some(t)) = (self.hits.get_mut(source), self.tries.get_mut(source)) {
            *h += accepted as u32;
            *t += tried;
        }
    }
}

/// Running estimate of a verification row's cost relative to a one-row
/// step: a least-squares line through (rows, seconds) of recent decode
/// steps (no prompt rows), older steps weighing less.
#[derive(Clone, Debug)]
pub struct RowCost {
    /// Decayed sums: weight, rows, seconds, rows^2, rows * seconds.
    w: f64,
    n: f64,
    t: f64,
    nn: f64,
    nt: f64,
    /// The last estimate the steps supported.
    last: f64,
}

impl Default for RowCost {
    fn default() -> RowCost {
        RowCost {
            w: 0.0,
            n: 0.0,
            t: 0.0,
            nn: 0.0,
            nt: 0.0,
            last: DEFAULT_ROW_COST,
        }
    }
}

impl RowCost {
    /// Records a decode step of `rows` rows that took `secs`.
    pub fn observe(&mut self, rows: usize, secs: f64) {
        if rows == 0 || !secs.is_finite() || secs <= 0.0 {
            return;
        }
        let n = rows as f64;
        self.w = self.w * FORGET + 1.0;
        self.n = self.n * FORGET + n;
        self.t = self.t * FORGET + secs;
        self.nn = self.nn * FORGET + n * n;
        self.nt = self.nt * FORGET + n * secs;
        if self.w < MIN_STEPS {
            return;
        }
        let (mn, mt) = (self.n / self.w, self.t / self.w);
        let var = self.nn / self.w - mn * mn;
        // Steps of (nearly) one size say nothing about the slope.
        if var < 0.5 {
            return;
        }
        let slope = (self.nt / self.w - mn * mt) / var;
        let one = mt + slope * (1.0 - mn);
        if one > 0.0 && slope.is_finite() {
            self.last = (slope / one).clamp(MIN_ROW_COST, MAX_ROW_COST);
        }
    }

    /// The current estimate (the default until steps of several sizes
    /// were seen).
    pub fn ratio(&self) -> f64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_length_follows_acceptance_and_row_cost() {
        // Certain acceptance and cheap rows: as long as allowed.
        assert_eq!(best_draft_len(1.0, 0.1, 16), 16);
        // Coin flips at 0.13 a row: (1 + .5 + .25) / 1.26 is the best.
        assert_eq!(best_draft_len(0.5, 0.13, 16), 2);
        // Acceptance below the row cost: never worth a row.
        assert_eq!(best_draft_len(0.1, 0.13, 16), 0);
        assert_eq!(best_draft_len(0.9, 0.13, 0), 0);
        // Dearer rows, shorter drafts.
        assert!(best_draft_len(0.8, 0.3, 16) < best_draft_len(0.8, 0.1, 16));
        // The choice is the best rate among all lengths.
        for (p, c) in [(0.3, 0.05), (0.7, 0.2), (0.95, 0.13)] {
            let rate = |k: usize| {
                let tokens: f64 = (0..=k).map(|i| f64::powi(p, i as i32)).sum();
                tokens / (1.0 + c * k as f64)
            };
            let k = best_draft_len(p, c, 16);
            assert!((0..=16).all(|j| rate(j) <= rate(k) + 1e-12), "{p} {c} {k}");
        }
    }

    #[test]
    fn a_batch_makes_draft_rows_dearer() {
        assert!((batch_row_cost(0.13, 1) - 0.13).abs() < 1e-12);
        // Eight decoding rows: a draft row costs about half a token.
        let c8 = batch_row_cost(0.13, 8);
        assert!(c8 > 0.5 && c8 < 0.6, "{c8}");
        assert_eq!(best_draft_len(0.5, c8, 16), 0);
    }

    #[test]
    fn acceptance_counts_tries_up_to_the_first_rejection() {
        let mut a = Acceptance::new(3);
        assert_eq!(a.p(1), 0.5);
        // 4 drafted, 2 accepted: 3 tried (the third was rejected).
        a.record(1, 4, 2);
        assert!((a.p(1) - 3.0 / 5.0).abs() < 1e-12);
        // All accepted: each one tried.
        a.record(1, 3, 3);
        assert!((a.p(1) - 6.0 / 8.0).abs() < 1e-12);
        // Another source is separate; an unknown one is untried.
        assert_eq!(a.p(2), 0.5);
        assert_eq!(a.p(7), 0.5);
        a.record(7, 2, 1);
    }

    #[test]
    fn row_cost_is_the_slope_over_the_one_row_time() {
        let mut r = RowCost::default();
        assert_eq!(r.ratio(), DEFAULT_ROW_COST);
        // One size only: no slope yet.
        for _ in 0..10 {
            r.observe(1, 0.005);
        }
        assert_eq!(r.ratio(), DEFAULT_ROW_COST);
        // t = 4 ms + 1 ms per row: a row is 1/5 of a one-row step.
        for rows in [1, 5, 3, 8, 2, 1, 6, 4, 1, 7] {
            r.observe(rows, 0.004 + 0.001 * rows as f64);
        }
        assert!((r.ratio() - 0.2).abs() < 1e-9, "{}", r.ratio());
        // Absurd timings stay within bounds; bad ones are ignored.
        for _ in 0..100 {
            for rows in [1, 9] {
                r.observe(rows, if rows == 1 { 0.001 } else { 1.0 });
            }
        }
        assert_eq!(r.ratio(), MAX_ROW_COST);
        r.observe(3, f64::NAN);
        r.observe(0, 1.0);
        r.observe(3, -1.0);
        assert_eq!(r.ratio(), MAX_ROW_COST);
    }
}
