//! Continuous batching: many requests share one forward pass per step.
//!
//! The thread an [`Engine`](crate::Engine) starts owns the model's `slots`
//! KV caches. Requests come in over a channel
//! ([`Engine::submit`](crate::Engine::submit)); each carries its
//! own event channel, on which the engine sends [`Event`]s: one
//! [`Event::Token`] per generated token, then one [`Event::Done`] (or an
//! [`Event::Error`]). Every step the thread builds one batch of rows: the
//! next token of every decoding sequence, then prompt tokens of newly
//! admitted ones up to `step_tokens` rows, and evaluates it with
//! [`Model::forward_rows`], so the weights are read once per step however
//! many sequences are active. A request joins between steps, leaves when
//! it finishes, and is cancelled at the next step once its event receiver
//! is dropped (the client went away) or its cancel flag is raised.
//!
//! A slot keeps the tokens of its last request in its cache, and a new
//! request of the same tenant goes to the free slot sharing the longest
//! prefix with its prompt, so a chat's next turn evaluates only its new
//! messages. With a prefix cache on disk (`pcache.rs`), admission then
//! restores what the disk holds beyond the slot's own prefix, and a
//! prompt is written once evaluated.
//!
//! Speculation (`spec.rs`): before building a step, each decoding
//! sequence may get draft tokens, which become rows with logits after its
//! pending token; after the pass its rows are sampled in order while the
//! sampled token equals the draft, so the output is the same as without
//! speculation.
//!
//! Supervision: admitting a request, the forward pass and sampling each run
//! under `catch_unwind`. A panic fails only the requests it touched (an
//! [`Event::Error`] with [`ErrorKind::Internal`]) and the engine goes on
//! with the others. If the thread itself dies, `Engine::is_running` says
//! so and every waiting request's channel closes.

use crate::embed::{Pooler, Pooling};
use crate::engine::{Busy, EngineConfig, EngineStats, Msg, Queued, Ticket};
use crate::error::{Error, ErrorKind};
use crate::fault::{Fault, FaultSite};
use crate::params::FinishReason;
use crate::request::{Done, Event, PromptProgress, Request};
use crate::spec::{Drafter, SpecState};
use cria_model::{BatchRow, KvCache, KvType, Model, Outputs};
use cria_sampler::{Sampler, StopStrings};
use cria_tokenizer::{Detokenizer, Tokenizer};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

mod sample;
mod speculate;

use sample::finish_job;

/// A request in a slot.
struct Job<'t> {
    req: Request,
    ticket: Ticket,
    /// Counts the job in `EngineStats::active` while it lives.
    busy: Busy,
    /// Index in `req.prompt` of the next prompt token to evaluate.
    next: usize,
    cached: usize,
    sampler: Sampler,
    detok: Detokenizer<'t>,
    stops: StopStrings,
    generated: usize,
    /// A sampled token waiting to be evaluated by the next step.
    pending: Option<u32>,
    admitted: Instant,
    first_token: Option<Instant>,
    /// An embedding request's pooled rows (see `embed.rs`).
    embed: Option<Pooler>,
    /// Tokens discarded by context shifts (`--context-overflow shift`).
    shifted: usize,
    /// Speculation's draft and counts (`draft_max == 0`: off).
    spec: SpecState,
    /// Prompt tokens restored from the prefix cache on disk.
    restored: usize,
    /// Write the prompt to the prefix cache once it is evaluated.
    persist: bool,
}

impl Job<'_> {
    /// Whether the prompt token at `index` gives an output row: the last
    /// one's logits choose the first new token; an embedding wants the
    /// rows its pooling reads.
    fn wants_output(&self, index: usize) -> bool {
        let len = self.req.prompt.len();
        match &self.embed {
            Some(p) => p.pooling().wants(index, len),
            None => index + 1 == len,
        }
    }

    /// Reports how far the prompt is evaluated, if the request asks.
    fn progress(&self, elapsed: Duration) {
        if self.req.progress {
            let _ = self.req.events.send(Event::Progress(PromptProgress {
                total: self.req.prompt.len(),
                cache: self.cached,
                processed: self.next,
                elapsed,
            }));
        }
    }

    /// Ends the request with its last event; the ticket and the busy
    /// count go first, so whoever has the event sees the slot free.
    fn end(self, event: Event) {
        let Job {
            req, ticket, busy, ..
        } = self;
        drop(ticket);
        drop(busy);
        let _ = req.events.send(event);
    }
}

