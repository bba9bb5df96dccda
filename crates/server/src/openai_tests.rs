//! The bounds of `limits.rs` as `openai.rs` applies them: each hostile
//! field is a 400 that names it.

use super::*;
use crate::limits::MAX_STOP_BYTES;
use serde_json::{json, Value};

const B: ModelBounds = ModelBounds {
    n_vocab: 1000,
    n_ctx: 64,
    defaults: RequestDefaults {
        temperature: None,
        seed: None,
        n_predict: None,
        verbose: false,
    },
};

/// What `prepare::chat` checks before the template: the param of the first
/// error, or the parameters.
fn chat(body: &Value) -> Result<GenerateParams, ApiError> {
    let req: ChatRequest = from(body)?;
    let sampling: Sampling = from(body)?;
    req.messages()?;
    req.logprobs()?;
    sampling.params(req.max_completion_tokens, B, None)
}

fn from<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    parse(body.to_string().as_bytes())
}

/// `extra` merged into a valid one-message chat request.
fn with(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

fn param_of(body: &Value) -> String {
    match chat(body) {
        Ok(p) => panic!("accepted {body}: {p:?}"),
        Err(e) => {
            assert_eq!(e.status, 400, "{body}: {}", e.message);
            e.param.unwrap_or_default()
        }
    }
}

#[test]
fn bad_role_names_the_field() {
    let e = parse::<ChatRequest>(
        br#"{"messages":[{"role":"user","content":"x"},{"role":"robot","content":"y"}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages[1].role"));
    assert!(e.message.contains("robot"), "{}", e.message);
}

#[test]
fn wrong_type_names_the_field() {
    let e = parse::<Sampling>(br#"{"messages":[],"temperature":"hot"}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("temperature"));
}

#[test]
fn malformed_json() {
    let e = parse::<ChatRequest>(b"{\"messages\": [").unwrap_err();
    assert!(e.message.contains("not valid JSON"), "{}", e.message);
}

#[test]
fn deep_nesting_is_a_400_not_a_stack_overflow() {
    let body = format!("{{\"messages\": {}", "[".repeat(100_000));
    assert_eq!(
        parse::<ChatRequest>(body.as_bytes())
            .unwrap_err()
            .param
            .as_deref(),
        Some("body")
    );
    let body = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        parse::<Sampling>(body.as_bytes())
            .unwrap_err()
            .param
            .as_deref(),
        Some("body")
    );
}

#[test]
fn n_and_deprecated_functions_refused() {
    assert_eq!(param_of(&with(json!({"n": 17}))), "n");
    assert!(chat(&with(json!({"n": 16}))).is_ok());
    assert_eq!(param_of(&with(json!({"n": 0}))), "n");
    assert_eq!(param_of(&with(json!({"n": 1e308}))), "n");
    assert!(chat(&with(json!({"n": 1}))).is_ok());
    assert_eq!(
        param_of(&with(json!({"functions": [{"name": "f"}]}))),
        "functions"
    );
    // Tools are read (and checked) in tools.rs, after the messages.
    assert_eq!(
        param_of(&with(
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})
        )),
        "messages[0].tool_calls"
    );
    assert_eq!(
        param_of(&with(
            json!({"messages": [{"role": "assistant", "content": null,
            "tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]}]})
        )),
        "messages[0].tool_calls"
    );
}

/// Every numeric field against values past its range, of the wrong type,
/// and past what i64, u64 and f32 hold.
#[test]
fn numbers_out_of_range_or_of_the_wrong_type_name_the_field() {
    let fields = [
        "temperature",
        "top_p",
        "min_p",
        "top_k",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "repeat_last_n",
        "seed",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "top_logprobs",
    ];
    let hostile = [
        json!(1e308),
        json!(-1e308),
        json!(1e39),
        json!("0.5"),
        json!(true),
        json!([1]),
        json!({"a": 1}),
        // Past u64: serde_json reads it as a float.
        serde_json::from_str::<Value>("18446744073709551616").unwrap(),
        serde_json::from_str::<Value>("-9223372036854775809").unwrap(),
    ];
    for f in fields {
        for v in &hostile {
            let mut body = with(json!({ f: v }));
            if f == "top_logprobs" {
                body["logprobs"] = json!(true);
            }
            assert_eq!(param_of(&body), f, "{f} = {v}");
        }
    }
    // Integers beyond each field's range.
    for (f, v) in [
        ("temperature", json!(2.01)),
        ("temperature", json!(-0.1)),
        ("top_p", json!(1.5)),
        ("min_p", json!(-0.01)),
        ("top_k", json!(1001)),
        ("top_k", json!(-1)),
        ("top_k", json!(i64::MAX)),
        ("presence_penalty", json!(-2.5)),
        ("frequency_penalty", json!(3)),
        ("repeat_penalty", json!(0)),
        ("repeat_penalty", json!(1e-40)),
        ("repeat_penalty", json!(10.5)),
        ("repeat_last_n", json!(65)),
        ("repeat_last_n", json!(-2)),
        ("repeat_last_n", json!(i64::MAX)),
        ("repeat_last_n", json!(i64::MIN)),
        ("max_tokens", json!(0)),
        ("max_tokens", json!(-2)),
        ("max_tokens", json!(i64::MIN)),
        ("max_completion_tokens", json!(0)),
        ("n", json!(-1)),
        ("seed", json!(1.5)),
    ] {
        assert_eq!(param_of(&with(json!({ f: v }))), f, "{f} = {v}");
    }
}

#[test]
fn null_means_the_default() {
    let p = chat(&with(
        json!({"temperature": null, "top_k": null, "seed": null}),
    ))
    .unwrap();
    let d = SamplerConfig::default();
    assert_eq!(
        (p.sampler.temperature, p.sampler.top_k),
        (d.temperature, d.top_k)
    );
    let r: ChatRequest = from(&with(json!({"stream": null, "logprobs": null}))).unwrap();
    assert!(!r.stream && !r.logprobs);
    // Where a value is required, null is a 400 naming it.
    assert_eq!(param_of(&json!({"messages": null})), "messages");
    assert_eq!(
        param_of(&json!({"messages": [{"role": null, "content": "x"}]})),
        "messages[0].role"
    );
    assert_eq!(param_of(&with(json!({"stream": "false"}))), "stream");
}

#[test]
fn edges_of_each_range_are_accepted() {
    let p = chat(&with(json!({
        "temperature": 2, "top_p": 0, "min_p": 1, "top_k": 1000,
        "presence_penalty": -2, "frequency_penalty": 2, "repeat_penalty": 10,
        "repeat_last_n": 64, "max_tokens": i64::MAX,
    })))
    .unwrap();
    assert_eq!(p.sampler.top_k, 1000);
    assert_eq!(p.sampler.repeat_last_n, 64);
    assert_eq!(p.max_tokens, Some(i64::MAX as usize));
}

#[test]
fn seed_takes_any_integer() {
    for (v, want) in [
        (json!(u64::MAX), u64::MAX),
        (json!(i64::MIN), i64::MIN as u64),
        (json!(-1), u64::MAX),
        (json!(0), 0),
    ] {
        assert_eq!(
            chat(&with(json!({ "seed": v }))).unwrap().sampler.seed,
            want
        );
    }
}

#[test]
fn repeat_last_n_is_bounded_by_the_context() {
    let window =
        |v: Value| chat(&with(json!({ "repeat_last_n": v }))).map(|p| p.sampler.repeat_last_n);
    assert_eq!(window(json!(-1)).unwrap(), B.n_ctx);
    assert_eq!(window(json!(0)).unwrap(), 0);
    assert_eq!(window(Value::Null).unwrap(), 64.min(B.n_ctx));
    let e = window(json!(1_000_000_000_000i64)).unwrap_err();
    assert!(e.message.contains("64"), "{}", e.message);
}

#[test]
fn stop_strings_are_counted_and_measured() {
    assert_eq!(chat(&with(json!({"stop": "\n"}))).unwrap().stop, ["\n"]);
    let sixteen: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    assert_eq!(
        chat(&with(json!({ "stop": sixteen }))).unwrap().stop.len(),
        16
    );
    let many: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    assert_eq!(param_of(&with(json!({ "stop": many }))), "stop");
    let longest = "x".repeat(MAX_STOP_BYTES);
    assert!(chat(&with(json!({ "stop": [longest] }))).is_ok());
    for big in ["x".repeat(MAX_STOP_BYTES + 1), "y".repeat(1 << 20)] {
        assert_eq!(param_of(&with(json!({ "stop": big.clone() }))), "stop");
        assert_eq!(param_of(&with(json!({ "stop": [big] }))), "stop");
    }
    for (bad, param) in [
        (json!(5), "stop"),
        (json!({"a": "b"}), "stop"),
        (json!(["a", 5]), "stop[1]"),
        (json!([null]), "stop[0]"),
    ] {
        assert_eq!(param_of(&with(json!({ "stop": bad }))), param, "{bad}");
    }
}

#[test]
fn logit_bias_is_bounded() {
    let p = chat(&with(json!({"logit_bias": {"5": -100, "6": 2.5}}))).unwrap();
    assert_eq!(p.sampler.logit_bias, [(5, f32::NEG_INFINITY), (6, 2.5)]);
    let mut many = serde_json::Map::new();
    for id in 0..100_000 {
        many.insert(id.to_string(), json!(1));
    }
    assert_eq!(param_of(&with(json!({ "logit_bias": many }))), "logit_bias");
    for (bias, param) in [
        (json!({"1000": 1}), "logit_bias.1000"),
        (json!({"-1": 1}), "logit_bias.-1"),
        (json!({"4294967296": 1}), "logit_bias.4294967296"),
        (json!({"abc": 1}), "logit_bias.abc"),
        (json!({"5": 101}), "logit_bias.5"),
        (json!({"5": "1"}), "logit_bias.5"),
        (json!({"5": null}), "logit_bias.5"),
        (json!([1, 2]), "logit_bias[0]"),
        (json!([[1, 2, 3]]), "logit_bias[0]"),
        (json!([[1, true]]), "logit_bias[0][1]"),
    ] {
        assert_eq!(param_of(&with(json!({ "logit_bias": bias }))), param);
    }
    // llama-server's array of pairs; false bans.
    let p = chat(&with(json!({"logit_bias": [[5, false], [6, 1.5]]}))).unwrap();
    assert_eq!(p.sampler.logit_bias, [(5, f32::NEG_INFINITY), (6, 1.5)]);
}

#[test]
fn messages_are_counted_and_typed() {
    let msgs: Vec<Value> = (0..100_000)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    assert_eq!(param_of(&json!({ "messages": msgs })), "messages");
    for (content, param) in [
        (json!({"text": "x"}), "messages[0].content"),
        (json!(5), "messages[0].content"),
        (json!(true), "messages[0].content"),
        (json!([{"type": "text"}]), "messages[0].content[0].text"),
        (
            json!([{"type": "image_url"}]),
            "messages[0].content[0].type",
        ),
        (json!([5]), "messages[0].content[0]"),
        (json!(null), "messages[0].content"),
    ] {
        let body = json!({"messages": [{"role": "user", "content": content}]});
        assert_eq!(param_of(&body), param, "{content}");
    }
    let parts = vec![json!({"type": "text", "text": "x"}); 1000];
    let body = json!({"messages": [{"role": "user", "content": parts}]});
    assert_eq!(param_of(&body), "messages[0].content");
    for (bad, param) in [
        (json!({}), "messages"),
        (json!("hi"), "messages"),
        (json!([5]), "messages[0]"),
        (json!([[]]), "messages[0]"),
        (json!([{"content": "x"}]), "messages[0]"),
    ] {
        assert_eq!(param_of(&json!({ "messages": bad })), param, "{bad}");
    }
}

#[test]
fn logprobs_at_most_twenty() {
    let top = |n: i64| chat(&with(json!({"logprobs": true, "top_logprobs": n})));
    assert_eq!(top(20).unwrap().max_tokens, None);
    for n in [21, -1, i64::MAX] {
        assert_eq!(top(n).unwrap_err().param.as_deref(), Some("top_logprobs"));
    }
    let completion = |n: Value| {
        let r: CompletionRequest = from(&json!({"prompt": "x", "logprobs": n})).unwrap();
        r.logprobs()
    };
    assert_eq!(completion(json!(20)).unwrap(), Some(20));
    assert_eq!(
        completion(json!(21)).unwrap_err().param.as_deref(),
        Some("logprobs")
    );
}

fn prompt(v: Value) -> Result<Prompt, ApiError> {
    from::<CompletionRequest>(&json!({ "prompt": v })).map(|r| r.prompt)
}

#[test]
fn prompts_of_every_shape() {
    assert!(matches!(prompt(json!("hi")), Ok(Prompt::Text(_))));
    assert!(matches!(prompt(json!([1, 2])), Ok(Prompt::Tokens(t)) if t == [1, 2]));
    assert!(matches!(prompt(json!(["a", "b"])), Ok(Prompt::Texts(t)) if t.len() == 2));
    assert!(matches!(prompt(json!([[1], [2, 3]])), Ok(Prompt::TokenLists(t)) if t.len() == 2));
    for bad in [
        json!([]),
        json!(5),
        json!({"a": 1}),
        json!(null),
        json!([-1]),
        json!([1.5]),
        json!([4_294_967_296u64]),
        json!([1, "a"]),
        json!(["a", 1]),
        json!([[1], 2]),
        json!([[-1]]),
        json!([{}]),
        json!([true]),
    ] {
        let e = prompt(bad.clone()).unwrap_err();
        let param = e.param.unwrap_or_default();
        assert!(param.starts_with("prompt"), "{bad}: {param}: {}", e.message);
    }
}

#[test]
fn fit_prompt_checks_the_ids_and_fits_max_tokens() {
    let fit = |prompt: &[u32], max: Option<usize>| {
        let mut p = GenerateParams {
            max_tokens: max,
            stop: Vec::new(),
            sampler: SamplerConfig::default(),
            ignore_eos: false,
            constraint: None,
        };
        fit_prompt(prompt, &mut p, B, "prompt").map(|()| p.max_tokens)
    };
    // Absent: all that fits; larger: clamped; smaller: kept.
    assert_eq!(fit(&[1; 10], None).unwrap(), Some(54));
    assert_eq!(fit(&[1; 10], Some(usize::MAX)).unwrap(), Some(54));
    assert_eq!(fit(&[1; 10], Some(5)).unwrap(), Some(5));
    assert_eq!(fit(&[1; 63], None).unwrap(), Some(1));
    // Too long: both numbers, and OpenAI's code.
    for n in [64, 100_000] {
        let e = fit(&vec![1; n], None).unwrap_err();
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert!(
            e.message.contains(&format!(" {n} ")) && e.message.contains(" 64 "),
            "{}",
            e.message
        );
    }
    let e = fit(&[1, 1000], None).unwrap_err();
    assert!(e.message.contains("1000"), "{}", e.message);
    assert_eq!(fit(&[], None).unwrap_err().param.as_deref(), Some("prompt"));
}

#[test]
fn reasoning_and_a_continued_message_in_parts_reach_the_template_as_llama_server() {
    let r: ChatRequest = from(&json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok", "reasoning_content": "think"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Wh"}, {"type": "text", "text": "ill"}
        ]},
    ]}))
    .unwrap();
    let m = r.messages().unwrap();
    assert_eq!(m[1].reasoning_content.as_deref(), Some("think"));
    assert_eq!(m[0].reasoning_content, None);
    // A prefill's parts are joined by a blank line (llama-server's
    // render_content); a message the template renders, as they come.
    assert_eq!(r.continued_parts_text().as_deref(), Some("Wh\n\nill"));
    assert_eq!(m[2].content, "Whill");
    let r: ChatRequest = from(&with(json!({}))).unwrap();
    assert_eq!(r.continued_parts_text(), None);
}
