//! Speculative decoding: guess several next tokens cheaply, check them all
//! in the target model's one batched forward pass.
//!
//! A decoding sequence's step normally evaluates one row: its pending token.
//! With speculation the scheduler appends up to `n_draft` guessed tokens
//! after it, each a row with logits, so the weights are read once for
//! several positions. The guesses come from
//! - [`SpecKind::Ngram`] (`--spec-type ngram`): prompt lookup. The longest
//!   suffix of the sequence (up to [`NGRAM_MAX`] tokens) that occurred
//!   before, in the prompt or the output, is found at its latest place, and
//!   the tokens that followed it there are the guess. Input-grounded tasks
//!   (rewrite, extract, edit given code) copy long runs of their prompt.
//! - [`SpecKind::DraftModel`] (`-md FILE`): a smaller model with the same
//!   vocabulary ([`check_vocab`]) drafts greedily, one batched forward of
//!   the draft model per guessed position across every drafting slot
//!   ([`Drafter`]), and stops where its most likely token has a
//!   probability under [`DRAFT_P_MIN`]. Its cache keeps what it has seen; after a rejection
//!   the common prefix with the sequence is kept and the rest rewritten.
//!
//! **Why the output is byte-identical to decoding without speculation.**
//! The guesses are never sampled from, never fed to the sampler or the
//! grammar: the scheduler samples row 0 (the pending token's logits) with
//! the request's own sampler exactly as it would without speculation. If
//! the token it samples equals guess 1, then row 1 holds the logits the
//! next step would have computed (a sequence's logits do not depend on how
//! its rows are batched: `crates/cli/tests/batch_consistency.rs`), so it is
//! sampled next, and so on. The first sampled token that differs from its
//! guess becomes the pending token, as it would have been. So the sampler
//! (penalties, RNG draws), the grammar and the stop strings see the very
//! same sequence of calls; speculation changes only how many forward passes
//! it takes. Rejected rows are rolled back by forgetting their positions:
//! the slot's token list says which positions of the cache are valid, every
//! position (f16, f32, and the per-position q8_0/q4_0 blocks alike) is
//! rewritten before it is next attended to, and a row attends only to
//! positions up to its own.
//!
//! **Draft length** ([`cost`]): each step drafts the length with the most
//! expected tokens per unit of cost, from the request's acceptance so far
//! (per n-gram match length, and apart after a whole draft was accepted)
//! and the measured cost of a verification row
//! against a one-row step, up to `draft_max`; no draft when none is
//! expected to pay for its rows. A draft shorter than `draft_min` is not
//! used.
//!
//! **Saturation.** Extra rows are almost free while a step is bound by
//! reading the weights, and cost their full compute once the batch already
//! keeps every core busy. With several sequences decoding,
//! [`Speculation::max_rows`] caps the rows of a step (decode rows plus
//! drafts): drafts get only the rows left under the cap, so a server batch
//! that already has that many decoding sequences does not speculate at all
//! (counted in `EngineStats::spec_off_steps`), and below the cap the cost
//! model prices a draft row against the batch's tokens
//! ([`cost::batch_row_cost`]). A sequence decoding alone may draft up to
//! `draft_max`: its rows are priced by the cost model alone.

use crate::error::{Error, ErrorKind, Result};
use cria_model::{BatchRow, KvCache, KvTypes, Model, Scratch};
use cria_tokenizer::Tokenizer;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

pub mod cost;

use cost::Acceptance;

/// Longest suffix the n-gram drafter looks up (it tries shorter ones down
/// to [`NGRAM_MIN`] when a longer one has no earlier occurrence).
pub const NGRAM_MAX: usize = 4;
pub const NGRAM_MIN: usize = 1;

/// The latest occurrences whose continuations vote in [`ngram_draft`]: a
/// history of one repeated token would otherwise have every position vote
/// at every step (a long context's steps slowed by sorting them). 32 or
/// more gave the task sets' replay the same drafts as no limit.
pub const NGRAM_VOTERS: usize = 64;

/// A draft model's guess is kept only while its probability under the
/// draft model is at least this (llama.cpp's `p_min` default): an unsure
/// draft model would spend target rows on likely rejections.
pub const DRAFT_P_MIN: f32 = 0.75;

/// Decode + draft rows per step and per thread beyond which a step of
/// several decoding sequences no longer speculates (see the module doc;
/// measured in BENCHMARKS.md).
pub const ROWS_PER_THREAD: usize = 4;

