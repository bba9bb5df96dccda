//! [`Sampler`]: owns the config, the scratch buffers, the penalty history
//! and the RNG, and runs the stages of `stages.rs` in llama.cpp's order.

use std::collections::VecDeque;

use crate::config::SamplerConfig;
use crate::error::{ErrorKind, Result};
use crate::rng::Draws;
use crate::stages::{self, Candidate};
use cria_kernels::ThreadPool;
use std::sync::Mutex;

/// Turns one logits row into a token id. Build it once per sequence; it keeps
/// every buffer it needs, so [`Sampler::sample`] does not allocate.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    n_vocab: usize,
    /// (n_vocab) the row being worked on: raw logits + bias + penalties.
    work: Vec<f32>,
    /// (<= n_vocab) tokens still in the running, capacity n_vocab.
    cands: Vec<Candidate>,
    /// The last `repeat_last_n` accepted ids, oldest first.
    history: VecDeque<u32>,
    /// (n_vocab) occurrences of each id in `history`.
    counts: Vec<u32>,
    /// (n_vocab) scratch for the penalty stage, all false between calls.
    seen: Vec<bool>,
    rng: Draws,
    /// Index in `cands` of the last random pick.
    picked: usize,
    /// The last pick when it was greedy (then `cands` is empty).
    greedy_pick: Option<u32>,
}

impl Sampler {
    /// Validates `config` against the vocabulary size and allocates the buffers.
    pub fn new(config: SamplerConfig, n_vocab: usize) -> Result<Sampler> {
        config.validate(n_vocab)?;
        let penalties = !config.penalties_disabled();
        Ok(Sampler {
            rng: Draws::new(config.seed),
            picked: 0,
            greedy_pick: None,
            work: vec![0.0; n_vocab],
            cands: Vec::with_capacity(n_vocab),
            // The window fills as tokens are accepted; it is never sized
            // up front from the request (a huge repeat_last_n is legal).
            history: VecDeque::new(),
            counts: if penalties {
                vec![0; n_vocab]
            } else {
                Vec::new()
            },
            seen: if penalties {
                vec![false; n_vocab]
            } else {
                Vec::new()
            },
            n_vocab,
            config,
        })
    }

