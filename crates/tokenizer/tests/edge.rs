//! Inputs that must never panic, special-token handling, accessors and the
//! streaming detokenizer.

use cria_gguf::{Array, GgufFile, GgufWriter, Value};
use cria_tokenizer::{Detokenizer, ErrorKind, Tokenizer};
use std::path::PathBuf;

fn load(name: &str) -> Tokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let f = GgufFile::open(path).expect("fixture opens");
    Tokenizer::from_gguf(f.metadata()).expect("tokenizer builds")
}

const SPM: &str = "ggml-vocab-llama-spm.gguf";
const LLAMA3: &str = "ggml-vocab-llama-bpe.gguf";
const SMOL: &str = "ggml-vocab-smollm2.gguf";

#[test]
fn empty_input() {
    let spm = load(SPM);
    assert_eq!(spm.encode("", false, false).unwrap(), Vec::<u32>::new());
    // SentencePiece adds BOS even to empty text, as llama.cpp does.
    assert_eq!(spm.encode("", true, false).unwrap(), [1]);
    let smol = load(SMOL);
    assert!(!smol.add_bos());
    assert_eq!(smol.encode("", true, true).unwrap(), Vec::<u32>::new());
    let l3 = load(LLAMA3);
    assert_eq!(l3.encode("", true, false).unwrap(), [128000]);
    assert_eq!(spm.decode(&[], false).unwrap(), "");
}

/// Expected ids from llama.cpp: the bytes below in a file, then
/// `llama-tokenize -m VOCAB -f FILE --ids --log-disable --no-bos --no-escape`.
#[test]
fn invalid_utf8_bytes_match_llama_cpp() {
    let bad = b"abc\xff\xfe d\xe2\x82 \xc3(\xf0\x9f\xa6\x99";
    let want_spm = [
        25638, 258, 257, 229, 153, 132, 29881, 229, 133, 229, 153, 132, 198, 43, 243, 162, 169, 156,
    ];
    let want_smol = [
        25276, 24211, 24211, 287, 24211, 24211, 216, 24211, 24, 10813, 116, 243,
    ];
    let want_l3 = [13997, 10178, 294, 10178, 30433, 7, 9468, 99, 247];
    assert_eq!(load(SPM).encode_bytes(bad, false, false).unwrap(), want_spm);
    assert_eq!(
        load(SMOL).encode_bytes(bad, false, true).unwrap(),
        want_smol
    );
    assert_eq!(
        load(LLAMA3).encode_bytes(bad, false, false).unwrap(),
        want_l3
    );
    // SentencePiece splits by lead byte: 0xFE claims 4 bytes, swallowing
    // the `▁` after it, so that `▁` comes back as its bytes, not a space.
    let spm = load(SPM);
    let back = spm.detokenize(&want_spm, false, false).unwrap();
    assert_eq!(
        back,
        b"abc\xff\xfe\xe2\x96\x81d\xe2\x82\xe2\x96\x81\xc3(\xf0\x9f\xa6\x99"
    );
}

#[test]
fn ten_megabyte_line() {
    let sentence = "The licensee may copy, modify and distribute 1234567 copies; ";
    let line = sentence.repeat(10_000_000 / sentence.len() + 1);
    for name in [SPM, LLAMA3, SMOL] {
        let tok = load(name);
        let ids = tok.encode(&line, false, false).unwrap();
        assert!(ids.len() > line.len() / 8, "{name}: {} ids", ids.len());
        // Same ids as for one sentence, repeated (each sentence starts a
        // word the same way, except SentencePiece's first leading space).
        let mut d = Detokenizer::from_start(&tok, false);
        let n: usize = ids.iter().map(|&id| d.push(id).len()).sum();
        assert_eq!(n + d.finish().len(), line.len(), "{name}");
    }
}

#[test]
fn one_long_word() {
    let word = "a".repeat(300_000);
    for name in [SPM, LLAMA3, SMOL] {
        let tok = load(name);
        let ids = tok.encode(&word, false, false).unwrap();
        let back = tok.decode(&ids, false).unwrap();
        assert_eq!(back, word, "{name}");
    }
}

