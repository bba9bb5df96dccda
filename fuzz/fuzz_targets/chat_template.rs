//! Any bytes as a chat template: loading and rendering give a prompt or an
//! error within the bounds, never a panic or a hang.
#![no_main]

use cria_prompt::{ChatTemplate, Limits, Message};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

/// As in the `cria` binary: the bound on what a render holds needs it.
#[global_allocator]
static ALLOC: cria_prompt::ThreadCounted = cria_prompt::ThreadCounted;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data).into_owned();
    let limits = Limits {
        fuel: 200_000,
        output_base: 64 << 10,
        time: Duration::from_secs(5),
        ..Limits::default()
    };
    let Ok(t) = ChatTemplate::with_limits(src, "<s>".into(), "</s>".into(), limits) else {
        return;
    };
    let msgs = [
        Message::new("system", "Be brief."),
        Message::new("user", "What is {{ 2 + 2 }}?"),
        Message::new("assistant", "4"),
    ];
    for add in [false, true] {
        if let Ok(out) = t.render(&msgs, add) {
            assert!(out.len() <= (64 << 10) + 4 * 40);
        }
    }
});
