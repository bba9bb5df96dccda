//! Continuous batching: many requests share one forward pass per step.
//!
//! An [`Engine`] owns a thread that owns the model's `slots` KV caches.
//! Requests come in over a channel ([`Engine::submit`]); each carries its
//! own event channel, on which the engine sends [`Event`]s: one
//! [`Event::Token`] per generated token, then one [`Event::Done`] (or an
//! [`Event::Error`]). Every step the thread builds one batch of rows: the
//! next token of every decoding sequence, then prompt tokens of newly
//! admitted ones up to `step_tokens` rows, and evaluates it with
//! [`Model::forward_rows`], so the weights are read once per step however
//! many sequences are active. A request joins between steps, leaves when
//! it finishes, and is cancelled at the next step once its event receiver
//! is dropped (the client went away), freeing its slot.
//!
//! A slot keeps the tokens of its last request in its cache, and a new
//! request goes to the free slot sharing the longest prefix with its
//! prompt, so a chat's next turn evaluates only its new messages.

use crate::error::{Error, ErrorKind};
use crate::generate::{FinishReason, GenerateParams};
use cria_model::{BatchRow, KvCache, KvType, Model};
use cria_sampler::{Sampler, StopOutcome, StopStrings};
use cria_tokenizer::{Detokenizer, Tokenizer};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Sizes of an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Sequences decoded together (llama.cpp's `--parallel`).
    pub slots: usize,
    /// Context of each slot, in tokens.
    pub n_ctx: usize,
    pub kv: KvType,
    pub threads: usize,
    /// Requests that may wait for a slot; past that, `submit` refuses.
    pub max_queue: usize,
    /// Rows per forward pass: decode rows first, prompt rows fill the rest.
    pub step_tokens: usize,
}

/// One generation request.
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// `Some(n)`: report each token's log-probability and the `n` most
    /// likely alternatives.
    pub logprobs: Option<usize>,
    /// Where this request's events go. Dropping the receiver cancels it.
    pub events: UnboundedSender<Event>,
    /// Whose request this is (the server's API key id; 0 when there are no
    /// keys). A cached prompt prefix is reused only by the same tenant, so
    /// `cached_tokens` never tells one tenant about another's prompts.
    pub tenant: u32,
}

#[derive(Debug)]
pub enum Event {
    Token(TokenEvent),
    Done(Done),
    Error(Error),
}

#[derive(Clone, Debug)]
pub struct TokenEvent {
    pub id: u32,
    /// Text that is now safe to show (maybe empty: held back while it
    /// could start a stop string or is an incomplete UTF-8 character).
    pub text: String,
    /// Log-probability of `id` under the model's raw distribution, and the
    /// top alternatives (most likely first), when asked for.
    pub logprob: Option<f32>,
    pub top_logprobs: Vec<(u32, f32)>,
}

#[derive(Clone, Debug)]
pub struct Done {
    pub finish: FinishReason,
    /// Text held back until the end (no stop string completed it).
    pub text: String,
    pub prompt_tokens: usize,
    /// Prompt tokens found in the slot's cache and not evaluated again.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// From admission to the first token.
    pub prompt_time: Duration,
    pub generation_time: Duration,
}

/// Why [`Engine::submit`] refused a request.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full: try again later.
    QueueFull { max_queue: usize },
    /// The engine has stopped (shutdown, or its thread died).
    Stopped,
    /// The request itself is wrong (prompt too long, bad sampler settings).
    Invalid(Error),
}

/// Counters shared with the outside, for metrics.
#[derive(Default, Debug)]
pub struct EngineStats {
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    /// Prompt tokens evaluated (cached ones not counted).
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub steps: AtomicU64,
}

enum Msg {
    Request(Box<Request>),
    Shutdown,
}

