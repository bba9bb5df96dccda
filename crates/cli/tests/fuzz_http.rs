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

use common::server::{request_within, Server};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Number, Value};
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

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        (-3i64..=70).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3.0f64..3.0).prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
            Number::from_f64(f).map(Value::Number)
        }),
        prop::sample::select(vec![1e308, -1e308, 1e39, -1e39, 5e-324, 4294967296.0, 1e19])
            .prop_map(Value::from),
        prop::sample::select(vec![
            i64::MIN,
            i64::MAX,
            -2,
            -1,
            0,
            1,
            20,
            21,
            49151,
            49152,
            4294967295,
            4294967296
        ])
        .prop_map(Value::from),
    ]
    .boxed()
}

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => number(),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        2 => "\\PC{0,16}".prop_map(Value::from),
        1 => prop::sample::select(vec!["", "-1", "1e400", "NaN", "text", "auto", "none", "user"])
            .prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON, a few levels deep.
fn value() -> BoxedStrategy<Value> {
    scalar()
        .prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("role|content|type|text|\\PC{0,6}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// Chat messages, mostly well-formed, with random roles and contents.
fn messages() -> BoxedStrategy<Value> {
    let role = prop_oneof![
        prop::sample::select(vec!["system", "user", "assistant", "developer", "tool"])
            .prop_map(Value::from),
        scalar(),
    ];
    let content = prop_oneof![
        "\\PC{0,40}".prop_map(Value::from),
        prop::collection::vec(
            ("text|image_url|\\PC{0,4}", scalar()).prop_map(|(t, v)| json!({"type": t, "text": v})),
            0..3
        )
        .prop_map(Value::Array),
        value(),
    ];
    prop::collection::vec(
        (role, content).prop_map(|(r, c)| json!({"role": r, "content": c})),
        0..4,
    )
    .prop_map(Value::Array)
    .boxed()
}

/// Anthropic messages: text and content blocks, tool uses and results,
/// images (refused), random roles.
fn anthropic_messages() -> BoxedStrategy<Value> {
    let block = prop_oneof![
        "\\PC{0,20}".prop_map(|t| json!({"type": "text", "text": t})),
        ("\\PC{0,6}", value())
            .prop_map(|(n, i)| json!({"type": "tool_use", "id": "t1", "name": n, "input": i})),
        value().prop_map(|c| json!({"type": "tool_result", "tool_use_id": "t1", "content": c})),
        Just(json!({"type": "image", "source": {"type": "base64", "data": "AA=="}})),
        Just(json!({"type": "thinking", "thinking": "hm"})),
        value(),
    ];
    let content = prop_oneof![
        "\\PC{0,40}".prop_map(Value::from),
        prop::collection::vec(block, 0..4).prop_map(Value::Array),
        value(),
    ];
    let role = prop_oneof![
        prop::sample::select(vec!["user", "assistant"]).prop_map(Value::from),
        scalar(),
    ];
    prop::collection::vec(
        (role, content).prop_map(|(r, c)| json!({"role": r, "content": c})),
        0..4,
    )
    .prop_map(Value::Array)
    .boxed()
}

/// Large values, built from a size so that shrinking stays cheap.
fn huge() -> BoxedStrategy<Value> {
    let n = prop::sample::select(vec![17usize, 1_025, 100_000, 500_000]);
    prop_oneof![
        n.clone()
            .prop_map(|n| Value::Array((0..n).map(|i| json!(i % 60_000)).collect())),
        n.clone().prop_map(|n| Value::Array(
            (0..n.min(100_000))
                .map(|i| json!(format!("s{i}")))
                .collect()
        )),
        n.clone().prop_map(|n| Value::Object(
            (0..n.min(100_000))
                .map(|i| (i.to_string(), json!(1)))
                .collect::<Map<_, _>>()
        )),
        n.clone().prop_map(|n| Value::String("x".repeat(n * 4))),
        n.prop_map(|n| Value::Array(
            (0..n.min(100_000))
                .map(|_| json!({"role": "user", "content": "x"}))
                .collect()
        )),
    ]
    .boxed()
}

/// Values inside the field's range, edges included: these reach the
/// engine, which must cope with every one of them.
fn in_range(field: &str) -> BoxedStrategy<Value> {
    let f = |lo: f64, hi: f64, edges: Vec<f64>| {
        prop_oneof![
            (lo..=hi).prop_map(Value::from),
            prop::sample::select(edges).prop_map(Value::from),
        ]
        .boxed()
    };
    let ids = || prop::collection::vec(0..N_VOCAB, 1..40);
    match field {
        "temperature" => f(0.0, 2.0, vec![0.0, 5e-324, 1e-40, 1e-10, 2.0]),
        "top_p" | "min_p" => f(0.0, 1.0, vec![0.0, 5e-324, 1e-40, 1.0]),
        "presence_penalty" | "frequency_penalty" => f(-2.0, 2.0, vec![-2.0, 5e-324, 2.0]),
        "repeat_penalty" => f(0.01, 10.0, vec![0.01, 1.0, 10.0]),
        "top_k" => prop_oneof![0..=N_VOCAB, prop::sample::select(vec![0, 1, N_VOCAB])]
            .prop_map(Value::from)
            .boxed(),
        "repeat_last_n" => (-1..=N_CTX as i64).prop_map(Value::from).boxed(),
        "seed" => prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from)
        ]
        .boxed(),
        "max_tokens" | "max_completion_tokens" => prop::sample::select(vec![
            json!(-1),
            json!(1),
            json!(3),
            json!(i64::MAX),
            Value::Null,
        ])
        .boxed(),
        "logprobs" => prop_oneof![
            (0..=20i64).prop_map(Value::from),
            any::<bool>().prop_map(Value::from)
        ]
        .boxed(),
        "top_logprobs" => (0..=20i64).prop_map(Value::from).boxed(),
        "stop" => prop::collection::vec(
            prop_oneof!["\\PC{0,8}", Just("x".repeat(256)), Just("é".repeat(128))],
            0..=16,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        "logit_bias" => prop::collection::btree_map(0..N_VOCAB, -100.0..=100.0f64, 0..=1024)
            .prop_map(|m| {
                Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect(),
                )
            })
            .boxed(),
        "messages" => messages(),
        "anthropic_messages" => anthropic_messages(),
        "prompt" => prop_oneof![
            "\\PC{0,60}".prop_map(Value::from),
            ids().prop_map(|v| json!(v)),
            ids().prop_map(|v| json!([v])),
            // llama-server's shapes: ids and texts mixed, several prompts,
            // objects.
            (ids(), "\\PC{0,20}").prop_map(|(v, t)| json!([v[0], t, v])),
            (ids(), "\\PC{0,20}").prop_map(|(v, t)| json!([v, t, {"prompt_string": t}])),
            "\\PC{0,20}".prop_map(|t| json!({"prompt_string": t, "multimodal_data": ["AA=="]})),
            prop::collection::vec("\\PC{0,8}", 0..20).prop_map(|v| json!(v)),
        ]
        .boxed(),
        "n_predict" => prop::sample::select(vec![
            json!(-1),
            json!(1),
            json!(3),
            json!(0),
            json!(i64::MAX),
        ])
        .boxed(),
        "n_probs" => (-1..=25i64).prop_map(Value::from).boxed(),
        "id_slot" => (-2..=4i64).prop_map(Value::from).boxed(),
        "response_fields" => prop::collection::vec(
            prop::sample::select(vec![
                "content",
                "generation_settings/n_predict",
                "timings/x",
                "",
                "/",
            ]),
            0..70,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        "logit_bias_array" => prop::collection::vec(
            prop_oneof![
                (0..N_VOCAB, -100.0..=100.0f64).prop_map(|(k, v)| json!([k, v])),
                ("\\PC{0,8}", any::<bool>()).prop_map(|(k, v)| json!([k, v])),
                value(),
            ],
            0..=1030,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        "system" => prop_oneof![
            "\\PC{0,40}".prop_map(Value::from),
            "\\PC{0,40}".prop_map(|t| json!([{"type": "text", "text": t}])),
            value(),
        ]
        .boxed(),
        "stop_sequences" => prop::collection::vec("\\PC{0,8}", 0..=17)
            .prop_map(|v| json!(v))
            .boxed(),
        "tools_anthropic" => prop::collection::vec(
            (prop::sample::select(vec!["f", "get-x"]), schema())
                .prop_map(|(n, p)| json!({"name": n, "input_schema": p})),
            0..=3,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        "tool_choice_anthropic" => prop::sample::select(vec![
            json!({"type": "auto"}),
            json!({"type": "any"}),
            json!({"type": "tool", "name": "f"}),
            json!({"type": "none"}),
            json!({"type": "other"}),
        ])
        .boxed(),
        "tokens" => prop::collection::vec(0..N_VOCAB, 0..60)
            .prop_map(|v| json!(v))
            .boxed(),
        "content" => "\\PC{0,60}".prop_map(Value::from).boxed(),
        "n" | "best_of" => Just(json!(1)).boxed(),
        // Constraints: real grammars and schemas, with hostile corners
        // (recursion, huge repetition counts, unknown keywords, dead ends).
        "grammar" => prop::sample::select(vec![
            json!("root ::= [0-9]{1,3}"),
            json!("root ::= (\"a\" | root \"b\")"),
            json!("root ::= x\nx ::= \"(\" x \")\" | \"\""),
            json!("root ::= [^\\x00-\\x{10FFFF}]"),
            json!("root ::= \"a\"{0,10000}"),
            json!("root ::= <|im_end|> | !<[0]>"),
            json!("start: /[a-z]+/ %json {\"type\": \"integer\"}"),
            json!("root ::= ("),
        ])
        .boxed(),
        "json_schema" => schema(),
        "response_format" => prop_oneof![
            Just(json!({"type": "text"})),
            Just(json!({"type": "json_object"})),
            schema().prop_map(
                |s| json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s}})
            ),
        ]
        .boxed(),
        "tools" => prop::collection::vec(
            (prop::sample::select(vec!["f", "get-x", "a_b"]), schema()).prop_map(
                |(n, p)| json!({"type": "function", "function": {"name": n, "parameters": p}}),
            ),
            0..=3,
        )
        .prop_map(|v| json!(v))
        .boxed(),
        "tool_choice" => prop::sample::select(vec![
            json!("auto"),
            json!("none"),
            json!("required"),
            json!({"type": "function", "function": {"name": "f"}}),
        ])
        .boxed(),
        // Per-request adapters (the test server loads none, so every id
        // is unknown): ids of every sign and type, scales of every kind.
        "lora" => prop_oneof![
            prop::collection::vec(
                (
                    prop_oneof![(-2i64..=3).prop_map(Value::from), Just(json!("0"))],
                    number()
                ),
                0..4
            )
            .prop_map(|v| json!(v
                .into_iter()
                .map(|(id, scale)| json!({"id": id, "scale": scale}))
                .collect::<Vec<_>>())),
            Just(json!({"id": 0})),
            Just(json!([{"scale": 1.0}])),
        ]
        .boxed(),
        _ => any::<bool>().prop_map(Value::from).boxed(),
    }
}

