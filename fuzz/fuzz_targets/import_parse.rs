//! The import crate's parsers on arbitrary bytes: the restricted pickle
//! reader (as a state dict), SentencePiece's protobuf and tiktoken text.
//! None may panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cria_import::pickle::read_state_dict(data);
    if let Ok(m) = cria_import::spm_model::parse(data) {
        let _ = m.to_meta();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(tokens) = cria_import::tiktoken::parse(text) {
            let _ = cria_import::tiktoken::to_meta(&tokens, true);
        }
    }
});
