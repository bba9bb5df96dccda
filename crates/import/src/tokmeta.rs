//! A vocabulary as the `tokenizer.ggml.*` metadata llama.cpp's converter
//! writes, whichever file it came from (tokenizer.json, a SentencePiece
//! tokenizer.model, or tiktoken text).

use cria_gguf::{Array, Value};

/// Token types as GGUF stores them (sentencepiece's numbering).
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;
pub const BYTE: i32 = 6;

/// cria's GGUF key for a Metaspace prefix (`cria_tokenizer::PREPEND_SCHEME_KEY`,
/// which reads it; llama.cpp ignores it and uses its own dummy prefix).
pub const PREPEND_SCHEME_KEY: &str = "tokenizer.cria.prepend_scheme";

/// Most tokens accepted from any tokenizer file.
pub const MAX_TOKENS: usize = 1 << 22;

#[derive(Default, Debug, Clone)]
pub struct TokMeta {
    /// `llama` (SentencePiece BPE over scores) or `gpt2` (byte-level BPE).
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// A Metaspace pre-tokenizer's `prepend_scheme` ("always", "first"),
    /// whose prefix differs from llama.cpp's; written as [`PREPEND_SCHEME_KEY`].
    pub prepend_scheme: Option<&'static str>,
    pub chat_template: Option<String>,
}

impl TokMeta {
    /// Pads with `[PAD{i}]` unused tokens up to `n` (a model's embedding
    /// can be larger than its tokenizer).
    pub fn pad_to(&mut self, n: usize) {
        for i in self.tokens.len()..n {
            self.tokens.push(format!("[PAD{i}]"));
            self.types.push(UNUSED);
            if let Some(s) = &mut self.scores {
                s.push(-1000.0);
            }
        }
    }

    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == text).map(|i| i as u32)
    }

    pub fn into_metadata(self) -> Vec<(String, Value)> {
        let mut m: Vec<(String, Value)> = Vec::new();
        let mut put = |k: &str, v: Value| m.push((format!("tokenizer.{k}"), v));
        put("ggml.model", Value::String(self.model));
        if let Some(p) = self.pre {
            put("ggml.pre", Value::String(p));
        }
        put("ggml.tokens", Value::Array(Array::String(self.tokens)));
        if let Some(s) = self.scores {
            put("ggml.scores", Value::Array(Array::F32(s)));
        }
        put("ggml.token_type", Value::Array(Array::I32(self.types)));
        if !self.merges.is_empty() {
            put("ggml.merges", Value::Array(Array::String(self.merges)));
        }
        if let Some(v) = self.add_space_prefix {
            put("ggml.add_space_prefix", Value::Bool(v));
        }
        if let Some(s) = self.prepend_scheme {
            let key = PREPEND_SCHEME_KEY.trim_start_matches("tokenizer.");
            put(key, Value::String(s.into()));
        }
        for (k, v) in [
            ("bos", self.bos),
            ("eos", self.eos),
            ("unknown", self.unk),
            ("padding", self.pad),
            ("eot", self.eot),
            ("eom", self.eom),
        ] {
            if let Some(id) = v {
                put(&format!("ggml.{k}_token_id"), Value::U32(id));
            }
        }
        if let Some(v) = self.add_bos {
            put("ggml.add_bos_token", Value::Bool(v));
        }
        if let Some(v) = self.add_eos {
            put("ggml.add_eos_token", Value::Bool(v));
        }
        if let Some(t) = self.chat_template {
            put("chat_template", Value::String(t));
        }
        m
    }
}

/// GPT-2's byte-to-character table: printable Latin-1 bytes map to
/// themselves, the rest to U+0100 onwards, so byte-level tokens are text.
pub fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('?')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('?')
        };
    }
    table
}
