//! tokenizer.model files tokenize llama.cpp's test texts exactly as the
//! reference does (the .inp/.out vectors beside the vocab fixtures): a
//! SentencePiece protobuf of LLaMA's vocabulary and LLaMA 3's tiktoken
//! text, both derived from the vocab-only GGUF fixtures.

mod common;

use cria_gguf::GgufFile;
use cria_import::spm_model::{self, SpmModel};
use cria_tokenizer::Tokenizer;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tokenizer/tests/fixtures")
        .join(name)
}

fn cases(vocab: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(fixture(&format!("{vocab}.inp"))).unwrap();
    let out = std::fs::read_to_string(fixture(&format!("{vocab}.out"))).unwrap();
    let mut texts: Vec<String> = inp
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_string)
        .collect();
    texts.pop();
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len());
    texts.into_iter().zip(ids).collect()
}

fn check(tok: &Tokenizer, vocab: &str) {
    let mut n = 0;
    for (text, want) in cases(vocab) {
        let got = tok.encode(&text, false, false).unwrap();
        assert_eq!(got, want, "{vocab}: {text:?}");
        n += 1;
    }
    assert!(n > 20, "{vocab}: only {n} cases");
}

#[test]
fn sentencepiece_model_tokenizes_like_llama_cpp() {
    let f = GgufFile::open(fixture("ggml-vocab-llama-spm.gguf")).unwrap();
    let md = f.metadata();
    let tokens = md.get_str_array("tokenizer.ggml.tokens").unwrap();
    let scores = md.get_f32_array("tokenizer.ggml.scores").unwrap();
    let types = md.get_i32_array("tokenizer.ggml.token_type").unwrap();
    let model = SpmModel {
        pieces: tokens
            .iter()
            .zip(scores)
            .zip(types)
            .map(|((t, &s), &ty)| (t.clone(), s, ty))
            .collect(),
        model_type: 2,
        unk_id: 0,
        bos_id: 1,
        eos_id: 2,
        pad_id: -1,
        add_dummy_prefix: true,
    };
    let bytes = spm_model::encode(&model);
    let parsed = spm_model::parse(&bytes).unwrap();
    assert_eq!(parsed, model);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.model");
    std::fs::write(&path, &bytes).unwrap();
    let meta = cria_import::meta::read_tokenizer(&path, false).unwrap();
    let tok = Tokenizer::from_gguf(&gguf_of(meta)).unwrap();
    check(&tok, "ggml-vocab-llama-spm.gguf");
}

#[test]
fn tiktoken_model_tokenizes_like_llama_cpp() {
    let f = GgufFile::open(fixture("ggml-vocab-llama-bpe.gguf")).unwrap();
    let tokens = f.metadata().get_str_array("tokenizer.ggml.tokens").unwrap();
    let text = common::tiktoken_text(&tokens[..128000]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.model");
    std::fs::write(&path, text).unwrap();
    let meta = cria_import::meta::read_tokenizer(&path, false).unwrap();
    // The merges recovered from ranks are llama.cpp's (LLaMA 3's) merges.
    let want = f.metadata().get_str_array("tokenizer.ggml.merges").unwrap();
    assert!(meta.merges[..] == *want, "the merges differ");
    assert!(meta.tokens[..] == *tokens, "the tokens differ");
    let tok = Tokenizer::from_gguf(&gguf_of(meta)).unwrap();
    check(&tok, "ggml-vocab-llama-bpe.gguf");
}

/// Tokenizer metadata as a GGUF file's metadata.
fn gguf_of(t: cria_import::TokMeta) -> cria_gguf::Metadata {
    let f = GgufFile::from_parts(t.into_metadata(), Vec::new()).unwrap();
    f.metadata().clone()
}

#[test]
fn bad_tokenizer_models_are_errors() {
    for bytes in [
        &b"\x0a\xff\xff\xff\xff\x0f"[..],
        b"\x0a\x02\x0a",
        b"abc 0\n",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("tokenizer.model");
        std::fs::write(&path, bytes).unwrap();
        assert!(cria_import::meta::read_tokenizer(&path, false).is_err());
    }
}
