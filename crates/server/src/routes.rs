//! The HTTP routes, the metrics middleware, and the shared state (the
//! other middleware is in `guard.rs`).

use crate::error::ApiError;
use crate::guard::{self, Limiter, Tenant};
use crate::metrics::Metrics;
use crate::prepare::{self, Prepare, Prepared};
use crate::reply::{Api, ReplyCtx};
use crate::ServerConfig;
use axum::body::Body;
use axum::extract::{Extension, MatchedPath, Request as HttpRequest, State};
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
use tower_http::cors::CorsLayer;

/// What exists once the model is loaded.
pub struct Ready {
    /// The vocabulary as grammars need it, built at the first constrained
    /// request (or the reason it cannot be).
    pub grammars: OnceLock<Result<Arc<cria_grammar::Grammars>, String>>,
    pub model: Arc<Model>,
    pub tok: Arc<Tokenizer>,
    /// The chat template, or why there is none (chat requests get the reason).
    pub template: Result<ChatTemplate, String>,
    pub engine: Engine,
    pub model_id: String,
    pub created: u64,
    /// How embeddings pool (`--pooling`, else the model's), or why the
    /// model's cannot be used.
    pub pooling: Result<cria_engine::Pooling, String>,
    /// The adapters loaded at start and their current scales.
    pub lora: crate::lora::Adapters,
    /// Request defaults from the command line (`--temp`, `--seed`, `--n-predict`).
    pub defaults: crate::openai::RequestDefaults,
}

impl Ready {
    pub fn grammars(&self) -> Result<&cria_grammar::Grammars, ApiError> {
        self.grammars
            .get_or_init(|| {
                cria_grammar::Grammars::new(&self.tok)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .as_deref()
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("this model cannot be constrained: {e}"),
                )
            })
    }
}

pub struct App {
    pub config: ServerConfig,
    pub ready: OnceLock<Arc<Ready>>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<Limiter>,
    pub shutting_down: AtomicBool,
    /// Parsing, templates and tokenizing, off the async workers.
    pub prepare: Prepare,
    next_id: AtomicU64,
    /// When the server started, Unix seconds.
    pub started: u64,
}

impl App {
    pub fn new(config: ServerConfig) -> App {
        App {
            ready: OnceLock::new(),
            metrics: Arc::new(Metrics::default()),
            limiter: Arc::new(Limiter::new(
                config.rate_limit_requests,
                config.rate_limit_tokens,
            )),
            shutting_down: AtomicBool::new(false),
            prepare: Prepare::new(),
            next_id: AtomicU64::new(1),
            started: unix_time(),
            config,
        }
    }

    pub(crate) fn ready(&self) -> Result<&Arc<Ready>, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down (draining the requests in flight); send new ones \
                 to another replica",
            )
            .retry_after(1));
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
    pub(crate) fn state(&self) -> &'static str {
        if self.shutting_down.load(Ordering::SeqCst) {
            "draining"
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

/// Layers, outermost first: count, Host check, CORS, routing; then on the
/// protected routes the key (tenant), JSON bodies only, and on the two
/// generating routes the tenant's rate limits.
pub fn router(app: Arc<App>, cors: Option<CorsLayer>) -> Router {
    let generate = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/completion", post(native))
        .route("/completions", post(native))
        .route("/infill", post(infill))
        .route("/v1/messages", post(messages))
        .route("/v1/embeddings", post(crate::embeddings::handler))
        .route("/embeddings", post(crate::embeddings::handler))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            guard::rate_limit,
        ));
    let protected = Router::new()
        .merge(generate)
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/metrics", get(metrics))
        .route("/lora-adapters", get(lora_list).post(lora_set))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/apply-template", post(apply_template))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/chat/completions/input_tokens", post(input_tokens))
        .route("/v1/chat/completions/input_tokens", post(input_tokens))
        .route("/props", get(props).post(set_props))
        .route("/slots", get(slots))
        .route_layer(middleware::from_fn(guard::json_only))
        .route_layer(middleware::from_fn_with_state(app.clone(), guard::auth));
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/livez", get(live))
        .merge(protected)
        .fallback(not_found);
    if app.config.webui {
        router = router.merge(crate::webui::routes());
    }
    if let Some(cors) = cors {
        router = router
            .layer(cors)
            .layer(middleware::from_fn(guard::cors_methods_spelling));
    }
    router
        .layer(middleware::from_fn_with_state(app.clone(), guard::host))
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .with_state(app)
}

