//! cria's OpenAI-compatible HTTP server: JSON in, [`cria_engine::Engine`]
//! requests, token events out as JSON or server-sent events.
//!
//! [`run`] binds the address, starts loading the model in the background
//! (`/health` answers 503 until it is ready), then serves the routes of
//! `routes.rs` until SIGINT or SIGTERM. Connections are accepted by our own
//! loop (`conn.rs`: a cap, header and idle timeouts); every request passes
//! the checks of `guard.rs` (Host, CORS, API key naming its tenant, JSON
//! bodies, rate limits) before its handler. Request bodies are parsed into
//! native types at the edge (`openai.rs`, `shapes.rs`), straight from the
//! bytes, and checked against the bounds of `limits.rs`; chat messages go
//! through the model's Jinja template (`cria-prompt`); all of that runs on
//! the blocking pool (`prepare.rs`), and the engine never sees JSON or
//! templates. Replies are built in `reply.rs`, errors are OpenAI's error
//! JSON ([`ApiError`]), and `/metrics` is Prometheus text (`metrics.rs`).
//!
//! ```no_run
//! let config = cria_server::ServerConfig::new("model.gguf".into());
//! cria_server::run(config)?;
//! # Ok::<(), cria_server::Error>(())
//! ```
#![forbid(unsafe_code)]

mod anthropic;
mod conn;
mod constrain;
mod embeddings;
mod error;
mod guard;
mod limits;
mod lora;
mod metrics;
mod native;
mod openai;
mod prepare;
mod reply;
mod routes;
mod shapes;
mod tools;
mod webui;

pub use error::{ApiError, Error, ErrorKind};
pub use openai::RequestDefaults;

use cria_engine::{ContextOverflow, Engine, EngineConfig};
use cria_model::{KvType, KvTypes};
use cria_prompt::ChatTemplate;
use routes::{App, Ready};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Reported as `system_fingerprint`.
pub const FINGERPRINT: &str = concat!("cria-", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub model_path: PathBuf,
    /// One address, or several separated by commas (`127.0.0.1,::1`).
    pub host: String,
    /// 0 picks a free port (the address is printed on stdout).
    pub port: u16,
    /// Sequences decoded together.
    pub parallel: usize,
    /// Context of each sequence; `None`: the model's, capped (see `run`).
    pub ctx_size: Option<usize>,
    pub threads: usize,
    pub kv: KvTypes,
    /// `--context-overflow`: refuse, cut the prompt's middle, or shift.
    pub overflow: ContextOverflow,
    /// Speculative decoding (`--spec-type`, `-md`), loaded with the model.
    pub spec: Option<cria_engine::SpecParams>,
    /// Requests that may wait for a slot before new ones get 429.
    pub max_queue: usize,
    /// Largest request body, bytes.
    pub body_limit: usize,
    pub chat_template: Option<PathBuf>,
    /// The model's id in replies; `None`: the file name without `.gguf`.
    pub alias: Option<String>,
    /// Every name of the model (`--alias a,b`), listed in `/v1/models`.
    pub aliases: Vec<String>,
    /// `--tags`, listed in `/v1/models`.
    pub tags: Vec<String>,
    /// Request defaults (`--temp`, `--seed`, `--n-predict`).
    pub defaults: RequestDefaults,
    /// Serve `GET /slots` (`--slots`).
    pub slots_endpoint: bool,
    /// Test hook passed to the engine (`--debug-inject-panic`).
    pub fault: Option<cria_engine::Fault>,

    // Connections and tenants.
    /// `Authorization: Bearer KEY` required when not empty; key i (from 0)
    /// is tenant i + 1.
    pub api_keys: Vec<String>,
    /// Open connections. At the cap a new one takes the place of one with
    /// no request in flight, or gets a 503 if all have one.
    pub max_connections: usize,
    /// From connecting (or a kept-alive request's first byte) to the end
    /// of the request header.
    pub timeout_header: Duration,
    /// To receive a request body once its header is in.
    pub timeout_body: Duration,
    /// A kept-alive connection with no request in flight is closed after.
    pub timeout_idle: Duration,
    /// Between SSE keep-alive comments when no token was sent.
    pub sse_keepalive: Duration,
    /// Host names accepted besides IP literals and localhost (the check
    /// applies only without API keys).
    pub allow_hosts: Vec<String>,
    /// Origins allowed by CORS (`*`: any); none: CORS off.
    pub cors_origins: Vec<String>,
    /// Per tenant, per minute.
    pub rate_limit_requests: Option<u32>,
    /// Prompt + completion tokens per tenant per minute.
    pub rate_limit_tokens: Option<u32>,

    // Around the engine (embeddings, the page, draining).
    /// How `/v1/embeddings` pools; `None`: the model's `pooling_type`.
    pub pooling: Option<cria_engine::Pooling>,
    /// Serve the chat page at `/`.
    pub webui: bool,
    /// `enable_thinking` for the chat template (`--reasoning off`: false).
    pub enable_thinking: bool,
    /// Serve `GET /metrics` (on by default; `--no-metrics` turns it off,
    /// and the endpoint then answers 501 as llama-server's does without
    /// `--metrics`).
    pub metrics_endpoint: bool,
    /// `--lora` / `--lora-scaled` adapters and their start scales (ids in
    /// this order; see `lora.rs`).
    pub lora: Vec<(PathBuf, f32)>,
    /// On SIGTERM, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// `--prefix-cache DIR`: prompt prefixes kept on disk, per tenant.
    pub prefix_cache: Option<cria_engine::PrefixStore>,
}