/// Where draft tokens come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecKind {
    /// Prompt lookup (`--spec-type ngram`).
    Ngram,
    /// A draft model file (`-md FILE`).
    DraftModel(PathBuf),
}

/// What `--spec-type`, `-md`, `--draft-max` and `--draft-min` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecParams {
    pub kind: SpecKind,
    /// Most tokens drafted per step.
    pub draft_max: usize,
    /// A shorter draft is not used.
    pub draft_min: usize,
}

/// `--spec-type` values: `ngram` (also llama.cpp's `ngram-simple`, the
/// same idea), `none`, and llama.cpp's `draft-simple` (a draft model, which
/// `-md` must name).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SpecType {
    None,
    Ngram,
    Draft,
}

impl FromStr for SpecType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<SpecType, String> {
        match s {
            "ngram" | "ngram-simple" => Ok(SpecType::Ngram),
            "none" => Ok(SpecType::None),
            "draft" | "draft-simple" => Ok(SpecType::Draft),
            _ => Err(format!(
                "unknown speculation type {s:?}: use ngram, draft-simple (with -md FILE) or none"
            )),
        }
    }
}

impl SpecParams {
    /// Checks the sizes: `1 <= draft_max <= 64`, `draft_min <= draft_max`.
    pub fn check(&self) -> Result<()> {
        let bad = |detail: String| -> Result<()> { Err(ErrorKind::Config { detail }.into()) };
        if self.draft_max == 0 || self.draft_max > 64 {
            return bad(format!(
                "--draft-max {}: give 1 to 64 tokens",
                self.draft_max
            ));
        }
        if self.draft_min > self.draft_max {
            return bad(format!(
                "--draft-min {} is larger than --draft-max {}: lower --draft-min",
                self.draft_min, self.draft_max
            ));
        }
        Ok(())
    }

    /// Checks the sizes and, for a draft model, opens it and checks its
    /// vocabulary against `target`'s.
    pub fn load(&self, target: &Tokenizer) -> Result<Speculation> {
        self.check()?;
        let draft = match &self.kind {
            SpecKind::Ngram => None,
            SpecKind::DraftModel(path) => Some(Arc::new(open_draft(path, target)?)),
        };
        Ok(Speculation {
            params: self.clone(),
            draft,
            max_rows: 0,
        })
    }
}

/// Speculation ready to run: the settings and the draft model, if any.
#[derive(Clone)]
pub struct Speculation {
    pub params: SpecParams,
    pub draft: Option<Arc<Model>>,
    /// Most rows (decode + draft) per step while several sequences decode
    /// (a lone sequence drafts up to `draft_max`, as the cost model
    /// allows); 0: [`ROWS_PER_THREAD`] x the engine's threads (set by
    /// `Engine::start`).
    pub max_rows: usize,
}

impl fmt::Debug for Speculation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Speculation")
            .field("params", &self.params)
            .field("draft", &self.draft.as_ref().map(|m| m.config.n_layers))
            .field("max_rows", &self.max_rows)
            .finish()
    }
}

fn open_draft(path: &Path, target: &Tokenizer) -> Result<Model> {
    let loaded = crate::Loaded::open(path)?;
    check_vocab(target, &loaded.tokenizer).map_err(|detail| {
        Error::from(ErrorKind::DraftVocab {
            path: path.to_path_buf(),
            detail,
        })
    })?;
    Ok(loaded.model)
}

/// Whether a draft model's tokenizer gives the same ids as the target's:
/// the same size, the same token texts, the same special tokens. Returns
/// the first difference.
pub fn check_vocab(target: &Tokenizer, draft: &Tokenizer) -> std::result::Result<(), String> {
    if target.model_kind() != draft.model_kind() {
        return Err(format!(
            "the tokenizer kinds differ (target {:?}, draft {:?})",
            target.model_kind(),
            draft.model_kind()
        ));
    }
    if target.vocab_size() != draft.vocab_size() {
        return Err(format!(
            "the vocabularies have {} (target) and {} (draft) tokens",
            target.vocab_size(),
            draft.vocab_size()
        ));
    }
    for id in 0..target.vocab_size() as u32 {
        let (a, b) = (target.token_text(id), draft.token_text(id));
        if a != b {
            return Err(format!(
                "token {id} is {:?} in the target and {:?} in the draft",
                a.unwrap_or(""),
                b.unwrap_or("")
            ));
        }
    }
    for (what, a, b) in [
        ("BOS", target.bos(), draft.bos()),
        ("EOS", target.eos(), draft.eos()),
        ("EOT", target.eot(), draft.eot()),
    ] {
        if a != b {
            return Err(format!(
                "the {what} tokens differ (target {a:?}, draft {b:?})"
            ));
        }
    }
    Ok(())
}

