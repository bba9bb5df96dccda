//! Engine events -> OpenAI replies: one JSON object for a whole answer, or
//! a stream of server-sent events (`data: {chunk}` ... `data: [DONE]`).

use crate::error::ApiError;
use crate::guard::{Limiter, Tenant};
use crate::metrics::Metrics;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cria_engine::{Done, Event, FinishReason, OverflowReport, TokenEvent};
use cria_tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// Which API shape the reply takes.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Api {
    Chat,
    Completion,
}

/// What a reply needs besides the events.
pub struct ReplyCtx {
    /// Chat with tools: the reply is read for calls, and streamed whole.
    pub tools: Option<crate::tools::Reading>,
    pub api: Api,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub logprobs: Option<usize>,
    pub include_usage: bool,
    pub tok: Arc<Tokenizer>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<Limiter>,
    pub tenant: Tenant,
    /// A `: keep-alive` comment after this long without an event, so that
    /// proxies and clients do not time out a request waiting in the queue.
    pub keep_alive: Duration,
    pub accepted: Instant,
    /// The prompt was cut to fit (`--context-overflow truncate-middle`).
    pub overflow: Option<OverflowReport>,
}

/// The `x-cria-context-overflow` header: `truncate-middle;
/// dropped_tokens=N` or `shift; dropped_tokens=N`.
pub const OVERFLOW_HEADER: &str = "x-cria-context-overflow";

/// `"context_overflow": {"action", "dropped_tokens"}` of a reply.
fn overflow_json(r: &OverflowReport) -> Value {
    json!({"action": r.action.name(), "dropped_tokens": r.dropped_tokens})
}

/// Adds the overflow header to a response.
fn with_overflow_header(mut resp: Response, r: Option<OverflowReport>) -> Response {
    if let Some(r) = r {
        if let Ok(v) = axum::http::HeaderValue::from_str(&r.to_string()) {
            resp.headers_mut().insert(OVERFLOW_HEADER, v);
        }
    }
    resp
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::EndOfGeneration | FinishReason::StopString | FinishReason::Cancelled => {
            "stop"
        }
        FinishReason::Length | FinishReason::ContextFull => "length",
    }
}

fn usage(d: &Done) -> Value {
    json!({
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": d.cached_tokens},
    })
}

/// The engine ended the request without answering it: a shutdown cancels
/// every request, and a dead engine thread closes every channel.
fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the request was cancelled: the server is shutting down or its engine stopped",
    )
    .retry_after(5)
}

