//! Training data: JSONL files, one record a line, of three kinds:
//!
//! - `{"messages": [{"role": "...", "content": "..."}, ...]}`: a chat,
//!   rendered through the model's own chat template; loss on the tokens
//!   of assistant turns only (their text and end-of-turn marker).
//! - `{"prompt": "...", "completion": "..."}`: plain text; loss on the
//!   completion and the end-of-sequence token after it.
//! - `{"text": "..."}`: plain text; loss on every token. A text longer than
//!   the context is cut into consecutive windows of the context length
//!   (each a sequence of its own); a chat or a pair that does not fit is an
//!   error giving both lengths.
//!
//! Blank lines are skipped; anything else that is not one of these records
//! is an error naming the file, the line and what is wrong.

use crate::error::{io, ErrorKind, Result};
use cria_prompt::{tokenize_prompt, ChatTemplate, Message};
use cria_tokenizer::Tokenizer;
use serde_json::Value;
use std::path::Path;

/// One training sequence: tokens and which of them are targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub mask: Vec<bool>,
}

impl Example {
    pub fn n_targets(&self) -> usize {
        self.mask.iter().skip(1).filter(|&&m| m).count()
    }
}

/// Reads and tokenizes a JSONL file. `template` is needed only for chat
/// records (an `Err` says why the model has none usable: a chat record is
/// then an error quoting it).
pub fn load(
    path: &Path,
    tok: &Tokenizer,
    template: std::result::Result<&ChatTemplate, &str>,
    n_ctx: usize,
) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(io("cannot read data file", path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |detail: String| ErrorKind::BadRecord {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let examples = record(&v, tok, template, n_ctx).map_err(bad)?;
        out.extend(examples);
    }
    if out.iter().all(|e| e.n_targets() == 0) {
        return Err(ErrorKind::BadData {
            path: path.to_path_buf(),
            detail: "no record has a token to train on (the file is empty, or every record is too short)".into(),
        }
        .into());
    }
    Ok(out)
}

fn str_field<'v>(v: &'v Value, key: &str) -> std::result::Result<&'v str, String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("\"{key}\" must be a string, not {}", kind(other))),
        None => Err(format!("missing \"{key}\"")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn enc(tok: &Tokenizer, s: &str, bos: bool) -> std::result::Result<Vec<u32>, String> {
    tok.encode(s, bos && tok.add_bos(), false)
        .map_err(|e| format!("cannot tokenize: {e}"))
}

fn fits(len: usize, n_ctx: usize, what: &str) -> std::result::Result<(), String> {
    if len > n_ctx {
        return Err(format!(
            "the {what} is {len} tokens, longer than the context of {n_ctx}: raise --ctx-size or shorten the record"
        ));
    }
    Ok(())
}

/// One record to its sequences (or what is wrong with it).
pub fn record(
    v: &Value,
    tok: &Tokenizer,
    template: std::result::Result<&ChatTemplate, &str>,
    n_ctx: usize,
) -> std::result::Result<Vec<Example>, String> {
    let Value::Object(obj) = v else {
        return Err(format!("a record must be a JSON object, not {}", kind(v)));
    };
    if obj.contains_key("messages") {
        return chat(v, tok, template, n_ctx).map(|e| vec![e]);
    }
    if obj.contains_key("prompt") || obj.contains_key("completion") {
        let p = str_field(v, "prompt")?;
        let c = str_field(v, "completion")?;
        let mut tokens = enc(tok, p, true)?;
        let n_prompt = tokens.len();
        tokens.extend(enc(tok, c, false)?);
        if let Some(eos) = tok.eos() {
            tokens.push(eos);
        }
        if tokens.len() == n_prompt {
            return Err("\"completion\" is empty".into());
        }
        fits(tokens.len(), n_ctx, "prompt and completion")?;
        let mask = (0..tokens.len()).map(|i| i >= n_prompt).collect();
        return Ok(vec![Example { tokens, mask }]);
    }
    if obj.contains_key("text") {
        let t = str_field(v, "text")?;
        let tokens = enc(tok, t, true)?;
        if tokens.len() < 2 {
            return Err("\"text\" is too short to train on (fewer than 2 tokens)".into());
        }
        return Ok(tokens
            .chunks(n_ctx)
            .filter(|c| c.len() >= 2)
            .map(|c| Example {
                tokens: c.to_vec(),
                mask: vec![true; c.len()],
            })
            .collect());
    }
    Err(format!(
        "unknown record: expected \"messages\", \"prompt\" + \"completion\", or \"text\"; found keys {:?}",
        obj.keys().collect::<Vec<_>>()
    ))
}

fn chat(
    v: &Value,
    tok: &Tokenizer,
    template: std::result::Result<&ChatTemplate, &str>,
    n_ctx: usize,
) -> std::result::Result<Example, String> {
    let Some(Value::Array(items)) = v.get("messages") else {
        return Err("\"messages\" must be an array".into());
    };
    let mut msgs = Vec::new();
    for (j, m) in items.iter().enumerate() {
        let role = str_field(m, "role").map_err(|e| format!("messages[{j}]: {e}"))?;
        let content = str_field(m, "content").map_err(|e| format!("messages[{j}]: {e}"))?;
        if !["system", "user", "assistant"].contains(&role) {
            return Err(format!(
                "messages[{j}]: role {role:?} is not system, user or assistant"
            ));
        }
        msgs.push(Message::new(role, content));
    }
    if !msgs.iter().any(|m| m.role == "assistant") {
        return Err("no assistant message: nothing to train on".into());
    }
    let template =
        template.map_err(|e| format!("a chat record needs the model's chat template: {e}"))?;
    let render = |upto: usize, gen: bool| -> std::result::Result<Vec<u32>, String> {
        let s = template
            .render(&msgs[..upto], gen)
            .map_err(|e| format!("chat template: {}", e.full_message()))?;
        tokenize_prompt(tok, &s).map_err(|e| e.full_message())
    };
    let tokens = render(msgs.len(), false)?;
    fits(tokens.len(), n_ctx, "rendered chat")?;
    let mut mask = vec![false; tokens.len()];
    for (j, m) in msgs.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = render(j, true)?;
        let through = render(j + 1, false)?;
        let prefix_ok = |p: &[u32]| p.len() <= tokens.len() && tokens[..p.len()] == *p;
        if !prefix_ok(&before) || !prefix_ok(&through) || through.len() < before.len() {
            return Err(format!(
                "messages[{j}]: the chat template does not render the conversation up to this answer as a prefix of the whole, so its tokens cannot be told apart"
            ));
        }
        mask[before.len()..through.len()]
            .iter_mut()
            .for_each(|m| *m = true);
    }
    Ok(Example { tokens, mask })
}
