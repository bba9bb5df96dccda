//! The model cache, the Ollama habit: `cria add` references a file in
//! place, `cria list` shows it, `-m NAME` finds it, `cria rm` removes the
//! entry and never the file it points to.

mod common;

use common::{cria, default_model, stderr, stdout};

#[test]
fn add_list_resolve_and_rm_without_copying() {
    let model = default_model();
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        cria()
            .env("CRIA_MODELS_DIR", cache.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["list"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("no cached models"),
        "{}",
        stderr(&out)
    );

    let out = cria()
        .env("CRIA_MODELS_DIR", cache.path())
        .args(["add", "--name", "smol-instruct"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let link = cache.path().join("smol-instruct.gguf");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "the model was copied, not linked"
    );

    let out = run(&["list"]);
    let table = stdout(&out);
    assert!(table.contains("smol-instruct"), "{table}");
    assert!(table.contains("Q4_1"), "{table}");
    assert!(table.contains("94 MB"), "{table}");
    assert!(table.contains(&model.display().to_string()), "{table}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&run(&["list", "--json"]))).unwrap();
    assert_eq!(json[0]["name"], "smol-instruct");
    assert_eq!(json[0]["size"], 98_362_432);
    assert_eq!(json[0]["linked"], true);

    // -m by full name, by a prefix, and with .gguf.
    for name in ["smol-instruct", "smol", "SMOL-INSTRUCT.gguf"] {
        let out = run(&["tokenize", "-m", name, "--ids", "Hello"]);
        assert!(out.status.success(), "-m {name}: {}", stderr(&out));
    }
    let out = run(&["inspect", "-m", "nothing-like-it"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no cached model of that name"),
        "{}",
        stderr(&out)
    );

    // Two entries sharing a prefix: the prefix is ambiguous, full names work.
    let out = cria()
        .env("CRIA_MODELS_DIR", cache.path())
        .args(["add", "--name", "smol-other"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["tokenize", "-m", "smol", "Hello"]);
    assert!(
        stderr(&out).contains("several cached models"),
        "{}",
        stderr(&out)
    );
    let out = run(&["add", "--name", "smol-other", "/dev/null"]);
    assert!(!out.status.success());

    // rm takes exact names, removes the link, keeps the file.
    assert!(!run(&["rm", "smol"]).status.success());
    let out = run(&["rm", "smol-instruct"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("untouched"), "{}", stdout(&out));
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert!(model.exists(), "rm deleted the model file itself");
    assert!(!stdout(&run(&["list"])).contains("smol-instruct"));
}
