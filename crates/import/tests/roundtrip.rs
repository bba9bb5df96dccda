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
    model
        .forward(&mut s, &prompt, Logits::All, &mut out)
        .expect("forward");
    out
}

/// Per position: KLD below 5 * `mean_max` (mean below `mean_max`), and the
/// same top token unless the reference's top two are within 0.1 logits.
/// Quantized weights go with activations rounded to 8 bits (as in
/// llama.cpp), which on this 135M model alone costs a mean KLD near 0.01.
fn close(reference: &[f32], test: &[f32], n_vocab: usize, mean_max: f64, what: &str) {
    let positions = reference.len() / n_vocab;
    let mut sum = 0.0;
    for p in 0..positions {
        let (x, y) = (
            &reference[p * n_vocab..(p + 1) * n_vocab],
            &test[p * n_vocab..(p + 1) * n_vocab],
        );
        let k = kld(x, y);
        sum += k;
        assert!(k < 5.0 * mean_max, "{what}: position {p}: KLD {k}");
        let (top, gap) = top_gap(x);
        assert!(
            argmax(y) == top || gap < 0.1,
            "{what}: position {p}: top {} vs {top} (gap {gap})",
            argmax(y)
        );
    }
    let mean = sum / positions as f64;
    assert!(mean < mean_max, "{what}: mean KLD {mean}");
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |b, (i, &x)| if x > v[b] { i } else { b })
}

/// KL(p || q) of the softmaxes of two logit rows.
fn kld(p: &[f32], q: &[f32]) -> f64 {
    let lse = |v: &[f32]| {
        let m = v.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        m + v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let la = a as f64 - lp;
            la.exp() * (la - (b as f64 - lq))
        })
        .sum()
}

/// The top token and its logit's lead over the second.
fn top_gap(v: &[f32]) -> (usize, f32) {
    let top = argmax(v);
    let second = v
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != top)
        .fold(f32::MIN, |m, (_, &x)| m.max(x));
    (top, v[top] - second)
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
    assert_eq!(
        a.encode(text, true, true).unwrap(),
        b.encode(text, true, true).unwrap()
    );

    let l_hf = logits(from_hf);
    let l_src = logits(GgufFile::open(&src_path).unwrap());
    let n_vocab = 49152;
    // F32 weights against Q4_1 ones (whose kernel also rounds the
    // activations to 8 bits): the same distributions up to that rounding.
    close(&l_src, &l_hf, n_vocab, 0.015, "folder vs Q4_1 original");

    // convert --outtype f32: the same bytes, so the same logits, exactly.
    let out = tmp.path().join("hf.f32.gguf");
    cria_import::convert(&hf, &out, cria_import::OutType::F32, &mut |_, _| {}).unwrap();
    let converted = GgufFile::open(&out).unwrap();
    assert_eq!(
        converted.metadata().get_u32("general.file_type").unwrap(),
        0
    );
    assert_eq!(logits(converted), l_hf, "convert --outtype f32 vs -m DIR");
    std::fs::remove_file(&out).unwrap();

    // q8_0: loads, and predicts like the F32 model.
    let out = tmp.path().join("hf.q8_0.gguf");
    cria_import::convert(&hf, &out, cria_import::OutType::Q8_0, &mut |_, _| {}).unwrap();
    let q8 = GgufFile::open(&out).unwrap();
    assert_eq!(
        q8.tensor("blk.0.attn_q.weight").unwrap().ty,
        cria_gguf::GgmlType::Q8_0
    );
    assert_eq!(
        q8.tensor("blk.0.attn_norm.weight").unwrap().ty,
        cria_gguf::GgmlType::F32
    );
    close(&l_hf, &logits(q8), n_vocab, 0.02, "q8_0 vs f32");
    std::fs::remove_dir_all(&hf).unwrap();
    std::fs::remove_file(&out).unwrap();

    // The Meta folder: two shards joined, no rope permutation.
    let meta = tmp.path().join("SmolLM2-meta");
    common::write_meta_folder(&src, &meta);
    let from_meta = cria_import::open(&meta).unwrap();
    assert_eq!(
        from_meta.metadata().get_str("tokenizer.ggml.pre").unwrap(),
        "llama-bpe"
    );
    assert_eq!(
        logits(from_meta),
        l_hf,
        "Meta folder vs Hugging Face folder"
    );
}

/// A layout cria does not know is an error naming what it found.
#[test]
fn unknown_layouts_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("weights.npz"), b"x").unwrap();
    let e = cria_import::open(tmp.path()).err().unwrap().to_string();
    assert!(
        e.contains("weights.npz") && e.contains("config.json"),
        "{e}"
    );

    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"}"#,
    )
    .unwrap();
    let e = cria_import::open(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("GPTNeoXForCausalLM"), "{e}");
    assert!(Path::new(tmp.path()).is_dir());
}