impl ServerConfig {
    pub fn new(model_path: PathBuf) -> ServerConfig {
        ServerConfig {
            model_path,
            host: "127.0.0.1".into(),
            port: 8080,
            parallel: 4,
            ctx_size: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kv: KvType::F16.into(),
            overflow: ContextOverflow::Error,
            spec: None,
            max_queue: 64,
            body_limit: 4 << 20,
            chat_template: None,
            alias: None,
            aliases: Vec::new(),
            tags: Vec::new(),
            defaults: RequestDefaults::default(),
            slots_endpoint: false,
            fault: None,
            api_keys: Vec::new(),
            max_connections: 512,
            timeout_header: Duration::from_secs(10),
            timeout_body: Duration::from_secs(30),
            timeout_idle: Duration::from_secs(60),
            sse_keepalive: Duration::from_secs(15),
            allow_hosts: Vec::new(),
            cors_origins: Vec::new(),
            rate_limit_requests: None,
            rate_limit_tokens: None,
            pooling: None,
            webui: true,
            metrics_endpoint: true,
            enable_thinking: true,
            lora: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            prefix_cache: None,
        }
    }

    /// Refuses settings that cannot work, with what to give instead.
    fn check(&self) -> Result<(), String> {
        for (i, k) in self.api_keys.iter().enumerate() {
            if k.trim().is_empty() || k.trim() != k {
                return Err(format!(
                    "API key {} is empty or has spaces around it",
                    i + 1
                ));
            }
            if self.api_keys[..i].contains(k) {
                return Err(format!(
                    "API key {} repeats an earlier one: each key names one tenant",
                    i + 1
                ));
            }
        }
        if self.host.split(',').any(|h| h.trim().is_empty()) {
            return Err(format!(
                "--host {:?}: an empty address; give one, or several separated by commas",
                self.host
            ));
        }
        for h in &self.allow_hosts {
            if h.is_empty() || h.contains([':', '/', '[', ' ']) {
                return Err(format!(
                    "--allow-host {h:?}: give a host name without port or scheme (my-box.lan)"
                ));
            }
        }
        if self.max_connections == 0 {
            return Err("--max-connections 0: allow at least 1".into());
        }
        for (flag, d) in [
            ("--timeout-header-secs", self.timeout_header),
            ("--timeout-body-secs", self.timeout_body),
            ("--timeout-idle-secs", self.timeout_idle),
            ("--sse-keepalive-secs", self.sse_keepalive),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} 0: give at least 1 second"));
            }
        }
        Ok(())
    }
}

