//! Vocabularies built to be slow or huge (issue 10): loading is linear in
//! the vocabulary's bytes, and token count and length are bounded with
//! typed errors. Tokenizing with long tokens stays correct.

use cria_gguf::{Array, GgufFile, GgufWriter, Value};
use cria_tokenizer::{ErrorKind, Tokenizer, MAX_TOKEN_BYTES};

fn spm_vocab(tokens: Vec<String>) -> cria_gguf::Metadata {
    // Longer tokens score higher, so merges build the longest ones.
    let scores: Vec<f32> = tokens.iter().map(|t| t.len() as f32).collect();
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String("llama".into()));
    w.add_metadata("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    w.add_metadata("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    GgufFile::from_bytes(bytes).unwrap().metadata().clone()
}

/// `<unk> <s> </s> ▁`, `a` doubled up to 2^15 bytes, then 32 tokens of
/// `MAX_TOKEN_BYTES` bytes (one letter each): 2 MiB of token text. Hashing
/// every prefix of every token, as loading used to, is 2^36 bytes of work
/// (13 s in a release build here); one pass over a trie is 2^21 steps.
/// The test checks what loading and encoding give, not how long they take
/// (no timed tests: a slow machine must not fail it); a regression to the
/// quadratic load shows as this test taking seconds instead of
/// milliseconds.
fn long_tokens() -> Vec<String> {
    let mut t: Vec<String> = ["<unk>", "<s>", "</s>", "\u{2581}"]
        .map(String::from)
        .to_vec();
    t.extend((0..=15).map(|k| "a".repeat(1 << k)));
    t.extend(
        ('b'..='z')
            .chain('A'..='G')
            .map(|c| c.to_string().repeat(MAX_TOKEN_BYTES)),
    );
    t
}

#[test]
fn megabytes_of_long_tokens_load_and_tokenize() {
    let md = spm_vocab(long_tokens());
    let tok = Tokenizer::from_gguf(&md).unwrap();

    let id = |s: &str| tok.token_id(s).unwrap();
    let (space, big) = (id("\u{2581}"), id(&"a".repeat(1 << 15)));
    // Both halves merge up to the 32 KiB token; the cut search between them
    // would need 2^30 trie steps and gives up, which must not change ids.
    let text = format!("{} {}", "a".repeat(1 << 15), "a".repeat(1 << 15));
    let ids = tok.encode(&text, false, false).unwrap();
    assert_eq!(ids, [space, big, space, big]);
    let back = tok.decode(&ids, false).unwrap();
    assert!(
        back == text,
        "decoded {} bytes: {:?}...",
        back.len(),
        &back[..8]
    );

    // 3 + 1 + 2 a's: pieces that are tokens, the rest falls back to <unk>
    // (this vocabulary has no byte tokens).
    let ids = tok.encode("aaa b", false, false).unwrap();
    assert_eq!(ids, [space, id("aa"), id("a"), space, tok.unk().unwrap()]);
}

#[test]
fn a_token_longer_than_the_bound_is_refused() {
    let mut tokens = long_tokens();
    tokens.push("z".repeat(MAX_TOKEN_BYTES + 1));
    let n = tokens.len() - 1;
    let err = Tokenizer::from_gguf(&spm_vocab(tokens))
        .err()
        .expect("accepted");
    assert!(matches!(err.kind(), ErrorKind::BadVocab { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "unusable vocabulary: token {n} is {} bytes long; tokens may have at most {MAX_TOKEN_BYTES}",
            MAX_TOKEN_BYTES + 1
        )
    );
}

#[test]
fn an_empty_vocabulary_is_refused() {
    let err = Tokenizer::from_gguf(&spm_vocab(Vec::new()))
        .err()
        .expect("accepted");
    assert_eq!(
        err.to_string(),
        "unusable vocabulary: tokenizer.ggml.tokens has 0 entries; a vocabulary has 1 to 16777216"
    );
}
