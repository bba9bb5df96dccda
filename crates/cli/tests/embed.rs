//! Embeddings against llama.cpp's `llama-embedding` on the same model and
//! inputs (tests/fixtures/embeddings, README there), from `cria embed` and
//! from a server's `/v1/embeddings` while it is also generating (the same
//! forward passes); and the endpoint's shapes, switches and refusals.
//!
//! The bounds are what is measured, not the 0.9999 of issue 15 for every
//! pooling: CLS vectors (the first token) meet it; mean and last pooling
//! reach 0.99964..0.99996, within llama.cpp's own spread between its modes
//! (flash attention on/off: 0.99953; the fixture README has the numbers).
//! On F16 weights, where no activation is rounded to int8, every pooling
//! matches to 0.99999 and better.

mod common;

use common::server::{start_stream, Server};
use common::{cria, default_model, fixture, stderr, stdout};
use serde_json::{json, Value};

/// Per pooling: the least cosine every vector must reach.
fn min_cosine(pooling: &str) -> f64 {
    match pooling {
        "cls" => 0.9999,
        "mean" | "last" => 0.9995,
        // One vector per token: single tokens carry more noise than a mean.
        _ => 0.995,
    }
}

fn inputs() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("tests/fixtures/embeddings/inputs.txt")).unwrap();
    text.strip_suffix('\n')
        .unwrap_or(&text)
        .split('\n')
        .map(String::from)
        .collect()
}

/// llama-embedding's vectors for `inputs.txt` with this pooling.
fn golden(pooling: &str) -> Vec<Vec<f32>> {
    let path = fixture(&format!("tests/fixtures/embeddings/smollm2-{pooling}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    vectors(&v)
}

fn vectors(reply: &Value) -> Vec<Vec<f32>> {
    let data = reply["data"].as_array().expect("data");
    data.iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], json!(i), "{d}");
            d["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    cria_engine::cosine(a, b)
}

fn assert_close(ours: &[Vec<f32>], theirs: &[Vec<f32>], pooling: &str, what: &str) {
    let min = min_cosine(pooling);
    assert_eq!(ours.len(), theirs.len(), "{what}: number of vectors");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(a.len(), b.len(), "{what}: width of vector {i}");
        let c = cosine(a, b);
        assert!(c >= min, "{what}: vector {i}: cosine {c:.6} < {min}");
    }
}

fn cria_embed(args: &[&str]) -> Value {
    cria_embed_with(&default_model(), args)
}

fn cria_embed_with(model: &std::path::Path, args: &[&str]) -> Value {
    let out = cria()
        .args(["embed", "-t", "1", "-m"])
        .arg(model)
        .args(["-f"])
        .arg(fixture("tests/fixtures/embeddings/inputs.txt"))
        .args(["--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn cria_embed_matches_llama_embedding_for_each_pooling() {
    for pooling in ["mean", "cls", "last"] {
        let ours = vectors(&cria_embed(&["--pooling", pooling]));
        assert_close(
            &ours,
            &golden(pooling),
            pooling,
            &format!("cria embed --pooling {pooling}"),
        );
        for v in &ours {
            let norm: f64 = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        }
    }
}

/// On F16 weights nothing is rounded to 8 bits between layers, and cria's
/// vectors are llama.cpp's to 7 decimals (measured: cosine 0.9999993 or
/// more, the goldens' printing precision). The default model's Q4_1 gap
/// (0.9996) is the rounding of activations to int8 that both engines do
/// for quantized weights: a last-bit difference flips a rounding, and a
/// flip moves the whole vector (tests/fixtures/embeddings/README.md).
#[test]
fn f16_weights_match_llama_embedding_to_seven_decimals() {
    let dir = tempfile::tempdir().unwrap();
    let f16 = dir.path().join("smollm2-f16.gguf");
    let out = cria()
        .args(["quantize", "--allow-requantize", "-t", "2"])
        .arg(default_model())
        .arg(&f16)
        .arg("F16")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for pooling in ["mean", "cls", "last"] {
        let ours = vectors(&cria_embed_with(&f16, &["--pooling", pooling]));
        let theirs = golden(&format!("f16-{pooling}"));
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let c = cosine(a, b);
            assert!(
                c >= 0.99999,
                "F16 {pooling}: vector {i}: cosine {c:.8} < 0.99999"
            );
        }
    }
}

#[test]
fn no_pooling_gives_one_vector_per_token_like_llama_embedding() {
    // SmolLM2's GGUF has no pooling_type: llama.cpp's default is none.
    let reply = cria_embed(&[]);
    let ours: Vec<Vec<f32>> = reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            serde_json::from_value::<Vec<Vec<f32>>>(d["embedding"].clone())
                .unwrap_or_else(|_| vec![serde_json::from_value(d["embedding"].clone()).unwrap()])
        })
        .collect();
    assert_close(&ours, &golden("none"), "none", "cria embed (pooling none)");
}

