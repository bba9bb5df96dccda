//! `tokenizer.json` (with `tokenizer_config.json` and
//! `generation_config.json`) as GGUF tokenizer metadata.
//!
//! The pre-tokenizer is read from tokenizer.json's own `pre_tokenizer`:
//! its steps (Split regexes, ByteLevel, Digits, Metaspace) are matched
//! against the regexes cria's tokenizer implements, and the matching
//! `tokenizer.ggml.pre` name is written. A regex cria does not implement is
//! an error that quotes it: it is never replaced by a near miss.

use crate::error::{Error, Result};
use crate::json::{self, Obj};
use crate::tokmeta::{self, TokMeta, BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// LLaMA 3's split regex (also Falcon 3, ...): `llama-bpe` in llama.cpp.
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's regex, which `ByteLevel` with `use_regex` applies.
pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// One pre-tokenizer step, flattened out of `Sequence`s.
#[derive(Debug, PartialEq)]
enum Step {
    Regex(String),
    Digits,
    ByteLevel,
    /// Hugging Face's Metaspace: spaces become `▁`, and `▁` goes before
    /// text by `prepend_scheme` ("always", "first"; `None` for "never").
    Metaspace {
        scheme: Option<&'static str>,
    },
}

fn steps(path: &Path, v: &Value, out: &mut Vec<Step>, depth: usize) -> Result<()> {
    let unsupported = |d: String| Err(Error::unsupported(path, d));
    if depth > 8 {
        return unsupported("pre_tokenizer sequences nested more than 8 deep".into());
    }
    let Value::Object(m) = v else {
        return unsupported(format!("pre_tokenizer {}", short(v)));
    };
    let o = Obj::new(path, m.clone());
    match o.str("type")?.as_str() {
        "Sequence" => {
            let Some(Value::Array(list)) = o.get("pretokenizers") else {
                return unsupported(format!("pre_tokenizer {}", short(v)));
            };
            for s in list {
                steps(path, s, out, depth + 1)?;
            }
        }
        "Split" => {
            let pat = o.obj("pattern")?;
            let regex = match (pat.opt_str("Regex")?, pat.opt_str("String")?) {
                (Some(r), _) => r,
                (None, Some(s)) => return unsupported(format!("a Split on the string {s:?}")),
                _ => return unsupported(format!("pre_tokenizer {}", short(v))),
            };
            let behavior = o.opt_str("behavior")?.unwrap_or_default();
            if behavior != "Isolated" || o.opt_bool("invert")? == Some(true) {
                return unsupported(format!(
                    "a Split with behavior {behavior:?} (invert {:?}); cria splits Isolated only",
                    o.opt_bool("invert")?
                ));
            }
            out.push(Step::Regex(regex));
        }
        "ByteLevel" => {
            if o.opt_bool("add_prefix_space")? == Some(true) {
                return unsupported("a ByteLevel pre-tokenizer with add_prefix_space".into());
            }
            if o.opt_bool("use_regex")?.unwrap_or(true) {
                out.push(Step::Regex(GPT2_REGEX.into()));
            }
            out.push(Step::ByteLevel);
        }
        "Digits" => {
            if o.opt_bool("individual_digits")? != Some(true) {
                return unsupported("a Digits pre-tokenizer that keeps digit runs".into());
            }
            out.push(Step::Digits);
        }
        "Metaspace" => {
            if o.opt_str("replacement")?.is_some_and(|r| r != "▁") {
                return unsupported(format!("a Metaspace pre-tokenizer {}", short(v)));
            }
            // Without `split` (tokenizers before 0.19) Metaspace splits on
            // every `▁`, so no merge crosses a word: SentencePiece's BPE
            // (and cria's) merges across them.
            if o.opt_bool("split")? != Some(false) {
                return unsupported(format!(
                    "a Metaspace pre-tokenizer that splits words at \"▁\" ({}); cria's \
                     SentencePiece-style BPE reads `split: false` only",
                    short(v)
                ));
            }
            let scheme = match o.opt_str("prepend_scheme")?.as_deref() {
                Some("never") => None,
                Some("first") => Some("first"),
                Some("always") => Some("always"),
                None if o.opt_bool("add_prefix_space")? == Some(false) => None,
                None => Some("always"),
                Some(other) => return unsupported(format!("a Metaspace prepend_scheme {other:?}")),
            };
            out.push(Step::Metaspace { scheme });
        }
        other => return unsupported(format!("the {other:?} pre-tokenizer")),
    }
    Ok(())
}

fn short(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}

/// The `tokenizer.ggml.pre` name whose matcher implements these steps.
fn pre_name(path: &Path, steps: &[Step], clean_spaces: bool) -> Result<&'static str> {
    let regexes: Vec<&Step> = steps.iter().filter(|s| **s != Step::ByteLevel).collect();
    let is = |s: &Step, r: &str| matches!(s, Step::Regex(x) if x == r);
    match regexes.as_slice() {
        [r] if is(r, LLAMA3_REGEX) => return Ok("llama-bpe"),
        [r] if is(r, GPT2_REGEX) => return Ok("gpt-2"),
        [Step::Digits, r] if is(r, GPT2_REGEX) => {
            return Ok(if clean_spaces { "starcoder" } else { "smollm" })
        }
        _ => {}
    }
    let shown: Vec<String> = regexes
        .iter()
        .map(|s| match s {
            Step::Regex(r) => format!("Split({r:?})"),
            s => format!("{s:?}"),
        })
        .collect();
    Err(Error::unsupported(
        path,
        format!(
            "the pre-tokenizer [{}]; cria implements the LLaMA 3 regex, GPT-2's, and single \
             digits before GPT-2's",
            shown.join(", ")
        ),
    ))
}