struct Slot<'t> {
    cache: KvCache,
    /// Tokens whose keys and values are in `cache`, in order.
    tokens: Vec<u32>,
    /// The tenant whose tokens are in `cache`.
    tenant: u32,
    /// The adapters `cache` was computed with (a prefix is reused only
    /// under the same ones).
    lora: cria_model::LoraSet,
    job: Option<Job<'t>>,
    /// Step at which the slot last held a request (least recently used
    /// wins a tie).
    last_used: u64,
}

pub(crate) struct Scheduler<'m> {
    model: &'m Model,
    tok: &'m Tokenizer,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    slots: Vec<Slot<'m>>,
    waiting: VecDeque<Box<Queued>>,
    scratch: cria_model::Scratch,
    pool: cria_kernels::ThreadPool,
    rows: Vec<BatchRow>,
    /// Parallel to `rows`: whether the row is a draft token.
    draft_row: Vec<bool>,
    /// A draft model's caches, with `-md`.
    drafter: Option<Drafter>,
    /// A sequence's tokens with its pending one, for the n-gram drafter.
    hist: Vec<u32>,
    /// What a verification row costs against a one-row step, measured on
    /// this step's decode steps (speculation's cost model).
    row_cost: crate::spec::cost::RowCost,
    logits: Vec<f32>,
    /// Per slot: whether its output rows are hidden states (embeddings).
    hidden_seqs: Vec<bool>,
    /// (rows, dim): the hidden states of this step's embedding rows.
    hidden: Vec<f32>,
    /// Per slot: its job's adapters; empty when no slot has any, so the
    /// forward pass takes the base model's path.
    lora: Vec<cria_model::LoraSet>,
    step: u64,
    persist: Option<crate::pcache::Persist>,
}

fn injected(site: FaultSite) -> ! {
    panic!("injected fault at {site:?} (a test of the engine's supervision)");
}

fn internal(detail: impl Into<String>) -> Event {
    Event::Error(
        ErrorKind::Internal {
            detail: detail.into(),
        }
        .into(),
    )
}

