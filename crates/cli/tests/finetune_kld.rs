//! An adapter written by `cria finetune` means the same to llama.cpp as to
//! cria's trainer: the trainer's forward pass with the adapter against
//! `llama-perplexity --lora` log-probabilities (tests/fixtures/finetune,
//! README there says how both files were made), by llama.cpp's own
//! KL-divergence bookkeeping (cria-eval).

mod common;
use common::*;
use std::io::Read;

/// Mean KLD and same-top share (%) of the trainer's forward with `lora`
/// against the llama.cpp base file made with the adapter.
fn compare(model: &cria_model::Model, lora: &cria_train::Lora) -> (f64, f64, usize) {
    let tok = cria_tokenizer::Tokenizer::from_gguf(model.file().metadata()).unwrap();
    let mut gz = flate2::read::GzDecoder::new(
        std::fs::File::open(fixture("tests/fixtures/finetune/gpl3-c512-lora.kld.gz")).unwrap(),
    );
    let mut bytes = Vec::new();
    gz.read_to_end(&mut bytes).unwrap();
    let mut reader = cria_eval::BaseFileReader::new(&bytes[..]).unwrap();
    let header = reader.header().clone();
    let chunks =
        cria_eval::Chunks::from_base_file(&header, tok.add_bos(), tok.bos().unwrap_or(0)).unwrap();
    let nv = model.config.n_vocab;
    let mut kld = cria_eval::KlDivergence::new(nv);
    let pool = cria_kernels::ThreadPool::new(2);
    let c = cria_train::net::ctx(model, lora, &pool, None);
    let mut stored = cria_eval::BaseChunk::default();
    for chunk in chunks.iter() {
        assert!(reader.read_chunk(&mut stored).unwrap());
        let input = chunk.input_tokens();
        let first = chunk.first();
        // Targets on rows first..n_ctx-1 (each predicts the next token).
        let mask: Vec<bool> = (0..input.len()).map(|i| i > first).collect();
        let mut b = cria_train::Batch::default();
        b.push(input, &mask);
        let rows = cria_train::net::log_probs(&c, model, &b).unwrap();
        let mut logits: Vec<f32> = rows.concat();
        logits.resize((input.len() - first) * nv, 0.0);
        kld.add_chunk(&stored, &logits, chunk.tokens()).unwrap();
    }
    let r = kld.report().unwrap();
    (r.kld.value, 100.0 * r.same_top.value, r.count)
}

#[test]
fn trained_adapter_matches_llama_cpp_with_lora() {
    let model = cria_model::Model::open(default_model()).unwrap();
    let ad =
        cria_gguf::GgufFile::open(fixture("tests/fixtures/finetune/apache-qv-r4.gguf")).unwrap();
    let lora = cria_train::adapter_out::read(&model.config, &ad).unwrap();
    assert_eq!((lora.rank, lora.alpha, lora.targets.len()), (4, 8.0, 2));
    let (mean, top, n) = compare(&model, &lora);
    eprintln!("with the adapter: mean KLD {mean:.6}, same top {top:.2}% over {n} tokens");
    assert!(n >= 255, "{n} tokens scored");
    assert!(mean <= 0.01, "mean KLD {mean} > 0.01");
    assert!(top >= 94.0, "same top token at only {top}%");
    // The adapter is what makes them agree: without it, cria is much
    // further from llama.cpp-with-adapter.
    let mut none = lora.clone();
    none.params.iter_mut().for_each(|p| *p = 0.0);
    let (mean0, top0, _) = compare(&model, &none);
    eprintln!("without it: mean KLD {mean0:.6}, same top {top0:.2}%");
    assert!(
        mean0 > 3.0 * mean,
        "without the adapter {mean0}, with it {mean}"
    );
}
