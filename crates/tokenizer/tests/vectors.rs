//! Token ids must match llama.cpp's exactly, for every vector in
//! tests/fixtures (see the README there for where each file comes from).

use cria_gguf::GgufFile;
use cria_tokenizer::{Detokenizer, ModelKind, Tokenizer};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str) -> Tokenizer {
    let f = GgufFile::open(fixture(name)).expect("fixture opens");
    Tokenizer::from_gguf(f.metadata()).expect("tokenizer builds")
}

/// (text, expected ids) pairs of llama.cpp's `.inp`/`.out` format.
fn cases(vocab: &str, out_suffix: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(fixture(&format!("{vocab}.inp"))).expect("inp");
    let out = std::fs::read_to_string(fixture(&format!("{vocab}{out_suffix}"))).expect("out");
    let mut texts: Vec<String> = inp
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_string)
        .collect();
    assert_eq!(
        texts.pop().as_deref(),
        Some(""),
        "inp ends with a separator"
    );
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|x| x.parse().expect("id"))
                .collect()
        })
        .collect();
    assert_eq!(texts.len(), ids.len(), "{vocab}: one output line per text");
    texts.into_iter().zip(ids).collect()
}

/// Runs every case; reports all mismatches at once, readably.
fn check(vocab: &str, out_suffix: &str, parse_special: bool) -> Vec<(String, Vec<u32>)> {
    let tok = load(vocab);
    let cases = cases(vocab, out_suffix);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false, parse_special).expect("encode");
        if &got != want {
            failures.push(format!("text {text:?}\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{vocab}{out_suffix}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases
}

/// Concatenated pieces, which must give back the text exactly; `decode`
/// may differ by llama.cpp's space cleanup, so round trips use pieces.
fn pieces(tok: &Tokenizer, ids: &[u32], special: bool) -> Vec<u8> {
    ids.iter()
        .flat_map(|&id| tok.token_to_piece(id, special))
        .collect()
}

#[test]
fn llama_spm_vectors() {
    let tok = load("ggml-vocab-llama-spm.gguf");
    assert_eq!(tok.model_kind(), ModelKind::Spm);
    for (text, ids) in check("ggml-vocab-llama-spm.gguf", ".out", false) {
        // SentencePiece adds a space in front; decode removes it again.
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "decode of {ids:?}");
        let mut d = Detokenizer::from_start(&tok, false);
        let mut streamed: String = ids.iter().map(|&id| d.push(id)).collect();
        streamed.push_str(&d.finish());
        assert_eq!(streamed, text, "streamed decode of {ids:?}");
    }
}

#[test]
fn llama_bpe_vectors() {
    let tok = load("ggml-vocab-llama-bpe.gguf");
    assert_eq!(tok.model_kind(), ModelKind::Bpe);
    assert_eq!(tok.pre(), "llama-bpe");
    for (text, ids) in check("ggml-vocab-llama-bpe.gguf", ".out", false) {
        assert_eq!(
            pieces(&tok, &ids, false),
            text.as_bytes(),
            "pieces of {ids:?}"
        );
        let mut d = Detokenizer::new(&tok, false);
        let mut streamed: String = ids.iter().map(|&id| d.push(id)).collect();
        streamed.push_str(&d.finish());
        assert_eq!(streamed, text);
    }
}

#[test]
fn smollm2_vectors_parse_special() {
    let tok = load("ggml-vocab-smollm2.gguf");
    assert_eq!(tok.pre(), "smollm");
    for (text, ids) in check("ggml-vocab-smollm2.gguf", ".out", true) {
        assert_eq!(
            pieces(&tok, &ids, true),
            text.as_bytes(),
            "pieces of {ids:?}"
        );
    }
}

#[test]
fn smollm2_vectors_no_parse_special() {
    let tok = load("ggml-vocab-smollm2.gguf");
    for (text, ids) in check("ggml-vocab-smollm2.gguf", ".nps.out", false) {
        assert_eq!(
            pieces(&tok, &ids, false),
            text.as_bytes(),
            "pieces of {ids:?}"
        );
    }
}