/// Per request: the current draft, the acceptance record and the running
/// counts.
#[derive(Debug)]
pub(crate) struct SpecState {
    /// Most tokens drafted per step (`--draft-max`; 0: speculation off).
    pub draft_max: usize,
    /// This step's guesses (after the pending token), empty when none.
    pub draft: Vec<u32>,
    /// Where this step's guesses come from (see [`SpecState::source_of`]).
    pub source: usize,
    /// Whether the last draft verified was accepted whole: a request
    /// copying a span of its input keeps copying, so the acceptance
    /// after a whole draft is kept apart from the acceptance after a
    /// rejection.
    pub last_whole: bool,
    /// Guesses of this step checked and accepted so far.
    pub verified: usize,
    /// Acceptance so far, per source.
    pub record: Acceptance,
    /// Totals of the request.
    pub drafted: usize,
    pub accepted: usize,
}

impl SpecState {
    pub fn new(draft_max: usize) -> SpecState {
        SpecState {
            draft_max,
            draft: Vec::new(),
            source: 0,
            last_whole: false,
            verified: 0,
            record: Acceptance::new(2 * (NGRAM_MAX + 1)),
            drafted: 0,
            accepted: 0,
        }
    }

    /// The [`Acceptance`] source of a draft from `from` (the n-gram
    /// match length, 0 for a draft model), given how the last draft went.
    pub fn source_of(&self, from: usize) -> usize {
        from.min(NGRAM_MAX) + usize::from(self.last_whole) * (NGRAM_MAX + 1)
    }

    /// After a step's verification: records how much of the draft was
    /// accepted and forgets it.
    pub fn verified_draft(&mut self) {
        if self.draft.is_empty() {
            return;
        }
        self.record
            .record(self.source, self.draft.len(), self.verified);
        self.last_whole = self.verified == self.draft.len();
        self.draft.clear();
        self.verified = 0;
    }
}

/// Prompt lookup: appends to `out` up to `k` tokens that followed the
/// earlier occurrences of the longest suffix of `hist` (from [`NGRAM_MAX`]
/// down to [`NGRAM_MIN`] tokens) that has any. Returns the length of that
/// suffix (0: none found, nothing appended).
///
/// Where the suffix occurred several times, the continuations vote: each
/// guessed token is the one that most of the occurrences still agreeing
/// with the guess so far continue with, ties to the latest occurrence. A
/// copied table row or form line follows the common pattern rather than
/// whichever variant came last (in the replay of the task sets' greedy
/// outputs, `scripts/spec-replay.py`, held-out set 2 went from 2.17x to
/// 2.48x and no task got slower; BENCHMARKS "Session 26").
pub fn ngram_draft(hist: &[u32], k: usize, out: &mut Vec<u32>) -> usize {
    let len = hist.len();
    if k == 0 {
        return 0;
    }
    for n in (NGRAM_MIN..=NGRAM_MAX.min(len.saturating_sub(1))).rev() {
        let key = &hist[len - n..];
        // Where each earlier occurrence's continuation starts, latest
        // first, at most NGRAM_VOTERS of them.
        let mut alive: Vec<usize> = (0..len - n)
            .rev()
            .filter(|&i| &hist[i..i + n] == key)
            .map(|i| i + n)
            .take(NGRAM_VOTERS)
            .collect();
        if alive.is_empty() {
            continue;
        }
        // (token, rank) of the continuations at the next offset; the rank
        // is the order in `alive`, so the lower ranks are the later ones.
        let mut votes: Vec<(u32, usize)> = Vec::with_capacity(alive.len());
        for j in 0..k {
            votes.clear();
            votes.extend(
                alive
                    .iter()
                    .enumerate()
                    .filter_map(|(r, &s)| hist.get(s + j).map(|&t| (t, r))),
            );
            votes.sort_unstable();
            // The token with the most votes; among equals the one whose
            // latest occurrence is latest (its lowest rank).
            let mut best: Option<(usize, usize, u32)> = None;
            for run in votes.chunk_by(|a, b| a.0 == b.0) {
                let (count, rank) = (run.len(), run[0].1);
                if best.is_none_or(|(c, r, _)| count > c || (count == c && rank < r)) {
                    best = Some((count, rank, run[0].0));
                }
            }
            let Some((_, _, token)) = best else { break };
            out.push(token);
            alive.retain(|&s| hist.get(s + j) == Some(&token));
        }
        return n;
    }
    0
}

