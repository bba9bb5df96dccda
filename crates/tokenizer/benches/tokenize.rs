//! Tokenizing about 1 MB of English with each fixture vocabulary.
//!
//! The text is the licence texts in /usr/share/common-licenses repeated to
//! 1 MB when present, else a built-in paragraph repeated; the side-by-side
//! comparison with llama-tokenize is in the crate's examples/tokenize_file.rs.

use cria_gguf::GgufFile;
use cria_tokenizer::Tokenizer;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;

fn english_1mb() -> String {
    let mut text = String::new();
    if let Ok(dir) = std::fs::read_dir("/usr/share/common-licenses") {
        let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if let Ok(s) = std::fs::read_to_string(&p) {
                text.push_str(&s);
            }
        }
    }
    if text.is_empty() {
        text = "The quick brown fox jumps over the lazy dog. It's 2024; we've seen \
                 1,234 foxes, and they're quicker than ever!\n"
            .to_string();
    }
    let mut out = String::with_capacity(1 << 20);
    while out.len() < 1 << 20 {
        out.push_str(&text);
    }
    out.truncate(out.floor_char_boundary_compat(1 << 20));
    out
}

trait FloorCompat {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCompat for String {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

fn bench(c: &mut Criterion) {
    let text = english_1mb();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut g = c.benchmark_group("encode_1mb");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    for name in [
        "ggml-vocab-smollm2.gguf",
        "ggml-vocab-llama-bpe.gguf",
        "ggml-vocab-llama-spm.gguf",
    ] {
        let Ok(f) = GgufFile::open(dir.join(name)) else {
            continue;
        };
        let Ok(tok) = Tokenizer::from_gguf(f.metadata()) else {
            continue;
        };
        g.bench_function(name, |b| b.iter(|| tok.encode(&text, false, false)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
