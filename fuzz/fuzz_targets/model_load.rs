//! Any bytes as a model file: loading gives a model or an error, never a
//! panic or an allocation sized by a lie; a model that loads runs a token.
#![no_main]

use cria_gguf::GgufFile;
use cria_model::{KvType, Logits, Model, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let Ok(model) = Model::from_file(file) else {
        return;
    };
    let mut s = Session::new(&model, 4, KvType::F16, 2, 1);
    let mut logits = Vec::new();
    let tokens = [0, (model.config.n_vocab - 1) as u32];
    model
        .forward(&mut s, &tokens, Logits::All, &mut logits)
        .expect("tokens in the vocabulary, positions in the context");
    assert_eq!(logits.len(), 2 * model.config.n_vocab);
    // A token past the vocabulary is an error, not a panic.
    assert!(model
        .forward(&mut s, &[model.config.n_vocab as u32], Logits::Last, &mut logits)
        .is_err());
});
