//! Property-based fuzzing of `cria serve`'s HTTP edge (issue 10): every
//! endpoint gets random and extreme values for each field, wrong types,
//! malformed and deeply nested JSON, huge arrays, random bytes and wrong
//! methods. Every reply must be 2xx or 4xx (never 5xx, never a dropped
//! connection), and a normal request and /health must still succeed,
//! every `CHECK_EVERY` cases and at the end.
//!
//! `CRIA_FUZZ_HTTP_CASES` sets the number of cases (default
//! `DEFAULT_CASES`, about 15 s); `scripts/fuzz-http.sh N` runs N.

mod common;
mod fuzz_http_values;

use common::server::{request_within, Server};
use fuzz_http_values::{huge, in_range, messages, number, value, wire_name};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

const DEFAULT_CASES: u32 = 800;
/// The default model's vocabulary, and the context the server gets.
const N_VOCAB: u32 = 49152;
const N_CTX: usize = 96;
const CHECK_EVERY: u32 = 32;
/// Longest wait for any reply (the longest generation is `N_CTX` tokens).
const TIMEOUT: Duration = Duration::from_secs(60);

const CHAT: &str = "/v1/chat/completions";
const CMPL: &str = "/v1/completions";
const NATIVE: &str = "/completion";
const MESSAGES: &str = "/v1/messages";
const ENDPOINTS: [&str; 9] = [
    CHAT,
    "/chat/completions",
    CMPL,
    NATIVE,
    "/completions",
    "/tokenize",
    "/detokenize",
    MESSAGES,
    "/apply-template",
];

const SAMPLING: [&str; 20] = [
    "lora",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "logit_bias",
    "stop",
    "max_tokens",
    "n",
    "stream",
    "stream_options",
    "ignore_eos",
    "model",
    "grammar",
    "json_schema",
];
const CHAT_ONLY: [&str; 12] = [
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "audio",
    "prediction",
];
const CMPL_ONLY: [&str; 5] = ["prompt", "logprobs", "echo", "suffix", "best_of"];
/// llama-server's fields (`/completion`, and on chat where it reads them).
const LLAMA_SERVER: [&str; 13] = [
    "n_predict",
    "post_sampling_probs",
    "return_tokens",
    "response_fields",
    "timings_per_token",
    "return_progress",
    "id_slot",
    "cache_prompt",
    "add_generation_prompt",
    "continue_final_message",
    "verbose",
    "n_probs",
    "logit_bias_array",
];
const ANTHROPIC: [&str; 12] = [
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools_anthropic",
    "tool_choice_anthropic",
    "metadata",
    "thinking",
];

/// The fields of an endpoint's body.
fn fields_of(path: &str) -> Vec<&'static str> {
    match path {
        "/tokenize" => vec!["content", "add_special", "parse_special", "with_pieces"],
        "/detokenize" => vec!["tokens"],
        MESSAGES => [&ANTHROPIC[..], &["anthropic_messages"][..]].concat(),
        NATIVE | "/completions" => [&SAMPLING[..], &["prompt"][..], &LLAMA_SERVER[..]].concat(),
        p if p.contains("chat") || p == "/apply-template" => {
            [&SAMPLING[..], &CHAT_ONLY[..], &LLAMA_SERVER[..]].concat()
        }
        _ => [&SAMPLING[..], &CMPL_ONLY[..]].concat(),
    }
}

/// A valid body for the endpoint; generation is kept short.
fn base(path: &str) -> Value {
    match path {
        "/tokenize" => json!({"content": "Hello world"}),
        "/detokenize" => json!({"tokens": [1, 2, 3]}),
        MESSAGES => {
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        }
        p if p.contains("chat") || p == "/apply-template" => {
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        }
        NATIVE | "/completions" => json!({"prompt": "Hi", "n_predict": 2}),
        _ => json!({"prompt": "Hi", "max_tokens": 2}),
    }
}

#[derive(Debug, Clone)]
struct Shot {
    method: &'static str,
    path: String,
    body: Vec<u8>,
}

fn post(path: &str, body: Vec<u8>) -> Shot {
    Shot {
        method: "POST",
        path: path.to_string(),
        body,
    }
}

/// A valid body with one to five fields set to random values (`valid`:
/// values inside each field's range).
fn fields(valid: bool) -> impl Strategy<Value = Shot> {
    prop::sample::select(ENDPOINTS.to_vec()).prop_flat_map(move |path| {
        let field = prop_oneof![
            8 => prop::sample::select(fields_of(path)),
            1 => Just("no_such_field"),
        ];
        let edit = field
            .prop_flat_map(move |f| {
                let v = if valid {
                    in_range(f)
                } else {
                    prop_oneof![
                        4 => number(),
                        4 => value(),
                        3 => in_range(f),
                        2 => messages(),
                        1 => huge(),
                    ]
                    .boxed()
                };
                (Just(f), v)
            })
            .boxed();
        // Often one field alone, so that it is the one the server meets.
        let edits = prop_oneof![
            prop::collection::vec(edit.clone(), 1..=1),
            prop::collection::vec(edit, 1..6),
        ];
        edits.prop_map(move |edits| {
            let mut body = base(path);
            for (f, v) in edits {
                body[wire_name(f)] = v;
            }
            post(path, body.to_string().into_bytes())
        })
    })
}

