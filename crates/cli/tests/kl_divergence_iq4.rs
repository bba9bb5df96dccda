//! IQ4_NL and IQ4_XS end to end against llama.cpp: the default model
//! requantized by `cria quantize` (the same bytes as llama-quantize's, see
//! quantize.rs) and scored against llama-perplexity's log-probabilities for
//! llama-quantize's file (tests/fixtures/kld/README.md).

mod common;
use common::kld;
use common::*;

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
    let base = kld::unpack_base(base_gz, dir.path());
    let s = kld::score(&q, &base, &[]);
    let (kld, top) = (s.mean_kld, s.same_top);
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
