//! Request bodies -> what the engine takes: parse and check the JSON,
//! render the chat template, tokenize. This is CPU work that grows with
//! the body (up to `--max-body`), so routes run it on tokio's blocking
//! pool behind a semaphore (`Prepare`), never on the two async workers
//! that also answer /health.

use crate::error::ApiError;
use crate::limits::MAX_CHOICES;
use crate::limits::PREPARE_JOBS_PER_CORE;
use crate::native::{self, Extras};
use crate::openai::{
    self, ChatRequest, CompletionRequest, DetokenizeRequest, ModelBounds, Sampling, TokenizeRequest,
};
use crate::routes::Ready;
use crate::shapes::Prompt;
use crate::tools;
use axum::http::StatusCode;
use cria_engine::{truncate_middle, ContextOverflow, GenerateParams, OverflowReport};
use cria_prompt::tokenize_prompt;
use cria_tokenizer::Tokenizer;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A generation request ready for the engine.
pub struct Prepared {
    /// How to read tool calls back out of the reply (chat with tools).
    pub tools: Option<crate::tools::Reading>,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    /// The prompt's middle was cut to fit (`--context-overflow truncate-middle`).
    pub overflow: Option<OverflowReport>,
    /// The request's adapters (its `lora` field, else the server's scales).
    pub lora: cria_model::LoraSet,
    /// Answers wanted (`n`): the request runs this many times side by side,
    /// with seeds seed, seed + 1, ...
    pub choices: usize,
    /// `/completion`: what its reply shows besides the answer.
    pub native: Option<crate::reply::NativeReply>,
    /// llama-server's `timings_per_token`.
    pub timings_per_token: bool,
    /// `verbose`: the rendered prompt, shown in the reply.
    pub verbose: Option<String>,
    /// `post_sampling_probs`: the probabilities after the sampler chain.
    pub post_sampling_probs: bool,
    /// `return_progress` on a stream: prompt progress chunks.
    pub progress: bool,
}

/// Runs preparation jobs on the blocking pool, a bounded number at once.
pub struct Prepare {
    permits: Arc<Semaphore>,
}

impl Prepare {
    pub fn new() -> Prepare {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Prepare::with_permits(PREPARE_JOBS_PER_CORE * cores)
    }

    fn with_permits(n: usize) -> Prepare {
        Prepare {
            permits: Arc::new(Semaphore::new(n)),
        }
    }

    /// Runs `job` off the async workers. The permit goes with the job, so
    /// a client that hangs up does not free a slot while its job still
    /// runs.
    pub async fn run<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        })?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("preparing the request failed: {e}"),
            )
        })?
    }
}

fn bounds(r: &Ready) -> ModelBounds {
    ModelBounds {
        n_vocab: r.model.config.n_vocab,
        n_ctx: r.engine.config().n_ctx,
        defaults: r.defaults,
    }
}

/// The llama-server fields of a request that cria refuses rather than
/// ignores, and the ones every generating route reads.
fn extras(r: &Ready, body: &[u8]) -> Result<(Extras, native::Options), ApiError> {
    let extras: Extras = openai::parse(body)?;
    let options = extras.options(r.engine.config().slots)?;
    Ok((extras, options))
}

/// Compiles the grammar or schema the body asks for, if any.
fn constrain(r: &Ready, body: &[u8], params: &mut GenerateParams) -> Result<(), ApiError> {
    if let Some((param, spec)) = crate::constrain::spec(body)? {
        params.constraint = Some(crate::constrain::compile(r.grammars()?, param, &spec)?);
    }
    Ok(())
}

/// Fits the prompt and `max_tokens` to the context as `--context-overflow`
/// says: error (refuse a prompt that does not fit; cap `max_tokens` at the
/// room left, as always), truncate-middle (first cut the prompt's middle so
/// it and `max_tokens` fit; reported), or shift (the engine shifts the
/// cache when it fills, so a `max_tokens` larger than the room is kept;
/// without one, generation still stops at the end of the context).
fn fit(
    r: &Ready,
    prompt: &mut Vec<u32>,
    params: &mut GenerateParams,
    b: ModelBounds,
    param: &str,
) -> Result<Option<OverflowReport>, ApiError> {
    let mode = r.engine.config().overflow;
    let mut dropped = 0;
    if mode == ContextOverflow::TruncateMiddle && !prompt.is_empty() {
        dropped = truncate_middle(prompt, params.max_tokens, b.n_ctx);
    }
    let wanted = params.max_tokens;
    openai::fit_prompt(prompt, params, b, param)?;
    if mode == ContextOverflow::Shift && wanted.is_some() {
        params.max_tokens = wanted;
    }
    Ok((dropped > 0).then_some(OverflowReport {
        action: ContextOverflow::TruncateMiddle,
        dropped_tokens: dropped,
    }))
}

