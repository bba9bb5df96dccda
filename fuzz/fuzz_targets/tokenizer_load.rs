//! Any bytes as a vocabulary: `GGUF bytes | text | one byte = text length`.
//! Loading gives a tokenizer or an error; a tokenizer encodes the text (and
//! fixed samples) to ids in range that decode without panicking.
#![no_main]

use cria_gguf::GgufFile;
use cria_tokenizer::{Detokenizer, Tokenizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_last() else {
        return;
    };
    let n = (n as usize).min(rest.len());
    let (gguf, text) = rest.split_at(rest.len() - n);
    let Ok(file) = GgufFile::from_bytes(gguf.to_vec()) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_gguf(file.metadata()) else {
        return;
    };
    let samples: [&[u8]; 4] = [text, b"Hello world", b"  <s>\n\t\xff\xfe caf\xc3\xa9", b""];
    for s in samples {
        for (add, special) in [(false, false), (true, true)] {
            let Ok(ids) = tok.encode_bytes(s, add, special) else {
                continue;
            };
            assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
            let text = tok.decode(&ids, special).expect("ids from encode decode");
            let mut d = Detokenizer::from_start(&tok, special);
            let streamed: String = ids.iter().map(|&id| d.push(id)).collect::<String>() + &d.finish();
            // A whole decode also cleans spaces (llama.cpp's detokenize);
            // streamed pieces are not cleaned (as llama-server's).
            assert_eq!(tok.clean_spaces(&streamed), text, "streaming and whole decoding differ");
        }
    }
});
