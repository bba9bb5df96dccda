//! Folders made from the default model give the model it came from:
//! a Hugging Face folder (q/k in rotate-half order, two safetensors shards)
//! and a Meta folder (two model-parallel .pth shards) read with `-m DIR`
//! semantics ([`cria_import::open`]) give bit-identical logits to each
//! other and to their `cria convert --outtype f32` output, and the same
//! predictions as the Q4_1 original; the tokenizer rebuilt from
//! tokenizer.json equals the original's.

mod common;

use cria_gguf::{GgufFile, Value};
use cria_model::{KvType, Logits, Model, Session};
use std::path::Path;

/// Logits of every position of a fixed prompt: (positions, n_vocab).
fn logits(file: GgufFile) -> Vec<f32> {
    let model = Model::from_file(file).expect("model loads");
    let mut s = Session::new(&model, 64, KvType::F32, 16, 2);
    let mut out = Vec::new();
    let prompt = [1u32, 504, 3458, 282, 4649, 314, 253, 1345, 28, 48, 6];
    model.forward(&mut s, &prompt, Logits::All, &mut out).expect("forward");
    out
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
}

fn tok_key<'a>(f: &'a GgufFile, k: &str) -> Option<&'a Value> {
    f.metadata().get(k)
}

#[test]
fn hf_and_meta_folders_give_the_models_logits() {
    let Some(src_path) = common::default_model() else {
        panic!("the default model is needed: run `cria pull` first");
    };
    let src = GgufFile::open(&src_path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("SmolLM2-hf");
    common::write_hf_folder(&src, &hf);

    let from_hf = cria_import::open(&hf).unwrap();
    // Tokenizer metadata as llama.cpp's converter wrote it for the original.
    for k in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.chat_template",
        "llama.rope.freq_base",
        "llama.attention.head_count_kv",
    ] {
        assert_eq!(tok_key(&from_hf, k), tok_key(&src, k), "{k}");
    }
    let a = cria_tokenizer::Tokenizer::from_gguf(src.metadata()).unwrap();
    let b = cria_tokenizer::Tokenizer::from_gguf(from_hf.metadata()).unwrap();
    let text = "Hello world! 12345 <|im_start|>user\n  ça va?\t\n";
    assert_eq!(a.encode(text, true, true).unwrap(), b.encode(text, true, true).unwrap());

    let l_hf = logits(from_hf);
    let l_src = logits(GgufFile::open(&src_path).unwrap());
    let n_vocab = 49152;
    let positions = l_hf.len() / n_vocab;
    for p in 0..positions {
        let (x, y) = (&l_hf[p * n_vocab..(p + 1) * n_vocab], &l_src[p * n_vocab..(p + 1) * n_vocab]);
        assert_eq!(argmax(x), argmax(y), "position {p}: the top token differs");
        let max_diff = x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff < 0.5, "position {p}: logits differ by {max_diff}");
    }

    // convert --outtype f32: the same bytes, so the same logits, exactly.
    let out = tmp.path().join("hf.f32.gguf");
    cria_import::convert(&hf, &out, cria_import::OutType::F32, &mut |_, _| {}).unwrap();
    let converted = GgufFile::open(&out).unwrap();
    assert_eq!(converted.metadata().get_u32("general.file_type").unwrap(), 0);
    assert_eq!(logits(converted), l_hf, "convert --outtype f32 vs -m DIR");
    std::fs::remove_file(&out).unwrap();

    // q8_0: loads, and predicts like the F32 model.
    let out = tmp.path().join("hf.q8_0.gguf");
    cria_import::convert(&hf, &out, cria_import::OutType::Q8_0, &mut |_, _| {}).unwrap();
    let q8 = GgufFile::open(&out).unwrap();
    assert_eq!(q8.tensor("blk.0.attn_q.weight").unwrap().ty, cria_gguf::GgmlType::Q8_0);
    assert_eq!(q8.tensor("blk.0.attn_norm.weight").unwrap().ty, cria_gguf::GgmlType::F32);
    let l_q8 = logits(q8);
    for p in 0..positions {
        let (x, y) = (&l_hf[p * n_vocab..(p + 1) * n_vocab], &l_q8[p * n_vocab..(p + 1) * n_vocab]);
        assert_eq!(argmax(x), argmax(y), "q8_0 position {p}");
    }
    std::fs::remove_dir_all(&hf).unwrap();
    std::fs::remove_file(&out).unwrap();

    // The Meta folder: two shards joined, no rope permutation.
    let meta = tmp.path().join("SmolLM2-meta");
    common::write_meta_folder(&src, &meta);
    let from_meta = cria_import::open(&meta).unwrap();
    assert_eq!(from_meta.metadata().get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
    assert_eq!(logits(from_meta), l_hf, "Meta folder vs Hugging Face folder");
}

/// A layout cria does not know is an error naming what it found.
#[test]
fn unknown_layouts_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("weights.npz"), b"x").unwrap();
    let e = cria_import::open(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("weights.npz") && e.contains("config.json"), "{e}");

    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"}"#,
    )
    .unwrap();
    let e = cria_import::open(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("GPTNeoXForCausalLM"), "{e}");
    assert!(Path::new(tmp.path()).is_dir());
}
