//! The PEFT folder and the GGUF llama.cpp's convert_lora_to_gguf.py made
//! from it (tests/fixtures/lora) read as the same adapter: the same F16
//! values, renamed, with q/k's B rows permuted the same way.

use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

#[test]
fn peft_folder_reads_as_its_gguf_conversion() {
    let gguf = cria_lora::read_gguf(&fixture("tests/fixtures/lora/adapter-f16.gguf")).unwrap();
    // SmolLM2-135M: 9 query heads, 3 key/value heads.
    let peft = cria_lora::read_peft(&fixture("tests/fixtures/lora/peft"), 9, 3).unwrap();
    assert_eq!(gguf.architecture, "llama");
    assert_eq!((gguf.alpha, peft.alpha), (8.0, 8.0));
    assert_eq!(gguf.pairs.len(), 21);
    let mut g = gguf.pairs.clone();
    let mut p = peft.pairs.clone();
    g.sort_by(|a, b| a.base.cmp(&b.base));
    p.sort_by(|a, b| a.base.cmp(&b.base));
    for (x, y) in g.iter().zip(&p) {
        assert_eq!(x, y, "{} differs", x.base);
    }
    // A permutation that did nothing would also pass if q's B were
    // symmetric under it; it is not.
    let q = p.iter().find(|x| x.base == "blk.0.attn_q.weight").unwrap();
    assert_ne!(q.b[..4 * 2], q.b[4 * 32..4 * 34]);
}

#[test]
fn written_adapter_reads_back_the_same() {
    let gguf = cria_lora::read_gguf(&fixture("tests/fixtures/lora/adapter-f16.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.gguf");
    let mut bytes = Vec::new();
    cria_lora::write_gguf(&gguf, cria_gguf::GgmlType::F16, &mut bytes, &out).unwrap();
    std::fs::write(&out, &bytes).unwrap();
    assert_eq!(cria_lora::read_gguf(&out).unwrap(), gguf);
}

#[test]
fn peft_config_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let st = std::fs::read(fixture(
        "tests/fixtures/lora/peft/adapter_model.safetensors",
    ))
    .unwrap();
    std::fs::write(dir.path().join("adapter_model.safetensors"), &st).unwrap();
    for (config, needle) in [
        (r#"{"r": 4, "lora_alpha": 8, "use_dora": true}"#, "DoRA"),
        (
            r#"{"r": 4, "lora_alpha": 8, "rank_pattern": {"q_proj": 8}}"#,
            "rank_pattern",
        ),
        (r#"{"r": 8, "lora_alpha": 8}"#, "r = 8"),
        (r#"{"r": 0, "lora_alpha": 8}"#, "\"r\""),
        (r#"{"r": 4, "lora_alpha": 8, "peft_type": "IA3"}"#, "IA3"),
        ("[1, 2]", "JSON object"),
    ] {
        std::fs::write(dir.path().join("adapter_config.json"), config).unwrap();
        let e = cria_lora::read_peft(dir.path(), 9, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{config}: {e}");
    }
    // rsLoRA: alpha / sqrt(r) written as llama.cpp's alpha / rank.
    std::fs::write(
        dir.path().join("adapter_config.json"),
        r#"{"r": 4, "lora_alpha": 8, "use_rslora": true}"#,
    )
    .unwrap();
    assert_eq!(cria_lora::read_peft(dir.path(), 9, 3).unwrap().alpha, 16.0);
}
