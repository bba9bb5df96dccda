//! IQ4_NL and IQ4_XS end to end against llama.cpp: the default model
//! requantized by `cria quantize` (the same bytes as llama-quantize's, see
//! quantize.rs) and scored against llama-perplexity's log-probabilities for
//! llama-quantize's file (tests/fixtures/kld/README.md).

mod common;
use common::*;
use std::io::Read;

fn value_after(out: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"));
    let rest = line[label.len()..].trim_start_matches([' ', ':']);
    rest.split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap()
}

fn check(ty: &str, base_gz: &str) {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.gguf");
    let o = cria()
        .arg("quantize")
        .arg(default_model())
        .arg(&q)
        .args([ty, "--allow-requantize", "-t", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(fixture(base_gz)).unwrap());
    let mut bytes = Vec::new();
    gz.read_to_end(&mut bytes).unwrap();
    let base = dir.path().join("base.kld");
    std::fs::write(&base, bytes).unwrap();
    let o = cria()
        .args(["perplexity", "--kl-divergence", "--kl-divergence-base"])
        .arg(&base)
        .arg("-m")
        .arg(&q)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{}\n{out}", stderr(&o));
    let kld = value_after(&out, "Mean    KLD");
    let top = value_after(&out, "Same top p");
    eprintln!("{ty}: mean KLD {kld}, same top {top}%");
    assert!(kld <= 0.01, "{ty}: mean KLD {kld} > 0.01");
    assert!(
        top >= 94.0,
        "{ty}: same top token at only {top}% of positions"
    );
}

#[test]
fn iq4_xs_against_llama_cpp() {
    check(
        "IQ4_XS",
        "tests/fixtures/kld/gpl3-c512-1chunk-iq4_xs.kld.gz",
    );
}