/// A special token named in tokenizer_config.json: a string or {content}.
fn token_text(o: &Obj, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The tokenizer of a Hugging Face folder as metadata, padded to `n_vocab`.
pub fn read(dir: &Path, n_vocab: usize) -> Result<TokMeta> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        let hint = if dir.join("tokenizer.model").is_file() {
            "; this folder has only tokenizer.model: save the tokenizer with a fast tokenizer \
             (tokenizer.json)"
        } else {
            ""
        };
        return Err(Error::unsupported(dir, format!("no tokenizer.json{hint}")));
    }
    let tj = json::read_object(&path)?;
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = if cfg_path.is_file() {
        json::read_object(&cfg_path)?
    } else {
        Obj::new(&cfg_path, Default::default())
    };
    let model = tj.obj("model")?;
    let ty = model.opt_str("type")?.unwrap_or_else(|| "BPE".into());
    if ty != "BPE" {
        return Err(Error::unsupported(
            &path,
            format!("a {ty:?} tokenizer model; cria reads BPE"),
        ));
    }
    let byte_fallback = model.opt_bool("byte_fallback")?.unwrap_or(false);

    // Vocabulary: the model's, then added tokens (which may extend it).
    let vocab = model.obj("vocab")?;
    let mut by_id: HashMap<usize, String> = HashMap::new();
    let mut n = 0usize;
    let mut insert = |id: u64, text: &str| -> Result<()> {
        if id as usize >= tokmeta::MAX_TOKENS {
            return Err(Error::bad(
                &path,
                format!("token id {id} for {text:?} is too large"),
            ));
        }
        let id = id as usize;
        match by_id.get(&id) {
            Some(t) if t != text => {
                return Err(Error::bad(
                    &path,
                    format!("id {id} is both {t:?} and {text:?}"),
                ))
            }
            _ => {}
        }
        by_id.insert(id, text.to_string());
        n = n.max(id + 1);
        Ok(())
    };
    for (text, id) in vocab.iter() {
        let Some(id) = id.as_u64() else {
            return Err(Error::bad(
                &path,
                format!("vocab[{text:?}] is not a token id"),
            ));
        };
        insert(id, text)?;
    }
    let mut special = HashMap::new();
    if let Some(Value::Array(added)) = tj.get("added_tokens") {
        for a in added {
            let (Some(id), Some(text)) = (a["id"].as_u64(), a["content"].as_str()) else {
                return Err(Error::bad(&path, format!("added token {}", short(a))));
            };
            insert(id, text)?;
            special.insert(id as usize, a["special"].as_bool().unwrap_or(false));
        }
    }
    let n_tok = n.max(n_vocab);
    if n_tok > tokmeta::MAX_TOKENS {
        return Err(Error::bad(
            &path,
            format!("{n_tok} tokens; at most {} are read", tokmeta::MAX_TOKENS),
        ));
    }
    let mut t = TokMeta::default();
    for i in 0..n {
        match by_id.remove(&i) {
            Some(text) => {
                let ty = match special.get(&i) {
                    Some(true) => CONTROL,
                    Some(false) => USER_DEFINED,
                    None if byte_fallback && is_byte_token(&text) => BYTE,
                    None => NORMAL,
                };
                t.tokens.push(text);
                t.types.push(ty);
            }
            None => {
                t.tokens.push(format!("[PAD{i}]"));
                t.types.push(tokmeta::UNUSED);
            }
        }
    }

    let merges = read_merges(&path, model.get("merges"))?;
    let clean = cfg
        .opt_bool("clean_up_tokenization_spaces")?
        .unwrap_or(false);
    let mut pre_steps = Vec::new();
    if let Some(p) = tj.get("pre_tokenizer") {
        steps(&path, p, &mut pre_steps, 0)?;
    }
    let normalizer = tj.get("normalizer").cloned();
    if byte_fallback {
        t.model = "llama".into();
        let (prefix, scheme) = spm_prefix(&path, normalizer.as_ref(), &pre_steps)?;
        t.add_space_prefix = Some(prefix);
        t.prepend_scheme = scheme;
        t.scores = Some(spm_scores(&t, &merges));
    } else {
        if let Some(nz) = &normalizer {
            return Err(Error::unsupported(
                &path,
                format!("the normalizer {}", short(nz)),
            ));
        }
        if !pre_steps.contains(&Step::ByteLevel) {
            return Err(Error::unsupported(
                &path,
                "a BPE model without byte fallback and without a ByteLevel pre-tokenizer",
            ));
        }
        t.model = "gpt2".into();
        t.pre = Some(pre_name(&path, &pre_steps, clean)?.to_string());
        t.merges = merges
            .into_iter()
            .map(|(a, b)| format!("{a} {b}"))
            .collect();
    }

    // Special ids and flags.
    let id = |t: &TokMeta, text: Option<String>| text.and_then(|s| t.id_of(&s));
    t.bos = id(&t, token_text(&cfg, "bos_token"));
    t.eos = id(&t, token_text(&cfg, "eos_token"));
    t.unk = id(&t, token_text(&cfg, "unk_token"))
        .or_else(|| id(&t, model.opt_str("unk_token").ok().flatten()));
    t.pad = id(&t, token_text(&cfg, "pad_token"));
    if let Some(u) = t.unk {
        if t.model == "llama" {
            t.types[u as usize] = UNKNOWN;
        }
    }
    let (tp_bos, tp_eos) = template_flags(tj.get("post_processor"));
    t.add_bos = cfg.opt_bool("add_bos_token")?.or(tp_bos);
    t.add_eos = cfg.opt_bool("add_eos_token")?.or(tp_eos);
    generation_ids(dir, &mut t)?;
    t.chat_template = chat_template(dir, &cfg)?;
    t.pad_to(n_tok);
    Ok(t)
}