/// One field of a valid body set to an extreme number: the request most
/// likely to reach the engine with a value it cannot take.
fn extreme() -> impl Strategy<Value = Shot> {
    let v = prop::sample::select(vec![
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1u64 << 53),
        json!(4_294_967_296u64),
        json!(1e308),
        json!(-1e308),
        json!(1e39),
        json!(5e-324),
        json!(-1),
        json!(0),
    ]);
    prop::sample::select(ENDPOINTS.to_vec()).prop_flat_map(move |path| {
        (prop::sample::select(fields_of(path)), v.clone()).prop_map(move |(f, v)| {
            let mut body = base(path);
            body[wire_name(f)] = v;
            post(path, body.to_string().into_bytes())
        })
    })
}

/// Numbers JSON can write but serde_json cannot hold, or JSON cannot write.
fn raw_numbers() -> impl Strategy<Value = Shot> {
    let raw = prop::sample::select(vec![
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "-0",
        "01",
        "1.",
        "0x10",
        ".5",
        "1e-400",
        "99999999999999999999999",
    ]);
    (prop::sample::select(ENDPOINTS.to_vec()), raw).prop_flat_map(|(path, raw)| {
        prop::sample::select(fields_of(path)).prop_map(move |f| {
            let text = base(path).to_string();
            let body = format!("{},\"{f}\":{raw}}}", &text[..text.len() - 1]);
            post(path, body.into_bytes())
        })
    })
}

/// `{"messages": [[[[...` and friends, closed or not.
fn nested() -> impl Strategy<Value = Shot> {
    (
        prop::sample::select(ENDPOINTS.to_vec()),
        prop::sample::select(vec![64usize, 127, 128, 129, 1_000, 100_000]),
        prop::sample::select(vec![("[", "]"), ("{\"a\":", "}")]),
        any::<bool>(),
    )
        .prop_map(|(path, depth, (open, close), closed)| {
            let field = fields_of(path)[0];
            let mut body = format!("{{\"{field}\": {}0", open.repeat(depth));
            if closed {
                body.push_str(&close.repeat(depth));
                body.push('}');
            }
            post(path, body.into_bytes())
        })
}

/// A valid-looking body cut short, or random bytes.
fn garbage() -> impl Strategy<Value = Shot> {
    prop_oneof![
        (fields(false), any::<prop::sample::Index>()).prop_map(|(mut s, i)| {
            let cut = i.index(s.body.len().max(1));
            s.body.truncate(cut);
            s
        }),
        (
            prop::sample::select(ENDPOINTS.to_vec()),
            prop::collection::vec(any::<u8>(), 0..512)
        )
            .prop_map(|(path, bytes)| post(path, bytes)),
    ]
}

/// Other methods and paths.
fn elsewhere() -> impl Strategy<Value = Shot> {
    let paths = [
        &ENDPOINTS[..],
        &[
            "/v1/models",
            "/health",
            "/metrics",
            "/v1/nope",
            "/v1/chat/completions/x",
            "//",
            "/%ff",
        ],
    ]
    .concat();
    (
        prop::sample::select(vec![
            "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST",
        ]),
        prop::sample::select(paths),
    )
        .prop_map(|(method, path)| Shot {
            method,
            path: path.to_string(),
            body: Vec::new(),
        })
}

fn shot() -> impl Strategy<Value = Shot> {
    prop_oneof![
        8 => fields(false),
        6 => fields(true),
        4 => extreme(),
        2 => raw_numbers(),
        1 => nested(),
        2 => garbage(),
        1 => elsewhere(),
    ]
}

/// /health is 200 and a normal completion succeeds.
fn serving(s: &Server) -> Result<(), String> {
    let get = request_within(&s.addr, "GET", "/health", &[], b"", TIMEOUT);
    match get {
        Ok(r) if r.status == 200 => {}
        Ok(r) => return Err(format!("/health is {}: {}", r.status, r.text())),
        Err(e) => return Err(format!("/health failed: {e}")),
    }
    let body = json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0}).to_string();
    match request_within(&s.addr, "POST", CMPL, &[], body.as_bytes(), TIMEOUT) {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!("a normal request got {}: {}", r.status, r.text())),
        Err(e) => Err(format!("a normal request failed: {e}")),
    }
}

