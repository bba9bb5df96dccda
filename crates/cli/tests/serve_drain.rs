//! SIGTERM drains a real `cria serve`: /health turns 503 "draining", new
//! work gets 503, the request in flight runs to its natural end, and the
//! process exits 0 (deploy/README.md: a pod's life). The drain that runs
//! out of time is in serve.rs (`sigterm_ends_streams_and_exits_zero`).

mod common;

use common::server::{start_stream, Server};
use serde_json::json;
use std::io::Read;
use std::time::{Duration, Instant};

#[test]
fn sigterm_drains_requests_in_flight_then_exits_zero() {
    let mut s = Server::start(&["--parallel", "2", "-c", "512", "--drain-timeout-secs", "60"]);
    // Long enough (a second or more) to poll /health while it runs.
    let n = 160;
    let mut stream = start_stream(
        &s,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": n, "ignore_eos": true,
                "stream": true, "stream_options": {"include_usage": true}}),
    );
    let pid = s.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());

    // Readiness turns false while the stream still runs, and the listener
    // stays open to say so.
    let t0 = Instant::now();
    let health = loop {
        let r = s.try_get("/health").expect("/health during the drain");
        if r.status != 200 {
            break r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "/health stayed 200 after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "draining", "{}", health.text());
    assert_eq!(s.get("/livez").status, 200, "alive while draining");
    let refused = s.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        s.exited(),
        None,
        "exited before the request in flight ended"
    );

    // The request in flight ends by itself, all of it.
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("read the rest of the stream");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(
        rest.contains(&format!("\"completion_tokens\":{n}")),
        "{rest}"
    );
    assert!(rest.contains("data: [DONE]"), "{rest}");
    assert!(!rest.contains("error"), "{rest}");

    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.exited() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit after the drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}
