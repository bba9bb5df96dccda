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
//! is dropped (the client went away) or its cancel flag is raised.
//!
//! A slot keeps the tokens of its last request in its cache, and a new
//! request of the same tenant goes to the free slot sharing the longest
//! prefix with its prompt, so a chat's next turn evaluates only its new
//! messages.
//!
//! Supervision: admitting a request, the forward pass and sampling each run
//! under `catch_unwind`. A panic fails only the requests it touched (an
//! [`Event::Error`] with [`ErrorKind::Internal`]) and the engine goes on
//! with the others. If the thread itself dies, [`Engine::is_running`] says
//! so and every waiting request's channel closes.

use crate::error::{Error, ErrorKind};
use crate::params::{FinishReason, GenerateParams};
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
    /// Requests that may wait while every slot is busy; past that,
    /// `submit` refuses. A burst of up to `slots` requests is always taken.
    pub max_queue: usize,
    /// Rows per forward pass: decode rows first, prompt rows fill the rest.
    pub step_tokens: usize,
    /// Test hook: panic at a chosen place (see [`Fault`]). `None` in use.
    #[doc(hidden)]
    pub fault: Option<Fault>,
}

impl EngineConfig {
    /// One slot, no queue, the given context: what `cria run` and `cria
    /// chat` use.
    pub fn single(n_ctx: usize, kv: KvType, threads: usize) -> EngineConfig {
        EngineConfig {
            slots: 1,
            n_ctx,
            kv,
            threads,
            max_queue: 0,
            step_tokens: 512,
            fault: None,
        }
    }
}

/// A deliberate panic, for the tests of supervision: it fires at `site`
/// while handling a request whose sampler seed is `seed`.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub site: FaultSite,
    pub seed: u64,
}

#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultSite {
    /// While admitting the request into a slot.
    Admit,
    /// During a forward pass that holds one of its rows.
    Step,
    /// While sampling its next token.
    Sample,
    /// In the scheduler loop itself, outside any supervision: the thread
    /// dies (what `/health` must then report).
    Thread,
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// `SITE:SEED`, e.g. `sample:4242`.
    fn from_str(s: &str) -> Result<Fault, String> {
        let (site, seed) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected SITE:SEED"))?;
        let site = match site {
            "admit" => FaultSite::Admit,
            "step" => FaultSite::Step,
            "sample" => FaultSite::Sample,
            "thread" => FaultSite::Thread,
            _ => {
                return Err(format!(
                    "{site:?}: the site is admit, step, sample or thread"
                ))
            }
        };
        let seed = seed
            .parse()
            .map_err(|_| format!("{seed:?} is not a seed"))?;
        Ok(Fault { site, seed })
    }
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
    /// Raised from outside (the CLI's Ctrl-C): the request ends at the next
    /// step with [`FinishReason::Cancelled`] and its `Done` summary.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Request {
    pub fn new(
        prompt: Vec<u32>,
        params: GenerateParams,
        events: UnboundedSender<Event>,
    ) -> Request {
        Request {
            prompt,
            params,
            logprobs: None,
            events,
            tenant: 0,
            cancel: None,
        }
    }

    fn cancelled(&self) -> bool {
        self.events.is_closed()
            || self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
    }
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
    /// Every slot is busy and the queue is full: try again later.
    QueueFull { max_queue: usize },
    /// The engine has stopped (shutdown, or its thread died).
    Stopped,
    /// The request itself is wrong (prompt too long, bad sampler settings).
    Invalid(Error),
}

/// Counters shared with the outside, for metrics.
#[derive(Default, Debug)]
pub struct EngineStats {
    /// Requests accepted but not yet in a slot.
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    /// Prompt tokens evaluated (cached ones not counted).
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub steps: AtomicU64,
    /// Requests failed by a panic inside the engine (bugs).
    pub panics: AtomicU64,
}

/// Holds one place among the engine's `slots + max_queue`, from `submit`
/// until the request ends; dropping it frees the place. It is dropped
/// before the request's last event is sent, so a client that submits again
/// as soon as it sees `Done` always finds the place free.
struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request that holds its place.
struct Queued {
    req: Request,
    ticket: Ticket,
}

enum Msg {
    Request(Box<Queued>),
    Shutdown,
}