#[test]
fn special_tokens_only_when_asked() {
    let smol = load(SMOL);
    let text = "<|im_start|>user\nHi<|im_end|>";
    let parsed = smol.encode(text, false, true).unwrap();
    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.last(), Some(&2));
    let plain = smol.encode(text, false, false).unwrap();
    assert!(!plain.contains(&1) && !plain.contains(&2), "{plain:?}");
    // Control tokens render only with `special`.
    assert_eq!(smol.token_to_piece(1, true), b"<|im_start|>");
    assert!(smol.token_to_piece(1, false).is_empty());
    assert_eq!(smol.decode(&parsed, true).unwrap(), text);
    assert_eq!(smol.decode(&parsed, false).unwrap(), "user\nHi");

    let spm = load(SPM);
    // After a special token SentencePiece adds the space prefix again.
    assert_eq!(spm.encode("<s>Hello", false, true).unwrap(), [1, 15043]);
}

#[test]
fn accessors_and_end_of_generation() {
    let smol = load(SMOL);
    assert_eq!(smol.vocab_size(), 49152);
    assert_eq!((smol.bos(), smol.eos()), (Some(1), Some(2)));
    assert_eq!(smol.eot(), Some(2)); // <|im_end|>
    assert!(smol.is_eog(0) && smol.is_eog(2) && smol.is_eog(4));
    assert!(!smol.is_eog(1) && !smol.is_eog(100));
    assert_eq!(smol.token_text(2), Some("<|im_end|>"));
    assert_eq!(smol.token_id("<|im_end|>"), Some(2));
    assert_eq!(smol.pre(), "smollm");

    let l3 = load(LLAMA3);
    assert_eq!(l3.eot(), Some(128009));
    assert!(l3.is_eog(128001) && l3.is_eog(128009));
    assert!(l3.add_bos());

    let spm = load(SPM);
    assert_eq!(
        (spm.bos(), spm.eos(), spm.unk()),
        (Some(1), Some(2), Some(0))
    );
    assert!(spm.add_bos() && spm.add_space_prefix());
    assert!(spm.is_eog(2));
}

#[test]
fn decode_rejects_ids_outside_vocab() {
    let smol = load(SMOL);
    let err = smol.decode(&[5, 49152], false).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::TokenOutOfRange { id: 49152, .. }
    ));
    assert!(err.to_string().contains("49152"));
    assert!(smol.token_to_piece(u32::MAX, true).is_empty());
}

#[test]
fn detokenizer_holds_back_split_characters() {
    let spm = load(SPM);
    // 🦙 has no token in LLaMA 2: four byte tokens.
    let ids = spm.encode("🦙!", false, false).unwrap();
    let mut d = Detokenizer::new(&spm, false);
    let outs: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    assert_eq!(outs.concat() + &d.finish(), " 🦙!");
    assert!(outs.iter().any(|s| s.is_empty()), "{outs:?}");

    // A lone continuation byte can never complete: U+FFFD, not lost.
    let b = spm.token_id("<0x80>").unwrap();
    let mut d = Detokenizer::new(&spm, false);
    assert_eq!(d.push(b), "\u{FFFD}");
    // An unfinished sequence at the end comes out by finish().
    let e2 = spm.token_id("<0xE2>").unwrap();
    assert_eq!(d.push(e2), "");
    assert_eq!(d.finish(), "\u{FFFD}");
}

fn tiny_vocab(model: &str, pre: &str) -> cria_gguf::Metadata {
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String(model.into()));
    w.add_metadata("tokenizer.ggml.pre", Value::String(pre.into()));
    let tokens = ["a", "b", "ab"].map(String::from).to_vec();
    w.add_metadata("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    w.add_metadata(
        "tokenizer.ggml.merges",
        Value::Array(Array::String(vec!["a b".into()])),
    );
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    GgufFile::from_bytes(bytes).unwrap().metadata().clone()
}