fn is_byte_token(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && s.starts_with("<0x")
        && s.ends_with('>')
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// Merges as (left, right) pairs, from `"a b"` strings or `["a", "b"]`.
fn read_merges(path: &Path, v: Option<&Value>) -> Result<Vec<(String, String)>> {
    let Some(Value::Array(list)) = v else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let pair = match m {
            Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) if !a.contains(' ') => Some((a.to_string(), b.to_string())),
                _ => None,
            },
            _ => None,
        };
        match pair {
            Some(p) => out.push(p),
            None => {
                return Err(Error::bad(
                    path,
                    format!(
                        "merge #{i} {} is neither \"a b\" nor [\"a\", \"b\"]",
                        short(m)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// SentencePiece merges by the score of the merged piece; Hugging Face
/// lists merges in that order, so a piece's score is minus the rank of
/// the first merge that makes it. Multi-character pieces no merge makes
/// are never merged into.
fn spm_scores(t: &TokMeta, merges: &[(String, String)]) -> Vec<f32> {
    let mut first: HashMap<String, usize> = HashMap::with_capacity(merges.len());
    for (r, (a, b)) in merges.iter().enumerate() {
        first.entry(format!("{a}{b}")).or_insert(r);
    }
    t.tokens
        .iter()
        .zip(&t.types)
        .map(|(s, &ty)| match first.get(s) {
            Some(&r) => -(r as f32),
            None if ty == NORMAL && s.chars().count() > 1 => -1e9,
            None => 0.0,
        })
        .collect()
}

/// Whether a SentencePiece-style tokenizer.json puts `▁` before the text,
/// and where (`Some` Metaspace scheme; `None` for the Prepend normalizer,
/// which is llama.cpp's dummy prefix).
fn spm_prefix(
    path: &Path,
    normalizer: Option<&Value>,
    steps: &[Step],
) -> Result<(bool, Option<&'static str>)> {
    match steps.first() {
        Some(Step::Metaspace { scheme }) if steps.len() == 1 => {
            if let Some(nz) = normalizer {
                return Err(Error::unsupported(
                    path,
                    format!(
                        "a normalizer before a Metaspace pre-tokenizer {}",
                        short(nz)
                    ),
                ));
            }
            return Ok((scheme.is_some(), *scheme));
        }
        Some(s) => {
            return Err(Error::unsupported(
                path,
                format!("a byte-fallback BPE with the pre-tokenizer step {s:?}"),
            ))
        }
        None => {}
    }
    let Some(nz) = normalizer else {
        return Ok((false, None));
    };
    // Llama 2's: Sequence[Prepend("▁"), Replace(" " -> "▁")].
    let list = match nz.get("type").and_then(Value::as_str) {
        Some("Sequence") => nz["normalizers"].as_array().cloned().unwrap_or_default(),
        _ => vec![nz.clone()],
    };
    let mut prefix = false;
    for n in &list {
        match n.get("type").and_then(Value::as_str) {
            Some("Prepend") if n["prepend"] == "▁" => prefix = true,
            Some("Replace") if n["pattern"]["String"] == " " && n["content"] == "▁" => {}
            _ => {
                return Err(Error::unsupported(
                    path,
                    format!("the normalizer {}", short(n)),
                ))
            }
        }
    }
    Ok((prefix, None))
}

/// add_bos / add_eos implied by a TemplateProcessing post-processor.
fn template_flags(pp: Option<&Value>) -> (Option<bool>, Option<bool>) {
    let Some(pp) = pp else { return (None, None) };
    let tp = match pp.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => pp,
        Some("Sequence") => match pp["processors"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["type"] == "TemplateProcessing"))
        {
            Some(p) => p,
            None => return (None, None),
        },
        _ => return (None, None),
    };
    let Some(single) = tp["single"].as_array() else {
        return (None, None);
    };
    let is_special = |v: Option<&Value>| v.is_some_and(|x| x.get("SpecialToken").is_some());
    (
        Some(is_special(single.first())),
        Some(is_special(single.last())),
    )
}

/// generation_config.json's eos ids: the first is the eos when
/// tokenizer_config.json names none; `<|eot_id|>` and `<|eom_id|>` among
/// them become the end-of-turn and end-of-message ids.
fn generation_ids(dir: &Path, t: &mut TokMeta) -> Result<()> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(());
    }
    let g = json::read_object(&path)?;
    let ids: Vec<u32> = match g.get("eos_token_id") {
        None => Vec::new(),
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        Some(v) => {
            return Err(Error::bad(
                &path,
                format!("eos_token_id should be an id or a list, found {}", short(v)),
            ))
        }
    };
    for &id in &ids {
        match t.tokens.get(id as usize).map(String::as_str) {
            None => {
                return Err(Error::bad(
                    &path,
                    format!("eos_token_id {id} is not in the vocabulary"),
                ))
            }
            Some("<|eot_id|>") => t.eot = Some(id),
            Some("<|eom_id|>") => t.eom = Some(id),
            _ => {}
        }
    }
    if t.eos.is_none() {
        t.eos = ids.first().copied();
    }
    if t.bos.is_none() {
        if let Some(b) = g.opt_i64("bos_token_id")? {
            t.bos = u32::try_from(b)
                .ok()
                .filter(|&b| (b as usize) < t.tokens.len());
        }
    }
    Ok(())
}

/// tokenizer_config.json's chat_template (a string, or a list of named
/// templates of which "default" is taken), or chat_template.jinja.
fn chat_template(dir: &Path, cfg: &Obj) -> Result<Option<String>> {
    match cfg.get("chat_template") {
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let pick = list
                .iter()
                .find(|t| t["name"] == "default")
                .or(list.first())
                .and_then(|t| t["template"].as_str());
            return Ok(pick.map(str::to_string));
        }
        _ => {}
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let s = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
        return Ok(Some(s));
    }
    Ok(None)
}
