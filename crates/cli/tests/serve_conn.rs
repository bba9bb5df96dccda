//! `cria serve` connection hygiene and tenants (issue 10): slow and idle
//! connections are closed, the connection cap, JSON-only bodies, the Host
//! check, CORS, per-tenant prompt caches, rate limits, SSE keep-alive.
//! Timeouts are set short by flags; time bounds are generous (a loaded
//! 2-core machine) and only ever check "closed, not never" and "not before
//! the timeout".

mod common;

use common::server::{request, start_stream, Resp, Server};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Connects and sends `bytes`, leaving the socket open.
fn send_raw(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(bytes).expect("send");
    s
}

/// Waits for the server to close `s` (EOF or reset); returns what it sent
/// and when it closed, counted from `since`. Panics after `limit`.
fn wait_closed(s: &mut TcpStream, since: Instant, limit: Duration) -> (Vec<u8>, Duration) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, since.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                eprintln!("wait_closed: {e} after {:?}", since.elapsed());
                return (got, since.elapsed());
            }
        }
        assert!(
            since.elapsed() < limit,
            "connection still open after {limit:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

/// Reads one response with a Content-Length body off a kept-alive socket.
fn read_one_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read response");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> Resp {
    let h: Vec<(String, String)> = headers
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    request(&s.addr, "GET", path, &h, b"").expect("GET")
}

fn options(s: &Server, path: &str, headers: &[(&str, &str)]) -> Resp {
    let h: Vec<(String, String)> = headers
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    request(&s.addr, "OPTIONS", path, &h, b"").expect("OPTIONS")
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn slow_headers_are_closed_while_others_are_served() {
    let mut s = Server::start(&[
        "--parallel",
        "1",
        "-c",
        "256",
        "--timeout-header-secs",
        "3",
        "--max-connections",
        "1000",
    ]);
    let half = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty";
    let t0 = Instant::now();
    let mut slow: Vec<TcpStream> = (0..300).map(|_| send_raw(&s.addr, half)).collect();
    let opened = t0.elapsed();
    // The 300 do not keep a well-behaved client out.
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut times = Vec::new();
    for c in &mut slow {
        let (got, t) = wait_closed(c, t0, Duration::from_secs(60));
        // Closed without a reply (hyper's header timeout does the same).
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
        times.push(t);
    }
    let first = times.iter().min().unwrap();
    let last = times.iter().max().unwrap();
    eprintln!(
        "300 slow-header sockets opened in {opened:?}, closed between {first:?} and {last:?} \
         (timeout 3 s)"
    );
    assert!(
        *first >= Duration::from_millis(2500),
        "closed before the timeout: {first:?} (server exit status: {:?})",
        s.exited()
    );
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn idle_connections_and_trickled_bodies_end() {
    let mut s = Server::start(&[
        "--timeout-idle-secs",
        "2",
        "--timeout-body-secs",
        "2",
        "--timeout-header-secs",
        "30",
    ]);
    // Kept alive after a reply, then idle: closed after the idle limit,
    // not the (longer) header one.
    let mut c = send_raw(&s.addr, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let reply = read_one_response(&mut c);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let t0 = Instant::now();
    let (got, t) = wait_closed(&mut c, t0, Duration::from_secs(25));
    assert!(got.is_empty());
    assert!(t >= Duration::from_millis(1500), "closed early: {t:?}");
    eprintln!("idle connection closed after {t:?} (idle limit 2 s)");

    // A body that stops halfway: 408 in OpenAI's format.
    let t0 = Instant::now();
    let mut c = send_raw(
        &s.addr,
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"prompt\":",
    );
    let (got, t) = wait_closed(&mut c, t0, Duration::from_secs(25));
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "{text:?} after {t:?} (server exit status: {:?})",
        s.exited()
    );
    assert!(
        text.contains("\"type\":\"invalid_request_error\""),
        "{text}"
    );
    assert!(t >= Duration::from_millis(1500), "answered early: {t:?}");
}

#[test]
fn at_the_cap_idle_connections_make_room_busy_ones_do_not() {
    let s = Server::start(&[
        "--max-connections",
        "3",
        "--timeout-header-secs",
        "120",
        "--parallel",
        "1",
        "-c",
        "2048",
    ]);
    // Let the readiness probes' connections finish closing.
    std::thread::sleep(Duration::from_millis(300));
    // Three sockets that send nothing hold every slot; a prompt client
    // still gets in, in the place of one of them.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&s.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.get("/health").status, 200);
    let t0 = Instant::now();
    'found: loop {
        for c in &mut idle {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 16];
            if !matches!(c.read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock) {
                break 'found;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no idle connection was closed to make room"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));

    // Three requests in flight (one generating, two queued behind it, each
    // already answering): the fourth connection gets a 503.
    let long = json!({"prompt": "Once upon a time", "max_tokens": 1900, "ignore_eos": true,
                      "stream": true});
    let generating = start_stream(&s, "/v1/completions", &long);
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
                      "stream": true})
    .to_string();
    let queued: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = send_raw(
                &s.addr,
                format!(
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            // The role chunk: the request is in flight.
            c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&seen).contains("data:") {
                let n = c.read(&mut buf).expect("read the role chunk");
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
            c
        })
        .collect();
    let r = s.get("/health");
    let e = r.error(503);
    assert_eq!(e["code"], "too_many_connections", "{e}");
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(generating);
    drop(queued);
    let t0 = Instant::now();
    while s.try_get("/health").map(|r| r.status).ok() != Some(200) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "slots not freed after the busy connections closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bodies_only_as_json() {
    let s = Server::start(&[]);
    let body = br#"{"content": "Hello"}"#;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let r = s.post_raw("/tokenize", &[("Content-Type", ct)], body);
        let e = r.error(415);
        assert_eq!(e["code"], "unsupported_media_type", "{e}");
        assert!(e["message"].as_str().unwrap().contains(ct), "{e}");
    }
    let r = s.post_raw(
        "/v1/completions",
        &[("Content-Type", "text/plain;charset=UTF-8")],
        br#"{"prompt": "Hi", "max_tokens": 1}"#,
    );
    r.error(415);
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let r = s.post_raw("/tokenize", &[("Content-Type", ct)], body);
        assert_eq!(r.status, 200, "{ct}: {}", r.text());
    }
    // GET needs none.
    assert_eq!(s.get("/v1/models").status, 200);
}

