//! LoRA adapters in the server (issue 12): llama-server's
//! `/lora-adapters`, per-request `lora`, and seeded determinism when
//! requests with different adapters share the forward passes.

mod common;
use common::server::Server;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn completion(prompt: &str, extra: Value) -> Value {
    let mut body = json!({"prompt": prompt});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

fn text(reply: &Value) -> String {
    reply["choices"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {reply}"))
        .to_string()
}

fn start() -> Server {
    let gguf = fixture("tests/fixtures/lora/adapter-f16.gguf");
    let peft = fixture("tests/fixtures/lora/peft");
    Server::start(&[
        "--parallel",
        "4",
        "-c",
        "256",
        "--lora",
        gguf.to_str().unwrap(),
        "--lora-scaled",
        peft.to_str().unwrap(),
        "0",
    ])
}

#[test]
fn adapters_are_listed_and_set_as_llama_server_does() {
    let s = start();
    let l = s.get("/lora-adapters").json();
    assert_eq!(l.as_array().unwrap().len(), 2, "{l}");
    assert_eq!(l[0]["id"], json!(0));
    assert_eq!(l[0]["scale"], json!(1.0));
    assert_eq!(l[1]["scale"], json!(0.0));
    assert!(l[1]["path"].as_str().unwrap().ends_with("peft"), "{l}");

    let r = s.post("/lora-adapters", &json!([{"id": 1, "scale": 0.5}]));
    assert_eq!(r.json(), json!({"success": true}));
    let l = s.get("/lora-adapters").json();
    // Unlisted adapters go to 0, as in llama-server.
    assert_eq!(
        (l[0]["scale"].clone(), l[1]["scale"].clone()),
        (json!(0.0), json!(0.5))
    );

    s.post("/lora-adapters", &json!([{"id": 7, "scale": 1}]))
        .error(400);
    s.post("/lora-adapters", &json!({"id": 0})).error(400);
    let bad = completion("Hi", json!({"lora": [{"id": 2, "scale": 1}]}));
    s.post("/v1/completions", &bad).error(400);
}

#[test]
fn per_request_adapters_change_the_text_and_batch_mates_do_not() {
    let s = start();
    let seeded = |lora: Value| {
        completion(
            "The old lighthouse keeper",
            json!({"temperature": 1.0, "seed": 77, "max_tokens": 24, "top_k": 0,
                   "min_p": 0, "ignore_eos": true, "lora": lora}),
        )
    };
    let with = seeded(json!([{"id": 0, "scale": 0.8}]));
    let alone = text(&s.post("/v1/completions", &with).json());
    let again = text(&s.post("/v1/completions", &with).json());
    assert_eq!(alone, again, "same seed and adapter, different text");
    let base = text(&s.post("/v1/completions", &seeded(json!([]))).json());
    assert_ne!(alone, base, "the adapter changed nothing");

    // Now beside three longer requests with another adapter (and one with
    // the server's default), sharing the forward passes.
    let addr = s.addr.clone();
    let others: Vec<_> = (0..3)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut b = completion(
                    &format!("Tell me about the number {i}."),
                    json!({"temperature": 0.9, "seed": i, "max_tokens": 64, "ignore_eos": true}),
                );
                if i > 0 {
                    b["lora"] = json!([{"id": 1, "scale": -1.5}]);
                }
                common::server::request(
                    &addr,
                    "POST",
                    "/v1/completions",
                    &[],
                    b.to_string().as_bytes(),
                )
                .unwrap()
                .status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let beside = text(&s.post("/v1/completions", &with).json());
    for o in others {
        assert_eq!(o.join().unwrap(), 200);
    }
    assert_eq!(
        alone, beside,
        "same seed and adapter, different text when batched"
    );
    // The chat endpoint takes the field too.
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                      "temperature": 0, "lora": [{"id": 1, "scale": 1}]});
    assert_eq!(s.post("/v1/chat/completions", &chat).status, 200);
}
