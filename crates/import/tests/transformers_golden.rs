//! A Hugging Face folder gives transformers' own next-token distributions:
//! tests/fixtures/import/hf_golden.json holds transformers' float32 forward
//! (top-20 log-probabilities at every position of a prompt, and the prompt's
//! ids from the `tokenizers` library) on a folder made from the default
//! model by make_golden.py there. The folder made here from the same GGUF
//! must tokenize the text to the same ids and give the same log-probs.

mod common;

use cria_gguf::GgufFile;
use cria_model::{KvType, Logits, Model, Session};
use serde_json::Value;
use std::path::PathBuf;

#[test]
fn hf_folder_matches_transformers_float32() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/import/hf_golden.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
    let Some(src) = common::default_model() else {
        panic!("the default model is needed: run `cria pull` first");
    };
    let src = GgufFile::open(src).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    common::write_hf_folder(&src, &dir);
    let file = cria_import::open(&dir).unwrap();

    let tok = cria_tokenizer::Tokenizer::from_gguf(file.metadata()).unwrap();
    let want: Vec<u32> = g["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let ids = tok
        .encode(g["text"].as_str().unwrap(), false, false)
        .unwrap();
    assert_eq!(
        ids, want,
        "tokenizer.json tokenizes like Hugging Face's tokenizers"
    );

    let model = Model::from_file(file).unwrap();
    let n_vocab = model.config.n_vocab;
    let mut s = Session::new(&model, 64, KvType::F32, 64, 2);
    let mut logits = Vec::new();
    model
        .forward(&mut s, &ids, Logits::All, &mut logits)
        .unwrap();
    let mut worst = 0f64;
    for (p, top) in g["top20_logprobs"].as_array().unwrap().iter().enumerate() {
        let row = &logits[p * n_vocab..(p + 1) * n_vocab];
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        let top = top.as_array().unwrap();
        for (rank, pair) in top.iter().enumerate() {
            let id = pair[0].as_u64().unwrap() as usize;
            let want = pair[1].as_f64().unwrap();
            let got = row[id] as f64 - lse;
            // Only tokens with real mass: below e^-8 differences do not matter.
            if want > -8.0 {
                worst = worst.max((got - want).abs());
                assert!(
                    (got - want).abs() < 1e-3,
                    "position {p}, rank {rank}, token {id}: {got} vs {want}"
                );
            }
        }
        let best = row
            .iter()
            .enumerate()
            .fold(0, |b, (i, &x)| if x > row[b] { i } else { b });
        let (t0, t1) = (top[0][1].as_f64().unwrap(), top[1][1].as_f64().unwrap());
        assert!(
            best as u64 == top[0][0].as_u64().unwrap() || t0 - t1 < 0.02,
            "position {p}: top {best}"
        );
    }
    eprintln!("largest log-prob difference from transformers: {worst:.2e}");
}