/// The one 5xx cria answers on purpose: an Anthropic image block, refused
/// with llama-server's 500 and words for a model without a vision
/// projector (README, "llama-server's API"; cria-server's `no_images`).
fn image_refusal(shot: &Shot, status: &u16, body: &[u8]) -> bool {
    let e: Value = serde_json::from_slice(body).unwrap_or_default();
    *status == 500
        && shot.path == MESSAGES
        && e["error"]["code"] == "not_supported"
        && e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("image input is not supported"))
}

/// Sends one shot and checks the reply; `Ok` carries the `param` of a 400.
fn check(s: &Server, shot: &Shot) -> Result<(u16, Option<String>), String> {
    let r = request_within(&s.addr, shot.method, &shot.path, &[], &shot.body, TIMEOUT)
        .map_err(|e| format!("no reply ({e})"))?;
    let body = || r.text().chars().take(300).collect::<String>();
    if !(200..500).contains(&r.status) && !image_refusal(shot, &r.status, &r.body) {
        return Err(format!("status {}: {}", r.status, body()));
    }
    if r.header("content-type") == Some("text/event-stream") {
        // Accepted and streamed: the engine must finish it cleanly.
        let events = r.sse();
        // How each API ends a stream: OpenAI's [DONE], llama-server's last
        // chunk with "stop": true, Anthropic's message_stop.
        let ended = |e: &String| match shot.path.as_str() {
            NATIVE | "/completions" => e.contains("\"stop\":true"),
            MESSAGES => e.contains("\"message_stop\""),
            _ => e == "[DONE]",
        };
        if events.last().is_none_or(|e| !ended(e))
            || events.iter().any(|e| e.starts_with("{\"error\""))
        {
            return Err(format!("the stream failed: {events:?}"));
        }
    }
    if r.status != 400 {
        return Ok((r.status, None));
    }
    let e: Value = serde_json::from_slice(&r.body)
        .map_err(|e| format!("400 without JSON ({e}): {}", body()))?;
    if !e["error"]["message"].is_string() {
        return Err(format!("400 without an error message: {}", body()));
    }
    let param = e["error"]["param"].as_str().unwrap_or("(none)");
    // Paths like messages[3].content, logit_bias.123: by field.
    let field = param.split(['[', '.']).next().unwrap_or(param);
    Ok((400, Some(field.to_string())))
}

impl std::fmt::Display for Shot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let cut: String = body.chars().take(400).collect();
        let more = body.chars().count().saturating_sub(400);
        write!(f, "{} {} {cut}", self.method, self.path)?;
        if more > 0 {
            write!(f, "... ({more} more chars)")?;
        }
        Ok(())
    }
}

#[test]
fn fuzzed_requests_get_2xx_or_4xx_and_the_server_stays_up() {
    let cases = std::env::var("CRIA_FUZZ_HTTP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let s = Server::start(&["--parallel", "2", "-c", &N_CTX.to_string()]);
    let meta = &s.get("/v1/models").json()["data"][0]["meta"];
    assert_eq!(meta["n_vocab"], N_VOCAB, "{meta}");
    // No shrinking: once a request has broken the server every later one
    // fails too, so the first failure and the requests before it are the
    // report.
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 0,
        ..Config::default()
    });
    let sent = Cell::new(0u32);
    let recent = RefCell::new(VecDeque::<String>::new());
    let statuses = RefCell::new(BTreeMap::<u16, u32>::new());
    // What the 400s were about: shows what the fuzzer reached.
    let params = RefCell::new(BTreeMap::<String, u32>::new());
    let t0 = std::time::Instant::now();
    let result = runner.run(&shot(), |shot| {
        sent.set(sent.get() + 1);
        let mut recent = recent.borrow_mut();
        if recent.len() == CHECK_EVERY as usize {
            recent.pop_front();
        }
        recent.push_back(shot.to_string());
        let out = check(&s, &shot).and_then(|reply| {
            if sent.get().is_multiple_of(CHECK_EVERY) {
                serving(&s).map_err(|e| format!("the server stopped serving: {e}"))?;
            }
            Ok(reply)
        });
        match out {
            Ok((status, param)) => {
                *statuses.borrow_mut().entry(status).or_default() += 1;
                if let Some(p) = param {
                    *params.borrow_mut().entry(p).or_default() += 1;
                }
                Ok(())
            }
            Err(e) => {
                let before: Vec<&str> = recent.iter().rev().skip(1).map(String::as_str).collect();
                Err(TestCaseError::fail(format!(
                    "request {}: {shot}\n  -> {e}\nthe requests before it, latest first:\n  {}",
                    sent.get(),
                    before.join("\n  ")
                )))
            }
        }
    });
    eprintln!(
        "fuzz-http: {} requests in {:.1} s, by status: {:?}; 400s by field: {:?}",
        sent.get(),
        t0.elapsed().as_secs_f64(),
        statuses.borrow(),
        params.borrow()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    serving(&s).unwrap();
}
