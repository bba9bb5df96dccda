//! Writes a vocab-only GGUF: every metadata key of a model file, no tensors.
//!
//! This is how tests/fixtures/ggml-vocab-smollm2.gguf was made from
//! SmolLM2-135M-Instruct (see tests/fixtures/README.md):
//!
//! ```text
//! cargo run -p cria-tokenizer --example extract_vocab -- MODEL.gguf OUT.gguf
//! ```

use cria_gguf::{GgufFile, GgufWriter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        return Err("usage: extract_vocab MODEL.gguf OUT.gguf".into());
    };
    let f = GgufFile::open(input)?;
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata().iter() {
        // Alignment only matters for tensor data, which we do not copy.
        if k != "general.alignment" {
            w.add_metadata(k, v.clone());
        }
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(output)?);
    let n = w.write_to(&mut out)?;
    eprintln!("wrote {n} bytes of metadata to {output}");
    Ok(())
}