/// Serves until SIGINT/SIGTERM, then cancels what is in flight and returns.
pub fn run(config: ServerConfig) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ErrorKind::Runtime)?;
    rt.block_on(serve(config))
}

async fn serve(config: ServerConfig) -> Result<(), Error> {
    config.check().map_err(ErrorKind::Config)?;
    let cors = guard::cors(&config.cors_origins).map_err(ErrorKind::Config)?;
    let mut listeners = Vec::new();
    for host in config.host.split(',').map(str::trim) {
        // An IPv6 address takes brackets before the port.
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", config.port)
        } else {
            format!("{host}:{}", config.port)
        };
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| ErrorKind::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(ErrorKind::Serve)?;
        {
            // Tests and scripts wait for this line to learn the port.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "cria serve: listening on http://{local}");
            let _ = out.flush();
        }
        listeners.push(listener);
    }
    let app = Arc::new(App::new(config.clone()));
    let router = routes::router(app.clone(), cors);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = conn::ConnLimits {
        max_connections: config.max_connections,
        timeout_header: config.timeout_header,
        timeout_idle: config.timeout_idle,
    };
    // Each address has its own accept loop (and connection cap).
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| conn::serve(l, router.clone(), limits, stop_rx.clone()))
        .collect();
    let server = tokio::spawn(async move {
        futures_util::future::join_all(loops).await;
    });

    let loader = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let ready = load(&app.config)?;
            let _ = app.ready.set(Arc::new(ready));
            Ok(())
        })
    };
    let load_failed = async {
        match loader.await {
            Ok(Ok(())) => std::future::pending::<String>().await,
            Ok(Err(e)) => e,
            Err(e) => format!("the model loader failed: {e}"),
        }
    };
    let failure = tokio::select! {
        _ = signal() => None,
        e = load_failed => Some(e),
    };
    app.shutting_down.store(true, Ordering::SeqCst);
    let mut server = server;
    let drained = failure.is_none() && drain(&app, &stop_tx, &mut server).await;
    eprintln!("cria serve: shutting down");
    let _ = stop_tx.send(true);
    if let Some(ready) = app.ready.get().cloned() {
        // Cancels what is still running: streams end with an error
        // event, whole replies with 503.
        let _ = tokio::task::spawn_blocking(move || ready.engine.shutdown()).await;
    }
    if !drained
        && tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .is_err()
    {
        // Returning drops the runtime, which closes them.
        eprintln!("cria serve: connections still open after 10 s; closing them");
    }
    match failure {
        Some(e) => Err(ErrorKind::Load(e).into()),
        None => Ok(()),
    }
}

