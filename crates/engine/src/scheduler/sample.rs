//! The scheduler's sampling side: a logits row becomes the next token of
//! its slot (through the request's grammar), which is sent, checked against
//! stop strings and limits, and ends the job when it is finished.

use super::{Job, Scheduler};
use crate::error::Error;
use crate::fault::FaultSite;
use crate::overflow::{ContextOverflow, OverflowReport};
use crate::params::FinishReason;
use crate::request::{Done, Event, SpecReport, TokenEvent};
use cria_sampler::{RowArgmax, StopOutcome};
use cria_tokenizer::Tokenizer;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Scheduler<'_> {
    /// Samples the next token of slot `i` from its logits row (`known`:
    /// the row's argmax, if computed), sends it, and ends the job if it is
    /// finished.
    pub(super) fn sample_slot(&mut self, i: usize, row: &[f32], known: Option<RowArgmax>) {
        if let Some(job) = &self.slots[i].job {
            self.fault(FaultSite::Sample, &job.req);
        }
        let n_ctx = self.config.n_ctx;
        let (tok, model) = (self.tok, self.model);
        let shift = self.config.overflow == ContextOverflow::Shift;
        let slot = &mut self.slots[i];
        let n_cached = slot.tokens.len();
        let Some(job) = &mut slot.job else { return };
        let finish = 'f: {
            if job.req.cancelled() {
                break 'f Some(FinishReason::Cancelled);
            }
            if job
                .req
                .params
                .max_tokens
                .is_some_and(|m| job.generated >= m)
            {
                break 'f Some(FinishReason::Length);
            }
            let id = match sample_constrained(job, row, known, tok) {
                Ok(id) => id,
                Err(e) => {
                    if let Some(job) = slot.job.take() {
                        job.end(Event::Error(e));
                    }
                    return;
                }
            };
            job.generated += 1;
            self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if job.first_token.is_none() {
                job.first_token = Some(Instant::now());
            }
            let (mut logprob, mut top_logprobs) = (None, Vec::new());
            let (mut prob, mut top_probs) = (None, Vec::new());
            match job.req.logprobs {
                Some(n) if job.req.post_sampling_probs => {
                    let (p, top) = job.sampler.post_sampling_probs(n);
                    prob = Some(p);
                    top_probs = top;
                }
                Some(n) => {
                    let lsm = cria_kernels::LogSoftmax::new(row);
                    logprob = Some(lsm.of(row[id as usize]) as f32);
                    top_logprobs = cria_sampler::top_logprobs(row, n);
                }
                None => {}
            }
            if tok.is_eog(id) && (!job.req.params.ignore_eos || job.req.params.constraint.is_some())
            {
                break 'f Some(FinishReason::EndOfGeneration);
            }
            let (text, stopped) = match job.stops.push(&job.detok.push(id)) {
                StopOutcome::Continue { emit } => (emit, false),
                StopOutcome::Stopped { emit, .. } => (emit, true),
            };
            let _ = job.req.events.send(Event::Token(TokenEvent {
                id,
                text,
                logprob,
                top_logprobs,
                prob,
                top_probs,
            }));
            if stopped {
                break 'f Some(FinishReason::StopString);
            }
            // The grammar allows nothing but the end: stop now rather than
            // spend a forward pass on the end-of-generation token.
            if job
                .req
                .params
                .constraint
                .as_ref()
                .is_some_and(|c| c.is_finished())
            {
                break 'f Some(FinishReason::EndOfGeneration);
            }
            if job
                .req
                .params
                .max_tokens
                .is_some_and(|m| job.generated >= m)
            {
                break 'f Some(FinishReason::Length);
            }
            if n_cached >= n_ctx {
                if !shift {
                    break 'f Some(FinishReason::ContextFull);
                }
                // See overflow.rs: keep the start, drop the oldest half of
                // the rest, re-rope the newer half into place.
                let keep = crate::overflow::shift_keep(job.req.prompt.len(), n_ctx);
                let discard = crate::overflow::shift_discard(n_cached, keep);
                model.shift_cache(&mut slot.cache, keep, discard, n_cached);
                slot.tokens.drain(keep..keep + discard);
                job.shifted += discard;
            }
            job.pending = Some(id);
            None
        };
        if let Some(finish) = finish {
            if let Some(job) = slot.job.take() {
                finish_job(job, finish);
            }
        }
    }
}

/// Samples the next token of `job` from `row` (`known`: its argmax, if
/// computed; through its grammar's mask when it has one) and records it in
/// the sampler and the grammar. An end-of-generation token is offered
/// only where the grammar is complete, and is not fed to the grammar.
fn sample_constrained(
    job: &mut Job<'_>,
    row: &[f32],
    known: Option<RowArgmax>,
    tok: &Tokenizer,
) -> Result<u32, Error> {
    let id = match job.req.params.constraint.as_mut() {
        Some(c) => {
            let mask = c.allowed()?;
            job.sampler.sample_allowed(row, Some(mask))?
        }
        None => job.sampler.sample_known(row, None, known)?,
    };
    job.sampler.accept(id)?;
    if let Some(c) = job.req.params.constraint.as_mut() {
        if !tok.is_eog(id) {
            c.accept(id)?;
        }
    }
    Ok(id)
}

/// Sends the held-back text and the summary.
pub(super) fn finish_job(mut job: Job<'_>, finish: FinishReason) {
    let mut text = String::new();
    if !matches!(finish, FinishReason::StopString | FinishReason::Cancelled) {
        let rest = job.detok.finish();
        text = match job.stops.push(&rest) {
            StopOutcome::Continue { emit } | StopOutcome::Stopped { emit, .. } => emit,
        };
        text.push_str(&job.stops.flush());
    }
    let now = Instant::now();
    let first = job.first_token.unwrap_or(now);
    let done = Done {
        finish,
        text,
        prompt_tokens: job.req.prompt.len(),
        cached_tokens: job.cached,
        restored_tokens: job.restored,
        completion_tokens: job.generated,
        prompt_time: first - job.admitted,
        generation_time: now - first,
        overflow: (job.shifted > 0).then_some(OverflowReport {
            action: ContextOverflow::Shift,
            dropped_tokens: job.shifted,
        }),
        spec: (job.spec.draft_max > 0).then_some(SpecReport {
            drafted: job.spec.drafted,
            accepted: job.spec.accepted,
        }),
    };
    job.end(Event::Done(done));
}
