//! The values `fuzz_http` sends: random and extreme JSON, and for each
//! request field a generator of values inside its valid range.

use super::{N_CTX, N_VOCAB};
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};

pub(super) fn number() -> BoxedStrategy<Value> {
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
pub(super) fn value() -> BoxedStrategy<Value> {
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
pub(super) fn messages() -> BoxedStrategy<Value> {
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
pub(super) fn huge() -> BoxedStrategy<Value> {
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
pub(super) fn in_range(field: &str) -> BoxedStrategy<Value> {
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
pub(super) fn wire_name(f: &str) -> &str {
    match f {
        "logit_bias_array" => "logit_bias",
        "tools_anthropic" => "tools",
        "tool_choice_anthropic" => "tool_choice",
        "anthropic_messages" => "messages",
        f => f,
    }
}
