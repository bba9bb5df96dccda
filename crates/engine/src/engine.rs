//! The engine's handle: its sizes, admission (a ticket per place among
//! `slots + max_queue`), and the ways in (`submit`, blocking `generate`).
//! The thread it starts is in `scheduler.rs`.

use crate::error::{Error, ErrorKind};
use crate::fault::Fault;
use crate::overflow::ContextOverflow;
use crate::params::GenerateParams;
use crate::request::{Done, Event, Request};
use crate::scheduler::Scheduler;
use crate::spec::Speculation;
use cria_model::{KvType, KvTypes, Model};
use cria_tokenizer::Tokenizer;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Sizes of an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Sequences decoded together (llama.cpp's `--parallel`).
    pub slots: usize,
    /// Context of each slot, in tokens.
    pub n_ctx: usize,
    /// Element types of the keys and values in the cache.
    pub kv: KvTypes,
    pub threads: usize,
    /// Requests that may wait while every slot is busy; past that,
    /// `submit` refuses. A burst of up to `slots` requests is always taken.
    pub max_queue: usize,
    /// Rows per forward pass: decode rows first, prompt rows fill the rest.
    pub step_tokens: usize,
    /// What to do when a sequence fills its context during generation
    /// (only [`ContextOverflow::Shift`] changes the engine; truncating a
    /// prompt is its caller's job): see `overflow.rs`.
    pub overflow: ContextOverflow,
    /// Speculative decoding (see `spec.rs`); `None`: off.
    pub spec: Option<Speculation>,
    /// Adapters of requests that do not name their own (`--lora`).
    pub lora: cria_model::LoraSet,
    /// Test hook: panic at a chosen place (see [`Fault`]). `None` in use.
    #[doc(hidden)]
    pub fault: Option<Fault>,
    /// Prompt prefixes persisted on disk (`--prefix-cache DIR`,
    /// `--prompt-cache FILE`); `None`: only the slots' caches.
    pub prefix_cache: Option<crate::PrefixCacheConfig>,
}

impl EngineConfig {
    /// One slot, no queue, the given context: what `cria run` and `cria
    /// chat` use.
    pub fn single(n_ctx: usize, kv: impl Into<KvTypes>, threads: usize) -> EngineConfig {
        EngineConfig {
            slots: 1,
            n_ctx,
            kv: kv.into(),
            threads,
            max_queue: 0,
            step_tokens: 512,
            overflow: ContextOverflow::Error,
            spec: None,
            lora: Vec::new(),
            fault: None,
            prefix_cache: None,
        }
    }
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
    /// Requests in a slot; a request leaves the count before its last
    /// event is sent.
    pub active: AtomicUsize,
    /// Prompt tokens evaluated (cached ones not counted).
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub steps: AtomicU64,
    /// Requests failed by a panic inside the engine (bugs).
    pub panics: AtomicU64,
    /// Speculation: drafts made (a draft is the tokens guessed for one
    /// sequence in one step), tokens drafted, drafts the target confirmed,
    /// and steps with decoding sequences that did not speculate because
    /// the batch already filled `Speculation::max_rows`.
    pub spec_drafts: AtomicU64,
    pub spec_drafted: AtomicU64,
    pub spec_accepted: AtomicU64,
    pub spec_off_steps: AtomicU64,
    /// Prefix cache on disk: prompt tokens restored instead of evaluated,
    /// entries written, entries found damaged or made for something else
    /// (never used; deleted), saves dropped (the writer was behind).
    pub prefix_restored_tokens: AtomicU64,
    pub prefix_written: AtomicU64,
    pub prefix_rejected: AtomicU64,
    pub prefix_dropped: AtomicU64,
}

