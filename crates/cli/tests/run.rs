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
    // llama-completion --temp 0 -no-cnv -p "The quick brown fox" -n 8
    let o = run(&[
        "--raw",
        "--temp",
        "0",
        "-n",
        "8",
        "-q",
        "The quick brown fox",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // llama.cpp's first 8 greedy ids (tests/fixtures/greedy) decode to this text.
    assert_eq!(stdout(&o), " with a quick brown bear.\n\n\n");
    assert!(stderr(&o).is_empty(), "--quiet printed {:?}", stderr(&o));
}

#[test]
fn chat_prompt_and_summary() {
    let o = run(&["--temp", "0", "-n", "16", "What is the capital of France?"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Paris"), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("prompt 37 tokens") && err.contains("generated") && err.contains("t/s"),
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
        "brown bear",
        "The quick brown fox",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), " with a quick \n");
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
        .write_all(b"What is the capital of France?\nWhat is the capital of Italy?\n/exit\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Paris") && out.contains("Rome"), "{out}");
    // The second turn reuses the first turn's cache.
    let err = stderr(&o);
    let second = err
        .lines()
        .filter(|l| l.starts_with("[prompt"))
        .nth(1)
        .unwrap();
    assert!(!second.contains("(0 cached)"), "{err}");
}