#[test]
fn host_names_refused_without_a_key() {
    let s = Server::start(&["--allow-host", "my-box.lan"]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
    ] {
        let e = get(&s, "/v1/models", &[("Host", host)]).error(403);
        assert_eq!(e["code"], "host_not_allowed", "{e}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]:8080".to_string(),
        "my-box.lan:8080".to_string(),
    ] {
        let r = get(&s, "/v1/models", &[("Host", &host)]);
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    drop(s);
    // With a key, the key protects; any Host is fine.
    let s = Server::start(&["--api-key", "k"]);
    let r = get(
        &s,
        "/v1/models",
        &[("Host", "evil.example"), ("Authorization", &bearer("k"))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn cors_only_for_listed_origins() {
    let preflight = |origin: &str| {
        vec![
            ("Origin", origin.to_string()),
            ("Access-Control-Request-Method", "POST".to_string()),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type".to_string(),
            ),
        ]
    };
    let send = |s: &Server, h: &[(&str, String)]| {
        let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        options(s, "/v1/chat/completions", &h)
    };
    // Off by default: no Access-Control-Allow-Origin anywhere.
    let s = Server::start(&[]);
    let r = send(&s, &preflight("http://ui.example"));
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
    let r = get(&s, "/v1/models", &[("Origin", "http://ui.example")]);
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    drop(s);

    let s = Server::start(&["--cors", "http://ui.example", "--api-key", "k"]);
    // The preflight carries no key and needs none.
    let r = send(&s, &preflight("http://ui.example"));
    assert!(r.status < 300, "{} {}", r.status, r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://ui.example")
    );
    // llama-server's list, spelled as it spells it.
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, DELETE, OPTIONS")
    );
    // The requested headers, mirrored (`*` would not cover Authorization).
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let mut only_key = preflight("http://ui.example");
    only_key[2].1 = "Authorization".into();
    let r = send(&s, &only_key);
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("Authorization")
    );
    let r = send(&s, &preflight("http://evil.example"));
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-allow-credentials").is_none());
    let r = get(
        &s,
        "/v1/models",
        &[
            ("Origin", "http://ui.example"),
            ("Authorization", &bearer("k")),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://ui.example")
    );
}

fn cached_tokens(j: &Value) -> u64 {
    j["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens in {j}"))
}

#[test]
fn tenants_never_share_cached_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "# tenants\nkey-alpha\n\n  key-beta  \n").unwrap();
    // One slot: every request lands in the slot the previous one left.
    let s = Server::start(&[
        "--parallel",
        "1",
        "-c",
        "512",
        "--api-key-file",
        keys.to_str().unwrap(),
    ]);
    let prompt = "The history of the printing press begins in the fifteenth century, \
                  when movable type changed how books were made and read across Europe. "
        .repeat(3);
    let body = json!({"prompt": prompt, "max_tokens": 1, "temperature": 0}).to_string();
    let ask = |key: &str| {
        let auth = bearer(key);
        let r = s.post_raw(
            "/v1/completions",
            &[("Authorization", auth.as_str())],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        (
            cached_tokens(&j),
            j["usage"]["prompt_tokens"].as_u64().unwrap(),
        )
    };
    let (c, n) = ask("key-alpha");
    assert!(n > 50, "prompt of {n} tokens");
    assert_eq!(c, 0);
    let (c, _) = ask("key-alpha");
    assert!(c > 0, "the same tenant reuses its prefix");
    let (c, _) = ask("key-beta");
    assert_eq!(c, 0, "tenant 2 was told about tenant 1's prompt");
    let (c, _) = ask("key-beta");
    assert!(c > 0, "tenant 2 reuses its own prefix");
    let (c, _) = ask("key-alpha");
    assert_eq!(c, 0, "tenant 1 was told about tenant 2's prompt");

    // Metrics by tenant id, never by key: the first key (the operator's)
    // sees every tenant, another key only its own.
    let m = get(&s, "/metrics", &[("Authorization", &bearer("key-alpha"))]).text();
    let tenant1 = [
        "cria_requests_total{endpoint=\"/v1/completions\",status=\"200\",tenant=\"1\"} 3",
        "cria_completion_tokens_total{tenant=\"1\"} 3",
        "cria_prompt_tokens_total{tenant=\"1\"}",
    ];
    let tenant2 = [
        "cria_requests_total{endpoint=\"/v1/completions\",status=\"200\",tenant=\"2\"} 2",
        "cria_completion_tokens_total{tenant=\"2\"} 2",
        "cria_prompt_tokens_total{tenant=\"2\"}",
    ];
    for line in tenant1.iter().chain(&tenant2) {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
    assert!(!m.contains("key-"), "a key in /metrics:\n{m}");
    let m = get(&s, "/metrics", &[("Authorization", &bearer("key-beta"))]).text();
    for line in tenant2 {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
    assert!(!m.contains("tenant=\"1\""), "tenant 2 sees tenant 1:\n{m}");
    // The totals over all tenants stay (llama-server's counters).
    assert!(m.contains("llamacpp:"), "{m}");
    // A wrong key is refused and counted under tenant 0.
    get(&s, "/v1/models", &[("Authorization", "Bearer key-gamma")]).error(401);
    let m = get(&s, "/metrics", &[("Authorization", &bearer("key-alpha"))]).text();
    assert!(
        m.contains("cria_requests_total{endpoint=\"/v1/models\",status=\"401\",tenant=\"0\"} 1"),
        "{m}"
    );
}

#[test]
fn rate_limits_per_tenant() {
    let s = Server::start(&[
        "--parallel",
        "1",
        "-c",
        "512",
        "--api-key",
        "k1",
        "--api-key",
        "k2",
        "--rate-limit-requests",
        "2",
        "--rate-limit-tokens",
        "200",
    ]);
    let ask = |key: &str, body: &Value| {
        let auth = bearer(key);
        s.post_raw(
            "/v1/completions",
            &[("Authorization", auth.as_str())],
            body.to_string().as_bytes(),
        )
    };
    let small = json!({"prompt": "Hi", "max_tokens": 1});
    assert_eq!(ask("k1", &small).status, 200);
    assert_eq!(ask("k1", &small).status, 200);
    // Two per minute: the third waits for a refill (30 s).
    let r = ask("k1", &small);
    let e = r.error(429);
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(e["type"], "rate_limit_error");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "Retry-After {wait}");
    // Other endpoints are not limited.
    let auth = bearer("k1");
    let r = s.post_raw(
        "/tokenize",
        &[("Authorization", auth.as_str())],
        br#"{"content":"Hi"}"#,
    );
    assert_eq!(r.status, 200);
    // Tenant 2 has its own budget; one long answer overdraws its tokens.
    let long = json!({"prompt": "Once upon a time", "max_tokens": 250, "ignore_eos": true});
    let r = ask("k2", &long);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ask("k2", &small);
    let e = r.error(429);
    assert!(e["message"].as_str().unwrap().contains("tokens"), "{e}");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // 250+ tokens against 200 a minute: at least 15 s to get back above 0.
    assert!((15..=60).contains(&wait), "Retry-After {wait}");
}

#[test]
fn streams_waiting_in_the_queue_get_keep_alive_comments() {
    let s = Server::start(&["--parallel", "1", "-c", "2048", "--sse-keepalive-secs", "1"]);
    // Occupies the only slot until dropped.
    let busy = start_stream(
        &s,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 1900, "ignore_eos": true,
                "stream": true}),
    );
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                      "stream": true})
    .to_string();
    let mut c = send_raw(
        &s.addr,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(": keep-alive") {
        let n = c.read(&mut buf).expect("read the queued stream");
        assert!(n > 0, "ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("[DONE]"));
    drop(busy);
    let (rest, _) = wait_closed(&mut c, Instant::now(), Duration::from_secs(120));
    seen.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("data: [DONE]"), "{text}");
}

#[test]
fn sigterm_closes_waiting_connections_at_once() {
    let s = Server::start(&["--timeout-header-secs", "120", "--timeout-idle-secs", "120"]);
    let mut half: Vec<TcpStream> = (0..50)
        .map(|_| send_raw(&s.addr, b"GET /health HTTP/1.1\r\nHo"))
        .collect();
    let mut idle = send_raw(&s.addr, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(read_one_response(&mut idle).starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    let status = s.terminate();
    let took = t0.elapsed();
    assert!(status.success(), "{status:?}");
    // Not the 10 s the server grants replies in flight: nothing was.
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
    for c in half.iter_mut().chain([&mut idle]) {
        wait_closed(c, t0, Duration::from_secs(30));
    }
}

#[test]
fn settings_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::default_model();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# no keys yet\n\n").unwrap();
    let twice = dir.path().join("twice");
    std::fs::write(&twice, "k1\nk2\nk1\n").unwrap();
    for (args, needle) in [
        (vec!["--cors", "app.example"], "--cors \"app.example\""),
        (vec!["--cors", "https://app.example/"], "without a path"),
        (vec!["--allow-host", "box.lan:8080"], "without port"),
        (
            vec!["--api-key-file", empty.to_str().unwrap()],
            "holds no key",
        ),
        (
            vec!["--api-key-file", twice.to_str().unwrap()],
            "API key 3 repeats",
        ),
    ] {
        let out = common::cria()
            .args(["serve", "--port", "0", "-m"])
            .arg(&model)
            .args(&args)
            .output()
            .unwrap();
        common::assert_clean_error(&out, needle);
        assert!(
            common::stdout(&out).is_empty(),
            "{args:?} started listening"
        );
    }
}
