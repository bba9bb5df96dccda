//! cria against llama.cpp token by token: `cria perplexity --kl-divergence`
//! on a base file written by llama-perplexity (tests/fixtures/kld).

mod common;
use common::kld;
use common::*;

#[test]
fn kl_divergence_against_llama_cpp_base_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = kld::unpack_base("tests/fixtures/kld/gpl3-c512-1chunk.kld.gz", dir.path());
    let s = kld::score(&default_model(), &base, &[]);
    let (kld, top, ppl_base) = (s.mean_kld, s.same_top, s.ppl_base);
    eprintln!("mean KLD {kld}, same top {top}%, PPL(base) {ppl_base}");
    assert!(
        (ppl_base - 16.5546).abs() < 1e-3,
        "the base file's own PPL is llama.cpp's 16.5546, read {ppl_base}"
    );
    assert!(kld <= 0.01, "mean KLD {kld} > 0.01");
    assert!(top >= 94.0, "same top token at only {top}% of positions");
}

#[test]
fn a_base_file_from_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("bad.kld");
    // A valid header for a 10-token vocabulary: the default model has 49152.
    let mut b = b"_logits_".to_vec();
    for v in [4i32, 10, 1, 0, 1, 2, 3] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&base, &b).unwrap();
    let o = cria()
        .args(["perplexity", "--kl-divergence", "--kl-divergence-base"])
        .arg(&base)
        .arg("-m")
        .arg(default_model())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
}