/// Counts every reply by endpoint, status and tenant.
async fn count(State(app): Shared, req: HttpRequest, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_string();
    let resp = next.run(req).await;
    let tenant = resp
        .extensions()
        .get::<Tenant>()
        .copied()
        .unwrap_or_default();
    app.metrics
        .request(&endpoint, resp.status().as_u16(), tenant);
    resp
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

/// Liveness, for orchestrators: 200 while the process can still serve
/// (loading and draining included), 503 once the engine thread has died,
/// so a restart is the cure. `/health` is readiness.
async fn live(State(app): Shared) -> Response {
    let dead = app
        .ready
        .get()
        .is_some_and(|r| !r.engine.is_running() && !app.shutting_down.load(Ordering::SeqCst));
    if dead {
        let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped");
        return e.into_response();
    }
    axum::Json(json!({"status": "alive"})).into_response()
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
            "aliases": if app.config.aliases.is_empty() { vec![r.model_id.clone()] } else { app.config.aliases.clone() },
            "tags": app.config.tags,
            "meta": {
                "n_ctx": r.engine.config().n_ctx,
                "n_vocab": r.model.config.n_vocab,
                "slots": r.engine.config().slots,
            },
        }],
    }))
    .into_response())
}

/// `/metrics`. Without keys, or with one, or for the first key (the
/// operator's, tenant 1), every tenant's series; for any other key, its
/// own tenant's series and the totals.
async fn metrics(State(app): Shared, tenant: Option<axum::Extension<Tenant>>) -> Response {
    if !app.config.metrics_endpoint {
        return ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "the /metrics endpoint is off (--no-metrics): start the server without it",
        )
        .code("not_supported")
        .into_response();
    }
    let ready = app.ready.get();
    let engine = ready.map(|r| r.engine.stats());
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4".to_string(),
            ),
            // llama-server's header: when the process started (Unix seconds).
            (
                header::HeaderName::from_static("process-start-time-unix"),
                app.started.to_string(),
            ),
        ],
        app.metrics.render(
            engine,
            metrics_view(app.config.api_keys.len(), tenant.map(|t| t.0)),
        ),
    )
        .into_response()
}

/// Which tenant's series `/metrics` shows a request from `tenant` when the
/// server has `keys` keys: all (`None`) for the operator, else its own.
fn metrics_view(keys: usize, tenant: Option<Tenant>) -> Option<Tenant> {
    match tenant {
        Some(t) if keys > 1 && t != Tenant(1) => Some(t),
        _ => None,
    }
}

/// The body, refused past the size limit or if it does not arrive in
/// time (a client trickling it would hold the connection forever).
pub(crate) async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, ApiError> {
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
    let timeout = app.config.timeout_body;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b.to_vec()),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )),
    }
}

async fn lora_list(State(app): Shared) -> Result<Response, ApiError> {
    Ok(axum::Json(app.ready()?.lora.listing()).into_response())
}

async fn lora_set(
    State(app): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    Ok(axum::Json(r.lora.set(&body)?).into_response())
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

async fn chat(
    State(app): Shared,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let job = {
        let r = r.clone();
        move || prepare::chat(&r, &body)
    };
    let prepared = app.prepare.run(job).await?;
    let id = app.new_id("chatcmpl");
    start(&app, &r, tenant, Api::Chat, id, vec![prepared], "messages").await
}

async fn completions(
    State(app): Shared,
    Extension(tenant): Extension<Tenant>,
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
    start(
        &app,
        &r,
        tenant,
        Api::Completion,
        id,
        vec![prepared],
        "prompt",
    )
    .await
}

/// Anthropic's `/v1/messages`: translated, then the chat path.
async fn messages(
    State(app): Shared,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let job = {
        let r = r.clone();
        move || {
            let body = crate::anthropic::to_openai(&body)?;
            prepare::anthropic_chat(&r, &body)
        }
    };
    let prepared = app.prepare.run(job).await?;
    let id = app.new_id("msg");
    start(
        &app,
        &r,
        tenant,
        Api::Anthropic,
        id,
        vec![prepared],
        "messages",
    )
    .await
}

/// The prompt tokens of a chat request, without running it: Anthropic's
/// `/v1/messages/count_tokens` and llama-server's
/// `/v1/chat/completions/input_tokens`, both `{"input_tokens": N}`.
async fn count_tokens(
    State(app): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let n = app
        .prepare
        .run(move || {
            let body = crate::anthropic::to_openai(&body)?;
            prepare::anthropic_chat(&r, &body).map(|p| p.prompt.len())
        })
        .await?;
    Ok(axum::Json(json!({ "input_tokens": n })).into_response())
}

async fn input_tokens(
    State(app): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let n = app
        .prepare
        .run(move || prepare::chat(&r, &body).map(|p| p.prompt.len()))
        .await?;
    Ok(axum::Json(json!({ "input_tokens": n })).into_response())
}

/// llama-server's `/completion` (and `/completions`).
async fn native(
    State(app): Shared,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let job = {
        let r = r.clone();
        move || prepare::native(&r, &body)
    };
    let prepared = app.prepare.run(job).await?;
    let id = app.new_id("cmpl");
    start(&app, &r, tenant, Api::Native, id, prepared, "prompt").await
}

/// `/infill`: fill in the middle needs the model's FIM tokens.
async fn infill(State(app): Shared) -> Result<Response, ApiError> {
    let r = app.ready()?;
    let fim = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
        .iter()
        .all(|t| r.tok.token_id(t).is_some());
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        if fim {
            "/infill is not implemented by cria yet; send the prompt with the model's FIM \
             tokens (<fim_prefix>..<fim_suffix>..<fim_middle>) to /completion"
        } else {
            "this model has no fill-in-the-middle tokens, so /infill cannot work with it; \
             use /completion"
        },
    )
    .code("not_supported"))
}

