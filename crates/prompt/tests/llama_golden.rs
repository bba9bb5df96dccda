//! Templates render as llama-server renders them (issue 16): llama.cpp's
//! Jinja lets a missing value be added to a string (firefunction-v2's
//! `functions`), and messages carry `reasoning_content`. The golden is
//! llama-server's `/apply-template` (fixtures/README.md says how it was
//! made).

use cria_prompt::{ChatTemplate, Message};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn renders_as_llama_server() {
    let t = ChatTemplate::new(
        fixture("llama-concat.jinja"),
        "<|im_start|>".into(),
        "".into(),
    )
    .expect("the template loads");
    let mut assistant = Message::new("assistant", "Done.");
    assistant.reasoning_content = Some("Look first.".into());
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "Fix it"),
        assistant,
        Message::new("user", "Thanks"),
    ];
    let out = t.render(&messages, true).expect("renders");
    // Today's date as cria gives it to templates (its format is checked
    // in lib.rs's tests).
    let today = ChatTemplate::new("{{ datetime }}".into(), "".into(), "".into())
        .and_then(|t| t.render(&[], false))
        .expect("renders the date");
    let want = fixture("llama-concat.golden.txt").replace("{DATETIME}", &today);
    assert_eq!(out, want);
}

#[test]
fn a_string_plus_a_number_is_still_an_error() {
    let t = ChatTemplate::new("{{ 'a' + 1 }}".into(), "".into(), "".into()).expect("loads");
    let e = t.render(&[], false).expect_err("'a' + 1 must fail");
    assert!(e.full_message().contains("+"), "{}", e.full_message());
}
