//! Issue 14: `--context-overflow error|truncate-middle|shift` in `cria run`
//! and `cria serve`, on the default model with a 64-token context. Whatever
//! happens is reported: a stderr note from the CLI, a `context_overflow`
//! field and an `x-cria-context-overflow` header from the server.

mod common;
use common::server::Server;
use common::*;
use serde_json::json;

fn run(args: &[&str]) -> std::process::Output {
    cria()
        .arg("run")
        .arg("-m")
        .arg(default_model())
        .args(["-c", "64", "-t", "1", "--raw", "--temp", "0"])
        .args(args)
        .output()
        .unwrap()
}

/// About 200 tokens of text: more than the context.
fn long_prompt() -> String {
    (1..=60).map(|i| format!("{i}, ")).collect::<String>()
}

fn dropped(note: &str, action: &str) -> usize {
    let key = format!("context overflow: {action}; dropped_tokens=");
    let at = note
        .find(&key)
        .unwrap_or_else(|| panic!("no {key:?} in {note:?}"));
    note[at + key.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn run_error_mode_refuses_a_long_prompt_with_both_numbers() {
    let o = run(&["-n", "4", &long_prompt()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.starts_with("error: ") && err.contains("context holds 64") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn run_truncate_middle_keeps_both_ends_and_says_so() {
    let o = run(&[
        "-n",
        "8",
        "--context-overflow",
        "truncate-middle",
        &long_prompt(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let n = dropped(&err, "truncate-middle");
    // 64 - 8 = 56 tokens kept of the prompt.
    let total: usize = err
        .split("prompt ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no prompt size in {err}"));
    assert_eq!(total, 56, "{err}");
    assert!(n > 100, "{err}");
    // The end of the prompt is kept: the continuation counts on.
    assert!(stdout(&o).contains("61"), "{}", stdout(&o));
}

#[test]
fn run_shift_goes_past_the_context_and_reports_it() {
    let args = ["-n", "100", "--ignore-eos", "Once upon a time"];
    let full = run(&args);
    assert!(full.status.success(), "{}", stderr(&full));
    assert!(stderr(&full).contains("context full"), "{}", stderr(&full));
    assert!(!stderr(&full).contains("context overflow"));

    let mut with = args.to_vec();
    with.extend(["--context-overflow", "shift"]);
    let o = run(&with);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("generated 100 tokens"), "{err}");
    assert!(dropped(&err, "shift") > 0, "{err}");
}

#[test]
fn serve_reports_truncation_and_shift_in_the_reply() {
    let s = Server::start(&["-c", "64", "--context-overflow", "truncate-middle"]);
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": long_prompt(), "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["context_overflow"]["action"], "truncate-middle", "{j}");
    let n = j["context_overflow"]["dropped_tokens"].as_u64().unwrap();
    assert_eq!(j["usage"]["prompt_tokens"], 60, "{j}");
    let h = r.header("x-cria-context-overflow").unwrap_or_default();
    assert_eq!(h, format!("truncate-middle; dropped_tokens={n}"));
    // A prompt that fits is untouched and unreported.
    let r = s.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert!(r.json().get("context_overflow").is_none(), "{}", r.text());
    assert!(r.header("x-cria-context-overflow").is_none());
    drop(s);

    let s = Server::start(&["-c", "64", "--context-overflow", "shift"]);
    let body = json!({"prompt": "Once upon a time", "max_tokens": 100,
                      "ignore_eos": true, "temperature": 0});
    let r = s.post("/v1/completions", &body);
    let j = r.json();
    assert_eq!(j["usage"]["completion_tokens"], 100, "{j}");
    assert_eq!(j["context_overflow"]["action"], "shift", "{j}");
    assert!(j["context_overflow"]["dropped_tokens"].as_u64().unwrap() > 0);
    assert!(r
        .header("x-cria-context-overflow")
        .unwrap()
        .starts_with("shift; "));
    // Streamed: the last chunk carries the field.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let events = s.post("/v1/completions", &sb).sse();
    let last = events
        .iter()
        .rev()
        .find(|e| e.contains("finish_reason\":\"length"))
        .unwrap_or_else(|| panic!("no final chunk in {events:?}"));
    assert!(last.contains("\"context_overflow\""), "{last}");
    // A long prompt is still refused in shift mode, with both numbers.
    let e = s
        .post("/v1/completions", &json!({"prompt": long_prompt()}))
        .error(400);
    assert_eq!(e["code"], "context_length_exceeded", "{e}");
}