/// Handle to the scheduler thread; cheap to share behind an `Arc`.
pub struct Engine {
    tx: mpsc::Sender<Msg>,
    stats: Arc<EngineStats>,
    stopped: Arc<AtomicBool>,
    config: EngineConfig,
    n_vocab: usize,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Allocates the slots' caches and starts the scheduler thread.
    pub fn start(model: Arc<Model>, tok: Arc<Tokenizer>, config: EngineConfig) -> Engine {
        let mut config = config;
        config.slots = config.slots.max(1);
        config.step_tokens = config.step_tokens.max(config.slots);
        config.n_ctx = config.n_ctx.max(2);
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let n_vocab = model.config.n_vocab;
        let thread = {
            let (stats, stopped, config) = (stats.clone(), stopped.clone(), config.clone());
            std::thread::Builder::new()
                .name("cria-engine".into())
                .spawn(move || {
                    Scheduler::new(&model, &tok, config, stats).run(rx);
                    stopped.store(true, Ordering::SeqCst);
                })
                .ok()
        };
        if thread.is_none() {
            stopped.store(true, Ordering::SeqCst);
        }
        Engine {
            tx,
            stats,
            stopped,
            config,
            n_vocab,
            thread: std::sync::Mutex::new(thread),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Checks a request without queueing it: the prompt fits the context
    /// with room for one new token, and the sampler settings are valid.
    pub fn validate(&self, prompt: &[u32], params: &GenerateParams) -> Result<(), Error> {
        if prompt.is_empty() {
            return Err(ErrorKind::EmptyPrompt.into());
        }
        if prompt.len() >= self.config.n_ctx {
            return Err(ErrorKind::PromptTooLong {
                prompt_tokens: prompt.len(),
                n_ctx: self.config.n_ctx,
            }
            .into());
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= self.n_vocab) {
            return Err(ErrorKind::BadToken {
                id,
                n_vocab: self.n_vocab,
            }
            .into());
        }
        params.sampler.validate(self.n_vocab)?;
        Ok(())
    }

    /// Queues a request, or says why not.
    pub fn submit(&self, req: Request) -> Result<(), SubmitError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(SubmitError::Stopped);
        }
        self.validate(&req.prompt, &req.params)
            .map_err(SubmitError::Invalid)?;
        let max_queue = self.config.max_queue;
        if self.stats.queued.fetch_add(1, Ordering::SeqCst) >= max_queue {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull { max_queue });
        }
        if self.tx.send(Msg::Request(Box::new(req))).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }

    /// Cancels every request (each gets `Done` with `Cancelled`) and waits
    /// for the thread to end.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Shutdown);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A request in a slot.
struct Job<'t> {
    req: Box<Request>,
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
}

struct Slot<'t> {
    cache: KvCache,
    /// Tokens whose keys and values are in `cache`, in order.
    tokens: Vec<u32>,
    /// The tenant whose tokens are in `cache`.
    tenant: u32,
    job: Option<Job<'t>>,
    /// Step at which the slot last held a request (least recently used
    /// wins a tie).
    last_used: u64,
}