#[test]
fn server_embeddings_match_llama_embedding_while_generating() {
    let s = Server::start(&["--parallel", "3", "-c", "512", "--pooling", "mean"]);
    // A generation in flight shares the forward passes with the embeddings.
    let _stream = start_stream(
        &s,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": true, "stream": true}),
    );
    let r = s.post("/v1/embeddings", &json!({"input": inputs(), "model": "x"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let reply = r.json();
    assert_close(&vectors(&reply), &golden("mean"), "mean", "/v1/embeddings");
    assert_eq!(reply["object"], "list");
    let tokens = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > inputs().len() as u64, "{}", reply["usage"]);
    assert_eq!(reply["usage"]["total_tokens"], json!(tokens));
}

#[test]
fn server_embedding_shapes_and_switches() {
    let s = Server::start(&["--parallel", "2", "-c", "64", "--pooling", "last"]);
    let one = |body: Value| {
        let r = s.post("/v1/embeddings", &body);
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        vectors(&r.json())
    };
    let text = one(json!({"input": "The quick brown fox"}));
    assert_eq!(text.len(), 1);
    // Token ids give the same vector as the text they spell.
    let ids = s.post(
        "/tokenize",
        &json!({"content": "The quick brown fox", "add_special": true}),
    );
    let ids = ids.json()["tokens"].clone();
    let by_ids = one(json!({"input": ids}));
    assert!(cosine(&text[0], &by_ids[0]) > 0.999_999);
    let lists = one(json!({"input": [ids, [1, 2, 3]]}));
    assert_eq!(lists.len(), 2);
    assert!(cosine(&text[0], &lists[0]) > 0.999_999);
    // base64: the same floats, little-endian.
    let r = s.post(
        "/v1/embeddings",
        &json!({"input": "The quick brown fox", "encoding_format": "base64"}),
    );
    let b64 = r.json()["data"][0]["embedding"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = decode_base64(&b64);
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats, text[0]);
    // Not normalized on request, in either spelling; same direction.
    for body in [
        json!({"input": "The quick brown fox", "normalize": false}),
        json!({"input": "The quick brown fox", "embd_normalize": -1}),
    ] {
        let raw = one(body);
        let norm: f64 = raw[0]
            .iter()
            .map(|&x| x as f64 * x as f64)
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() > 0.01, "norm {norm}");
        assert!(cosine(&raw[0], &text[0]) > 0.999_999);
    }
}

#[test]
fn server_embedding_refusals_are_4xx_naming_the_field() {
    let s = Server::start(&["--parallel", "1", "-c", "32", "--pooling", "mean"]);
    let long = "word ".repeat(100);
    let too_many: Vec<&str> = vec!["a"; 2049];
    for (body, param, needle) in [
        (json!({"input": long}), "input[0]", "never cut"),
        (
            json!({"input": ["ok", long]}),
            "input[1]",
            "context holds 32",
        ),
        (
            json!({"input": [[1, 2], [49152]]}),
            "input[1][0]",
            "not in the vocabulary",
        ),
        (
            json!({"input": [[1, 2], [4294967296u64]]}),
            "input[1][0]",
            "",
        ),
        (json!({"input": too_many}), "input", "at most 2048"),
        (json!({"input": []}), "input", "empty"),
        (json!({"input": ""}), "input[0]", "no tokens"),
        (json!({"input": [1, "a"]}), "input[1]", ""),
        (json!({"input": {"a": 1}}), "input", ""),
        (json!({}), "body", "input"),
        (
            json!({"input": "x", "encoding_format": "hex"}),
            "encoding_format",
            "base64",
        ),
        (json!({"input": "x", "dimensions": 3}), "dimensions", "576"),
        (
            json!({"input": "x", "embd_normalize": 1}),
            "embd_normalize",
            "not supported",
        ),
        (json!({"input": "x", "normalize": "no"}), "normalize", ""),
    ] {
        let r = s.post("/v1/embeddings", &body);
        let e = r.error(400);
        assert_eq!(e["param"], json!(param), "{body}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{body}: {e}"
        );
    }
    let r = s.post("/v1/embeddings", &json!({"input": long}));
    assert_eq!(r.error(400)["code"], "context_length_exceeded");
    // The server is still fine.
    assert_eq!(
        s.post("/v1/embeddings", &json!({"input": "ok"})).status,
        200
    );
}

#[test]
fn a_model_without_pooling_needs_the_flag_for_the_openai_endpoint() {
    let s = Server::start(&["--parallel", "1", "-c", "64"]);
    let e = s
        .post("/v1/embeddings", &json!({"input": "hello"}))
        .error(400);
    assert!(e["message"].as_str().unwrap().contains("--pooling"), "{e}");
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
