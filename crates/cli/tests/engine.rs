//! The one engine, through the CLI and the server: `cria run` and the
//! server give the same bytes for the same seeded request; a panic
//! inside the engine fails only the request it touched (a 500 in OpenAI's
//! format) and the others go on; a dead engine thread shows in /health; a
//! burst no larger than the slot count is served whole whatever
//! `--max-queue` says. Panics are injected with the hidden
//! `--debug-inject-panic SITE:SEED` flag, which fires only for requests
//! carrying that seed.

mod common;

use common::server::Server;
use common::{cria, default_model, stdout};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FAULT_SEED: u64 = 4242;

fn completion(seed: u64, max_tokens: u32) -> Value {
    json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "seed": seed,
           "ignore_eos": true, "temperature": 0.7})
}

#[test]
fn a_panic_fails_only_its_request() {
    for site in ["admit", "step", "sample"] {
        let fault = format!("{site}:{FAULT_SEED}");
        let s = Server::start(&[
            "--parallel",
            "2",
            "-c",
            "256",
            "--debug-inject-panic",
            &fault,
        ]);
        let (normal, faulty) = std::thread::scope(|sc| {
            let normal = sc.spawn(|| s.post("/v1/completions", &completion(1, 48)));
            // Let the normal request start decoding, so the fault lands in
            // a step that holds both.
            std::thread::sleep(Duration::from_millis(150));
            let faulty = sc.spawn(|| s.post("/v1/completions", &completion(FAULT_SEED, 8)));
            (normal.join().unwrap(), faulty.join().unwrap())
        });
        let e = faulty.error(500);
        assert_eq!(e["type"], "server_error", "{site}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains("a bug"),
            "{site}: {e}"
        );
        // At the step site the normal request may have shared the failing
        // forward pass (then it fails too, as it must: its cache rows are
        // suspect); at the other sites it must not notice anything.
        if site == "step" {
            assert!(
                normal.status == 200 || normal.status == 500,
                "{site}: {}",
                normal.text()
            );
        } else {
            assert_eq!(normal.status, 200, "{site}: {}", normal.text());
            assert_eq!(normal.json()["usage"]["completion_tokens"], 48, "{site}");
        }
        // The engine is still up: health says so and new requests work.
        assert_eq!(s.get("/health").status, 200, "{site}");
        let after = s.post("/v1/completions", &completion(2, 4));
        assert_eq!(after.status, 200, "{site}: {}", after.text());
        assert_eq!(s.metric("cria_engine_panics_total"), 1.0, "{site}");
    }
}

#[test]
fn a_dead_engine_shows_in_health() {
    let fault = format!("thread:{FAULT_SEED}");
    let s = Server::start(&[
        "--parallel",
        "1",
        "-c",
        "256",
        "--debug-inject-panic",
        &fault,
    ]);
    let r = s.post("/v1/completions", &completion(FAULT_SEED, 4));
    assert!(
        r.status == 500 || r.status == 503,
        "the request the engine died on: {}",
        r.text()
    );
    let t0 = Instant::now();
    let health = loop {
        let h = s.get("/health");
        if h.status != 200 {
            break h;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "health stayed ok");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "engine stopped");
    let e = s.post("/v1/completions", &completion(1, 4)).error(503);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("engine has stopped"),
        "{e}"
    );
}

#[test]
fn a_burst_of_slot_count_is_served_whole() {
    // No queue at all: exactly the four slots may be busy.
    let s = Server::start(&["--parallel", "4", "--max-queue", "0", "-c", "256"]);
    let replies: Vec<_> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = &s;
                sc.spawn(move || s.post("/v1/completions", &completion(i, 16)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // With every slot busy a fifth is refused, and served once one frees.
    let busy = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = &s;
                sc.spawn(move || s.post("/v1/completions", &completion(i, 200)))
            })
            .collect();
        let t0 = Instant::now();
        while s.metric("cria_active_sequences") < 4.0 {
            assert!(t0.elapsed() < Duration::from_secs(30), "slots never filled");
            std::thread::sleep(Duration::from_millis(10));
        }
        let fifth = s.post("/v1/completions", &completion(9, 4));
        for h in handles {
            assert_eq!(h.join().unwrap().status, 200);
        }
        fifth
    });
    let e = busy.error(429);
    assert_eq!(e["code"], "server_busy");
    assert_eq!(
        s.post("/v1/completions", &completion(9, 4)).status,
        200,
        "a request after the burst"
    );
}

#[test]
fn run_and_serve_give_the_same_bytes() {
    let model = default_model();
    let out = cria()
        .args([
            "run",
            "--raw",
            "Once upon a time",
            "--seed",
            "7",
            "-n",
            "24",
            "-q",
            "-t",
            "1",
            "-m",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let cli = stdout(&out);
    let s = Server::start(&["--parallel", "2"]);
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "seed": 7, "max_tokens": 24}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let served = r.json()["choices"][0]["text"].as_str().unwrap().to_string();
    // `run` ends its output with a newline.
    assert_eq!(cli.strip_suffix('\n'), Some(served.as_str()));
    assert_eq!(r.json()["usage"]["completion_tokens"], 24);
}
