//! The scheduler's side of speculative decoding (see `spec.rs`): drafting
//! before a step and confirming draft rows after it.

use super::Scheduler;
use crate::spec::cost::{batch_row_cost, best_draft_len};
use crate::spec::{ngram_draft, DraftWant};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

impl Scheduler<'_> {
    /// Whether slot `i`'s next draft token is the token its last row
    /// sampled; if so it is recorded as evaluated and stops being pending.
    pub(super) fn confirm_draft(&mut self, i: usize) -> bool {
        let slot = &mut self.slots[i];
        let Some(job) = &mut slot.job else {
            return false;
        };
        let guess = job.spec.draft.get(job.spec.verified).copied();
        if guess.is_none() || job.pending != guess {
            return false;
        }
        if let Some(t) = job.pending.take() {
            slot.tokens.push(t);
        }
        job.spec.verified += 1;
        job.spec.accepted += 1;
        self.stats.spec_accepted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Fills `job.spec.draft` of the decoding sequences: as many tokens as
    /// the cost model finds worth a row (`spec/cost.rs`), within the rows
    /// `Speculation::max_rows` leaves for drafts when several sequences
    /// decode.
    pub(super) fn make_drafts(&mut self) {
        let Some(spec) = &self.config.spec else {
            return;
        };
        let (draft_min, max_rows) = (spec.params.draft_min, spec.max_rows);
        let decoding: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i]
                    .job
                    .as_ref()
                    .is_some_and(|j| j.pending.is_some() && j.embed.is_none())
            })
            .collect();
        if decoding.is_empty() {
            return;
        }
        let n = decoding.len();
        let share = if n == 1 {
            usize::MAX
        } else {
            max_rows.saturating_sub(n) / n
        };
        if share == 0 {
            self.stats.spec_off_steps.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let row_cost = batch_row_cost(self.row_cost.ratio(), n);
        let n_ctx = self.config.n_ctx;
        let mut wants = Vec::new();
        for &i in &decoding {
            let slot = &mut self.slots[i];
            let Some(job) = &mut slot.job else { continue };
            let Some(pending) = job.pending else { continue };
            // Draft positions stay inside the context, and no more tokens
            // are drafted than may still be generated after the pending
            // token's row.
            let mut k = job
                .spec
                .draft_max
                .min(share)
                .min(n_ctx.saturating_sub(slot.tokens.len() + 1));
            if let Some(m) = job.req.params.max_tokens {
                k = k.min(m.saturating_sub(job.generated + 1));
            }
            if k == 0 || k < draft_min {
                continue;
            }
            self.hist.clear();
            self.hist.extend_from_slice(&slot.tokens);
            self.hist.push(pending);
            if self.drafter.is_some() {
                // A draft model's guesses are one source; ask for no more
                // than its acceptance so far makes worth verifying.
                let source = job.spec.source_of(0);
                let k = best_draft_len(job.spec.record.p(source), row_cost, k);
                if k == 0 || k < draft_min {
                    continue;
                }
                job.spec.source = source;
                wants.push(DraftWant {
                    slot: i,
                    hist: self.hist.clone(),
                    k,
                });
            } else {
                // The match length is known once the lookup is done: keep
                // as much of the guess as that source's acceptance pays for.
                let m = ngram_draft(&self.hist, k, &mut job.spec.draft);
                let source = job.spec.source_of(m);
                let keep =
                    best_draft_len(job.spec.record.p(source), row_cost, job.spec.draft.len());
                job.spec.draft.truncate(keep);
                job.spec.source = source;
            }
        }
        if let Some(drafter) = &mut self.drafter {
            if !wants.is_empty() {
                let pool = &self.pool;
                let result = catch_unwind(AssertUnwindSafe(|| drafter.draft(pool, &wants)));
                let failure = match result {
                    Ok(Ok(drafts)) => {
                        for (w, mut d) in wants.iter().zip(drafts) {
                            if let Some(job) = &mut self.slots[w.slot].job {
                                d.truncate(w.k);
                                job.spec.draft = d;
                            }
                        }
                        None
                    }
                    Ok(Err(e)) => Some(format!("the draft model failed: {e}")),
                    Err(_) => {
                        self.stats.panics.fetch_add(1, Ordering::Relaxed);
                        Some("the draft model panicked (a bug: please report it)".to_string())
                    }
                };
                if let Some(msg) = failure {
                    for w in &wants {
                        drafter.forget(w.slot);
                    }
                    for w in &wants {
                        self.fail_slot(w.slot, &msg);
                    }
                    return;
                }
            }
        }
        for &i in &decoding {
            if let Some(job) = &mut self.slots[i].job {
                if job.spec.draft.len() < draft_min {
                    job.spec.draft.clear();
                }
                let n = job.spec.draft.len();
                job.spec.drafted += n;
                if n > 0 {
                    self.stats.spec_drafts.fetch_add(1, Ordering::Relaxed);
                }
                self.stats
                    .spec_drafted
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}
