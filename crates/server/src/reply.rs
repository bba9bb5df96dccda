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

mod native_shape;
mod progress;

/// Which API shape the reply takes.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Api {
    Chat,
    Completion,
    /// llama-server's `/completion`.
    Native,
    /// Anthropic's `/v1/messages`.
    Anthropic,
}

/// One request's whole answer.
struct Collected {
    text: String,
    tokens: Vec<TokenEvent>,
    done: Done,
}

/// What a `/completion` reply for one prompt shows besides the answer.
#[derive(Clone, Debug)]
pub struct NativeReply {
    pub options: crate::native::Options,
    /// `generation_settings`.
    pub settings: Value,
    /// The prompt as text (its tokens decoded, special ones included).
    pub prompt_text: String,
}

/// The answers' token counts and times added up (times: the longest).
fn sum_done(all: &[Collected]) -> Done {
    let mut total = all[0].done.clone();
    for c in &all[1..] {
        total.prompt_tokens += c.done.prompt_tokens;
        total.cached_tokens += c.done.cached_tokens;
        total.completion_tokens += c.done.completion_tokens;
        total.prompt_time = total.prompt_time.max(c.done.prompt_time);
        total.generation_time = total.generation_time.max(c.done.generation_time);
    }
    total
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
    /// `/completion`: per prompt, what its reply shows.
    pub native: Option<Vec<NativeReply>>,
    /// llama-server's `timings_per_token`: streamed chunks carry timings.
    pub timings_per_token: bool,
    /// Prompt tokens (Anthropic's stream reports them first).
    pub n_prompt: usize,
    /// `verbose`: the rendered prompt, for `__verbose.prompt`.
    pub verbose: Option<String>,
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

    /// One token's entry of chat `logprobs.content` (llama-server's shape,
    /// `prob` and `top_probs`, with `post_sampling_probs`).
    fn chat_logprob(&self, t: &TokenEvent) -> Value {
        if t.prob.is_some() {
            return crate::native::probs(&self.tok, t);
        }
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
        self.metrics.done(d);
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

    /// Waits for one request's whole answer.
    async fn collect(&self, rx: &mut UnboundedReceiver<Event>) -> Result<Collected, ApiError> {
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut last = None;
        let done = loop {
            match rx.recv().await {
                Some(Event::Token(t)) => {
                    self.observe_token(&mut last);
                    text.push_str(&t.text);
                    tokens.push(t);
                }
                Some(Event::Done(d)) => {
                    self.charge(&d);
                    break d;
                }
                Some(Event::Error(e)) => return Err(engine_error(&e)),
                Some(Event::Embedding(_)) => return Err(not_generated()),
                // Prompt progress is streamed only.
                Some(Event::Progress(_)) => {}
                None => return Err(shutting_down()),
            }
        };
        if done.finish == FinishReason::Cancelled {
            return Err(shutting_down());
        }
        self.observe_done(&done);
        text.push_str(&done.text);
        Ok(Collected { text, tokens, done })
    }

    /// One choice of an OpenAI reply.
    fn choice(&self, index: usize, c: &Collected) -> Value {
        let finish = finish_reason(c.done.finish);
        match (self.api, &self.tools) {
            (Api::Chat | Api::Anthropic, Some(reading)) => {
                let (message, finish) = self.tool_message(reading, &c.text, finish);
                json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish})
            }
            (Api::Chat | Api::Anthropic, None) => {
                let logprobs = self.logprobs.map(|_| {
                    let content: Vec<Value> =
                        c.tokens.iter().map(|t| self.chat_logprob(t)).collect();
                    json!({"content": content, "refusal": null})
                });
                json!({
                    "index": index,
                    "message": {"role": "assistant", "content": c.text, "refusal": null},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                })
            }
            (Api::Completion | Api::Native, _) => json!({
                "index": index,
                "text": c.text,
                "logprobs": self.logprobs.map(|_| self.completion_logprobs(&c.tokens, 0)),
                "finish_reason": finish,
            }),
        }
    }

    /// Waits for the whole answers (one per choice or prompt, generated
    /// side by side in the engine) and replies with one JSON object (a
    /// list for several native prompts).
    pub async fn whole(self, mut rxs: Vec<UnboundedReceiver<Event>>) -> Response {
        if rxs.is_empty() {
            return not_generated().into_response();
        }
        let mut all = Vec::with_capacity(rxs.len());
        for rx in &mut rxs {
            match self.collect(rx).await {
                Ok(c) => all.push(c),
                Err(e) => return e.into_response(),
            }
        }
        let overflow = self
            .overflow
            .or_else(|| all.iter().find_map(|c| c.done.overflow));
        if let Some(n) = &self.native {
            let mut bodies: Vec<Value> = all
                .iter()
                .enumerate()
                .map(|(i, c)| self.native_body(i, c, &n[i.min(n.len() - 1)]))
                .collect();
            let body = if bodies.len() == 1 {
                bodies.swap_remove(0)
            } else {
                Value::Array(bodies)
            };
            return with_overflow_header(axum::Json(body).into_response(), overflow);
        }
        let choices: Vec<Value> = all
            .iter()
            .enumerate()
            .map(|(i, c)| self.choice(i, c))
            .collect();
        if self.api == Api::Anthropic {
            let c = &all[0];
            let message = &choices[0]["message"];
            let calls = message["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let finish = choices[0]["finish_reason"].as_str().unwrap_or("stop");
            let stop =
                crate::anthropic::stop_reason(finish, c.done.finish == FinishReason::StopString);
            let body = json!({
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": crate::anthropic::content(message["content"].as_str().unwrap_or(""), &calls),
                "stop_reason": stop,
                "stop_sequence": null,
                "usage": crate::anthropic::usage(&c.done),
            });
            return with_overflow_header(axum::Json(body).into_response(), overflow);
        }
        let object = match self.api {
            Api::Chat | Api::Anthropic => "chat.completion",
            Api::Completion | Api::Native => "text_completion",
        };
        let total = sum_done(&all);
        let mut body = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": crate::FINGERPRINT,
            "choices": choices,
            "usage": usage(&total),
            "timings": crate::native::done_timings(&total),
        });
        if let Some(prompt) = &self.verbose {
            body["__verbose"] = json!({"prompt": prompt, "content": all[0].text});
        }
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
            Api::Chat | Api::Anthropic => "chat.completion.chunk",
            Api::Completion | Api::Native => "text_completion",
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
            Api::Chat | Api::Anthropic => {
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
            Api::Completion | Api::Native => {
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
            /// Tokens so far, and when the first came.
            count: usize,
            first: Option<Instant>,
            /// `/completion`: the tokens, for the last chunk's summary.
            collected: Vec<TokenEvent>,
            /// With `verbose`: the text so far, for `__verbose.content`.
            text: String,
            ended: bool,
        }
        let mut out = VecDeque::new();
        if self.api == Api::Chat {
            let first = self.chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": null}, "logprobs": null, "finish_reason": null}),
                None,
            );
            out.push_back(SseEvent::default().data(first.to_string()));
        }
        if self.api == Api::Anthropic {
            out.push_back(crate::anthropic::sse_event(
                json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.n_prompt, "output_tokens": 0}}}),
            ));
            out.push_back(crate::anthropic::sse_event(
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
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
            count: 0,
            first: None,
            collected: Vec::new(),
            text: String::new(),
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
                    Some(Event::Progress(p)) => {
                        if let Some(c) = st.ctx.progress_chunk(&p) {
                            st.out.push_back(data(c));
                        }
                    }
                    Some(Event::Token(t)) => {
                        st.ctx.observe_token(&mut st.last);
                        st.count += 1;
                        if st.ctx.verbose.is_some() {
                            st.text.push_str(&t.text);
                        }
                        st.first.get_or_insert_with(Instant::now);
                        if st.ctx.api == Api::Native {
                            let n_probs =
                                st.ctx.native.as_ref().map_or(0, |n| n[0].options.n_probs);
                            if !t.text.is_empty() || n_probs > 0 {
                                let c = st.ctx.native_chunk(&t, st.first, st.count);
                                st.out.push_back(data(c));
                            }
                            st.collected.push(t);
                            continue;
                        }
                        if st.ctx.tools.is_some() {
                            st.held.push_str(&t.text);
                            continue;
                        }
                        if st.ctx.api == Api::Anthropic {
                            if !t.text.is_empty() {
                                st.out.push_back(crate::anthropic::sse_event(
                                    json!({"type": "content_block_delta",
                                    "index": 0, "delta": {"type": "text_delta", "text": t.text}}),
                                ));
                            }
                            continue;
                        }
                        if t.text.is_empty() && st.ctx.logprobs.is_none() {
                            continue;
                        }
                        let choice = st
                            .ctx
                            .delta(&t.text, std::slice::from_ref(&t), st.sent, None);
                        st.sent += t.text.len();
                        let mut c = st.ctx.chunk(choice, None);
                        if st.ctx.timings_per_token {
                            c["timings"] = st.ctx.running_timings(st.first, st.count);
                        }
                        st.out.push_back(data(c));
                    }
                    Some(Event::Done(d)) if d.finish == FinishReason::Cancelled => {
                        st.ctx.charge(&d);
                        st.out.push_back(data(shutting_down().body()));
                        st.ended = true;
                    }
                    Some(Event::Done(d)) if st.ctx.api == Api::Anthropic => {
                        st.ctx.charge(&d);
                        st.ctx.observe_done(&d);
                        let mut finish = finish_reason(d.finish);
                        let mut text = d.text.clone();
                        let mut calls = Vec::new();
                        if let Some(reading) = &st.ctx.tools {
                            st.held.push_str(&d.text);
                            let (message, f) = st.ctx.tool_message(reading, &st.held, finish);
                            finish = f;
                            text = message["content"].as_str().unwrap_or("").to_string();
                            calls = message["tool_calls"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                        }
                        if !text.is_empty() {
                            st.out.push_back(crate::anthropic::sse_event(
                                json!({"type": "content_block_delta",
                                "index": 0, "delta": {"type": "text_delta", "text": text}}),
                            ));
                        }
                        st.out.push_back(crate::anthropic::sse_event(
                            json!({"type": "content_block_stop", "index": 0}),
                        ));
                        let blocks = if calls.is_empty() {
                            Vec::new()
                        } else {
                            crate::anthropic::content("", &calls)
                        };
                        for (i, block) in (1..).zip(blocks) {
                            let input = block["input"].to_string();
                            let mut start = block;
                            start["input"] = json!({});
                            st.out.push_back(crate::anthropic::sse_event(json!({"type": "content_block_start", "index": i, "content_block": start})));
                            st.out.push_back(crate::anthropic::sse_event(
                                json!({"type": "content_block_delta", "index": i,
                                "delta": {"type": "input_json_delta", "partial_json": input}}),
                            ));
                            st.out.push_back(crate::anthropic::sse_event(
                                json!({"type": "content_block_stop", "index": i}),
                            ));
                        }
                        let stop = crate::anthropic::stop_reason(
                            finish,
                            d.finish == FinishReason::StopString,
                        );
                        st.out.push_back(crate::anthropic::sse_event(
                            json!({"type": "message_delta",
                            "delta": {"stop_reason": stop, "stop_sequence": null},
                            "usage": {"output_tokens": d.completion_tokens}}),
                        ));
                        st.out.push_back(crate::anthropic::sse_event(
                            json!({"type": "message_stop"}),
                        ));
                        st.ended = true;
                    }
                    Some(Event::Done(d)) if st.ctx.api == Api::Native => {
                        st.ctx.charge(&d);
                        st.ctx.observe_done(&d);
                        if !d.text.is_empty() {
                            let c = json!({"index": 0, "content": d.text, "tokens": [], "stop": false,
                                           "id_slot": -1, "tokens_predicted": st.count});
                            st.out.push_back(data(c));
                        }
                        let c = Collected {
                            text: String::new(),
                            tokens: std::mem::take(&mut st.collected),
                            done: d,
                        };
                        if let Some(n) = &st.ctx.native {
                            let mut last = st.ctx.native_body(0, &c, &n[0]);
                            if last.is_object() {
                                last["stop"] = json!(true);
                                last["tokens"] = json!([]);
                                if last.get("completion_probabilities").is_some() {
                                    last["completion_probabilities"] = json!([]);
                                }
                            }
                            st.out.push_back(data(last));
                        }
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
                        // llama-server puts it in the first chunk of its
                        // final result, the one that ends the choice.
                        if let Some(prompt) = &st.ctx.verbose {
                            st.text.push_str(&d.text);
                            last["__verbose"] = json!({"prompt": prompt, "content": st.text});
                        }
                        st.out.push_back(data(last));
                        if st.ctx.include_usage {
                            let mut c = st.ctx.chunk(Value::Null, Some(usage(&d)));
                            c["timings"] = crate::native::done_timings(&d);
                            st.out.push_back(data(c));
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