struct Scheduler<'m> {
    model: &'m Model,
    tok: &'m Tokenizer,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    slots: Vec<Slot<'m>>,
    waiting: VecDeque<Box<Request>>,
    scratch: cria_model::Scratch,
    pool: cria_kernels::ThreadPool,
    rows: Vec<BatchRow>,
    logits: Vec<f32>,
    step: u64,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m Model,
        tok: &'m Tokenizer,
        config: EngineConfig,
        stats: Arc<EngineStats>,
    ) -> Scheduler<'m> {
        let c = &model.config;
        let slots = (0..config.slots)
            .map(|_| Slot {
                cache: KvCache::new(c.n_layers, config.n_ctx, c.kv_dim(), config.kv),
                tokens: Vec::new(),
                tenant: 0,
                job: None,
                last_used: 0,
            })
            .collect();
        Scheduler {
            model,
            tok,
            scratch: model.scratch(config.step_tokens),
            pool: cria_kernels::ThreadPool::new(config.threads.max(1)),
            config,
            stats,
            slots,
            waiting: VecDeque::new(),
            rows: Vec::new(),
            logits: Vec::new(),
            step: 0,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
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
                    Msg::Request(r) => self.waiting.push_back(r),
                    Msg::Shutdown => {
                        self.cancel_all();
                        return;
                    }
                }
            }
            self.drop_cancelled();
            self.admit();
            if self.slots.iter().any(|s| s.job.is_some()) {
                // A panic here is a bug, but it must not take down the
                // server: fail the requests in flight and carry on.
                let step = catch_unwind(AssertUnwindSafe(|| self.step()));
                if step.is_err() {
                    self.fail_all("internal error during a forward step (a bug: please report it)");
                }
            }
            self.stats.active.store(
                self.slots.iter().filter(|s| s.job.is_some()).count(),
                Ordering::SeqCst,
            );
        }
    }

    /// Drops waiting and active requests whose receiver is gone.
    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|r| !r.events.is_closed());
        let gone = before - self.waiting.len();
        self.stats.queued.fetch_sub(gone, Ordering::SeqCst);
        for slot in &mut self.slots {
            if slot.job.as_ref().is_some_and(|j| j.req.events.is_closed()) {
                slot.job = None;
            }
        }
    }

    /// Moves waiting requests into free slots, each into the free slot
    /// whose cache shares the longest prefix with its prompt.
    fn admit(&mut self) {
        while !self.waiting.is_empty() {
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.job.is_none())
                .map(|(i, s)| {
                    let next = &self.waiting[0];
                    let common = if s.tenant == next.tenant {
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
            let Some(req) = self.waiting.pop_front() else {
                return;
            };
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            self.step += 1;
            match self.start_job(req, common) {
                Ok(job) => {
                    let slot = &mut self.slots[i];
                    slot.tokens.truncate(job.next);
                    slot.tenant = job.req.tenant;
                    slot.last_used = self.step;
                    slot.job = Some(job);
                }
                Err((req, e)) => {
                    let _ = req.events.send(Event::Error(e));
                }
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn start_job(
        &self,
        req: Box<Request>,
        common: usize,
    ) -> Result<Job<'m>, (Box<Request>, Error)> {
        let n_vocab = self.model.config.n_vocab;
        let mut sampler = match Sampler::new(req.params.sampler.clone(), n_vocab) {
            Ok(s) => s,
            Err(e) => return Err((req, e.into())),
        };
        for &t in &req.prompt {
            if let Err(e) = sampler.accept(t) {
                return Err((req, e.into()));
            }
        }
        // Evaluate at least the last prompt token: its logits choose the
        // first new token.
        let keep = common.min(req.prompt.len().saturating_sub(1));
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
            req,
        })
    }

    /// One forward pass over every active slot, then sampling.
    fn step(&mut self) {
        self.rows.clear();
        let budget = self.config.step_tokens;
        // Decode rows first: one token per generating sequence.
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(job) = &slot.job {
                if let Some(token) = job.pending {
                    self.rows.push(BatchRow {
                        seq: i,
                        token,
                        pos: slot.tokens.len(),
                        logits: true,
                    });
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
                    logits: job.next + k + 1 == job.req.prompt.len(),
                });
            }
        }
        if self.rows.is_empty() {
            return;
        }
        let mut caches: Vec<&mut KvCache> = self.slots.iter_mut().map(|s| &mut s.cache).collect();
        let result = self.model.forward_rows(
            &mut self.scratch,
            &self.pool,
            &mut caches,
            &self.rows,
            &mut self.logits,
        );
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            // Which request caused it is unknown; all rows of this step fail
            // and their slots forget their caches.
            let msg = format!("the forward pass failed: {e}");
            let seqs: Vec<usize> = self.rows.iter().map(|r| r.seq).collect();
            for i in seqs {
                self.fail_slot(i, &msg);
            }
            return;
        }
        // Record what each slot's cache now holds.
        let mut prompt_rows = 0u64;
        for r in &self.rows {
            let slot = &mut self.slots[r.seq];
            slot.tokens.push(r.token);
            if let Some(job) = &mut slot.job {
                if job.pending.take().is_none() {
                    job.next += 1;
                    prompt_rows += 1;
                }
            }
        }
        self.stats
            .prompt_tokens
            .fetch_add(prompt_rows, Ordering::Relaxed);
        // Sample for every row that asked for logits, in row order.
        let n_vocab = self.model.config.n_vocab;
        let wanted: Vec<usize> = self
            .rows
            .iter()
            .filter(|r| r.logits)
            .map(|r| r.seq)
            .collect();
        let logits = std::mem::take(&mut self.logits);
        for (k, i) in wanted.into_iter().enumerate() {
            let row = &logits[k * n_vocab..(k + 1) * n_vocab];
            self.sample_slot(i, row);
        }
        self.logits = logits;
    }

    /// Samples the next token of slot `i` from its logits row, sends it,
    /// and ends the job if it is finished.
    fn sample_slot(&mut self, i: usize, row: &[f32]) {
        let n_ctx = self.config.n_ctx;
        let tok = self.tok;
        let slot = &mut self.slots[i];
        let n_cached = slot.tokens.len();
        let Some(job) = &mut slot.job else { return };
        let finish = 'f: {
            if job.req.events.is_closed() {
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
            let id = match job.sampler.sample(row).and_then(|id| {
                job.sampler.accept(id)?;
                Ok(id)
            }) {
                Ok(id) => id,
                Err(e) => {
                    let _ = job.req.events.send(Event::Error(e.into()));
                    slot.job = None;
                    return;
                }
            };
            job.generated += 1;
            self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if job.first_token.is_none() {
                job.first_token = Some(Instant::now());
            }
            let (logprob, top_logprobs) = match job.req.logprobs {
                Some(n) => (
                    Some(logprob_of(row, id)),
                    cria_sampler::top_logprobs(row, n),
                ),
                None => (None, Vec::new()),
            };
            if tok.is_eog(id) && !job.req.params.ignore_eos {
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
            }));
            if stopped {
                break 'f Some(FinishReason::StopString);
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
                break 'f Some(FinishReason::ContextFull);
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

    fn fail_slot(&mut self, i: usize, msg: &str) {
        let slot = &mut self.slots[i];
        slot.tokens.clear();
        if let Some(job) = slot.job.take() {
            let _ = job.req.events.send(Event::Error(
                ErrorKind::Internal {
                    detail: msg.to_string(),
                }
                .into(),
            ));
        }
    }

    fn fail_all(&mut self, msg: &str) {
        for i in 0..self.slots.len() {
            self.fail_slot(i, msg);
        }
    }

    fn cancel_all(&mut self) {
        for slot in &mut self.slots {
            if let Some(job) = slot.job.take() {
                finish_job(job, FinishReason::Cancelled);
            }
        }
        for req in self.waiting.drain(..) {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            let _ = req.events.send(Event::Done(Done {
                finish: FinishReason::Cancelled,
                text: String::new(),
                prompt_tokens: req.prompt.len(),
                cached_tokens: 0,
                completion_tokens: 0,
                prompt_time: Duration::ZERO,
                generation_time: Duration::ZERO,
            }));
        }
        self.stats.active.store(0, Ordering::SeqCst);
    }
}

/// Sends the held-back text and the summary.
fn finish_job(mut job: Job<'_>, finish: FinishReason) {
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
    let _ = job.req.events.send(Event::Done(Done {
        finish,
        text,
        prompt_tokens: job.req.prompt.len(),
        cached_tokens: job.cached,
        completion_tokens: job.generated,
        prompt_time: first - job.admitted,
        generation_time: now - first,
    }));
}

/// log softmax(logits)[id], in f64 for the sum.
fn logprob_of(logits: &[f32], id: u32) -> f32 {
    let clean = |l: f32| if l.is_nan() { f32::NEG_INFINITY } else { l };
    let max = logits
        .iter()
        .map(|&l| clean(l))
        .fold(f32::NEG_INFINITY, f32::max);
    if max.is_infinite() {
        return 0.0;
    }
    let sum: f64 = logits
        .iter()
        .map(|&l| ((clean(l) - max) as f64).exp())
        .sum();
    let x = logits
        .get(id as usize)
        .map_or(f32::NEG_INFINITY, |&l| clean(l));
    ((x - max) as f64 - sum.ln()) as f32
}