/// One drafting request: a slot, its history (evaluated tokens, then the
/// pending one) and how many tokens to guess.
pub(crate) struct DraftWant {
    pub slot: usize,
    pub hist: Vec<u32>,
    pub k: usize,
}

/// A draft model's state in the engine: a cache per slot and the tokens it
/// holds.
pub(crate) struct Drafter {
    model: Arc<Model>,
    scratch: Scratch,
    caches: Vec<KvCache>,
    tokens: Vec<Vec<u32>>,
    rows: Vec<BatchRow>,
    logits: Vec<f32>,
}

impl Drafter {
    pub fn new(
        model: Arc<Model>,
        slots: usize,
        n_ctx: usize,
        kv: KvTypes,
        n_batch: usize,
    ) -> Drafter {
        let c = &model.config;
        let caches = (0..slots)
            .map(|_| KvCache::new(c.n_layers, n_ctx, c.kv_dim(), kv))
            .collect();
        Drafter {
            scratch: model.scratch(n_batch),
            caches,
            tokens: vec![Vec::new(); slots],
            rows: Vec::new(),
            logits: Vec::new(),
            model,
        }
    }

    /// Greedy drafts for every want, in order: one forward of the draft
    /// model catches each slot's cache up with its history (only what
    /// differs from what it holds), then one per further guessed position.
    pub fn draft(
        &mut self,
        pool: &cria_kernels::ThreadPool,
        wants: &[DraftWant],
    ) -> Result<Vec<Vec<u32>>> {
        let n_vocab = self.model.config.n_vocab;
        let mut out: Vec<Vec<u32>> = wants.iter().map(|_| Vec::new()).collect();
        self.rows.clear();
        for w in wants {
            let held = &mut self.tokens[w.slot];
            let common = held.iter().zip(&w.hist).take_while(|(a, b)| a == b).count();
            // The last history token is evaluated again when it is
            // already held: its logits give the first guess.
            let from = common.min(w.hist.len().saturating_sub(1));
            held.truncate(from);
            for (p, &token) in w.hist.iter().enumerate().skip(from) {
                self.rows.push(BatchRow {
                    seq: w.slot,
                    token,
                    pos: p,
                    logits: p + 1 == w.hist.len(),
                });
                held.push(token);
            }
        }
        let mut active: Vec<usize> = (0..wants.len()).collect();
        let max_k = wants.iter().map(|w| w.k).max().unwrap_or(0);
        for round in 0..max_k {
            if self.rows.is_empty() {
                break;
            }
            let mut caches: Vec<&mut KvCache> = self.caches.iter_mut().collect();
            self.model.forward_rows(
                &mut self.scratch,
                pool,
                &mut caches,
                &self.rows,
                &mut self.logits,
            )?;
            self.rows.clear();
            let mut still = Vec::with_capacity(active.len());
            for (j, &a) in active.iter().enumerate() {
                let row = &self.logits[j * n_vocab..(j + 1) * n_vocab];
                let (id, p) = argmax_prob(row);
                if p < DRAFT_P_MIN {
                    continue;
                }
                out[a].push(id);
                let w = &wants[a];
                let pos = w.hist.len() + round;
                if out[a].len() < w.k && pos < self.caches[w.slot].n_ctx {
                    self.rows.push(BatchRow {
                        seq: w.slot,
                        token: id,
                        pos,
                        logits: true,
                    });
                    self.tokens[w.slot].push(id);
                    still.push(a);
                }
            }
            active = still;
        }
        Ok(out)
    }

    /// Forgets what slot `i`'s draft cache holds (its target cache was
    /// cleared).
    pub fn forget(&mut self, i: usize) {
        if let Some(t) = self.tokens.get_mut(i) {
            t.clear();
        }
    }
}

