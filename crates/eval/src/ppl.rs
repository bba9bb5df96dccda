//! [`PerplexityAccumulator`]: running perplexity and its uncertainty, with
//! llama-perplexity's arithmetic and output lines.

use std::fmt;

use crate::chunks::{check_n_ctx, first_scored_position, scored_per_chunk};
use crate::error::{ErrorKind, Result};

/// Sum of negative log-likelihoods over some scored tokens, and of their squares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChunkNll {
    pub nll: f64,
    pub nll2: f64,
    pub count: usize,
}

/// Accumulates chunk after chunk, as llama-perplexity's `perplexity()`.
#[derive(Debug, Clone)]
pub struct PerplexityAccumulator {
    n_vocab: usize,
    total: ChunkNll,
    n_chunks: usize,
}

/// The final line of llama-perplexity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PplEstimate {
    /// `exp(mean nll)`.
    pub ppl: f64,
    /// `ppl * sqrt(var(nll) / (count - 1))`, the standard error of the mean
    /// carried through `exp`; `None` when the variance is not positive, where
    /// llama.cpp prints an error line instead.
    pub uncertainty: Option<f64>,
    pub count: usize,
}

impl PerplexityAccumulator {
    pub fn new(n_vocab: usize) -> PerplexityAccumulator {
        PerplexityAccumulator {
            n_vocab,
            total: ChunkNll::default(),
            n_chunks: 0,
        }
    }

    /// Scores one chunk. `chunk_tokens` are its `n_ctx` original tokens
    /// ([`crate::Chunk::tokens`]); `logits` is row-major `(rows, n_vocab)`
    /// for positions `first..`, with `rows` = `n_ctx - 1 - first` or
    /// `n_ctx - first` (the last row, if given, is ignored as in llama.cpp).
    /// Returns the running perplexity.
    pub fn add_chunk(&mut self, logits: &[f32], chunk_tokens: &[u32]) -> Result<f64> {
        let rows = ScoredRows::new(logits, chunk_tokens, self.n_vocab)?;
        let mut c = ChunkNll::default();
        for (row, tok) in rows.iter() {
            let v = -log_softmax_of(row, tok);
            c.nll += v;
            c.nll2 += v * v;
            c.count += 1;
        }
        Ok(self.add_nll(c))
    }

    /// Adds a chunk scored elsewhere (by [`crate::BaseFileWriter::write_chunk_logits`],
    /// which uses the base-file variant of the arithmetic). Returns the running perplexity.
    pub fn add_nll(&mut self, c: ChunkNll) -> f64 {
        self.total.nll += c.nll;
        self.total.nll2 += c.nll2;
        self.total.count += c.count;
        self.n_chunks += 1;
        self.ppl()
    }

    /// `exp(mean nll)` so far (NaN before any token).
    pub fn ppl(&self) -> f64 {
        (self.total.nll / self.total.count as f64).exp()
    }

    /// Chunks added so far.
    pub fn n_chunks(&self) -> usize {
        self.n_chunks
    }

    /// The sums so far.
    pub fn totals(&self) -> ChunkNll {
        self.total
    }

    /// llama.cpp's progress item after each chunk, e.g. `[3]12.3456,`
    /// (printed without a newline; a newline follows the last chunk).
    pub fn progress_line(&self) -> String {
        format!("[{}]{:.4},", self.n_chunks, self.ppl())
    }

    /// The `--ppl-output-type 1` line: chunk start, ppl, mean nll and its
    /// standard error (or the raw variance when it is not positive, as llama.cpp).
    /// `start` is the chunk's token offset, [`crate::Chunk::start`].
    pub fn verbose_line(&self, start: usize) -> String {
        let count = self.total.count as f64;
        let av = self.total.nll / count;
        let mut av2 = self.total.nll2 / count - av * av;
        if av2 > 0.0 {
            av2 = (av2 / (count - 1.0)).sqrt();
        }
        format!("{:8}  {:.4}  {:4.6}  {:4.6}", start, self.ppl(), av, av2)
    }

    /// The final estimate; an error before any token was scored.
    pub fn estimate(&self) -> Result<PplEstimate> {
        let n = self.total.count;
        if n == 0 {
            return Err(ErrorKind::Empty.into());
        }
        let nll = self.total.nll / n as f64;
        let var = self.total.nll2 / n as f64 - nll * nll;
        let ppl = nll.exp();
        let uncertainty = (var > 0.0).then(|| (var / (n as f64 - 1.0)).sqrt() * ppl);
        Ok(PplEstimate {
            ppl,
            uncertainty,
            count: n,
        })
    }
}

impl fmt::Display for PplEstimate {
    /// `Final estimate: PPL = 18.3906 +/- 0.15178`, as llama.cpp prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uncertainty {
            Some(u) => write!(f, "Final estimate: PPL = {:.4} +/- {:.5}", self.ppl, u),
            None => write!(f, "Unexpected negative standard deviation of log(prob)"),
        }
    }
}

/// `log p(tok)` as llama.cpp's plain `log_softmax` (no base file); see
/// [`cria_kernels::LogSoftmax`].
pub fn log_softmax_of(logits: &[f32], tok: usize) -> f64 {
    cria_kernels::LogSoftmax::new(logits).of(logits[tok])
}

/// A validated view of one chunk's scored logits rows and their target tokens.
pub(crate) struct ScoredRows<'a> {
    logits: &'a [f32],
    targets: &'a [u32],
    n_vocab: usize,
}

impl<'a> ScoredRows<'a> {
    /// Checks the shape, the target ids and that no scored logit is NaN/+inf.
    pub(crate) fn new(
        logits: &'a [f32],
        chunk_tokens: &'a [u32],
        n_vocab: usize,
    ) -> Result<ScoredRows<'a>> {
        let n_ctx = chunk_tokens.len();
        check_n_ctx(n_ctx)?;
        let first = first_scored_position(n_ctx);
        let n_scored = scored_per_chunk(n_ctx);
        if n_vocab == 0
            || (logits.len() != n_scored * n_vocab && logits.len() != (n_scored + 1) * n_vocab)
        {
            return Err(ErrorKind::LogitsShape {
                expected: format!(
                    "{n_scored} or {} rows of n_vocab = {n_vocab} (positions {first}.. of n_ctx = {n_ctx})",
                    n_scored + 1
                ),
                got: logits.len(),
            }
            .into());
        }
        let targets = &chunk_tokens[first + 1..];
        for (j, &t) in targets.iter().enumerate() {
            if t as usize >= n_vocab {
                return Err(ErrorKind::TokenOutOfRange {
                    index: first + 1 + j,
                    id: t,
                    n_vocab,
                }
                .into());
            }
        }
        let logits = &logits[..n_scored * n_vocab];
        for (row, r) in logits.chunks_exact(n_vocab).enumerate() {
            if let Some((index, &value)) = r
                .iter()
                .enumerate()
                .find(|(_, l)| l.is_nan() || **l == f32::INFINITY)
            {
                return Err(ErrorKind::BadLogit { row, index, value }.into());
            }
        }
        Ok(ScoredRows {
            logits,
            targets,
            n_vocab,
        })
    }

    /// `(row, target token)` pairs in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a [f32], usize)> + '_ {
        self.logits
            .chunks_exact(self.n_vocab)
            .zip(self.targets.iter().map(|&t| t as usize))
    }
}
