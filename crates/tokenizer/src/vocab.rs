//! The vocabulary as llama.cpp's `llama_vocab::impl::load` builds it from
//! `tokenizer.*` metadata: token texts, scores, attributes, special ids, the
//! end-of-generation set and the list of special tokens to find in text.

use crate::error::{ErrorKind, Result};
use crate::fxhash::FxHashMap;
use cria_gguf::{Array, Metadata, Value};

// Token attributes, llama.cpp's `llama_token_attr` bits.
pub(crate) const ATTR_UNKNOWN: u16 = 1 << 0;
pub(crate) const ATTR_UNUSED: u16 = 1 << 1;
pub(crate) const ATTR_NORMAL: u16 = 1 << 2;
pub(crate) const ATTR_CONTROL: u16 = 1 << 3;
pub(crate) const ATTR_USER_DEFINED: u16 = 1 << 4;
pub(crate) const ATTR_BYTE: u16 = 1 << 5;

/// Which algorithm `tokenizer.ggml.model` selects.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `llama`: SentencePiece BPE over scores, with byte fallback.
    Spm,
    /// `gpt2`: byte-level BPE over ranked merges, after a regex pre-tokenizer.
    Bpe,
}

pub(crate) struct Vocab {
    pub texts: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u16>,
    pub token_to_id: FxHashMap<Box<[u8]>, u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub sep: Option<u32>,
    /// Sorted ascending, for `binary_search`.
    pub eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the
    /// order in which llama.cpp looks for them in text.
    pub special_cache: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// Where the space prefix goes (with `add_space_prefix`).
    pub space_prefix: SpacePrefix,
}

/// Where a SentencePiece-style vocabulary puts `▁` before text, when
/// `add_space_prefix` is set.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SpacePrefix {
    /// llama.cpp's and SentencePiece's dummy prefix (and Hugging Face's
    /// `Prepend("▁")` normalizer): before text at the start of the input
    /// and after every special token.
    Always,
    /// Hugging Face's Metaspace pre-tokenizer, `prepend_scheme: "always"`:
    /// the same places, unless the text there already starts with a space.
    MetaspaceAlways,
    /// Metaspace with `prepend_scheme: "first"`: only before text at the
    /// very start of the input, unless it starts with a space.
    MetaspaceFirst,
}

/// The GGUF key (cria's own; llama.cpp knows only `add_space_prefix`) that
/// selects a Metaspace [`SpacePrefix`]: `"always"` or `"first"`. Absent,
/// the prefix is llama.cpp's.
pub const PREPEND_SCHEME_KEY: &str = "tokenizer.cria.prepend_scheme";

/// Flags that depend on the model kind and pre-tokenizer, set by the caller.
pub(crate) struct Defaults {
    pub kind: ModelKind,
    pub add_bos: bool,
}

/// End-of-turn texts, in our order of preference. llama.cpp scans a hash map
/// and keeps the first hit, so when a vocabulary holds several of these its
/// pick depends on hash order; we take the first in this list instead.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Texts that always end generation (llama.cpp's list for `special_eog_ids`).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Most tokens a vocabulary may have. The largest real ones are ~256 Ki
/// (Gemma 3: 262 144); ids must also fit the u32 arithmetic of the merges.
pub const MAX_TOKENS: usize = 1 << 24;

/// Longest token text, in bytes. Real tokens are under a few hundred bytes
/// (runs of spaces or `=` in code vocabularies); loading and tokenizing are
/// linear in the vocabulary's bytes, this only keeps a file from making
/// every other bound meaningless.
pub const MAX_TOKEN_BYTES: usize = 1 << 16;

fn bad(detail: impl Into<String>) -> crate::Error {
    ErrorKind::BadVocab {
        detail: detail.into(),
    }
    .into()
}