/// An engine error as an HTTP error: sampling failures (every token banned
/// by logit_bias, say) are the request's fault, the rest are the server's.
pub fn engine_error(e: &cria_engine::Error) -> ApiError {
    match e.kind() {
        cria_engine::ErrorKind::Sampler(_) => ApiError::invalid("logit_bias", e.to_string()),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

impl ReplyCtx {
    fn piece(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self.tok.token_to_piece(id, true);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// One token's entry of chat `logprobs.content`.
    fn chat_logprob(&self, t: &TokenEvent) -> Value {
        let (token, bytes) = self.piece(t.id);
        let top: Vec<Value> = t
            .top_logprobs
            .iter()
            .map(|&(id, lp)| {
                let (token, bytes) = self.piece(id);
                json!({"token": token, "logprob": lp, "bytes": bytes})
            })
            .collect();
        json!({"token": token, "logprob": t.logprob, "bytes": bytes, "top_logprobs": top})
    }

    /// Legacy completions `logprobs` for some tokens; `offset` is the text
    /// length before the first of them.
    fn completion_logprobs(&self, tokens: &[TokenEvent], mut offset: usize) -> Value {
        let mut toks = Vec::new();
        let mut lps = Vec::new();
        let mut tops = Vec::new();
        let mut offsets = Vec::new();
        for t in tokens {
            let (token, _) = self.piece(t.id);
            offsets.push(offset);
            offset += token.len();
            toks.push(token);
            lps.push(t.logprob);
            let top: serde_json::Map<String, Value> = t
                .top_logprobs
                .iter()
                .map(|&(id, lp)| (self.piece(id).0, json!(lp)))
                .collect();
            tops.push(Value::Object(top));
        }
        json!({"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
    }

    fn observe_token(&self, last: &mut Option<Instant>) {
        let now = Instant::now();
        match last {
            None => self.metrics.ttft.observe(now - self.accepted),
            Some(t) => self.metrics.token_latency.observe(now - *t),
        }
        *last = Some(now);
    }

    /// Counts an answered request's tokens.
    fn observe_done(&self, d: &Done) {
        self.metrics
            .tokens(self.tenant, d.prompt_tokens, d.completion_tokens);
        // The first token comes with the prompt; the rest took
        // generation_time (speculation shortens it).
        self.metrics
            .generation(d.completion_tokens.saturating_sub(1), d.generation_time);
    }

    /// Charges the tenant's budget, for cancelled requests too: their
    /// tokens were computed all the same.
    fn charge(&self, d: &Done) {
        self.limiter
            .charge(self.tenant, d.prompt_tokens + d.completion_tokens);
    }

    /// Waits for the whole answer and replies with one JSON object.
    pub async fn whole(self, mut rx: UnboundedReceiver<Event>) -> Response {
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut last = None;
        let done = loop {
            match rx.recv().await {
                Some(Event::Token(t)) => {
                    self.observe_token(&mut last);
                    text.push_str(&t.text);
                    if self.logprobs.is_some() {
                        tokens.push(t);
                    }
                }
                Some(Event::Done(d)) => {
                    self.charge(&d);
                    break d;
                }
                Some(Event::Error(e)) => return engine_error(&e).into_response(),
                Some(Event::Embedding(_)) => return not_generated().into_response(),
                None => return shutting_down().into_response(),
            }
        };
        if done.finish == FinishReason::Cancelled {
            return shutting_down().into_response();
        }
        self.observe_done(&done);
        text.push_str(&done.text);
        let finish = finish_reason(done.finish);
        let choice = match (self.api, &self.tools) {
            (Api::Chat, Some(reading)) => {
                let (message, finish) = self.tool_message(reading, &text, finish);
                json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish})
            }
            (Api::Chat, None) => {
                let logprobs = self.logprobs.map(|_| {
                    let content: Vec<Value> = tokens.iter().map(|t| self.chat_logprob(t)).collect();
                    json!({"content": content, "refusal": null})
                });
                json!({
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                })
            }
            (Api::Completion, _) => json!({
                "index": 0,
                "text": text,
                "logprobs": self.logprobs.map(|_| self.completion_logprobs(&tokens, 0)),
                "finish_reason": finish,
            }),
        };
        let object = match self.api {
            Api::Chat => "chat.completion",
            Api::Completion => "text_completion",
        };
        let mut body = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": crate::FINGERPRINT,
            "choices": [choice],
            "usage": usage(&done),
        });
        let overflow = self.overflow.or(done.overflow);
        if let Some(r) = &overflow {
            body["context_overflow"] = overflow_json(r);
        }
        with_overflow_header(axum::Json(body).into_response(), overflow)
    }

    /// The assistant message for a reply with tools: its calls (with ids,
    /// `arguments` as JSON text) and finish_reason "tool_calls", or its text.
    fn tool_message(
        &self,
        reading: &crate::tools::Reading,
        text: &str,
        finish: &'static str,
    ) -> (Value, &'static str) {
        if finish != "stop" {
            return (
                json!({"role": "assistant", "content": text, "refusal": null}),
                finish,
            );
        }
        let (content, calls) = crate::tools::read_reply(reading, text);
        if calls.is_empty() {
            return (
                json!({"role": "assistant", "content": content, "refusal": null}),
                finish,
            );
        }
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"id": crate::tools::call_id(&self.id, i), "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        (
            json!({"role": "assistant", "content": content, "refusal": null, "tool_calls": calls}),
            "tool_calls",
        )
    }

    /// The streamed end of a reply with tools: its text, then each call as
    /// index-keyed deltas (id and name first, then the arguments).
    fn tool_deltas(
        &self,
        reading: &crate::tools::Reading,
        text: &str,
        finish: &'static str,
    ) -> (Vec<Value>, &'static str) {
        let (message, finish) = self.tool_message(reading, text, finish);
        let mut out = Vec::new();
        if let Some(t) = message["content"].as_str().filter(|t| !t.is_empty()) {
            out.push(json!({"index": 0, "delta": {"content": t}, "logprobs": null, "finish_reason": null}));
        }
        for (i, c) in message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.push(json!({"index": 0, "delta": {"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                "function": {"name": c["function"]["name"], "arguments": ""}}]}, "logprobs": null, "finish_reason": null}));
            out.push(json!({"index": 0, "delta": {"tool_calls": [{"index": i,
                "function": {"arguments": c["function"]["arguments"]}}]}, "logprobs": null, "finish_reason": null}));
        }
        (out, finish)
    }

    /// One streamed chunk with one choice.
    fn chunk(&self, choice: Value, usage: Option<Value>) -> Value {
        let object = match self.api {
            Api::Chat => "chat.completion.chunk",
            Api::Completion => "text_completion",
        };
        let mut c = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": crate::FINGERPRINT,
            "choices": if choice.is_null() { json!([]) } else { json!([choice]) },
        });
        if self.include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        c
    }

    fn delta(
        &self,
        text: &str,
        tokens: &[TokenEvent],
        offset: usize,
        finish: Option<&str>,
    ) -> Value {
        match self.api {
            Api::Chat => {
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                let logprobs = self.logprobs.filter(|_| !tokens.is_empty()).map(|_| {
                    let content: Vec<Value> = tokens.iter().map(|t| self.chat_logprob(t)).collect();
                    json!({"content": content, "refusal": null})
                });
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Api::Completion => {
                let logprobs = self
                    .logprobs
                    .filter(|_| !tokens.is_empty())
                    .map(|_| self.completion_logprobs(tokens, offset));
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }

    /// Streams the answer as server-sent events. Dropping the stream (the
    /// client went away) drops `rx`, which cancels the request.
    pub fn stream(self, rx: UnboundedReceiver<Event>) -> Response {
        struct St {
            ctx: ReplyCtx,
            rx: UnboundedReceiver<Event>,
            out: VecDeque<SseEvent>,
            last: Option<Instant>,
            /// Text sent so far (bytes), for completion logprob offsets.
            sent: usize,
            /// With tools, the reply is held until it can be read for calls.
            held: String,
            ended: bool,
        }
        let mut out = VecDeque::new();
        if self.api == Api::Chat {
            let first = self.chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
                None,
            );
            out.push_back(SseEvent::default().data(first.to_string()));
        }
        let keep_alive = self.keep_alive;
        let truncated = self.overflow;
        let st = St {
            ctx: self,
            rx,
            out,
            last: None,
            sent: 0,
            held: String::new(),
            ended: false,
        };
        let stream = futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(ev) = st.out.pop_front() {
                    return Some((Ok::<_, Infallible>(ev), st));
                }
                if st.ended {
                    return None;
                }
                let data = |v: Value| SseEvent::default().data(v.to_string());
                match st.rx.recv().await {
                    Some(Event::Token(t)) => {
                        st.ctx.observe_token(&mut st.last);
                        if st.ctx.tools.is_some() {
                            st.held.push_str(&t.text);
                            continue;
                        }
                        if t.text.is_empty() && st.ctx.logprobs.is_none() {
                            continue;
                        }
                        let choice = st
                            .ctx
                            .delta(&t.text, std::slice::from_ref(&t), st.sent, None);
                        st.sent += t.text.len();
                        st.out.push_back(data(st.ctx.chunk(choice, None)));
                    }
                    Some(Event::Done(d)) if d.finish == FinishReason::Cancelled => {
                        st.ctx.charge(&d);
                        st.out.push_back(data(shutting_down().body()));
                        st.ended = true;
                    }
                    Some(Event::Done(d)) => {
                        st.ctx.charge(&d);
                        st.ctx.observe_done(&d);
                        let mut finish = finish_reason(d.finish);
                        if let Some(reading) = &st.ctx.tools {
                            st.held.push_str(&d.text);
                            let (deltas, f) = st.ctx.tool_deltas(reading, &st.held, finish);
                            for choice in deltas {
                                st.out.push_back(data(st.ctx.chunk(choice, None)));
                            }
                            finish = f;
                        } else if !d.text.is_empty() {
                            let choice = st.ctx.delta(&d.text, &[], st.sent, None);
                            st.out.push_back(data(st.ctx.chunk(choice, None)));
                        }
                        let choice = st.ctx.delta("", &[], st.sent, Some(finish));
                        let mut last = st.ctx.chunk(choice, None);
                        // A truncation was known when the stream began
                        // (and is in its header too); a shift only now.
                        if let Some(r) = st.ctx.overflow.or(d.overflow) {
                            last["context_overflow"] = overflow_json(&r);
                        }
                        st.out.push_back(data(last));
                        if st.ctx.include_usage {
                            st.out
                                .push_back(data(st.ctx.chunk(Value::Null, Some(usage(&d)))));
                        }
                        st.out.push_back(SseEvent::default().data("[DONE]"));
                        st.ended = true;
                    }
                    Some(Event::Error(e)) => {
                        st.out.push_back(data(engine_error(&e).body()));
                        st.ended = true;
                    }
                    Some(Event::Embedding(_)) => {
                        st.out.push_back(data(not_generated().body()));
                        st.ended = true;
                    }
                    None => {
                        st.out.push_back(data(shutting_down().body()));
                        st.ended = true;
                    }
                }
            }
        });
        let keep_alive = KeepAlive::new().interval(keep_alive).text("keep-alive");
        with_overflow_header(
            Sse::new(stream).keep_alive(keep_alive).into_response(),
            truncated,
        )
    }
}

/// A generation request answered with an embedding: a bug in the engine.
fn not_generated() -> ApiError {
    engine_error(
        &cria_engine::ErrorKind::Internal {
            detail: "a generation request was answered with an embedding".into(),
        }
        .into(),
    )
}
