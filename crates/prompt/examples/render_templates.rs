//! Development check (a script, not a test): renders every `.jinja` file of
//! a folder (llama.cpp's models/templates) for a short and a long
//! conversation and prints one line per template and conversation: the
//! output's length and a hash, or the error. Two builds' outputs compared
//! line by line show what a change to the renderer changed.
//!
//!   cargo run --release -p cria-prompt --example render_templates -- DIR [MESSAGES] [BYTES]
use cria_prompt::{ChatTemplate, Message};
use std::hash::{Hash, Hasher};

/// As in the `cria` binary: the bound on what a render holds needs it.
#[global_allocator]
static ALLOC: cria_prompt::ThreadCounted = cria_prompt::ThreadCounted;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let Some(dir) = a.get(1) else {
        return Err("usage: render_templates DIR [MESSAGES] [BYTES]".into());
    };
    let arg = |i: usize, d: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, bytes) = (arg(2, 400), arg(3, 2048));
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
        .collect();
    files.sort();
    let short = vec![
        Message::new("system", "Be brief."),
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "4"),
        Message::new("user", "And 3+3?"),
    ];
    let mut long = vec![Message::new("system", "Be brief.")];
    for i in 0..n {
        let role = ["user", "assistant"][i % 2];
        long.push(Message::new(role, &format!("{i} {}", "w".repeat(bytes))));
    }
    for f in files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let src = std::fs::read_to_string(&f)?;
        for (which, msgs) in [("short", &short), ("long", &long)] {
            let r = ChatTemplate::new(src.clone(), "<s>".into(), "</s>".into())
                .and_then(|t| t.render(msgs, true));
            match r {
                Ok(out) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    out.hash(&mut h);
                    println!("{name} {which}: {} bytes, {:016x}", out.len(), h.finish());
                }
                Err(e) => {
                    let m = e.full_message();
                    println!("{name} {which}: error {}", &m[..m.len().min(160)]);
                }
            }
        }
    }
    Ok(())
}