/// `/v1/chat/completions`: checks, renders the template (with the tools,
/// in the model's own format), tokenizes.
pub fn chat(r: &Ready, body: &[u8]) -> Result<Prepared, ApiError> {
    match chat_or_render(r, body, false, false)? {
        Chat::Prepared(p) => Ok(*p),
        Chat::Rendered(_) => Err(internal(&"a chat request was only rendered")),
    }
}

/// [`chat`] for Anthropic's `/v1/messages` (translated to a chat body):
/// as llama-server, an empty `messages` is let through, and the template
/// renders the assistant's opening alone.
pub fn anthropic_chat(r: &Ready, body: &[u8]) -> Result<Prepared, ApiError> {
    match chat_or_render(r, body, false, true)? {
        Chat::Prepared(p) => Ok(*p),
        Chat::Rendered(_) => Err(internal(&"a chat request was only rendered")),
    }
}

/// `/apply-template`: `{"prompt": text}`, the chat request's prompt as the
/// template renders it (prefill and tools included), not tokenized.
pub fn apply_template(r: &Ready, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    match chat_or_render(r, body, true, false)? {
        Chat::Rendered(text) => {
            serde_json::to_vec(&json!({ "prompt": text })).map_err(|e| internal(&e))
        }
        Chat::Prepared(_) => Err(internal(&"a template request was prepared")),
    }
}

enum Chat {
    Prepared(Box<Prepared>),
    Rendered(String),
}

fn chat_or_render(
    r: &Ready,
    body: &[u8],
    only_render: bool,
    empty_ok: bool,
) -> Result<Chat, ApiError> {
    let req: ChatRequest = openai::parse(body)?;
    let sampling: Sampling = openai::parse(body)?;
    let lora = r.lora.for_request(body)?;
    let (_, options) = extras(r, body)?;
    let mut messages = if empty_ok {
        req.messages_maybe_none()?
    } else {
        req.messages()?
    };
    let logprobs = req.logprobs()?;
    let b = bounds(r);
    let choices = sampling.choices()?;
    let mut params = sampling.params(req.max_completion_tokens, b, Some(&r.tok))?;
    // An assistant message last is the start of the answer (a prefill),
    // unless the request asks for a new turn after it.
    let ends_with_assistant = messages.last().is_some_and(|m| m.role == "assistant");
    if ends_with_assistant
        && messages.len() >= 2
        && messages[messages.len() - 2].role == "assistant"
    {
        return Err(ApiError::invalid(
            "messages",
            "messages: two assistant messages at the end; only the last may be a prefill of \
             the answer",
        ));
    }
    let prefill = match (req.add_generation_prompt, req.continue_final_message) {
        (Some(true), Some(true)) => {
            return Err(ApiError::invalid(
                "continue_final_message",
                "continue_final_message and add_generation_prompt cannot both be true: \
                 continue the last message, or open a new turn",
            ))
        }
        (_, Some(true)) if !ends_with_assistant => {
            return Err(ApiError::invalid(
                "continue_final_message",
                "continue_final_message: the last message is not an assistant's",
            ))
        }
        (_, Some(true)) => true,
        (Some(true), _) => false,
        _ => ends_with_assistant,
    };
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    let prefilled = if prefill {
        messages
            .pop()
            .map(|m| req.continued_parts_text().unwrap_or(m.content))
    } else {
        None
    };
    constrain(r, body, &mut params)?;
    let template = r.template.as_ref().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{e}; use /v1/completions for plain text"),
        )
    })?;
    let tools = tools::parse(
        req.tools.as_ref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls.as_ref(),
    )?
    .filter(|t| t.choice != tools::Choice::None);
    let mut reading = None;
    let open_turn = add_generation_prompt || prefilled.is_some();
    let rendered = match &tools {
        None => template.render(&messages, open_turn),
        Some(t) => {
            let format = tools::Format::of(template.source());
            if let Some(spec) = t.grammar(format) {
                if params.constraint.is_some() {
                    return Err(ApiError::invalid(
                        "tools",
                        "tools and response_format/grammar both constrain the reply: give one",
                    ));
                }
                params.constraint = Some(crate::constrain::compile(r.grammars()?, "tools", &spec)?);
            }
            reading = Some(tools::Reading {
                format,
                names: t.list.iter().map(|t| t.name.clone()).collect(),
            });
            if format == tools::Format::Generic {
                t.instruct_generic(&mut messages);
                template.render(&messages, open_turn)
            } else {
                template.render_with_tools(&messages, Some(&t.openai_list()), open_turn)
            }
        }
    }
    .map_err(|e| ApiError::invalid("messages", e.full_message()))?;
    let rendered = match prefilled {
        Some(p) => rendered + &p,
        None => rendered,
    };
    if only_render {
        return Ok(Chat::Rendered(rendered));
    }
    let mut prompt = tokenize_prompt(&r.tok, &rendered)
        .map_err(|e| ApiError::invalid("messages", e.full_message()))?;
    let verbose = options
        .verbose
        .unwrap_or(r.defaults.verbose)
        .then_some(rendered);
    let overflow = fit(r, &mut prompt, &mut params, b, "messages")?;
    if choices > 1 && req.stream {
        return Err(ApiError::unsupported("n", "n > 1 with stream"));
    }
    Ok(Chat::Prepared(Box::new(Prepared {
        tools: reading,
        prompt,
        params,
        logprobs,
        stream: req.stream,
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
        overflow,
        lora,
        choices,
        native: None,
        timings_per_token: options.timings_per_token,
        verbose,
        post_sampling_probs: options.post_sampling_probs,
        progress: options.return_progress && req.stream,
    })))
}