/// After SIGTERM/SIGINT: `/health` answers 503 "draining" and new work
/// gets 503 (the listener stays open, so probes and late clients get an
/// answer rather than a refused connection), while the requests in flight
/// finish, for at most `--drain-timeout-secs`. Once the engine is idle the
/// listener closes and the connections finish writing their replies. A
/// second signal ends the wait. True if the connections all closed (the
/// server task has ended and must not be awaited again).
async fn drain(
    app: &routes::App,
    stop: &tokio::sync::watch::Sender<bool>,
    server: &mut tokio::task::JoinHandle<()>,
) -> bool {
    let grace = app.config.drain_timeout;
    let deadline = tokio::time::Instant::now() + grace;
    let in_flight = || app.ready.get().map_or(0, |r| r.engine.outstanding());
    eprintln!(
        "cria serve: draining: {} requests in flight, waiting up to {} s (a second signal stops now)",
        in_flight(),
        grace.as_secs()
    );
    let idle = async {
        while in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The engine is idle: stop accepting, let replies be written.
        let _ = stop.send(true);
        let _ = (&mut *server).await;
    };
    tokio::select! {
        _ = idle => {
            eprintln!("cria serve: drained");
            true
        }
        _ = tokio::time::sleep_until(deadline) => {
            eprintln!(
                "cria serve: {} requests still in flight after {} s; cancelling them",
                in_flight(),
                grace.as_secs()
            );
            false
        }
        _ = signal() => {
            eprintln!("cria serve: second signal; cancelling what is in flight");
            false
        }
    }
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Maps the model, builds the tokenizer and template, starts the engine.
fn load(config: &ServerConfig) -> Result<Ready, String> {
    let path = &config.model_path;
    let loaded = cria_engine::Loaded::open(path).map_err(|e| e.to_string())?;
    let (model, tok) = (loaded.model, loaded.tokenizer);
    let template = ChatTemplate::load(
        model.file().metadata(),
        &tok,
        config.chat_template.as_deref(),
    )
    .and_then(|t| t.with_thinking(config.enable_thinking))
    .map_err(|e| e.full_message());
    if let (Some(p), Err(e)) = (&config.chat_template, &template) {
        return Err(format!("--chat-template {}: {e}", p.display()));
    }
    let n_ctx = match config.ctx_size {
        Some(c) => c,
        // Per slot: the model's context, capped at 4096 so that several
        // slots stay small.
        None => cria_engine::default_ctx_size(&model, config.kv).min(4096),
    };
    let model_id = config.alias.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| "model".into())
    });
    let spec = match &config.spec {
        Some(p) => Some(p.load(&tok).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut adapters = Vec::new();
    for (p, scale) in &config.lora {
        let a = cria_lora::load(p, &model)
            .map_err(|e| format!("cannot load the adapter {}: {e}", p.display()))?;
        adapters.push((p.display().to_string(), Arc::new(a), *scale));
    }
    let n_adapters = adapters.len();
    let model = Arc::new(model);
    let tok = Arc::new(tok);
    let engine = Engine::start(
        model.clone(),
        tok.clone(),
        EngineConfig {
            slots: config.parallel.max(1),
            n_ctx,
            kv: config.kv,
            threads: config.threads.max(1),
            max_queue: config.max_queue,
            step_tokens: 256,
            overflow: config.overflow,
            spec,
            lora: Vec::new(),
            fault: config.fault,
            prefix_cache: config
                .prefix_cache
                .clone()
                .map(|s| cria_engine::PrefixCacheConfig::for_keys(s, &config.api_keys)),
        },
    )
    .map_err(|e| e.to_string())?;
    let spec_note = match &config.spec {
        Some(p) => format!(
            ", speculative decoding: {} (draft max {}, min {})",
            match &p.kind {
                cria_engine::SpecKind::Ngram => "ngram".to_string(),
                cria_engine::SpecKind::DraftModel(d) => format!("draft model {}", d.display()),
            },
            p.draft_max,
            p.draft_min
        ),
        None => String::new(),
    };
    eprintln!(
        "cria serve: {} ready in {:.2} s: {} slots x {n_ctx} tokens of context, {} threads, {n_adapters} adapters{spec_note}",
        model_id,
        loaded.load_time.as_secs_f64(),
        config.parallel.max(1),
        config.threads.max(1),
    );
    let pooling = match config.pooling {
        Some(p) => Ok(p),
        None => cria_engine::Pooling::from_model(&model).map_err(|e| e.to_string()),
    };
    Ok(Ready {
        grammars: std::sync::OnceLock::new(),
        model,
        tok,
        template,
        engine,
        model_id,
        created: routes::unix_time(),
        pooling,
        lora: lora::Adapters::new(adapters),
        defaults: config.defaults,
    })
}