impl Vocab {
    pub fn load(md: &Metadata, d: Defaults) -> Result<Vocab> {
        let tokens = md.get_str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 || n > MAX_TOKENS {
            return Err(bad(format!(
                "tokenizer.ggml.tokens has {n} entries; a vocabulary has 1 to {MAX_TOKENS}"
            )));
        }
        if let Some((i, t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > MAX_TOKEN_BYTES)
        {
            return Err(bad(format!(
                "token {i} is {} bytes long; tokens may have at most {MAX_TOKEN_BYTES}",
                t.len()
            )));
        }

        let scores = match md.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(Value::Array(Array::F32(v))) if v.len() >= n => v[..n].to_vec(),
            Some(Value::Array(Array::I32(v))) if v.len() >= n => {
                v[..n].iter().map(|&x| x as f32).collect()
            }
            Some(v) => {
                return Err(bad(format!(
                    "tokenizer.ggml.scores must be an array of at least {n} f32 or i32, found {}",
                    v.type_description()
                )))
            }
        };

        let mut attrs = vec![ATTR_NORMAL; n];
        if md.get("tokenizer.ggml.token_type").is_some() {
            let types = md.get_i32_array("tokenizer.ggml.token_type")?;
            if types.len() < n {
                return Err(bad(format!(
                    "tokenizer.ggml.token_type has {} entries for {n} tokens",
                    types.len()
                )));
            }
            for (a, &t) in attrs.iter_mut().zip(types) {
                *a = match t {
                    1 => ATTR_NORMAL,
                    2 => ATTR_UNKNOWN,
                    3 => ATTR_CONTROL,
                    4 => ATTR_USER_DEFINED,
                    5 => ATTR_UNUSED,
                    6 => ATTR_BYTE,
                    _ => 0,
                };
            }
        }

        let mut texts = Vec::with_capacity(n);
        let mut token_to_id = FxHashMap::default();
        token_to_id.reserve(n);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens so that every text is a key.
            let t = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            };
            // A duplicate text maps to its last id, as in llama.cpp.
            token_to_id.insert(t.as_bytes().into(), i as u32);
            texts.push(t);
        }

        let spm = d.kind == ModelKind::Spm;
        let in_range = |id: u32| ((id as usize) < n).then_some(id);
        let mut v = Vocab {
            texts,
            scores,
            attrs,
            token_to_id,
            bos: in_range(if spm { 1 } else { 11 }),
            eos: in_range(if spm { 2 } else { 11 }),
            eot: None,
            eom: None,
            unk: if spm { in_range(0) } else { None },
            pad: None,
            sep: None,
            eog: Vec::new(),
            special_cache: Vec::new(),
            add_bos: d.add_bos,
            add_eos: false,
            add_space_prefix: spm,
            space_prefix: SpacePrefix::Always,
        };
        if let Some(b) = md.try_bool("tokenizer.ggml.add_space_prefix")? {
            v.add_space_prefix = b;
        }
        v.space_prefix = match md.try_str(PREPEND_SCHEME_KEY)? {
            None => SpacePrefix::Always,
            Some("always") => SpacePrefix::MetaspaceAlways,
            Some("first") => SpacePrefix::MetaspaceFirst,
            Some(other) => {
                return Err(bad(format!(
                    "{PREPEND_SCHEME_KEY} is {other:?}; it is \"always\" or \"first\" \
                     (or absent, for llama.cpp's dummy prefix)"
                )))
            }
        };

        // An id key past the vocabulary is ignored (llama.cpp warns and
        // keeps the default).
        let id_key = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            Ok(match md.try_u32(key)? {
                Some(id) if (id as usize) < n => Some(id),
                _ => default,
            })
        };
        v.bos = id_key("tokenizer.ggml.bos_token_id", v.bos)?;
        v.eos = id_key("tokenizer.ggml.eos_token_id", v.eos)?;
        v.eot = id_key("tokenizer.ggml.eot_token_id", None)?;
        v.eom = id_key("tokenizer.ggml.eom_token_id", None)?;
        v.unk = id_key("tokenizer.ggml.unknown_token_id", v.unk)?;
        v.sep = id_key("tokenizer.ggml.seperator_token_id", None)?;
        v.pad = id_key("tokenizer.ggml.padding_token_id", None)?;
        let fim_pad = id_key("tokenizer.ggml.fim_pad_token_id", None)?;
        let fim_rep = id_key("tokenizer.ggml.fim_rep_token_id", None)?;
        let fim_sep = id_key("tokenizer.ggml.fim_sep_token_id", None)?;

        if let Some(b) = md.try_bool("tokenizer.ggml.add_bos_token")? {
            v.add_bos = b;
        }
        if let Some(b) = md.try_bool("tokenizer.ggml.add_eos_token")? {
            v.add_eos = b;
        }

        // Tokens recognised by their text; llama.cpp forces them to control.
        if v.eot.is_none() {
            v.eot = v.find_any(EOT_TEXTS);
        }
        if v.eom.is_none() {
            v.eom = v.find_any(&["<|eom_id|>"]);
        }
        let fim_pad = fim_pad.or_else(|| v.find_any(FIM_PAD_TEXTS));
        let fim_rep = fim_rep.or_else(|| v.find_any(FIM_REP_TEXTS));
        let fim_sep = fim_sep.or_else(|| v.find_any(FIM_SEP_TEXTS));
        for id in [v.eot, v.eom, fim_pad, fim_rep, fim_sep]
            .into_iter()
            .flatten()
        {
            v.attrs[id as usize] |= ATTR_CONTROL;
        }

        // Control tokens named "unused" are unused.
        for (t, a) in v.texts.iter().zip(v.attrs.iter_mut()) {
            if *a & ATTR_CONTROL != 0 && t.contains("unused") {
                *a |= ATTR_UNUSED;
            }
        }

        let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for t in EOG_TEXTS {
            if let Some(&id) = v.token_to_id.get(t.as_bytes()) {
                eog.push(id);
                v.attrs[id as usize] |= ATTR_CONTROL;
            }
        }
        eog.extend([v.eos, v.eot, v.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();
        v.eog = eog;
        v.drop_end_if_harmony();

        // gpt-oss: these always render, as user-defined tokens.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = v.token_to_id.get(t.as_bytes()) {
                v.attrs[id as usize] = ATTR_USER_DEFINED;
            }
        }

        let special = ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN;
        let mut cache: Vec<u32> = (0..n as u32)
            .filter(|&i| v.attrs[i as usize] & special != 0)
            .collect();
        // Stable, so equal lengths keep id order (llama.cpp's sort is not
        // stable; ties only matter for overlapping specials of equal length).
        cache.sort_by_key(|&i| std::cmp::Reverse(v.texts[i as usize].len()));
        v.special_cache = cache;
        Ok(v)
    }

    fn find_any(&self, texts: &[&str]) -> Option<u32> {
        texts
            .iter()
            .find_map(|t| self.token_to_id.get(t.as_bytes()).copied())
    }

    /// o200k_harmony and solar-open: `<|end|>` ends a message, not the
    /// generation, when the vocabulary also has `<|return|>`/`<|call|>`.
    fn drop_end_if_harmony(&mut self) {
        let has = |v: &Vocab, t: &str| v.eog.iter().any(|&id| v.texts[id as usize] == t);
        let end = self
            .eog
            .iter()
            .copied()
            .find(|&id| self.texts[id as usize] == "<|end|>");
        let call = has(self, "<|call|>") || has(self, "<|calls|>");
        if let Some(end) = end {
            if call && (has(self, "<|return|>") || has(self, "<|flush|>")) {
                self.eog.retain(|&id| id != end);
                self.attrs[end as usize] = ATTR_USER_DEFINED;
            }
        }
    }

    pub fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    #[inline]
    pub fn lookup(&self, text: &[u8]) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }
}
