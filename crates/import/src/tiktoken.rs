//! LLaMA 3's `tokenizer.model`: tiktoken text, one `BASE64 RANK` line per
//! token, ranks 0..n in order. The merges a BPE needs are recovered from
//! the ranks (every split into two tokens, as transformers' TikTokenConverter
//! lists them), and Meta's 256 special tokens follow the ranks.

use crate::hf_tokenizer::LLAMA3_REGEX;
use crate::tokmeta::{byte_to_char, TokMeta, CONTROL, MAX_TOKENS, NORMAL};
use base64::Engine;
use std::collections::HashMap;

type R<T> = std::result::Result<T, String>;

/// Token bytes in rank order.
pub fn parse(text: &str) -> R<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some((b64, rank)) = line.split_once(' ') else {
            return Err(format!("line {}: not \"BASE64 RANK\"", i + 1));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("line {}: {e}", i + 1))?;
        let rank: usize = rank
            .trim()
            .parse()
            .map_err(|_| format!("line {}: rank {rank:?}", i + 1))?;
        if rank != out.len() {
            return Err(format!(
                "line {}: rank {rank} where {} was expected",
                i + 1,
                out.len()
            ));
        }
        if out.len() >= MAX_TOKENS || bytes.is_empty() || bytes.len() > 1024 {
            return Err(format!(
                "line {}: token of {} bytes, or too many tokens",
                i + 1,
                bytes.len()
            ));
        }
        out.push(bytes);
    }
    if out.len() < 256 {
        return Err(format!(
            "{} tokens; a byte-level vocabulary has at least 256",
            out.len()
        ));
    }
    Ok(out)
}

/// Meta's special tokens after the ranks (`llama3_1` for LLaMA 3.1+
/// names; LLaMA 3.0 named the same slots reserved tokens).
pub fn special_tokens(llama3_1: bool) -> Vec<String> {
    let mut s: Vec<String> = if llama3_1 {
        [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>",
            "<|step_id|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eom_id|>",
            "<|eot_id|>",
            "<|python_tag|>",
        ]
        .map(String::from)
        .to_vec()
    } else {
        [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>",
            "<|reserved_special_token_2|>",
            "<|reserved_special_token_3|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|reserved_special_token_4|>",
            "<|eot_id|>",
        ]
        .map(String::from)
        .to_vec()
    };
    let first = if llama3_1 { 2 } else { 5 };
    let n = s.len();
    for i in 0..256 - n {
        s.push(format!("<|reserved_special_token_{}|>", first + i));
    }
    s
}

/// The vocabulary as GGUF metadata (`gpt2` model, `llama-bpe` pre).
pub fn to_meta(tokens: &[Vec<u8>], llama3_1: bool) -> TokMeta {
    let ranks: HashMap<&[u8], usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_slice(), i))
        .collect();
    let table = byte_to_char();
    let text = |b: &[u8]| -> String { b.iter().map(|&x| table[x as usize]).collect() };
    let mut t = TokMeta {
        model: "gpt2".into(),
        pre: Some("llama-bpe".into()),
        add_bos: Some(true),
        add_eos: Some(false),
        ..TokMeta::default()
    };
    for tok in tokens {
        t.tokens.push(text(tok));
        t.types.push(NORMAL);
        // Every split into two tokens, by the ranks of (left, right):
        // BPE applying merges in this order makes what tiktoken makes.
        let mut local: Vec<(usize, usize)> = (1..tok.len())
            .filter_map(|i| Some((*ranks.get(&tok[..i])?, *ranks.get(&tok[i..])?)))
            .collect();
        local.sort_unstable();
        for (l, r) in local {
            t.merges
                .push(format!("{} {}", text(&tokens[l]), text(&tokens[r])));
        }
    }
    let base = tokens.len() as u32;
    for s in special_tokens(llama3_1) {
        t.tokens.push(s);
        t.types.push(CONTROL);
    }
    t.bos = Some(base);
    t.eos = Some(base + 1);
    t.eot = t.id_of("<|eot_id|>");
    t.eom = t.id_of("<|eom_id|>");
    t
}

/// The regex LLaMA 3's tokenizer splits with (what `llama-bpe` implements).
pub const PATTERN: &str = LLAMA3_REGEX;