/// The most likely token (the first of equals) and its probability under
/// the softmax of `row`.
fn argmax_prob(row: &[f32]) -> (u32, f32) {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    let max = row.get(best).copied().unwrap_or(0.0);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    (best as u32, if sum > 0.0 { 1.0 / sum } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_finds_the_latest_longest_match() {
        // ... 5 6 7 8 ... 5 6 7 9 ... 6 7 -> the latest "6 7" is followed by 9.
        let h = [1, 5, 6, 7, 8, 2, 5, 6, 7, 9, 3, 6, 7];
        let mut out = Vec::new();
        assert_eq!(ngram_draft(&h, 3, &mut out), 2);
        assert_eq!(out, [9, 3, 6]);
        // A longer suffix wins over a later shorter one: "5 6 7" -> 8 (its
        // latest occurrence with 4 tokens is unique).
        let h = [4, 5, 6, 7, 8, 1, 7, 2, 4, 5, 6, 7];
        out.clear();
        assert_eq!(ngram_draft(&h, 2, &mut out), 4);
        assert_eq!(out, [8, 1]);
        // Nothing seen before: no draft; the draft stops at the history's end.
        out.clear();
        assert_eq!(ngram_draft(&[1, 2, 3], 4, &mut out), 0);
        assert!(out.is_empty());
        ngram_draft(&[1, 2, 1], 4, &mut out);
        assert_eq!(out, [2, 1]);
        out.clear();
        ngram_draft(&[1, 2, 1], 0, &mut out);
        assert!(out.is_empty());
        ngram_draft(&[], 3, &mut out);
        ngram_draft(&[1], 3, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn ngram_continuations_vote() {
        // "5 6" was followed by 1, 1, then 2 (the latest): the majority
        // wins, and the guess goes on with the two occurrences that agree;
        // at their fourth token they split (1, then 2 in the later one),
        // and the tie goes to the later.
        let h = [5, 6, 1, 5, 6, 1, 5, 6, 2, 5, 6];
        let mut out = Vec::new();
        assert_eq!(ngram_draft(&h, 4, &mut out), 2);
        assert_eq!(out, [1, 5, 6, 2]);
        // A tie goes to the latest: 3 and 4 once each, 4 last.
        let h = [7, 3, 7, 4, 7];
        out.clear();
        assert_eq!(ngram_draft(&h, 2, &mut out), 1);
        assert_eq!(out, [4, 7]);
        // Every offset votes: all three "8"s go on with 1, two of them
        // then with 2 and the latest with 3, so 2; then 9 from those two.
        let h = [8, 1, 2, 9, 8, 1, 2, 9, 8, 1, 3, 9, 5, 8];
        out.clear();
        assert_eq!(ngram_draft(&h, 3, &mut out), 1);
        assert_eq!(out, [1, 2, 9]);
        // Only the latest NGRAM_VOTERS occurrences vote: 8 follows
        // "1 2 3 4" in all of them, 9 in three times as many before.
        let mut h = [1, 2, 3, 4, 9].repeat(3 * NGRAM_VOTERS);
        h.extend([1, 2, 3, 4, 8].repeat(NGRAM_VOTERS));
        h.extend([1, 2, 3, 4]);
        out.clear();
        assert_eq!(ngram_draft(&h, 2, &mut out), 4);
        assert_eq!(out, [8, 1]);
        // A long run of one token drafts as far as asked.
        out.clear();
        ngram_draft(&vec![5; 100_000], 16, &mut out);
        assert_eq!(out, [5; 16]);
    }

    /// [`ngram_draft`] written the slow way: counts by scanning, no sort.
    fn ngram_reference(hist: &[u32], k: usize) -> (Vec<u32>, usize) {
        let len = hist.len();
        for n in (NGRAM_MIN..=NGRAM_MAX.min(len.saturating_sub(1))).rev() {
            let key = &hist[len - n..];
            let starts: Vec<usize> = (0..len - n)
                .rev()
                .filter(|&i| &hist[i..i + n] == key)
                .map(|i| i + n)
                .take(NGRAM_VOTERS)
                .collect();
            if starts.is_empty() || k == 0 {
                continue;
            }
            let mut alive = starts;
            let mut d = Vec::new();
            for j in 0..k {
                let at = |s: usize| hist.get(s + j).copied();
                let mut pick: Option<(usize, usize, u32)> = None;
                for (r, &s) in alive.iter().enumerate() {
                    let Some(t) = at(s) else { continue };
                    let count = alive.iter().filter(|&&s2| at(s2) == Some(t)).count();
                    let first = alive.iter().position(|&s2| at(s2) == Some(t));
                    if first != Some(r) {
                        continue;
                    }
                    if pick.is_none_or(|(c, _, _)| count > c) {
                        pick = Some((count, r, t));
                    }
                }
                let Some((_, _, t)) = pick else { break };
                d.push(t);
                alive.retain(|&s| at(s) == Some(t));
            }
            return (d, n);
        }
        (Vec::new(), 0)
    }

    #[test]
    fn ngram_draft_matches_its_reference() {
        use rand::{Rng, SeedableRng};
        // Small alphabets, so suffixes recur and votes tie.
        let mut rng = rand::rngs::StdRng::seed_from_u64(26);
        for case in 0..400 {
            let len = rng.gen_range(1..=200);
            let alphabet = rng.gen_range(2..6);
            let hist: Vec<u32> = (0..len).map(|_| rng.gen_range(0..alphabet)).collect();
            let k = rng.gen_range(0..18);
            let mut out = vec![99];
            let n = ngram_draft(&hist, k, &mut out);
            let (want, want_n) = ngram_reference(&hist, k);
            assert_eq!(
                (n, &out[1..]),
                (want_n, &want[..]),
                "case {case}: {hist:?} k {k}"
            );
        }
    }

    #[test]
    fn verified_drafts_feed_the_acceptance_record() {
        let mut s = SpecState::new(8);
        s.source = 3;
        s.draft = vec![1, 2, 3, 4];
        s.verified = 2;
        s.verified_draft();
        assert_eq!((s.draft.len(), s.verified), (0, 0));
        // 2 accepted of 3 tried, on top of the prior (1 of 2).
        assert!((s.record.p(3) - 3.0 / 5.0).abs() < 1e-12);
        assert_eq!(s.record.p(2), 0.5);
        // No draft this step: nothing recorded.
        s.verified_draft();
        assert!((s.record.p(3) - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn acceptance_after_a_whole_draft_is_kept_apart() {
        let mut s = SpecState::new(8);
        assert!(!s.last_whole);
        assert_eq!(s.source_of(3), 3);
        // A draft accepted whole: the next draft's source is the same
        // match length after a whole draft.
        s.source = s.source_of(3);
        s.draft = vec![1, 2, 3];
        s.verified = 3;
        s.verified_draft();
        assert!(s.last_whole);
        let after_whole = s.source_of(3);
        assert_eq!(after_whole, 3 + NGRAM_MAX + 1);
        assert_ne!(s.source_of(2), s.source_of(3));
        // That source has its own record (prior 1 of 2 only).
        assert_eq!(s.record.p(after_whole), 0.5);
        assert!((s.record.p(3) - 4.0 / 5.0).abs() < 1e-12);
        s.source = after_whole;
        s.draft = vec![4, 5];
        s.verified = 0;
        s.verified_draft();
        assert!(!s.last_whole);
        assert!((s.record.p(after_whole) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.source_of(3), 3);
        // Match lengths past NGRAM_MAX stay in range of the record.
        assert!(s.source_of(99) < 2 * (NGRAM_MAX + 1));
    }

    #[test]
    fn params_are_checked() {
        let p = |max, min| SpecParams {
            kind: SpecKind::Ngram,
            draft_max: max,
            draft_min: min,
        };
        assert!(p(16, 0).check().is_ok());
        assert!(p(16, 16).check().is_ok());
        assert!(p(0, 0)
            .check()
            .unwrap_err()
            .to_string()
            .contains("--draft-max 0"));
        assert!(p(4, 5)
            .check()
            .unwrap_err()
            .to_string()
            .contains("--draft-min 5"));
        assert!(p(65, 0).check().is_err());
        assert_eq!("ngram".parse::<SpecType>(), Ok(SpecType::Ngram));
        assert!("ngram-cache"
            .parse::<SpecType>()
            .unwrap_err()
            .contains("ngram"));
    }

    #[test]
    fn argmax_takes_the_first_of_equals() {
        let (id, p) = argmax_prob(&[0.0, 2.0, 2.0, -1.0]);
        assert_eq!(id, 1);
        let e = |x: f32| x.exp();
        let want = e(2.0) / (e(0.0) + 2.0 * e(2.0) + e(-1.0));
        assert!((p - want).abs() < 1e-6, "{p} {want}");
        assert_eq!(argmax_prob(&[5.0, 0.0]).0, 0);
        assert!(argmax_prob(&[f32::NEG_INFINITY, 3.0]).1 > 0.999);
    }
}
