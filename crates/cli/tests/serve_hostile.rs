//! Hostile requests against a real `cria serve` (issue 10): each is a 400
//! naming the field at fault, the server stays up, and huge prompts do not
//! stall /health.

mod common;

use common::server::Server;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

fn chat(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

fn completion(extra: Value) -> Value {
    let mut body = json!({"prompt": "Hi", "max_tokens": 2});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

/// A normal request still works.
fn assert_serving(s: &Server) {
    assert_eq!(s.get("/health").status, 200);
    let r = s.post("/v1/completions", &completion(json!({"temperature": 0})));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn hostile_requests_get_400s_naming_the_field() {
    let s = Server::start(&["--parallel", "1", "-c", "64"]);
    const CHAT: &str = "/v1/chat/completions";
    const CMPL: &str = "/v1/completions";
    let many_bias: Map<String, Value> = (0..100_000).map(|i| (i.to_string(), json!(1))).collect();
    let many_stops: Vec<String> = (0..10_000).map(|i| format!("s{i}")).collect();
    let many_messages: Vec<Value> = (0..100_000)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            CHAT,
            chat(json!({"repeat_last_n": i64::MAX})),
            "repeat_last_n",
        ),
        (
            CMPL,
            completion(json!({"repeat_last_n": 1_000_000_000})),
            "repeat_last_n",
        ),
        (CHAT, chat(json!({"repeat_last_n": 65})), "repeat_last_n"),
        (CHAT, chat(json!({"repeat_last_n": -2})), "repeat_last_n"),
        (CHAT, chat(json!({"top_k": i64::MAX})), "top_k"),
        (CMPL, completion(json!({"top_k": -5})), "top_k"),
        (CHAT, chat(json!({"max_tokens": i64::MIN})), "max_tokens"),
        (CHAT, chat(json!({"max_tokens": 0})), "max_tokens"),
        (CHAT, chat(json!({"max_tokens": 1e308})), "max_tokens"),
        (
            CHAT,
            chat(json!({"max_completion_tokens": -7})),
            "max_completion_tokens",
        ),
        (CHAT, chat(json!({"seed": 1e308})), "seed"),
        (CMPL, completion(json!({"seed": "42"})), "seed"),
        (CMPL, completion(json!({"logprobs": 1_000_000})), "logprobs"),
        (CMPL, completion(json!({"logprobs": -1})), "logprobs"),
        (
            CHAT,
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            "top_logprobs",
        ),
        (CHAT, chat(json!({"n": 1_000_000_000})), "n"),
        (CHAT, chat(json!({"n": 0})), "n"),
        (CHAT, chat(json!({"temperature": 1e39})), "temperature"),
        (CHAT, chat(json!({"temperature": -1e308})), "temperature"),
        (CHAT, chat(json!({"top_p": 1.0001})), "top_p"),
        (CHAT, chat(json!({"min_p": "0.1"})), "min_p"),
        (
            CHAT,
            chat(json!({"presence_penalty": 1e300})),
            "presence_penalty",
        ),
        (
            CHAT,
            chat(json!({"frequency_penalty": -3})),
            "frequency_penalty",
        ),
        (CHAT, chat(json!({"repeat_penalty": 0})), "repeat_penalty"),
        (
            CHAT,
            chat(json!({"repeat_penalty": 1e20})),
            "repeat_penalty",
        ),
        (CHAT, chat(json!({"logit_bias": many_bias})), "logit_bias"),
        (
            CHAT,
            chat(json!({"logit_bias": {"49152": 1}})),
            "logit_bias.49152",
        ),
        (
            CHAT,
            chat(json!({"logit_bias": {"7": 1e10}})),
            "logit_bias.7",
        ),
        (CHAT, chat(json!({"stop": many_stops})), "stop"),
        (CHAT, chat(json!({"stop": "x".repeat(1 << 20)})), "stop"),
        (CMPL, completion(json!({"stop": [["nested"]]})), "stop[0]"),
        (CHAT, json!({"messages": many_messages}), "messages"),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": {"text": "hi"}}]}),
            "messages[0].content",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": 42}]}),
            "messages[0].content",
        ),
        (
            CHAT,
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
            "messages[0].content[0].text",
        ),
        (CHAT, json!({"messages": "hello"}), "messages"),
        (CHAT, json!({"messages": null}), "messages"),
        (CHAT, chat(json!({"stream": "yes"})), "stream"),
        (CMPL, completion(json!({"prompt": [-1]})), "prompt[0]"),
        (CMPL, completion(json!({"prompt": [1, 1.5]})), "prompt[1]"),
        (CMPL, completion(json!({"prompt": [49152]})), "prompt"),
        (CMPL, completion(json!({"prompt": []})), "prompt"),
        (CMPL, completion(json!({"prompt": [[1], [2]]})), "prompt"),
        (
            CMPL,
            completion(json!({"prompt": {"text": "hi"}})),
            "prompt",
        ),
        (CMPL, completion(json!({"prompt": 12})), "prompt"),
        ("/tokenize", json!({"content": 12}), "content"),
        ("/tokenize", json!({"content": null}), "content"),
        (
            "/tokenize",
            json!({"content": "x", "with_pieces": "yes"}),
            "with_pieces",
        ),
        ("/detokenize", json!({"tokens": [-1]}), "tokens[0]"),
        ("/detokenize", json!({"tokens": [1, 1e10]}), "tokens[1]"),
        ("/detokenize", json!({"tokens": [49152]}), "tokens[0]"),
        ("/detokenize", json!({"tokens": "hi"}), "tokens"),
    ];
    for (path, body, param) in &cases {
        let t0 = Instant::now();
        let e = s.post(path, body).error(400);
        assert_eq!(e["param"], *param, "{path}: {e}");
        // A refusal costs parsing, never generation.
        assert!(t0.elapsed() < Duration::from_secs(10), "{path} {param}");
    }
    // A number past f64 names its field; JSON that is not JSON, and
    // bodies that are not objects, are 400s about the body.
    let e = s
        .post_raw(CMPL, &[], br#"{"prompt": "Hi", "max_tokens": 1e400}"#)
        .error(400);
    assert_eq!(e["param"], "max_tokens", "{e}");
    let deep = format!("{{\"messages\": {}", "[".repeat(100_000));
    for raw in [
        br#"{"prompt": "Hi", "temperature": NaN}"#.as_slice(),
        br#"{"prompt": "Hi", "seed": Infinity}"#,
        deep.as_bytes(),
        b"\xff\xfe\x00garbage",
        b"",
        b"[]",
        b"null",
    ] {
        let e = s.post_raw(CMPL, &[], raw).error(400);
        assert_eq!(e["param"], "body", "{}: {e}", String::from_utf8_lossy(raw));
    }
    // Token ids past the context: both numbers and OpenAI's code.
    let long: Vec<u32> = (0..1_000_000).map(|i| i % 1000).collect();
    let e = s
        .post(CMPL, &completion(json!({ "prompt": long })))
        .error(400);
    assert_eq!(e["code"], "context_length_exceeded");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(" 1000000 ") && msg.contains(" 64 "), "{msg}");
    assert_serving(&s);
}

