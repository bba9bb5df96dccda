//! The HTTP routes, the auth and metrics middleware, and the shared state.

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::prepare::{self, Prepare, Prepared};
use crate::reply::{Api, ReplyCtx};
use crate::ServerConfig;
use axum::body::Body;
use axum::extract::{MatchedPath, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cria_engine::{Engine, Request, SubmitError};
use cria_model::Model;
use cria_prompt::ChatTemplate;
use cria_tokenizer::Tokenizer;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What exists once the model is loaded.
pub struct Ready {
    pub model: Arc<Model>,
    pub tok: Arc<Tokenizer>,
    /// The chat template, or why there is none (chat requests get the reason).
    pub template: Result<ChatTemplate, String>,
    pub engine: Engine,
    pub model_id: String,
    pub created: u64,
}

pub struct App {
    pub config: ServerConfig,
    pub ready: OnceLock<Arc<Ready>>,
    pub metrics: Arc<Metrics>,
    pub shutting_down: AtomicBool,
    /// Parsing, templates and tokenizing, off the async workers.
    pub prepare: Prepare,
    next_id: AtomicU64,
}

impl App {
    pub fn new(config: ServerConfig) -> App {
        App {
            config,
            ready: OnceLock::new(),
            metrics: Arc::new(Metrics::default()),
            shutting_down: AtomicBool::new(false),
            prepare: Prepare::new(),
            next_id: AtomicU64::new(1),
        }
    }

    fn ready(&self) -> Result<&Arc<Ready>, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        }
        let ready = self.ready.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model is still loading; try again in a moment",
            )
            .retry_after(1)
        })?;
        if !ready.engine.is_running() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the engine has stopped (a bug: see the server's log); restart the server",
            ));
        }
        Ok(ready)
    }

    /// What `/health` reports besides "ok".
    fn state(&self) -> &'static str {
        if self.shutting_down.load(Ordering::SeqCst) {
            "shutting down"
        } else if self.ready.get().is_none() {
            "loading model"
        } else {
            "engine stopped"
        }
    }

    fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let t = unix_time_nanos();
        format!("{prefix}-{:x}{n:04x}", t & 0xffff_ffff_ffff)
    }
}

fn unix_time_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub fn unix_time() -> u64 {
    (unix_time_nanos() / 1_000_000_000) as u64
}

type Shared = State<Arc<App>>;

pub fn router(app: Arc<App>) -> Router {
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .with_state(app)
}

/// Counts every reply by endpoint and status.
async fn count(State(app): Shared, req: HttpRequest, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_string();
    let resp = next.run(req).await;
    app.metrics.request(&endpoint, resp.status().as_u16());
    resp
}

/// `Authorization: Bearer KEY` when the server has a key.
async fn auth(State(app): Shared, req: HttpRequest, next: Next) -> Response {
    if let Some(key) = &app.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes()));
        if !ok {
            let msg = if given.is_some() {
                "invalid API key"
            } else {
                "missing API key: send it as `Authorization: Bearer KEY`"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, msg)
                .code("invalid_api_key")
                .into_response();
        }
    }
    next.run(req).await
}

/// Compares in time that depends only on the lengths, never on where the
/// first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

async fn not_found(req: HttpRequest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn health(State(app): Shared) -> Response {
    match app.ready() {
        Ok(_) => axum::Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            let mut body = e.body();
            body["status"] = json!(app.state());
            (e.status, axum::Json(body)).into_response()
        }
    }
}

async fn models(State(app): Shared) -> Result<Response, ApiError> {
    let r = app.ready()?;
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{
            "id": r.model_id,
            "object": "model",
            "created": r.created,
            "owned_by": "cria",
            "meta": {
                "n_ctx": r.engine.config().n_ctx,
                "n_vocab": r.model.config.n_vocab,
                "slots": r.engine.config().slots,
            },
        }],
    }))
    .into_response())
}

async fn metrics(State(app): Shared) -> Response {
    let engine = app.ready.get().map(|r| r.engine.stats());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(engine),
    )
        .into_response()
}

/// The body, refused past the size limit.
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let limit = app.config.body_limit;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(_) => Err(too_large()),
    }
}

async fn tokenize(
    State(app): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let reply = app
        .prepare
        .run(move || prepare::tokenize(&r, &body))
        .await?;
    Ok(json_bytes(reply))
}

async fn detokenize(
    State(app): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let reply = app
        .prepare
        .run(move || prepare::detokenize(&r, &body))
        .await?;
    Ok(json_bytes(reply))
}

/// A reply already serialized to JSON.
fn json_bytes(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn chat(State(app): Shared, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let job = {
        let r = r.clone();
        move || prepare::chat(&r, &body)
    };
    let prepared = app.prepare.run(job).await?;
    let id = app.new_id("chatcmpl");
    start(&app, &r, Api::Chat, id, prepared, "messages").await
}

async fn completions(
    State(app): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let job = {
        let r = r.clone();
        move || prepare::completion(&r, &body)
    };
    let prepared = app.prepare.run(job).await?;
    let id = app.new_id("cmpl");
    start(&app, &r, Api::Completion, id, prepared, "prompt").await
}

/// Submits a request to the engine and replies, streamed or whole.
async fn start(
    app: &Arc<App>,
    r: &Arc<Ready>,
    api: Api,
    id: String,
    prepared: Prepared,
    prompt_param: &str,
) -> Result<Response, ApiError> {
    let Prepared {
        prompt,
        params,
        logprobs,
        stream,
        include_usage,
    } = prepared;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let req = Request {
        logprobs,
        tenant: 0,
        ..Request::new(prompt, params, tx)
    };
    match r.engine.submit(req) {
        Ok(()) => {}
        Err(SubmitError::QueueFull { max_queue }) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the server is busy: all {} slots are in use and {max_queue} requests are \
                     waiting; retry later",
                    r.engine.config().slots
                ),
            )
            .code("server_busy")
            .retry_after(1))
        }
        Err(SubmitError::Stopped) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the engine has stopped ({})", app.state()),
            ))
        }
        Err(SubmitError::Invalid(e)) => {
            let err = ApiError::invalid(prompt_param, e.to_string());
            return Err(match e.kind() {
                cria_engine::ErrorKind::PromptTooLong { .. } => err.code("context_length_exceeded"),
                cria_engine::ErrorKind::Sampler(_) => ApiError::invalid("body", e.to_string()),
                _ => err,
            });
        }
    }
    let ctx = ReplyCtx {
        api,
        id,
        created: unix_time(),
        model: r.model_id.clone(),
        logprobs,
        include_usage,
        tok: r.tok.clone(),
        metrics: app.metrics.clone(),
        accepted: Instant::now(),
    };
    Ok(if stream {
        ctx.stream(rx)
    } else {
        // This future belongs to the connection: if the client goes away,
        // hyper drops it, `rx` goes with it and the engine cancels.
        ctx.whole(rx).await
    })
}