/// Holds one place among the engine's `slots + max_queue`, from `submit`
/// until the request ends; dropping it frees the place. It is dropped
/// before the request's last event is sent, so a client that submits again
/// as soon as it sees `Done` always finds the place free.
pub(crate) struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a request in a slot as busy (`EngineStats::active`, which
/// `/slots` and the metrics read), from admission until its job ends.
/// Like the ticket, it is dropped before the request's last event is sent,
/// so a client that reads `/slots` as soon as it has its reply sees the
/// slot idle.
pub(crate) struct Busy(Arc<EngineStats>);

impl Busy {
    pub(crate) fn new(stats: Arc<EngineStats>) -> Busy {
        stats.active.fetch_add(1, Ordering::SeqCst);
        Busy(stats)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request that holds its place.
pub(crate) struct Queued {
    pub(crate) req: Request,
    pub(crate) ticket: Ticket,
}

pub(crate) enum Msg {
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
        config.kv.check(model.config.head_dim)?;
        let mut kv_bytes = crate::memory::kv_bytes(&model, config.n_ctx, config.kv);
        if let Some(spec) = &mut config.spec {
            spec.params.check()?;
            if spec.max_rows == 0 {
                spec.max_rows = crate::spec::ROWS_PER_THREAD * config.threads.max(1);
            }
            if let Some(d) = &spec.draft {
                if d.config.n_vocab != model.config.n_vocab {
                    return Err(ErrorKind::Config {
                        detail: format!(
                            "the draft model has {} tokens and the model {}: \
                             give -md a model with the same vocabulary",
                            d.config.n_vocab, model.config.n_vocab
                        ),
                    }
                    .into());
                }
                // The draft model's caches are f16.
                kv_bytes =
                    kv_bytes.saturating_add(crate::memory::kv_bytes(d, config.n_ctx, KvType::F16));
            }
        }
        crate::memory::fits(
            &format!(
                "a KV cache of {} slots x {} tokens",
                config.slots, config.n_ctx
            ),
            kv_bytes.saturating_mul(config.slots as u64),
            "lower --ctx-size or --parallel",
        )?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let persist = match &config.prefix_cache {
            Some(pc) => Some(crate::pcache::Persist::new(
                pc,
                &model,
                config.kv,
                config.n_ctx,
                stats.clone(),
            )?),
            None => None,
        };
        let stopped = Arc::new(AtomicBool::new(false));
        let n_vocab = model.config.n_vocab;
        // The engine is ready once its caches exist (and are backed by
        // memory, see cria_kernels::populate): a server says "ready" after
        // that, not while the first requests would wait for it.
        let (ready_tx, ready_rx) = mpsc::sync_channel::<()>(1);
        let thread = {
            let (stats, config) = (stats.clone(), config.clone());
            let guard = StopGuard(stopped.clone());
            std::thread::Builder::new()
                .name("cria-engine".into())
                .spawn(move || {
                    let _guard = guard;
                    let scheduler = Scheduler::new(&model, &tok, config, stats, persist);
                    let _ = ready_tx.send(());
                    scheduler.run(rx);
                })
                .map_err(|e| ErrorKind::Config {
                    detail: format!("cannot start the engine thread: {e}"),
                })?
        };
        if ready_rx.recv().is_err() {
            return Err(ErrorKind::Config {
                detail: "the engine thread stopped while allocating its KV caches".into(),
            }
            .into());
        }
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

    /// Requests submitted and not yet ended (waiting or in a slot).
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
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

    /// Checks an embedding request's input without queueing it: not
    /// empty, at most the context (never cut), ids in the vocabulary.
    pub fn validate_embed(&self, prompt: &[u32]) -> Result<(), Error> {
        if prompt.is_empty() {
            return Err(ErrorKind::EmptyPrompt.into());
        }
        if prompt.len() > self.config.n_ctx {
            return Err(ErrorKind::InputTooLong {
                input_tokens: prompt.len(),
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
        Ok(())
    }

    /// Queues a request, or says why not. It is refused as busy only when
    /// every slot is taken and `max_queue` requests already wait.
    pub fn submit(&self, req: Request) -> Result<(), SubmitError> {
        if !self.is_running() {
            return Err(SubmitError::Stopped);
        }
        match req.embed {
            // Nothing is generated: the input may fill the context.
            Some(_) => self.validate_embed(&req.prompt),
            None => self.validate(&req.prompt, &req.params),
        }
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
    /// `cancel` ends it with [`FinishReason::Cancelled`](crate::FinishReason::Cancelled).
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
                Some(Event::Progress(_)) => {}
                Some(Event::Done(d)) => {
                    on_text(&d.text);
                    return Ok(d);
                }
                Some(Event::Error(e)) => return Err(e),
                Some(Event::Embedding(_)) => {
                    return Err(ErrorKind::Internal {
                        detail: "a generation request was answered with an embedding".into(),
                    }
                    .into())
                }
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