/// `/apply-template`: the chat template's rendering of `messages`, as
/// `/v1/chat/completions` would send it to the model.
async fn apply_template(
    State(app): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let reply = app
        .prepare
        .run(move || prepare::apply_template(&r, &body))
        .await?;
    Ok(json_bytes(reply))
}

async fn props(State(app): Shared) -> Result<Response, ApiError> {
    let r = app.ready()?;
    Ok(axum::Json(crate::native::props(r, &app.config)).into_response())
}

/// llama-server changes settings with `POST /props` only when started
/// with `--props`; cria's settings are fixed at start.
async fn set_props() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "the server's settings are fixed when it starts: POST /props is not supported (restart \
         it with other flags)",
    )
    .code("not_supported")
}

async fn slots(State(app): Shared) -> Result<Response, ApiError> {
    if !app.config.slots_endpoint {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "the /slots endpoint is off: start the server with --slots",
        )
        .code("not_supported"));
    }
    let r = app.ready()?;
    Ok(axum::Json(crate::native::slots(r)).into_response())
}

/// Submits a request to the engine and replies, streamed or whole.
async fn start(
    app: &Arc<App>,
    r: &Arc<Ready>,
    tenant: Tenant,
    api: Api,
    id: String,
    prepared: Vec<Prepared>,
    prompt_param: &str,
) -> Result<Response, ApiError> {
    // Several prompts or choices are several requests, submitted together
    // (dropping the receivers cancels those already in).
    let mut rxs = Vec::new();
    let mut natives = Vec::new();
    let mut first = None;
    let mut n_prompt = 0;
    for p in prepared {
        let Prepared {
            tools,
            prompt,
            params,
            logprobs,
            stream,
            include_usage,
            overflow,
            lora,
            choices,
            native,
            timings_per_token,
            verbose,
            post_sampling_probs,
            progress,
        } = p;
        n_prompt += prompt.len();
        for i in 0..choices.max(1) {
            let mut params = params.clone();
            params.sampler.seed = params.sampler.seed.wrapping_add(i as u64);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let req = Request {
                logprobs,
                tenant: tenant.0,
                lora: Some(lora.clone()),
                post_sampling_probs,
                progress,
                ..Request::new(prompt.clone(), params, tx)
            };
            submit(app, r, req, prompt_param)?;
            rxs.push(rx);
        }
        natives.extend(native);
        if first.is_none() {
            first = Some((
                tools,
                logprobs,
                stream,
                include_usage,
                overflow,
                timings_per_token,
                verbose,
            ));
        }
    }
    let Some((tools, logprobs, stream, include_usage, overflow, timings_per_token, verbose)) =
        first
    else {
        return Err(ApiError::invalid(prompt_param, "nothing to generate"));
    };
    let ctx = ReplyCtx {
        tools,
        api,
        id,
        created: unix_time(),
        model: r.model_id.clone(),
        logprobs,
        include_usage,
        tok: r.tok.clone(),
        metrics: app.metrics.clone(),
        limiter: app.limiter.clone(),
        tenant,
        keep_alive: app.config.sse_keepalive,
        accepted: Instant::now(),
        overflow,
        native: (api == Api::Native).then_some(natives),
        timings_per_token,
        n_prompt,
        verbose,
    };
    Ok(if stream && rxs.len() == 1 {
        ctx.stream(rxs.swap_remove(0))
    } else {
        // This future belongs to the connection: if the client goes away,
        // hyper drops it, the receivers go with it and the engine cancels.
        ctx.whole(rxs).await
    })
}

/// Hands one request to the engine.
fn submit(app: &App, r: &Ready, req: Request, prompt_param: &str) -> Result<(), ApiError> {
    let n_prompt = req.prompt.len();
    match r.engine.submit(req) {
        Ok(()) => Ok(()),
        Err(SubmitError::QueueFull { max_queue }) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the server is busy: all {} slots are in use and {max_queue} requests are \
                     waiting; retry later",
                r.engine.config().slots
            ),
        )
        .code("server_busy")
        .retry_after(1)),
        Err(SubmitError::Stopped) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the engine has stopped ({})", app.state()),
        )),
        Err(SubmitError::Invalid(e)) => {
            let err = ApiError::invalid(prompt_param, e.to_string());
            Err(match e.kind() {
                cria_engine::ErrorKind::PromptTooLong { .. } => {
                    err.exceeded(n_prompt, r.engine.config().n_ctx)
                }
                cria_engine::ErrorKind::Sampler(_) => ApiError::invalid("body", e.to_string()),
                _ => err,
            })
        }
    }
}
