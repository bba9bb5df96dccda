//! `cria serve --verbose` (issue 16): as llama-server started with
//! `--verbose`, every whole OpenAI-shaped reply carries `__verbose` (the
//! prompt as the model saw it, and the text); a request's `"verbose":
//! false` leaves it out, and without the flag a request's `"verbose": true`
//! asks for it. The native `/completion` reply has none (llama-server's
//! neither: it holds the prompt and the text already).

mod common;

use common::server::Server;
use serde_json::json;

fn chat(verbose: Option<bool>) -> serde_json::Value {
    let mut body = json!({
        "max_tokens": 2,
        "temperature": 0,
        "messages": [{"role": "system", "content": "Book"}, {"role": "user", "content": "Hi"}],
    });
    if let Some(v) = verbose {
        body["verbose"] = json!(v);
    }
    body
}

#[test]
fn verbose_server_puts_the_prompt_in_every_reply() {
    let s = Server::start(&["--verbose"]);
    let r = s.post("/v1/chat/completions", &chat(None)).json();
    let v = &r["__verbose"];
    assert!(
        v["prompt"].as_str().is_some_and(|p| p.contains("Book")),
        "{r}"
    );
    assert_eq!(v["content"], r["choices"][0]["message"]["content"], "{r}");
    // A stream: in the chunk that ends the choice.
    let mut body = chat(None);
    body["stream"] = json!(true);
    let events = s.post("/v1/chat/completions", &body).sse();
    let chunks: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).expect("a JSON chunk"))
        .collect();
    let with: Vec<_> = chunks
        .iter()
        .filter(|c| c.get("__verbose").is_some())
        .collect();
    assert_eq!(with.len(), 1, "{chunks:?}");
    assert!(
        with[0]["choices"][0]["finish_reason"].is_string(),
        "{chunks:?}"
    );
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(with[0]["__verbose"]["content"], streamed.as_str());
    let r = s.post("/v1/chat/completions", &chat(Some(false))).json();
    assert!(r.get("__verbose").is_none(), "{r}");

    let r = s
        .post(
            "/v1/completions",
            &json!({"prompt": "Once upon", "max_tokens": 2}),
        )
        .json();
    assert!(
        r["__verbose"]["prompt"]
            .as_str()
            .is_some_and(|p| p.ends_with("Once upon")),
        "{r}"
    );
    // llama-server's native reply has none: it holds the prompt already.
    let r = s
        .post(
            "/completion",
            &json!({"prompt": "Once upon", "n_predict": 2}),
        )
        .json();
    assert!(r.get("__verbose").is_none(), "{r}");
    assert!(
        r["prompt"]
            .as_str()
            .is_some_and(|p| p.ends_with("Once upon")),
        "{r}"
    );
}

#[test]
fn without_the_flag_only_requests_that_ask_get_it() {
    let s = Server::start(&[]);
    let r = s.post("/v1/chat/completions", &chat(None)).json();
    assert!(r.get("__verbose").is_none(), "{r}");
    let r = s.post("/v1/chat/completions", &chat(Some(true))).json();
    assert!(
        r["__verbose"]["prompt"]
            .as_str()
            .is_some_and(|p| p.contains("Book")),
        "{r}"
    );
    let r = s
        .post(
            "/v1/completions",
            &json!({"prompt": "Once upon", "max_tokens": 2, "verbose": true}),
        )
        .json();
    assert!(r.get("__verbose").is_some(), "{r}");
}
