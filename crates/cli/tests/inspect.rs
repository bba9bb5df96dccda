//! `cria inspect` on the default model, the vocab-only fixtures, and files
//! that are not valid GGUF. Counts are those llama.cpp prints when it loads
//! the same files ("loaded meta data with N key-value pairs and M tensors",
//! "n_layer = L"), so a reader that miscounts fails here.

mod common;
use common::*;
use serde_json::Value;

fn inspect_json(path: &std::path::Path) -> Value {
    let o = cria()
        .args(["inspect", "--json", "-m"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn default_model_counts_match_llama_cpp() {
    let j = inspect_json(&default_model());
    assert_eq!(j["architecture"], "llama");
    assert_eq!(j["totals"]["tensor_count"], 272);
    assert_eq!(j["totals"]["metadata_count"], 33);
    assert_eq!(j["hyperparameters"]["layers"], 30);
    assert_eq!(j["hyperparameters"]["heads"], 9);
    assert_eq!(j["hyperparameters"]["kv_heads"], 3);
    assert_eq!(j["hyperparameters"]["embedding"], 576);
    assert_eq!(j["tokenizer"]["model"], "gpt2");
    assert_eq!(j["tokenizer"]["pre"], "smollm");
    assert_eq!(j["tokenizer"]["vocab_size"], 49152);
    assert_eq!(j["tokenizer"]["chat_template"], true);
    // llama.cpp: 61 f32, 210 q4_1, 1 q8_0.
    let types: Vec<(String, u64)> = j["tensor_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().to_string(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [("F32".into(), 61), ("Q4_1".into(), 210), ("Q8_0".into(), 1)]
    );
    assert_eq!(j["totals"]["parameters"], 134_515_008);
}

#[test]
fn default_model_human_output() {
    let o = cria()
        .args(["inspect", "-m"])
        .arg(default_model())
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("272 tensors"), "{out}");
    assert!(out.contains("layers               30"), "{out}");
    assert!(out.contains("blk.29.ffn_down.weight"), "{out}");
}

#[test]
fn vocab_files_match_llama_cpp() {
    for (file, kv, model, vocab) in [
        (
            "crates/tokenizer/tests/fixtures/ggml-vocab-llama-spm.gguf",
            22,
            "llama",
            32000,
        ),
        (
            "crates/tokenizer/tests/fixtures/ggml-vocab-llama-bpe.gguf",
            20,
            "gpt2",
            128256,
        ),
    ] {
        let j = inspect_json(&fixture(file));
        assert_eq!(j["totals"]["tensor_count"], 0, "{file}");
        assert_eq!(j["totals"]["metadata_count"], kv, "{file}");
        assert_eq!(j["hyperparameters"]["layers"], 32, "{file}");
        assert_eq!(j["tokenizer"]["model"], model, "{file}");
        assert_eq!(j["tokenizer"]["vocab_size"], vocab, "{file}");
    }
}

#[test]
fn bad_files_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let o = cria()
        .args(["inspect", "-m"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_clean_error(&o, "missing.gguf");

    let text = dir.path().join("text.gguf");
    std::fs::write(&text, "hello, not a model").unwrap();
    let o = cria().args(["inspect", "-m"]).arg(&text).output().unwrap();
    assert_clean_error(&o, "not a GGUF file");

    let o = cria()
        .args(["inspect", "-m"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_clean_error(&o, "directory");

    // The real model cut short: the tensor table points past the end.
    let model = std::fs::read(default_model()).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &model[..model.len() / 2]).unwrap();
    let o = cria().args(["inspect", "-m"]).arg(&cut).output().unwrap();
    assert_clean_error(&o, "incomplete");

    // A claimed 1 GiB vocabulary string in a small file: refused without
    // allocating it (the process would be killed long before otherwise).
    let mut huge = model[..4096].to_vec();
    huge[24..32].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let f = dir.path().join("huge.gguf");
    std::fs::write(&f, &huge).unwrap();
    let o = cria().args(["inspect", "-m"]).arg(&f).output().unwrap();
    assert_clean_error(&o, "needs 1073741824 bytes");
}

#[test]
fn usage_errors_exit_2() {
    let o = cria().args(["inspect", "--bogus"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = cria().arg("--help").output().unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("inspect"));
}
