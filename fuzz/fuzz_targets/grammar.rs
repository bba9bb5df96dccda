//! Any bytes as a GBNF grammar, a Lark grammar or a JSON Schema (the first
//! byte picks which), compiled against SmolLM2's 49,152-token vocabulary:
//! an error or a constraint, never a panic or a hang; a constraint then
//! walks a few steps on the first allowed token.
#![no_main]

use cria_gguf::GgufFile;
use cria_grammar::{GrammarSpec, Grammars};
use cria_tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn grammars() -> &'static Grammars {
    static G: OnceLock<Grammars> = OnceLock::new();
    G.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/tokenizer/tests/fixtures/ggml-vocab-smollm2.gguf"
        );
        let f = GgufFile::open(path).expect("vocab fixture");
        let tok = Tokenizer::from_gguf(f.metadata()).expect("tokenizer");
        Grammars::new(&tok).expect("grammars")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest).into_owned();
    let spec = match mode % 3 {
        0 => GrammarSpec::Gbnf(text),
        1 => GrammarSpec::Lark(text),
        _ => match serde_json::from_str(&text) {
            Ok(v) => GrammarSpec::JsonSchema(v),
            Err(_) => return,
        },
    };
    let Ok(mut c) = grammars().compile(&spec) else { return };
    for _ in 0..8 {
        let Ok(mask) = c.allowed() else { return };
        let Some(id) = mask
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i as u32 * 32 + w.trailing_zeros())
        else {
            return;
        };
        if c.accept(id).is_err() || c.is_finished() {
            return;
        }
    }
});