/// A `max_tokens` larger than what fits is clamped to the context: the
/// reply ends with "length" exactly at the context's end, and the prompt
/// is whole.
#[test]
fn max_tokens_past_the_context_is_clamped() {
    let s = Server::start(&["--parallel", "1", "-c", "64"]);
    let prompt: Vec<u32> = s
        .post("/tokenize", &json!({"content": "Once upon a time"}))
        .json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    for max_tokens in [json!(i64::MAX), json!(-1), Value::Null] {
        let r = s.post(
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": true,
                    "temperature": 0}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["choices"][0]["finish_reason"], "length", "{j}");
        let u = &j["usage"];
        assert_eq!(u["prompt_tokens"], prompt.len(), "{j}");
        assert_eq!(u["total_tokens"], 64, "{j}");
    }
    assert_serving(&s);
}

/// Tokenizing 4 MB runs on the blocking pool: /health answers at once
/// while three such requests are in flight (on the two async workers it
/// would wait for them).
#[test]
fn huge_prompts_do_not_stall_health() {
    let s = Server::start(&["--parallel", "1", "-c", "64"]);
    let body = json!({"content": "a".repeat(4_000_000)}).to_string();
    let t0 = Instant::now();
    let big: Vec<_> = (0..3)
        .map(|_| {
            let (addr, body) = (s.addr.clone(), body.clone());
            std::thread::spawn(move || {
                common::server::request(&addr, "POST", "/tokenize", &[], body.as_bytes())
                    .map(|r| r.status)
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    while big.iter().any(|t| !t.is_finished()) {
        let t = Instant::now();
        assert_eq!(s.get("/health").status, 200);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = t0.elapsed();
    for t in big {
        assert_eq!(t.join().unwrap().unwrap(), 200);
    }
    // Relative, so that a slow machine does not fail it: stalled, /health
    // would wait about as long as the tokenizing.
    assert!(
        busy > Duration::from_millis(300) && slowest * 4 < busy,
        "/health took up to {slowest:?} while 4 MB prompts were tokenized for {busy:?}"
    );
    assert_serving(&s);
}