    /// The settings this sampler was built with.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The vocabulary size every logits row must have.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Picks the next token from one row of logits (length `n_vocab`).
    ///
    /// NaN logits are treated as -inf (never picked) and +inf as the largest
    /// finite float. Fails if the row has the wrong length or if every logit
    /// is -inf/NaN after the logit bias. Does not record the token: call
    /// [`Sampler::accept`] with the id you keep.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        self.sample_allowed(logits, None)
    }

    /// [`Sampler::sample`] restricted to the tokens whose bit is set in
    /// `allowed` (bit `id % 32` of word `id / 32`; a grammar's mask). The
    /// others are removed before every stage, as llama.cpp applies its
    /// grammar first, so top-k/top-p see only valid tokens.
    pub fn sample_allowed(&mut self, logits: &[f32], allowed: Option<&[u32]>) -> Result<u32> {
        self.sample_known(logits, allowed, None)
    }

    /// Whether this sampler picks plain greedy (nothing changes a row
    /// before its argmax: temperature <= 0, no logit bias, no penalty), so
    /// that without a grammar's mask its pick is the row's
    /// [`argmax_rows`] result.
    pub fn plain_greedy(&self) -> bool {
        let c = &self.config;
        c.temperature <= 0.0 && c.logit_bias.is_empty() && c.penalties_disabled()
    }

    /// [`Sampler::sample_allowed`] given this row's [`argmax_rows`] result,
    /// which a [`plain_greedy`](Sampler::plain_greedy) sampler without a
    /// mask takes instead of scanning the row itself. The same pick either
    /// way: `argmax` must come from this very row.
    pub fn sample_known(
        &mut self,
        logits: &[f32],
        allowed: Option<&[u32]>,
        argmax: Option<RowArgmax>,
    ) -> Result<u32> {
        if logits.len() != self.n_vocab {
            return Err(ErrorKind::LogitsLength {
                expected: self.n_vocab,
                got: logits.len(),
            }
            .into());
        }
        // Plain greedy (nothing changes the row before the argmax): pick
        // from the row as it is, without copying it. NaN never wins there
        // as in the sanitized copy; only a +inf pick could differ (the copy
        // ties it with f32::MAX), so that case takes the full path.
        if self.plain_greedy() && allowed.is_none() {
            let pick = match argmax {
                Some(RowArgmax(i)) => i,
                None => stages::argmax(logits),
            };
            debug_assert_eq!(pick, stages::argmax(logits), "another row's argmax");
            if let Some(i) = pick.filter(|&i| logits[i] != f32::INFINITY) {
                self.cands.clear();
                self.greedy_pick = Some(i as u32);
                return Ok(i as u32);
            }
        }
        for (w, &l) in self.work.iter_mut().zip(logits) {
            *w = stages::sanitize(l);
        }
        // Bias first, as llama.cpp adds its logit_bias sampler ahead of the chain.
        for &(id, delta) in &self.config.logit_bias {
            self.work[id as usize] += delta;
        }
        if let Some(mask) = allowed {
            stages::apply_mask(&mut self.work, mask);
        }
        let c = &self.config;
        if !c.penalties_disabled() {
            stages::apply_penalties(
                &mut self.work,
                &self.history,
                &self.counts,
                &mut self.seen,
                c.repeat_penalty,
                c.frequency_penalty,
                c.presence_penalty,
            );
        }
        // top-k/p, min-p and temperature never move the argmax, so greedy
        // can skip them (llama.cpp's temp <= 0 masks all but the max).
        self.cands.clear();
        self.greedy_pick = None;
        if c.temperature <= 0.0 {
            return match stages::argmax(&self.work) {
                Some(i) => {
                    self.greedy_pick = Some(i as u32);
                    Ok(i as u32)
                }
                None => Err(ErrorKind::NoCandidates.into()),
            };
        }
        // -inf tokens have probability 0 in every later stage; dropping
        // them now only saves work, as does dropping what top-k would.
        stages::candidates(&self.work, c.top_k, &mut self.cands);
        if self.cands.is_empty() {
            return Err(ErrorKind::NoCandidates.into());
        }
        stages::top_k(&mut self.cands, c.top_k);
        stages::top_p(&mut self.cands, c.top_p);
        stages::min_p(&mut self.cands, c.min_p);
        stages::temperature(&mut self.cands, c.temperature);
        // One uniform number per pick, even when one candidate is left
        // (llama.cpp draws then too, so the streams stay aligned).
        let i = stages::dist(&mut self.cands, self.rng.uniform());
        self.picked = i;
        Ok(self.cands[i].id)
    }

    /// The candidates that survived the last random draw, with their final
    /// probabilities (after temperature, normalized over the survivors), in
    /// the order the draw walked them. Empty after a greedy pick.
    pub fn last_candidates(&self) -> &[Candidate] {
        &self.cands
    }

    /// llama-server's `post_sampling_probs` for the last pick: the
    /// probability of the picked token after the whole chain, and the `n`
    /// most likely survivors (most likely first, ties by lower id, tokens
    /// of probability 0 left out). A greedy pick is certain: its token with
    /// probability 1, alone.
    pub fn post_sampling_probs(&self, n: usize) -> (f32, Vec<(u32, f32)>) {
        if self.cands.is_empty() {
            let top = match self.greedy_pick {
                Some(id) if n > 0 => vec![(id, 1.0)],
                _ => Vec::new(),
            };
            return (1.0, top);
        }
        let p = self.cands.get(self.picked).map_or(0.0, |c| c.p);
        let mut top: Vec<Candidate> = self.cands.iter().copied().filter(|c| c.p > 0.0).collect();
        top.sort_unstable_by(|a, b| b.p.total_cmp(&a.p).then(a.id.cmp(&b.id)));
        top.truncate(n);
        (p, top.iter().map(|c| (c.id, c.p)).collect())
    }

    /// Records a generated (or prompt) token for the penalties' window.
    pub fn accept(&mut self, id: u32) -> Result<()> {
        if id as usize >= self.n_vocab {
            return Err(ErrorKind::TokenOutOfRange {
                id,
                n_vocab: self.n_vocab,
            }
            .into());
        }
        let n = self.config.repeat_last_n;
        if self.config.penalties_disabled() {
            return Ok(());
        }
        if self.history.len() >= n {
            if let Some(old) = self.history.pop_front() {
                self.counts[old as usize] -= 1;
            }
        }
        self.history.push_back(id);
        self.counts[id as usize] += 1;
        Ok(())
    }

    /// Forgets the history and restarts the RNG from the configured seed, so
    /// the sampler behaves as if just built.
    pub fn reset(&mut self) {
        for &t in &self.history {
            self.counts[t as usize] = 0;
        }
        self.history.clear();
        self.cands.clear();
        self.greedy_pick = None;
        self.rng = Draws::new(self.config.seed);
    }

    /// See [`top_logprobs`]; a method for convenience.
    pub fn top_logprobs(&self, logits: &[f32], n: usize) -> Vec<(u32, f32)> {
        top_logprobs(logits, n)
    }
}