#[test]
fn unknown_pre_tokenizer_is_an_error_naming_it() {
    let err = Tokenizer::from_gguf(&tiny_vocab("gpt2", "qwen-next-9000"))
        .err()
        .expect("must fail");
    assert!(matches!(err.kind(), ErrorKind::UnsupportedPre { pre } if pre == "qwen-next-9000"));
    assert!(err.to_string().contains("'qwen-next-9000'"), "{err}");

    let err = Tokenizer::from_gguf(&tiny_vocab("t5", ""))
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("'t5'"), "{err}");
}

#[test]
fn tiny_bpe_merges_and_drops_unknown_bytes() {
    let tok = Tokenizer::from_gguf(&tiny_vocab("gpt2", "gpt-2")).unwrap();
    assert_eq!(tok.encode("ab", false, false).unwrap(), [2]);
    assert_eq!(tok.encode("ba", false, false).unwrap(), [1, 0]);
    // 'c' has no token and no byte token: llama.cpp drops it.
    assert_eq!(tok.encode("abc", false, false).unwrap(), [2]);
}

/// LLaMA's SentencePiece vocabulary with `tokenizer.cria.prepend_scheme`
/// set to `scheme` (what cria's import writes for a Metaspace
/// pre-tokenizer in tokenizer.json).
fn spm_with_scheme(scheme: &str) -> cria_tokenizer::Result<Tokenizer> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(SPM);
    let f = GgufFile::open(path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata().iter() {
        w.add_metadata(k, v.clone());
    }
    w.add_metadata(
        cria_tokenizer::PREPEND_SCHEME_KEY,
        Value::String(scheme.into()),
    );
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    Tokenizer::from_gguf(GgufFile::from_bytes(bytes).unwrap().metadata())
}

#[test]
fn metaspace_prefix_schemes_place_the_space_as_hugging_face_does() {
    let dummy = load(SPM);
    let always = spm_with_scheme("always").unwrap();
    let first = spm_with_scheme("first").unwrap();
    let enc = |t: &Tokenizer, s: &str| t.encode(s, false, true).unwrap();
    // Plain text: the same everywhere.
    assert_eq!(enc(&dummy, "Hello world"), enc(&first, "Hello world"));
    // Leading space: llama.cpp adds a second "▁" ("▁" + "▁Hello" by this
    // file's SentencePiece scores); Metaspace does not.
    assert_eq!(enc(&dummy, " Hello world"), [29871, 15043, 3186]);
    assert_eq!(enc(&always, " Hello world"), [15043, 3186]);
    assert_eq!(enc(&first, " Hello world"), [15043, 3186]);
    // After a special token: "first" adds nothing, "always" does.
    assert_eq!(enc(&first, "a</s>b"), [263, 2, 29890]);
    assert_eq!(enc(&always, "a</s>b"), [263, 2, 289]);
    assert_eq!(enc(&dummy, "a</s>b"), [263, 2, 289]);

    let err = spm_with_scheme("sometimes").err().expect("refused");
    assert!(err.to_string().contains("sometimes"), "{err}");
}

/// A whole decode cleans spaces before punctuation (llama.cpp's
/// `llama_detokenize`); streamed pieces do not (llama-server's replies);
/// `clean_spaces` is exactly the difference. Found by the tokenizer_load
/// fuzz target (a BPE vocabulary of "!", "a", "c", "Ġ", "Ġa").
#[test]
fn streamed_pieces_differ_from_a_whole_decode_only_by_clean_spaces() {
    let tok = load(LLAMA3);
    let ids = tok
        .encode("Hi ! How are you ? Fine , thanks .", false, false)
        .unwrap();
    let whole = tok.decode(&ids, false).unwrap();
    let mut d = Detokenizer::from_start(&tok, false);
    let streamed: String = ids.iter().map(|&id| d.push(id)).collect::<String>() + &d.finish();
    assert_eq!(streamed, "Hi ! How are you ? Fine , thanks .");
    assert_eq!(whole, "Hi! How are you? Fine, thanks.");
    assert_eq!(tok.clean_spaces(&streamed), whole);
}
