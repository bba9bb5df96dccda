//! How long a token mask takes: compiles a JSON Schema (or a GBNF file)
//! against a vocabulary GGUF and times `allowed()` + `accept()` over a
//! seeded random walk. For BENCHMARKS.md; not a test.
//!
//!   cargo run --release -p cria-grammar --example mask_cost -- VOCAB.gguf [SCHEMA.json|GRAMMAR.gbnf] [STEPS]

use cria_grammar::{GrammarSpec, Grammars};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let vocab = args
        .first()
        .ok_or("usage: mask_cost VOCAB.gguf [SCHEMA|GRAMMAR] [STEPS]")?;
    let f = cria_gguf::GgufFile::open(vocab)?;
    let tok = cria_tokenizer::Tokenizer::from_gguf(f.metadata())?;
    let t = Instant::now();
    let grammars = Grammars::new(&tok)?;
    println!(
        "vocabulary of {}: trie built in {:.1} ms",
        tok.vocab_size(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let spec = match args.get(1) {
        Some(p) if p.ends_with(".gbnf") => GrammarSpec::Gbnf(std::fs::read_to_string(p)?),
        Some(p) => GrammarSpec::JsonSchema(serde_json::from_str(&std::fs::read_to_string(p)?)?),
        None => GrammarSpec::JsonSchema(serde_json::json!({
            "type": "array", "minItems": 40, "items": {"type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12},
                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"], "additionalProperties": false}})),
    };
    let steps: usize = args.get(2).map_or(Ok(300), |s| s.parse())?;
    let (_, stats) = grammars.compile_timed(&spec)?;
    println!("compile: {:.2} ms", stats.time.as_secs_f64() * 1e3);
    let mut total = Duration::ZERO;
    let mut n = 0u32;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..5 {
        let mut c = grammars.compile(&spec)?;
        for _ in 0..steps {
            let t = Instant::now();
            let mask = c.allowed()?.to_vec();
            total += t.elapsed();
            n += 1;
            let ids: Vec<u32> = mask
                .iter()
                .enumerate()
                .flat_map(|(w, &b)| {
                    (0..32)
                        .filter(move |i| b >> i & 1 == 1)
                        .map(move |i| w as u32 * 32 + i)
                })
                .filter(|&id| !tok.is_eog(id))
                .collect();
            if ids.is_empty() {
                break;
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = ids[(state % ids.len() as u64) as usize];
            let t = Instant::now();
            c.accept(id)?;
            total += t.elapsed();
            if c.is_finished() {
                break;
            }
        }
    }
    println!(
        "mask + accept: {:.1} us per token over {n} tokens",
        total.as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}