/// JSON Schemas, supported and not, nested and self-referencing.
fn schema() -> BoxedStrategy<Value> {
    prop::sample::select(vec![
        json!({"type": "object"}),
        json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}, "required": ["a"]}),
        json!({"type": "array", "items": {"enum": [1, "x", null]}, "minItems": 2, "maxItems": 2}),
        json!({"type": "string", "pattern": "^[a-f]{4}$"}),
        json!({"type": "integer", "minimum": 5, "maximum": 3}),
        json!({"$ref": "#/$defs/n", "$defs": {"n": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"$ref": "#/$defs/n"}}]}}}),
        json!({"type": "string", "format": "date-time"}),
        json!({"not": {"type": "string"}}),
        json!({"type": "strnig"}),
        json!(false),
        json!([1]),
    ])
    .boxed()
}

/// The JSON name of a generator's field (some fields have two shapes,
/// generated apart).
fn wire_name(f: &str) -> &str {
    match f {
        "logit_bias_array" => "logit_bias",
        "tools_anthropic" => "tools",
        "tool_choice_anthropic" => "tool_choice",
        "anthropic_messages" => "messages",
        f => f,
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

/// Sends one shot and checks the reply; `Ok` carries the `param` of a 400.
fn check(s: &Server, shot: &Shot) -> Result<(u16, Option<String>), String> {
    let r = request_within(&s.addr, shot.method, &shot.path, &[], &shot.body, TIMEOUT)
        .map_err(|e| format!("no reply ({e})"))?;
    let body = || r.text().chars().take(300).collect::<String>();
    if !(200..500).contains(&r.status) {
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