/// The `n` most likely tokens of the raw log-softmax of `logits` (no bias,
/// penalties or temperature), most likely first, ties by lower id; as the
/// OpenAI `logprobs` field reports them. NaN logits are skipped; an all
/// -inf/NaN row gives an empty list.
pub fn top_logprobs(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let lsm = cria_kernels::LogSoftmax::new(logits);
    if n == 0 || lsm.max() == f32::NEG_INFINITY {
        return Vec::new();
    }
    let mut all: Vec<Candidate> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_nan())
        .map(|(id, &l)| Candidate {
            id: id as u32,
            logit: stages::sanitize(l),
            p: 0.0,
        })
        .collect();
    stages::top_k(&mut all, n);
    all.sort_unstable_by(stages::by_logit_desc);
    all.iter().map(|c| (c.id, lsm.of(c.logit) as f32)).collect()
}

/// One logits row's greedy pick, from [`argmax_rows`]: the first index of
/// its largest value (NaN and -inf never win), `None` if every value is
/// -inf or NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowArgmax(Option<usize>);

impl RowArgmax {
    /// The index picked.
    pub fn index(self) -> Option<usize> {
        self.0
    }
}

/// The argmax of every `n_vocab`-long row of `logits`, each row's columns
/// spread over the pool in the shares the output matrix's product used
/// ([`ThreadPool::run_split`]), so each thread mostly reads the logits it
/// wrote. Serial on the engine thread, 8 decoding rows' picks over a 49k
/// vocabulary took 3 % of the step while the other threads waited. The
/// same picks as [`Sampler::sample`]'s own scan: a
/// part's first maximum, then the parts merged by value, ties to the lower
/// index.
pub fn argmax_rows(logits: &[f32], n_vocab: usize, pool: &ThreadPool) -> Vec<RowArgmax> {
    if n_vocab == 0 {
        return Vec::new();
    }
    let rows = logits.len() / n_vocab;
    // Units of the output product's two-panel step (16 vocabulary rows).
    const UNIT: usize = 16;
    let units = n_vocab.div_ceil(UNIT);
    let best: Mutex<Vec<Option<(usize, f32)>>> = Mutex::new(vec![None; rows]);
    let chunk = units.div_ceil(4 * pool.threads());
    pool.run_split(units, chunk, |r| {
        let (c0, c1) = (r.start * UNIT, (r.end * UNIT).min(n_vocab));
        let found: Vec<Option<(usize, f32)>> = (0..rows)
            .map(|j| {
                let part = &logits[j * n_vocab + c0..j * n_vocab + c1];
                stages::argmax(part).map(|i| (c0 + i, part[i]))
            })
            .collect();
        let mut best = best.lock().unwrap_or_else(|e| e.into_inner());
        for (b, f) in best.iter_mut().zip(found) {
            *b = match (*b, f) {
                (Some((bi, bv)), Some((fi, fv))) if fv > bv || (fv == bv && fi < bi) => f,
                (None, f) => f,
                (b, _) => b,
            };
        }
    });
    let best = best.into_inner().unwrap_or_else(|e| e.into_inner());
    best.into_iter()
        .map(|b| RowArgmax(b.map(|(i, _)| i)))
        .collect()
}