/// `/v1/completions`: checks and tokenizes the prompt.
pub fn completion(r: &Ready, body: &[u8]) -> Result<Prepared, ApiError> {
    let req: CompletionRequest = openai::parse(body)?;
    let sampling: Sampling = openai::parse(body)?;
    let lora = r.lora.for_request(body)?;
    req.check()?;
    let (_, options) = extras(r, body)?;
    if options.post_sampling_probs {
        // The legacy shape has no place for probabilities (its
        // `token_logprobs` are logarithms).
        return Err(ApiError::unsupported(
            "post_sampling_probs",
            "post_sampling_probs on /v1/completions (use /completion or /v1/chat/completions)",
        ));
    }
    let logprobs = req.logprobs()?;
    let b = bounds(r);
    let choices = sampling.choices()?;
    let mut params = sampling.params(None, b, Some(&r.tok))?;
    constrain(r, body, &mut params)?;
    let one = |n: usize| {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::unsupported(
                "prompt",
                &format!("a batch of {n} prompts (send one per request)"),
            ))
        }
    };
    let encode = |s: &str| {
        r.tok
            .encode(s, r.tok.add_bos(), true)
            .map_err(|e| ApiError::invalid("prompt", format!("prompt: {e}")))
    };
    let mut prompt = match req.prompt {
        Prompt::Text(s) => encode(&s)?,
        Prompt::Tokens(t) => t,
        Prompt::Texts(v) => {
            one(v.len())?;
            encode(&v[0])?
        }
        Prompt::TokenLists(mut v) => {
            one(v.len())?;
            v.swap_remove(0)
        }
    };
    let overflow = fit(r, &mut prompt, &mut params, b, "prompt")?;
    let verbose = match options.verbose.unwrap_or(r.defaults.verbose) {
        true => Some(
            r.tok
                .decode(&prompt, true)
                .map_err(|e| ApiError::invalid("prompt", format!("prompt: {e}")))?,
        ),
        false => None,
    };
    if choices > 1 && req.stream {
        return Err(ApiError::unsupported("n", "n > 1 with stream"));
    }
    Ok(Prepared {
        tools: None,
        prompt,
        params,
        logprobs,
        stream: req.stream,
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
        overflow,
        lora,
        choices,
        native: None,
        timings_per_token: options.timings_per_token,
        verbose,
        post_sampling_probs: false,
        progress: options.return_progress && req.stream,
    })
}