/// Handle to the scheduler thread; cheap to share behind an `Arc`.
pub struct Engine {
    tx: mpsc::Sender<Msg>,
    stats: Arc<EngineStats>,
    /// Requests submitted and not yet ended (in the channel, waiting or in
    /// a slot).
    outstanding: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    config: EngineConfig,
    n_vocab: usize,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// Marks the engine stopped when the scheduler thread ends, however it
/// ends (a panic included).
struct StopGuard(Arc<AtomicBool>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Engine {
    /// Checks the sizes, allocates the slots' caches and starts the
    /// scheduler thread.
    pub fn start(
        model: Arc<Model>,
        tok: Arc<Tokenizer>,
        config: EngineConfig,
    ) -> Result<Engine, Error> {
        let mut config = config;
        config.slots = config.slots.max(1);
        config.step_tokens = config.step_tokens.max(config.slots);
        config.n_ctx = config.n_ctx.max(2);
        crate::memory::fits(
            &format!(
                "a KV cache of {} slots x {} tokens",
                config.slots, config.n_ctx
            ),
            crate::memory::kv_bytes(&model, config.n_ctx, config.kv)
                .saturating_mul(config.slots as u64),
            "lower --ctx-size or --parallel",
        )?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let stopped = Arc::new(AtomicBool::new(false));
        let n_vocab = model.config.n_vocab;
        let thread = {
            let (stats, config) = (stats.clone(), config.clone());
            let guard = StopGuard(stopped.clone());
            std::thread::Builder::new()
                .name("cria-engine".into())
                .spawn(move || {
                    let _guard = guard;
                    Scheduler::new(&model, &tok, config, stats).run(rx);
                })
                .map_err(|e| ErrorKind::Config {
                    detail: format!("cannot start the engine thread: {e}"),
                })?
        };
        Ok(Engine {
            tx,
            stats,
            outstanding: Arc::new(AtomicUsize::new(0)),
            stopped,
            config,
            n_vocab,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// False once the engine has been shut down or its thread has died.
    pub fn is_running(&self) -> bool {
        !self.stopped.load(Ordering::SeqCst)
    }

    /// Checks a request without queueing it: the prompt fits the context
    /// with room for one new token, its ids are in the vocabulary, and the
    /// sampler settings are valid.
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

    /// Queues a request, or says why not. It is refused as busy only when
    /// every slot is taken and `max_queue` requests already wait.
    pub fn submit(&self, req: Request) -> Result<(), SubmitError> {
        if !self.is_running() {
            return Err(SubmitError::Stopped);
        }
        self.validate(&req.prompt, &req.params)
            .map_err(SubmitError::Invalid)?;
        let max_queue = self.config.max_queue;
        let places = self.config.slots.saturating_add(max_queue);
        if self.outstanding.fetch_add(1, Ordering::SeqCst) >= places {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull { max_queue });
        }
        let ticket = Ticket(self.outstanding.clone());
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        if self
            .tx
            .send(Msg::Request(Box::new(Queued { req, ticket })))
            .is_err()
        {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }

    /// Runs one request to its end, blocking the calling thread (the CLI's
    /// way in): `on_text` gets the text as it becomes safe to show, the
    /// held-back tail included, and the summary comes back. Raising
    /// `cancel` ends it with [`FinishReason::Cancelled`].
    pub fn generate(
        &self,
        prompt: Vec<u32>,
        params: GenerateParams,
        cancel: Option<Arc<AtomicBool>>,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Done, Error> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let req = Request {
            cancel,
            ..Request::new(prompt, params, tx)
        };
        match self.submit(req) {
            Ok(()) => {}
            Err(SubmitError::Invalid(e)) => return Err(e),
            Err(SubmitError::Stopped) => return Err(ErrorKind::Stopped.into()),
            Err(SubmitError::QueueFull { .. }) => {
                return Err(ErrorKind::Internal {
                    detail: "the engine is busy with another request".into(),
                }
                .into())
            }
        }
        loop {
            match rx.blocking_recv() {
                Some(Event::Token(t)) => on_text(&t.text),
                Some(Event::Done(d)) => {
                    on_text(&d.text);
                    return Ok(d);
                }
                Some(Event::Error(e)) => return Err(e),
                None => return Err(ErrorKind::Stopped.into()),
            }
        }
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
    req: Request,
    ticket: Ticket,
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

impl Job<'_> {
    /// Ends the request with its last event; the ticket goes first.
    fn end(self, event: Event) {
        let Job { req, ticket, .. } = self;
        drop(ticket);
        let _ = req.events.send(event);
    }
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
    waiting: VecDeque<Box<Queued>>,
    scratch: cria_model::Scratch,
    pool: cria_kernels::ThreadPool,
    rows: Vec<BatchRow>,
    logits: Vec<f32>,
    step: u64,
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
            self.stats.active.store(
                self.slots.iter().filter(|s| s.job.is_some()).count(),
                Ordering::SeqCst,
            );
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
            let Some(q) = self.waiting.pop_front() else {
                return;
            };
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            self.step += 1;
            let Queued { req, ticket } = *q;
            // The request moves into the job; on an error or a panic it is
            // dropped (freeing its ticket) and the error goes out here.
            let events = req.events.clone();
            let started = catch_unwind(AssertUnwindSafe(|| self.start_job(req, ticket, common)));
            match started {
                Ok(Ok(job)) => {
                    let slot = &mut self.slots[i];
                    slot.tokens.truncate(job.next);
                    slot.tenant = job.req.tenant;
                    slot.last_used = self.step;
                    slot.job = Some(job);
                }
                Ok(Err(e)) => {
                    let _ = events.send(Event::Error(e));
                }
                Err(_) => {
                    self.stats.panics.fetch_add(1, Ordering::Relaxed);
                    let _ = events.send(internal(
                        "the engine failed while admitting this request (a bug: please report it)",
                    ));
                }
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
            ticket,
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
        let inject = self.rows.iter().any(|r| {
            self.slots[r.seq]
                .job
                .as_ref()
                .is_some_and(|j| self.faulty(FaultSite::Step, &j.req))
        });
        let forward = catch_unwind(AssertUnwindSafe(|| {
            if inject {
                injected(FaultSite::Step);
            }
            let mut caches: Vec<&mut KvCache> =
                self.slots.iter_mut().map(|s| &mut s.cache).collect();
            self.model.forward_rows(
                &mut self.scratch,
                &self.pool,
                &mut caches,
                &self.rows,
                &mut self.logits,
            )
        }));
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
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
        // Sample for every row that asked for logits, in row order; a panic
        // fails that request alone.
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
            if catch_unwind(AssertUnwindSafe(|| self.sample_slot(i, row))).is_err() {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                self.fail_slot(i, "sampling panicked (a bug: please report it)");
            }
        }
        self.logits = logits;
    }

    /// Samples the next token of slot `i` from its logits row, sends it,
    /// and ends the job if it is finished.
    fn sample_slot(&mut self, i: usize, row: &[f32]) {
        if let Some(job) = &self.slots[i].job {
            self.fault(FaultSite::Sample, &job.req);
        }
        let n_ctx = self.config.n_ctx;
        let tok = self.tok;
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
            let id = match job.sampler.sample(row).and_then(|id| {
                job.sampler.accept(id)?;
                Ok(id)
            }) {
                Ok(id) => id,
                Err(e) => {
                    if let Some(job) = slot.job.take() {
                        job.end(Event::Error(e.into()));
                    }
                    return;
                }
            };
            job.generated += 1;
            self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if job.first_token.is_none() {
                job.first_token = Some(Instant::now());
            }
            let (logprob, top_logprobs) = match job.req.logprobs {
                Some(n) => {
                    let lsm = cria_kernels::LogSoftmax::new(row);
                    (
                        Some(lsm.of(row[id as usize]) as f32),
                        cria_sampler::top_logprobs(row, n),
                    )
                }
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
        self.stats.active.store(0, Ordering::SeqCst);
    }
}

/// The summary of a request cancelled before it reached a slot.
fn empty_done(req: &Request) -> Done {
    Done {
        finish: FinishReason::Cancelled,
        text: String::new(),
        prompt_tokens: req.prompt.len(),
        cached_tokens: 0,
        completion_tokens: 0,
        prompt_time: Duration::ZERO,
        generation_time: Duration::ZERO,
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
    let done = Done {
        finish,
        text,
        prompt_tokens: job.req.prompt.len(),
        cached_tokens: job.cached,
        completion_tokens: job.generated,
        prompt_time: first - job.admitted,
        generation_time: now - first,
    };
    job.end(Event::Done(done));
}