impl<'m> Scheduler<'m> {
    pub(crate) fn new(
        model: &'m Model,
        tok: &'m Tokenizer,
        config: EngineConfig,
        stats: Arc<EngineStats>,
        persist: Option<crate::pcache::Persist>,
    ) -> Scheduler<'m> {
        let c = &model.config;
        let slots = (0..config.slots)
            .map(|_| Slot {
                cache: KvCache::new(c.n_layers, config.n_ctx, c.kv_dim(), config.kv),
                tokens: Vec::new(),
                tenant: 0,
                lora: Vec::new(),
                job: None,
                last_used: 0,
            })
            .collect();
        let drafter = config.spec.as_ref().and_then(|s| s.draft.clone()).map(|d| {
            Drafter::new(
                d,
                config.slots,
                config.n_ctx,
                KvType::F16.into(),
                config.step_tokens,
            )
        });
        Scheduler {
            model,
            tok,
            drafter,
            draft_row: Vec::new(),
            hist: Vec::new(),
            row_cost: Default::default(),
            scratch: model.scratch(config.step_tokens),
            pool: cria_kernels::ThreadPool::new(config.threads.max(1)),
            config,
            stats,
            slots,
            waiting: VecDeque::new(),
            rows: Vec::new(),
            logits: Vec::new(),
            hidden_seqs: Vec::new(),
            hidden: Vec::new(),
            lora: Vec::new(),
            step: 0,
            persist,
        }
    }

    /// Whether the test hook asks for a panic at `site` for this request.
    fn faulty(&self, site: FaultSite, req: &Request) -> bool {
        self.config.fault
            == Some(Fault {
                site,
                seed: req.params.sampler.seed,
            })
    }

    fn fault(&self, site: FaultSite, req: &Request) {
        if self.faulty(site, req) {
            injected(site);
        }
    }

    pub(crate) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let idle = self.waiting.is_empty() && self.slots.iter().all(|s| s.job.is_none());
            // Sleep while there is nothing to do; otherwise only pick up
            // what has arrived.
            let first = if idle {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return,
                }
            } else {
                None
            };
            for msg in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match msg {
                    Msg::Request(q) => {
                        self.fault(FaultSite::Thread, &q.req);
                        self.waiting.push_back(q);
                    }
                    Msg::Shutdown => {
                        self.cancel_all();
                        return;
                    }
                }
            }
            self.drop_cancelled();
            self.admit();
            if self.slots.iter().any(|s| s.job.is_some()) {
                self.step();
            }
        }
    }

    /// Ends waiting and active requests that were cancelled: silently when
    /// the client is gone, with a `Cancelled` summary when it raised the
    /// flag and still listens.
    fn drop_cancelled(&mut self) {
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for q in self.waiting.drain(..) {
            if q.req.cancelled() {
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                let Queued { req, ticket } = *q;
                drop(ticket);
                let _ = req.events.send(Event::Done(empty_done(&req)));
            } else {
                kept.push_back(q);
            }
        }
        self.waiting = kept;
        for slot in &mut self.slots {
            if slot.job.as_ref().is_some_and(|j| j.req.cancelled()) {
                if let Some(job) = slot.job.take() {
                    finish_job(job, FinishReason::Cancelled);
                }
            }
        }
    }

    /// Moves waiting requests into free slots, each into the free slot
    /// whose cache (of the same tenant) shares the longest prefix with its
    /// prompt.
    fn admit(&mut self) {
        while !self.waiting.is_empty() {
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.job.is_none())
                .map(|(i, s)| {
                    let next = &self.waiting[0].req;
                    let lora = next.lora.as_ref().unwrap_or(&self.config.lora);
                    let common =
                        if s.tenant == next.tenant && cria_model::lora::same_set(&s.lora, lora) {
                            s.tokens
                                .iter()
                                .zip(&next.prompt)
                                .take_while(|(a, b)| a == b)
                                .count()
                        } else {
                            0
                        };
                    (common, std::cmp::Reverse(s.last_used), i)
                })
                .max();
            let Some((common, _, i)) = best else { return };
            let Some(q) = self.waiting.pop_front() else {
                return;
            };
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            self.step += 1;
            let Queued { req, ticket } = *q;
            // The request moves into the job; on an error or a panic it is
            // dropped (freeing its ticket) and the error goes out here.
            let events = req.events.clone();
            let started = catch_unwind(AssertUnwindSafe(|| {
                let r = self.restore(i, &req, common);
                let mut job = self.start_job(req, ticket, r.upto)?;
                job.restored = job.next.saturating_sub(common);
                job.persist = r.save;
                Ok(job)
            }));
            match started {
                Ok(Ok(job)) => {
                    let slot = &mut self.slots[i];
                    slot.tokens.truncate(job.next);
                    slot.tenant = job.req.tenant;
                    slot.lora = job
                        .req
                        .lora
                        .clone()
                        .unwrap_or_else(|| self.config.lora.clone());
                    slot.last_used = self.step;
                    job.progress(Duration::ZERO);
                    slot.job = Some(job);
                    self.lora.clear();
                    if self.slots.iter().any(|s| !s.lora.is_empty()) {
                        self.lora.extend(self.slots.iter().map(|s| s.lora.clone()));
                    }
                }
                Ok(Err(e)) => {
                    let _ = events.send(Event::Error(e));
                }
                Err(_) => {
                    self.stats.panics.fetch_add(1, Ordering::Relaxed);
                    // A restore may have stopped halfway.
                    self.slots[i].tokens.clear();
                    let _ = events.send(internal(
                        "the engine failed while admitting this request (a bug: please report it)",
                    ));
                }
            }
        }
    }

    /// Extends slot `i`'s `common` tokens of `req`'s prompt with what the
    /// prefix cache on disk holds; the slot then records what its cache
    /// holds. Embedding requests are not cached, nor requests with LoRA
    /// adapters: their keys and values depend on the adapters, which an
    /// entry's key does not name.
    fn restore(&mut self, i: usize, req: &Request, common: usize) -> crate::pcache::Restored {
        let none = crate::pcache::Restored {
            upto: common,
            save: false,
        };
        let Some(p) = &self.persist else { return none };
        let lora = req.lora.as_ref().unwrap_or(&self.config.lora);
        if req.embed.is_some() || !lora.is_empty() {
            return none;
        }
        let slot = &mut self.slots[i];
        let r = p.restore(&mut slot.cache, req.tenant, &req.prompt, common);
        if r.upto > common {
            slot.tokens.clear();
            slot.tokens.extend_from_slice(&req.prompt[..r.upto]);
            slot.tenant = req.tenant;
            self.stats
                .prefix_restored_tokens
                .fetch_add((r.upto - common) as u64, Ordering::Relaxed);
        }
        r
    }

    /// Writes the prompts evaluated in full by this step to the prefix
    /// cache on disk (after sampling, so the first token goes out first;
    /// sampling cannot have shifted a cache that holds just a prompt).
    fn persist_prompts(&mut self, done: &[(usize, u32, Vec<u32>)]) {
        let Some(p) = &self.persist else { return };
        for (i, tenant, prompt) in done {
            let cache = &self.slots[*i].cache;
            if catch_unwind(AssertUnwindSafe(|| p.save(cache, *tenant, prompt))).is_err() {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn start_job(&self, req: Request, ticket: Ticket, common: usize) -> Result<Job<'m>, Error> {
        self.fault(FaultSite::Admit, &req);
        let n_vocab = self.model.config.n_vocab;
        let mut sampler = Sampler::new(req.params.sampler.clone(), n_vocab)?;
        for &t in &req.prompt {
            sampler.accept(t)?;
        }
        // Evaluate at least the last prompt token: its logits choose the
        // first new token. An embedding pooled over more than the last
        // token needs every row's hidden state, which the cache does not
        // keep.
        let embed = req.embed.map(|p| Pooler::new(p, self.model.config.dim));
        let keep = match &embed {
            Some(p) if p.pooling() != Pooling::Last => 0,
            _ => common.min(req.prompt.len().saturating_sub(1)),
        };
        Ok(Job {
            next: keep,
            cached: keep,
            sampler,
            detok: Detokenizer::new(self.tok, false),
            stops: StopStrings::new(req.params.stop.iter().map(String::as_str)),
            generated: 0,
            pending: None,
            admitted: Instant::now(),
            first_token: None,
            embed,
            shifted: 0,
            spec: SpecState::new(self.config.spec.as_ref().map_or(0, |s| s.params.draft_max)),
            restored: 0,
            persist: false,
            busy: Busy::new(self.stats.clone()),
            req,
            ticket,
        })
    }

    /// One forward pass over every active slot, then sampling.
    fn step(&mut self) {
        self.rows.clear();
        self.draft_row.clear();
        let budget = self.config.step_tokens;
        self.make_drafts();
        // Decode rows first: one token per generating sequence, then its
        // draft tokens, if any.
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(job) = &slot.job {
                if let Some(token) = job.pending {
                    let pos = slot.tokens.len();
                    self.rows.push(BatchRow {
                        seq: i,
                        token,
                        pos,
                        logits: true,
                    });
                    self.draft_row.push(false);
                    for (j, &token) in job.spec.draft.iter().enumerate() {
                        self.rows.push(BatchRow {
                            seq: i,
                            token,
                            pos: pos + 1 + j,
                            logits: true,
                        });
                        self.draft_row.push(true);
                    }
                }
            }
        }
        // Then prompt rows, oldest admitted first, with what is left.
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                self.slots[i]
                    .job
                    .as_ref()
                    .is_some_and(|j| j.next < j.req.prompt.len())
            })
            .collect();
        order.sort_by_key(|&i| self.slots[i].job.as_ref().map(|j| j.admitted));
        for i in order {
            let room = budget.saturating_sub(self.rows.len());
            if room == 0 {
                break;
            }
            let slot = &self.slots[i];
            let Some(job) = &slot.job else { continue };
            let end = job.req.prompt.len().min(job.next + room);
            for (k, &token) in job.req.prompt[job.next..end].iter().enumerate() {
                let pos = slot.tokens.len() + k;
                self.rows.push(BatchRow {
                    seq: i,
                    token,
                    pos,
                    logits: job.wants_output(job.next + k),
                });
                self.draft_row.push(false);
            }
        }
        if self.rows.is_empty() {
            return;
        }
        let inject = self.rows.iter().any(|r| {
            self.slots[r.seq]
                .job
                .as_ref()
                .is_some_and(|j| self.faulty(FaultSite::Step, &j.req))
        });
        let started = Instant::now();
        let forward = catch_unwind(AssertUnwindSafe(|| {
            if inject {
                injected(FaultSite::Step);
            }
            self.hidden_seqs.clear();
            self.hidden_seqs.extend(
                self.slots
                    .iter()
                    .map(|s| s.job.as_ref().is_some_and(|j| j.embed.is_some())),
            );
            let mut caches: Vec<&mut KvCache> =
                self.slots.iter_mut().map(|s| &mut s.cache).collect();
            let out = Outputs {
                logits: &mut self.logits,
                hidden_seqs: &self.hidden_seqs,
                hidden: &mut self.hidden,
            };
            let (scratch, pool, rows) = (&mut self.scratch, &self.pool, &self.rows);
            self.model
                .forward_rows_lora(scratch, pool, &mut caches, rows, out, &self.lora)
        }));
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        // Decode steps (no prompt rows) time the rows for the cost model.
        let decode_only = self.rows.iter().zip(&self.draft_row).all(|(r, &d)| {
            d || self.slots[r.seq]
                .job
                .as_ref()
                .is_some_and(|j| j.pending.is_some())
        });
        if self.config.spec.is_some() && decode_only && matches!(forward, Ok(Ok(()))) {
            self.row_cost
                .observe(self.rows.len(), started.elapsed().as_secs_f64());
        }
        let failure = match forward {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("the forward pass failed: {e}")),
            Err(_) => {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                Some("the forward pass panicked (a bug: please report it)".to_string())
            }
        };
        if let Some(msg) = failure {
            // Which request caused it is unknown: the requests with rows in
            // this step fail and their slots forget their caches; the others
            // go on.
            let mut seqs: Vec<usize> = self.rows.iter().map(|r| r.seq).collect();
            seqs.dedup();
            for i in seqs {
                self.fail_slot(i, &msg);
            }
            return;
        }
        // Record what each slot's cache now holds (a draft token only once
        // it is confirmed, below).
        let mut prompt_rows = 0u64;
        let mut prompted = vec![false; self.slots.len()];
        for (r, _) in self.rows.iter().zip(&self.draft_row).filter(|(_, &d)| !d) {
            let slot = &mut self.slots[r.seq];
            slot.tokens.push(r.token);
            if let Some(job) = &mut slot.job {
                if job.pending.take().is_none() {
                    job.next += 1;
                    prompt_rows += 1;
                    prompted[r.seq] = true;
                }
            }
        }
        self.stats
            .prompt_tokens
            .fetch_add(prompt_rows, Ordering::Relaxed);
        // Progress goes out before the step's first token.
        for (slot, _) in self.slots.iter().zip(&prompted).filter(|(_, &p)| p) {
            if let Some(job) = &slot.job {
                job.progress(job.admitted.elapsed());
            }
        }
        // Prompts evaluated in full by this step, to write to disk.
        let mut evaluated = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(job) = &mut slot.job {
                if job.persist && job.next == job.req.prompt.len() {
                    job.persist = false;
                    evaluated.push((i, job.req.tenant, job.req.prompt.clone()));
                }
            }
        }
        // Sample for every row that asked for logits, in row order; a panic
        // fails that request alone. Embedding rows go to their poolers.
        let (n_vocab, dim) = (self.model.config.n_vocab, self.model.config.dim);
        let wanted: Vec<(usize, bool, bool)> = self
            .rows
            .iter()
            .zip(&self.draft_row)
            .filter(|(r, _)| r.logits)
            .map(|(r, &d)| {
                let hidden = self.hidden_seqs.get(r.seq).copied().unwrap_or(false);
                (r.seq, hidden, d)
            })
            .collect();
        let logits = std::mem::take(&mut self.logits);
        // Plain greedy picks, every row's columns shared among the threads.
        let plain = |i: usize| {
            self.slots[i]
                .job
                .as_ref()
                .is_some_and(|j| j.sampler.plain_greedy() && j.req.params.constraint.is_none())
        };
        let n_rows = wanted.iter().filter(|w| !w.1).count();
        let argmax = match wanted.iter().any(|&(i, hidden, _)| !hidden && plain(i)) {
            true => {
                let rows = &logits[..n_rows * n_vocab];
                let pool = &self.pool;
                // A panic here is a bug; each sampler then scans its row
                // itself, which picks the same token.
                catch_unwind(AssertUnwindSafe(|| {
                    cria_sampler::argmax_rows(rows, n_vocab, pool)
                }))
                .unwrap_or_else(|_| {
                    self.stats.panics.fetch_add(1, Ordering::Relaxed);
                    Vec::new()
                })
            }
            false => Vec::new(),
        };
        let (mut k, mut h) = (0, 0);
        for (i, hidden, draft) in wanted {
            if hidden {
                let row = &self.hidden[h * dim..(h + 1) * dim];
                h += 1;
                if let Some(p) = self.slots[i].job.as_mut().and_then(|j| j.embed.as_mut()) {
                    p.add(row);
                }
                continue;
            }
            let (row, known) = (
                &logits[k * n_vocab..(k + 1) * n_vocab],
                argmax.get(k).copied(),
            );
            k += 1;
            // A draft row is sampled only if the token just sampled is
            // its draft token (and every earlier one was confirmed): then
            // it holds the logits the next step would compute.
            if draft && !self.confirm_draft(i) {
                continue;
            }
            if catch_unwind(AssertUnwindSafe(|| self.sample_slot(i, row, known))).is_err() {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                self.fail_slot(i, "sampling panicked (a bug: please report it)");
            }
        }
        self.logits = logits;
        if self.config.spec.is_some() {
            for slot in &mut self.slots {
                if let Some(job) = &mut slot.job {
                    job.spec.verified_draft();
                }
            }
        }
        self.persist_prompts(&evaluated);
        self.finish_embeddings();
    }

    /// Ends the embedding requests whose whole input has been evaluated.
    fn finish_embeddings(&mut self) {
        for slot in &mut self.slots {
            let done = slot
                .job
                .as_ref()
                .is_some_and(|j| j.embed.is_some() && j.next == j.req.prompt.len());
            if !done {
                continue;
            }
            if let Some(mut job) = slot.job.take() {
                let n = job.req.prompt.len();
                if let Some(p) = job.embed.take() {
                    job.end(Event::Embedding(p.finish(n)));
                }
            }
        }
    }

    /// Fails slot `i`'s request with an internal error; the slot forgets
    /// its cache, which may hold half-written rows.
    fn fail_slot(&mut self, i: usize, msg: &str) {
        let slot = &mut self.slots[i];
        slot.tokens.clear();
        if let Some(job) = slot.job.take() {
            job.end(internal(msg));
        }
    }

    fn cancel_all(&mut self) {
        for slot in &mut self.slots {
            if let Some(job) = slot.job.take() {
                finish_job(job, FinishReason::Cancelled);
            }
        }
        for q in self.waiting.drain(..) {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            let Queued { req, ticket } = *q;
            drop(ticket);
            let _ = req.events.send(Event::Done(empty_done(&req)));
        }
    }
}

/// The summary of a request cancelled before it reached a slot.
fn empty_done(req: &Request) -> Done {
    Done {
        finish: FinishReason::Cancelled,
        text: String::new(),
        prompt_tokens: req.prompt.len(),
        cached_tokens: 0,
        restored_tokens: 0,
        completion_tokens: 0,
        prompt_time: Duration::ZERO,
        generation_time: Duration::ZERO,
        overflow: None,
        spec: None,
    }
}