/// llama-server's `/completion`: one prepared request per prompt (a batch
/// of prompts is answered as a list).
pub fn native(r: &Ready, body: &[u8]) -> Result<Vec<Prepared>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Req {
        prompt: native::Prompts,
    }
    let req: Req = openai::parse(body)?;
    let sampling: Sampling = openai::parse(body)?;
    let (extras, options) = extras(r, body)?;
    let lora = r.lora.for_request(body)?;
    let stream = extras.stream.unwrap_or(false);
    let prompts = req.prompt.0;
    if prompts.len() > MAX_CHOICES {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "prompt: {} prompts, at most {MAX_CHOICES} per request",
                prompts.len()
            ),
        ));
    }
    if prompts.len() > 1 && stream {
        return Err(ApiError::unsupported(
            "prompt",
            "several prompts with stream",
        ));
    }
    if sampling.choices()? > 1 {
        return Err(ApiError::unsupported(
            "n",
            "n on /completion (send the prompt several times in `prompt`)",
        ));
    }
    let b = bounds(r);
    let mut params = sampling.params(None, b, Some(&r.tok))?;
    constrain(r, body, &mut params)?;
    let logprobs = (options.n_probs > 0).then_some(options.n_probs);
    let mut out = Vec::with_capacity(prompts.len());
    for (i, parts) in prompts.iter().enumerate() {
        let param = if prompts.len() == 1 {
            "prompt".to_string()
        } else {
            format!("prompt[{i}]")
        };
        let mut prompt = native::tokenize(&r.tok, parts, &param)?;
        let mut params = params.clone();
        let n_predict = params.max_tokens;
        let overflow = fit(r, &mut prompt, &mut params, b, &param)?;
        let settings = native::settings(r, &params, n_predict, &options, stream);
        let prompt_text = r
            .tok
            .decode(&prompt, true)
            .map_err(|e| ApiError::invalid(&param, format!("{param}: {e}")))?;
        out.push(Prepared {
            tools: None,
            prompt,
            params,
            logprobs,
            stream,
            include_usage: false,
            overflow,
            lora: lora.clone(),
            choices: 1,
            native: Some(crate::reply::NativeReply {
                options: options.clone(),
                settings,
                prompt_text,
            }),
            timings_per_token: options.timings_per_token,
            // llama-server's native reply has no `__verbose`: it holds the
            // prompt and the text already.
            verbose: None,
            post_sampling_probs: options.post_sampling_probs,
            progress: options.return_progress && stream,
        });
    }
    Ok(out)
}

/// `/tokenize`: `{"tokens": [id, ...]}`, or `[{"id", "piece"}, ...]` with
/// `with_pieces`. Serialized here, off the async workers: a 4 MiB body can
/// be 4M tokens.
pub fn tokenize(r: &Ready, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    #[derive(Serialize)]
    struct Reply<T> {
        tokens: T,
    }
    #[derive(Serialize)]
    struct Piece {
        id: u32,
        piece: String,
    }
    /// Each piece is made as it is written, never all held at once.
    struct Pieces<'a> {
        ids: &'a [u32],
        tok: &'a Tokenizer,
    }
    impl Serialize for Pieces<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.ids.iter().map(|&id| {
                let bytes = self.tok.token_to_piece(id, true);
                let piece = String::from_utf8_lossy(&bytes).into_owned();
                Piece { id, piece }
            }))
        }
    }
    let req: TokenizeRequest = openai::parse(body)?;
    let parse_special = req.parse_special.unwrap_or(true);
    let ids = r
        .tok
        .encode(&req.content, req.add_special, parse_special)
        .map_err(|e| ApiError::invalid("content", format!("content: {e}")))?;
    let json = if req.with_pieces {
        let tokens = Pieces {
            ids: &ids,
            tok: &r.tok,
        };
        serde_json::to_vec(&Reply { tokens })
    } else {
        serde_json::to_vec(&Reply { tokens: &ids })
    };
    json.map_err(|e| internal(&e))
}

/// `/detokenize`: `{"content": text}`.
pub fn detokenize(r: &Ready, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: DetokenizeRequest = openai::parse(body)?;
    let n_vocab = r.tok.vocab_size();
    if let Some((i, id)) = req
        .tokens
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= n_vocab)
    {
        return Err(ApiError::invalid(
            format!("tokens[{i}]"),
            format!("tokens[{i}]: {id} is not in the vocabulary of {n_vocab}"),
        ));
    }
    let content = r
        .tok
        .decode(&req.tokens, true)
        .map_err(|e| ApiError::invalid("tokens", format!("tokens: {e}")))?;
    serde_json::to_vec(&json!({ "content": content })).map_err(|e| internal(&e))
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot write the reply: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_permits_run_at_once() {
        let prepare = Arc::new(Prepare::with_permits(3));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..12)
            .map(|i| {
                let (prepare, running, most) = (prepare.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    prepare
                        .run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(i)
                        })
                        .await
                })
            })
            .collect();
        let mut done = Vec::new();
        for j in jobs {
            done.push(j.await.unwrap().unwrap());
        }
        assert_eq!(done, (0..12).collect::<Vec<_>>());
        // Bounded, yet in parallel.
        let most = most.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} jobs ran at once");
    }

    #[tokio::test]
    async fn a_job_that_panics_is_a_500_and_frees_its_permit() {
        let prepare = Prepare::with_permits(1);
        let e = prepare
            .run(|| -> Result<(), ApiError> { panic!("a bug") })
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(prepare.run(|| Ok(7)).await.unwrap(), 7);
    }
}
