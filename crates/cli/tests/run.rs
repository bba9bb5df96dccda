//! `cria run` and `cria chat` end to end on the default model.

mod common;
use common::*;

fn run(args: &[&str]) -> std::process::Output {
    cria()
        .arg("run")
        .args(["-m"])
        .arg(default_model())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn raw_greedy_continues_like_llama_cpp() {
    // llama-completion --temp 0 -no-cnv -p "1, 2, 3, 4, 5," gives
    // " 6, 7, 8, 9, 10, ..." (tests/fixtures/greedy; a clear margin at every
    // step, so no near-tie can flip it).
    let o = run(&["--raw", "--temp", "0", "-n", "9", "-q", "1, 2, 3, 4, 5,"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), " 6, 7, 8,\n");
    assert!(stderr(&o).is_empty(), "--quiet printed {:?}", stderr(&o));
}

#[test]
fn chat_prompt_and_summary() {
    let o = run(&["--temp", "0", "-n", "16", "What is the capital of France?"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim().len() > 10, "{}", stdout(&o));
    // The default system prompt of the template plus the question: 37 tokens.
    // The greedy answer may end before the limit: its first token is a near
    // tie ("The" vs "L", 0.05 apart in the logits), so float rounding in
    // attention decides how long it is, not this test.
    let err = stderr(&o);
    let stopped = (1..16).any(|n| err.contains(&format!("generated {n} tokens")))
        && err.contains("end of text");
    assert!(
        err.contains("prompt 37 tokens")
            && (err.contains("generated 16 tokens") || stopped)
            && err.contains("t/s"),
        "{err}"
    );
}

#[test]
fn same_seed_same_text_whatever_the_threads() {
    let a = run(&[
        "--seed",
        "7",
        "-n",
        "24",
        "-q",
        "-t",
        "1",
        "Tell me a story about a cat.",
    ]);
    let b = run(&[
        "--seed",
        "7",
        "-n",
        "24",
        "-q",
        "-t",
        "2",
        "Tell me a story about a cat.",
    ]);
    assert!(a.status.success() && b.status.success());
    assert_eq!(stdout(&a), stdout(&b));
    assert!(stdout(&a).len() > 20);
}

#[test]
fn stop_strings_end_the_text() {
    let o = run(&[
        "--raw",
        "--temp",
        "0",
        "-n",
        "32",
        "-q",
        "--stop",
        " 9,",
        "1, 2, 3, 4, 5,",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The stop string spans several tokens and is not printed.
    assert_eq!(stdout(&o), " 6, 7, 8,\n");
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let long = "word ".repeat(100);
    let o = run(&["--raw", "-c", "32", &long]);
    assert_clean_error(&o, "the context holds 32");
    assert!(
        stderr(&o).contains("100 tokens") || stderr(&o).contains("101 tokens"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_arguments_are_errors() {
    assert_clean_error(&run(&["--top-p", "2", "hi"]), "top_p");
    assert_clean_error(&run(&["--logit-bias", "abc", "hi"]), "logit-bias");
    let o = cria()
        .args(["run", "-m"])
        .arg(fixture(
            "crates/tokenizer/tests/fixtures/ggml-vocab-llama-spm.gguf",
        ))
        .arg("hi")
        .output()
        .unwrap();
    assert_clean_error(&o, "token_embd.weight");
}

#[test]
fn chat_keeps_the_conversation() {
    use std::io::Write;
    let mut child = cria()
        .args(["chat", "--temp", "0", "-n", "24", "-v", "-m"])
        .arg(default_model())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hi, I am Ana.\nWhat is my name?\n/exit\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines().filter(|l| !l.trim().is_empty()).count() >= 2,
        "two answers: {out}"
    );
    // The second turn reuses the first turn's cache.
    let err = stderr(&o);
    let second = err
        .lines()
        .filter(|l| l.starts_with("[prompt"))
        .nth(1)
        .unwrap();
    assert!(!second.contains("(0 cached)"), "{err}");
}

/// A model without `tokenizer.chat_template`: chat-style `run` (and `chat`)
/// refuse with one clear line that names both ways out; `--raw` still runs.
#[test]
fn model_without_chat_template_is_a_clear_error() {
    use cria_gguf::{GgufFile, GgufWriter};
    let src = GgufFile::open(common::default_model()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata().iter() {
        if k != "tokenizer.chat_template" {
            w.add_metadata(k, v.clone());
        }
    }
    for t in src.tensors() {
        w.add_tensor(&t.name, t.ty, &t.dims, src.tensor_data(t))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-template.gguf");
    let mut f = std::fs::File::create(&path).unwrap();
    w.write_to(&mut f).unwrap();
    drop(f);
    let m = path.to_str().unwrap();
    for cmd in [
        &["run", "-m", m, "-n", "4", "Hello"][..],
        &["chat", "-m", m][..],
    ] {
        let o = cria().args(cmd).output().unwrap();
        common::assert_clean_error(&o, "no chat template");
        assert!(
            common::stderr(&o).contains("--chat-template FILE"),
            "{}",
            common::stderr(&o)
        );
    }
    let o = cria()
        .args(["run", "-m", m, "--raw", "-n", "4", "Hello"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
}
