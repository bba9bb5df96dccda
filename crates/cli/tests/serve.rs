//! `cria serve` end to end (issue 6): a real server process on a free
//! loopback port with the default model, spoken to over plain HTTP.

mod common;

use common::server::{start_stream, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": content}]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

fn content(reply: &Value) -> String {
    reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {reply}"))
        .to_string()
}

/// Concatenated content of a streamed chat reply; checks the framing.
fn streamed_content(events: &[String]) -> (String, Value, Option<Value>) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    let mut finish = Value::Null;
    let mut usage = None;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        if let Some(ch) = c["choices"].get(0) {
            if let Some(t) = ch["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if !ch["finish_reason"].is_null() {
                finish = ch["finish_reason"].clone();
            }
        }
    }
    (text, finish, usage)
}

#[test]
fn chat_whole_and_streamed_agree() {
    let s = Server::start(&["--parallel", "2", "-c", "1024"]);
    let greedy = json!({"temperature": 0, "max_tokens": 24});
    let r = s.post(
        "/v1/chat/completions",
        &chat("What is the capital of France?", greedy.clone()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["object"], "chat.completion");
    assert!(j["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(j["choices"][0]["message"]["role"], "assistant");
    let whole = content(&j);
    assert!(!whole.trim().is_empty());
    let u = &j["usage"];
    let (p, c) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 5 && (1..=24).contains(&c), "{u}");
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c);
    let fr = j["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(fr == "stop" || (fr == "length" && c == 24), "{fr} {c}");

    let mut body = chat("What is the capital of France?", greedy);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = s.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let (text, finish, usage) = streamed_content(&r.sse());
    assert_eq!(text, whole, "streamed and whole greedy answers differ");
    assert_eq!(finish, j["choices"][0]["finish_reason"]);
    let usage = usage.expect("include_usage asked for a usage chunk");
    assert_eq!(usage["completion_tokens"], j["usage"]["completion_tokens"]);
    // The second identical prompt found its tokens in the slot's cache.
    assert!(
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{usage}"
    );

    // /v1/models, /tokenize, /detokenize, /metrics.
    let m = s.get("/v1/models").json();
    assert_eq!(m["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
    let t = s
        .post("/tokenize", &json!({"content": "Hello world"}))
        .json();
    let ids = t["tokens"].clone();
    assert!(ids.as_array().unwrap().len() >= 2);
    let d = s.post("/detokenize", &json!({"tokens": ids})).json();
    assert_eq!(d["content"], "Hello world");
    let p = s
        .post(
            "/tokenize",
            &json!({"content": "Hello world", "with_pieces": true}),
        )
        .json();
    let pieces = p["tokens"].as_array().unwrap();
    let (piece_ids, text): (Vec<Value>, String) = pieces
        .iter()
        .map(|t| (t["id"].clone(), t["piece"].as_str().unwrap().to_string()))
        .unzip();
    assert_eq!(Value::from(piece_ids), ids);
    assert_eq!(text, "Hello world");
    let metrics = s.get("/metrics").text();
    for name in [
        "cria_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\",tenant=\"0\"} 2",
        "cria_time_to_first_token_seconds_bucket",
        "cria_token_latency_seconds_count",
        "cria_queue_depth",
        "cria_active_sequences",
        "cria_completion_tokens_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[test]
fn completions_text_tokens_and_stream() {
    let s = Server::start(&["--parallel", "2", "-c", "512"]);
    let prompt = "The quick brown fox";
    let base = json!({"prompt": prompt, "temperature": 0, "max_tokens": 12});
    let a = s.post("/v1/completions", &base).json();
    assert_eq!(a["object"], "text_completion");
    let text = a["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    let ids = s.post("/tokenize", &json!({"content": prompt})).json()["tokens"].clone();
    let b = s
        .post(
            "/v1/completions",
            &json!({"prompt": ids, "temperature": 0, "max_tokens": 12}),
        )
        .json();
    assert_eq!(
        b["choices"][0]["text"],
        text.as_str(),
        "token-list prompt differs"
    );
    let mut body = base.clone();
    body["stream"] = json!(true);
    let events = s.post("/v1/completions", &body).sse();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(streamed, text);
    // Legacy logprobs.
    let mut body = base;
    body["logprobs"] = json!(2);
    let l = s.post("/v1/completions", &body).json();
    let lp = &l["choices"][0]["logprobs"];
    assert_eq!(
        lp["tokens"].as_array().unwrap().len(),
        lp["token_logprobs"].as_array().unwrap().len()
    );
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
}

#[test]
fn stop_strings_cut_the_text() {
    let s = Server::start(&["--parallel", "1", "-c", "512"]);
    let body =
        json!({"prompt": "One, two, three, four, five,", "temperature": 0, "max_tokens": 24});
    let full = s.post("/v1/completions", &body).json()["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    // A stop string from the middle of the greedy text.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 8, "{full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    for stream in [false, true] {
        let mut b = body.clone();
        b["stop"] = json!(["never-appears", stop]);
        b["stream"] = json!(stream);
        let r = s.post("/v1/completions", &b);
        let (text, finish) = if stream {
            let events = r.sse();
            let chunks: Vec<Value> = events[..events.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            let t: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["text"].as_str().map(String::from))
                .collect();
            (
                t,
                chunks.last().unwrap()["choices"][0]["finish_reason"].clone(),
            )
        } else {
            let j = r.json();
            (
                j["choices"][0]["text"].as_str().unwrap().to_string(),
                j["choices"][0]["finish_reason"].clone(),
            )
        };
        assert_eq!(text, cut, "stop {stop:?} in {full:?} (stream {stream})");
        assert_eq!(finish, "stop");
    }
}

#[test]
fn seed_reproducible_alone_and_beside_others() {
    let s = Server::start(&["--parallel", "4", "-c", "512"]);
    let body = chat(
        "Write a sentence about the sea.",
        json!({"temperature": 1.0, "seed": 1234, "max_tokens": 20, "top_k": 0, "min_p": 0}),
    );
    let alone = content(&s.post("/v1/chat/completions", &body).json());
    let again = content(&s.post("/v1/chat/completions", &body).json());
    assert_eq!(alone, again, "same seed, different text");
    // Now beside three other requests that share the forward passes.
    let addr = s.addr.clone();
    let others: Vec<_> = (0..3)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let b = chat(
                    &format!("Tell me about the number {i}."),
                    json!({"temperature": 0.9, "seed": i, "max_tokens": 30}),
                );
                common::server::request(
                    &addr,
                    "POST",
                    "/v1/chat/completions",
                    &[],
                    b.to_string().as_bytes(),
                )
                .unwrap()
                .status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let beside = content(&s.post("/v1/chat/completions", &body).json());
    for o in others {
        assert_eq!(o.join().unwrap(), 200);
    }
    assert_eq!(
        alone, beside,
        "same seed, different text when batched with others"
    );
}

#[test]
fn logprobs_are_consistent() {
    let s = Server::start(&["--parallel", "1", "-c", "512"]);
    let body = chat(
        "Name a color.",
        json!({"temperature": 0, "max_tokens": 6, "logprobs": true, "top_logprobs": 3, "ignore_eos": true}),
    );
    let j = s.post("/v1/chat/completions", &body).json();
    let entries = j["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        entries.len() as u64,
        j["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let mut joined = String::new();
    for e in &entries {
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0);
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], e["token"], "{e}");
        assert!((top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-5);
        let l: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(l.windows(2).all(|w| w[0] >= w[1]), "{l:?}");
        joined.push_str(e["token"].as_str().unwrap());
    }
    assert_eq!(joined, content(&j));
    // Without the flag there are none.
    let j = s
        .post(
            "/v1/chat/completions",
            &chat("Name a color.", json!({"max_tokens": 2})),
        )
        .json();
    assert!(j["choices"][0]["logprobs"].is_null());
}

#[test]
fn api_key_required_except_health() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "s3cret-key\n").unwrap();
    let s = Server::start(&["--api-key-file", key_file.to_str().unwrap()]);
    // `s` sends no key (it was not given with --api-key).
    s.get("/v1/models").error(401);
    let r = s.post_raw(
        "/v1/completions",
        &[("Authorization", "Bearer wrong")],
        b"{}",
    );
    assert_eq!(r.error(401)["code"], "invalid_api_key");
    let r = s.post_raw(
        "/v1/completions",
        &[("Authorization", "Bearer s3cret-keyX")],
        b"{}",
    );
    r.error(401);
    assert_eq!(s.get("/health").status, 200);
    let body = json!({"prompt": "Hi", "max_tokens": 2}).to_string();
    let r = s.post_raw(
        "/v1/completions",
        &[("Authorization", "Bearer s3cret-key")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    drop(s);
    let s = Server::start(&["--api-key", "k2"]);
    assert_eq!(s.get("/v1/models").status, 200);
}

#[test]
fn bad_requests_get_openai_errors() {
    let s = Server::start(&["--parallel", "1", "-c", "64", "--max-body", "1000000"]);
    let chat_err = |body: &[u8]| s.post_raw("/v1/chat/completions", &[], body).error(400);
    let e = chat_err(b"{\"messages\": [");
    assert!(
        e["message"].as_str().unwrap().contains("not valid JSON"),
        "{e}"
    );
    let e = chat_err(
        br#"{"messages":[{"role":"user","content":"hi"},{"role":"wizard","content":"x"}]}"#,
    );
    assert_eq!(e["param"], "messages[1].role");
    let e = chat_err(br#"{"messages":[{"role":"user","content":"hi"}],"temperature":"warm"}"#);
    assert_eq!(e["param"], "temperature");
    let e = chat_err(br#"{"messages":[{"role":"user","content":5}]}"#);
    assert_eq!(e["param"], "messages[0].content");
    let e = chat_err(br#"{"messages":[{"role":"user","content":"hi"}],"n":17}"#);
    assert_eq!(e["param"], "n");
    let e = chat_err(
        br#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"retrieval"}]}"#,
    );
    assert_eq!(e["param"], "tools[0].type");
    let e = chat_err(
        br#"{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"xml"}}"#,
    );
    assert_eq!(e["param"], "response_format.type");
    let e = chat_err(br#"{"messages":[{"role":"user","content":"hi"}],"temperature":7}"#);
    assert_eq!(e["param"], "temperature");
    // A key that is not a token id is a text (llama-server's reading).
    let e = chat_err(br#"{"messages":[{"role":"user","content":"hi"}],"logit_bias":{"abc":500}}"#);
    assert_eq!(e["param"], "logit_bias.abc");
    let e = chat_err(br#"{"messages":[]}"#);
    assert_eq!(e["param"], "messages");
    let e = chat_err(br#"[1, 2]"#);
    assert_eq!(e["param"], "body");
    // Longer than the 64-token context: both numbers in the message.
    let long = "word ".repeat(200);
    let n = s.post("/tokenize", &json!({"content": long})).json()["tokens"]
        .as_array()
        .unwrap()
        .len();
    let r = s.post("/v1/completions", &json!({"prompt": long}));
    let e = r.error(400);
    let msg = e["message"].as_str().unwrap();
    assert_eq!(e["code"], "context_length_exceeded");
    assert!(
        msg.contains(" 64 ") && msg.contains(&format!(" {n} ")),
        "{msg}"
    );
    let r = s.post("/v1/completions", &json!({"prompt": [1, 2, 999999]}));
    assert!(r.error(400)["message"].as_str().unwrap().contains("999999"));
    // Body size limit.
    let big = format!("{{\"prompt\": \"{}\"}}", "a".repeat(1_100_000));
    s.post_raw("/v1/completions", &[], big.as_bytes())
        .error(413);
    s.get("/v1/nothing").error(404);
    // A bias on every token is past the bound on entries (issue 10); the
    // server carries on.
    let mut bias = serde_json::Map::new();
    for id in 0..49152 {
        bias.insert(id.to_string(), json!(-100));
    }
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "Hi", "logit_bias": bias}),
    );
    assert_eq!(r.error(400)["param"], "logit_bias");
    let ok = s.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        s.metric("cria_requests_total{endpoint=\"/v1/completions\",status=\"200\",tenant=\"0\"}"),
        1.0
    );
}

#[test]
fn queue_bound_and_disconnect_cancels() {
    let s = Server::start(&["--parallel", "1", "--max-queue", "1", "-c", "512"]);
    let long = |stream: bool| {
        json!({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true, "stream": stream,
               "temperature": 0})
    };
    let first = start_stream(&s, "/v1/completions", &long(true));
    // The slot is busy; one request may wait, the next is refused.
    let second = start_stream_nowait(&s, &long(false));
    let t0 = Instant::now();
    while s.metric("cria_queue_depth") < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "second request never queued"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = s.post("/v1/completions", &long(false));
    let e = r.error(429);
    assert_eq!(e["type"], "rate_limit_error");
    assert!(r.header("retry-after").is_some());
    // Hang up both: the running one is cancelled at the next step, the
    // queued one never starts, and the slot is free again.
    drop(first);
    drop(second);
    let t0 = Instant::now();
    while s.metric("cria_active_sequences") > 0.0 || s.metric("cria_queue_depth") > 0.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "cancelled request still active"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let generated = s.metric("cria_generated_tokens_total");
    assert!(
        generated < 400.0,
        "the cancelled request ran on: {generated} tokens"
    );
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 3}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Sends a request without reading the reply.
fn start_stream_nowait(s: &Server, body: &Value) -> std::net::TcpStream {
    use std::io::Write;
    let mut t = std::net::TcpStream::connect(&s.addr).unwrap();
    let b = body.to_string();
    write!(
        t,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    t
}

#[test]
fn sigterm_ends_streams_and_exits_zero() {
    // A stream longer than the drain allows is cancelled when it runs out
    // (serve_drain.rs has the stream that finishes within it).
    let s = Server::start(&["--parallel", "1", "-c", "512", "--drain-timeout-secs", "1"]);
    let mut stream = start_stream(
        &s,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": true, "stream": true}),
    );
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    // The stream was closed cleanly, ending with an error event.
    use std::io::Read;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("shutting down"), "{rest}");
}
