//! Tokenizes a file and reports the time, for side-by-side runs with
//! llama.cpp's `llama-tokenize -m MODEL -f FILE --ids --log-disable`.
//!
//! ```text
//! cargo run --release -p cria-tokenizer --example tokenize_file -- MODEL.gguf FILE [--ids]
//! ```
//! The reported time covers loading the vocabulary and tokenizing, like the
//! wall time of llama-tokenize; both are also printed separately.

use cria_gguf::GgufFile;
use cria_tokenizer::Tokenizer;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: tokenize_file MODEL.gguf FILE [--ids]".into());
    }
    let t0 = Instant::now();
    let f = GgufFile::open(&args[1])?;
    let tok = Tokenizer::from_gguf(f.metadata())?;
    let t1 = Instant::now();
    let text = std::fs::read(&args[2])?;
    let t2 = Instant::now();
    let ids = tok.encode_bytes(&text, true, true)?;
    let t3 = Instant::now();
    if args.iter().any(|a| a == "--ids") {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("[{}]", s.join(", "));
    }
    eprintln!(
        "{} bytes -> {} tokens; load {:.1} ms, tokenize {:.1} ms ({:.1} MB/s)",
        text.len(),
        ids.len(),
        (t1 - t0).as_secs_f64() * 1e3,
        (t3 - t2).as_secs_f64() * 1e3,
        text.len() as f64 / (t3 - t2).as_secs_f64() / 1e6
    );
    Ok(())
}
