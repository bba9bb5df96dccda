//! LoRA adapters (issue 12): cria with an adapter against llama.cpp with
//! the same adapter, the PEFT folder against its GGUF conversion, and
//! broken adapter files. Fixtures: tests/fixtures/lora (README there).

mod common;
use common::kld;
use common::*;
use std::path::Path;

/// (mean KLD, same top %) of cria with these adapters against `base`.
fn kld(base: &Path, adapters: &[&Path]) -> (f64, f64) {
    let mut extra = Vec::new();
    for a in adapters {
        extra.push("--lora");
        extra.push(a.to_str().unwrap());
    }
    let s = kld::score(&default_model(), base, &extra);
    (s.mean_kld, s.same_top)
}

#[test]
fn adapter_matches_llama_cpp_and_peft_matches_its_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let base = kld::unpack_base(
        "tests/fixtures/lora/gpl3-c512-1chunk-lora.kld.gz",
        dir.path(),
    );
    let gguf = fixture("tests/fixtures/lora/adapter-f16.gguf");
    let peft = fixture("tests/fixtures/lora/peft");

    let (k, top) = kld(&base, &[&gguf]);
    eprintln!("GGUF adapter vs llama.cpp: mean KLD {k}, same top {top}%");
    assert!(k <= 0.01, "mean KLD {k} > 0.01");
    assert!(top >= 94.0, "same top token at only {top}%");

    // The PEFT folder holds the same F16 values; only names and the q/k
    // row order differ, so the logits must be the same.
    let (kp, topp) = kld(&base, &[&peft]);
    eprintln!("PEFT folder vs llama.cpp: mean KLD {kp}, same top {topp}%");
    assert_eq!(
        (kp, topp),
        (k, top),
        "the PEFT folder and its GGUF disagree"
    );

    // The adapter matters: without it the distributions are far apart
    // (so the checks above could fail).
    let (k0, top0) = kld(&base, &[]);
    eprintln!("no adapter vs llama.cpp with it: mean KLD {k0}, same top {top0}%");
    assert!(
        k0 > 10.0 * k,
        "without the adapter KLD is {k0}, with it {k}"
    );
}

#[test]
fn broken_adapters_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("tests/fixtures/lora/adapter-f16.gguf")).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00not really").unwrap();
    let bad_peft = dir.path().join("peft");
    std::fs::create_dir(&bad_peft).unwrap();
    std::fs::write(bad_peft.join("adapter_config.json"), br#"{"r": 4}"#).unwrap();
    let cases: [(&Path, &str); 4] = [
        (&truncated, "truncated.gguf"),
        (&garbage, "garbage.gguf"),
        // A model is not an adapter.
        (&default_model(), "not a LoRA adapter"),
        (&bad_peft, "lora_alpha"),
    ];
    for (path, needle) in cases {
        let o = cria()
            .args(["run", "--raw", "-n", "1", "--temp", "0", "-p", "Hi", "-m"])
            .arg(default_model())
            .arg("--lora")
            .arg(path)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{} was accepted", path.display());
        assert_clean_error(&o, needle);
    }
}

#[test]
fn merged_model_matches_the_runtime_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = fixture("tests/fixtures/lora/adapter-f16.gguf");
    // cria's own log-probabilities with the adapter applied at run time.
    let runtime = dir.path().join("runtime.kld");
    let o = cria()
        .args([
            "perplexity",
            "-c",
            "512",
            "--chunks",
            "1",
            "-f",
            "/usr/share/common-licenses/GPL-3",
        ])
        .arg("-m")
        .arg(default_model())
        .arg("--lora")
        .arg(&gguf)
        .arg("--kl-divergence-base")
        .arg(&runtime)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let merged = dir.path().join("merged.gguf");
    let o = cria()
        .args(["merge", "-m"])
        .arg(default_model())
        .arg("--lora")
        .arg(format!("{}:1.0", gguf.display()))
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("into 21 of 272 tensors"),
        "{}",
        stderr(&o)
    );
    let k = kld::score(&merged, &runtime, &[]).mean_kld;
    eprintln!("merged vs runtime adapter: mean KLD {k}");
    assert!(k <= 0.01, "mean KLD {k} > 0.01");
}
