//! Text to token ids and back, from the `tokenizer.*` metadata of a GGUF
//! file, producing the same ids as llama.cpp.
//!
//! The main type is [`Tokenizer`], built by [`Tokenizer::from_gguf`]. It
//! holds the vocabulary and one of two algorithms, named by [`ModelKind`]:
//!
//! - [`ModelKind::Spm`] (`tokenizer.ggml.model = llama`: LLaMA 1/2, Mistral,
//!   TinyLlama): SentencePiece BPE. Spaces become `▁`, a space is added in
//!   front (`add_space_prefix`), pairs merge by the score of the merged
//!   piece, and characters with no token fall back to `<0xNN>` byte tokens.
//! - [`ModelKind::Bpe`] (`tokenizer.ggml.model = gpt2`: LLaMA 3, SmolLM,
//!   GPT-2): byte-level BPE. A [`PreTokenizer`] chosen by
//!   `tokenizer.ggml.pre` splits text into words, each word's bytes map to
//!   GPT-2's byte characters, and pairs merge in `tokenizer.ggml.merges`
//!   rank order.
//!
//! Special tokens (`<|im_start|>`, `<s>`, ...) are found in text only when
//! asked (`parse_special`), except user-defined ones, which llama.cpp always
//! finds. Ids go back to text with [`Tokenizer::token_to_piece`] (bytes of
//! one token), [`Tokenizer::decode`] (a whole sequence), or the streaming
//! [`Detokenizer`], which yields only complete UTF-8 characters.
//!
//! ## Why hand-written, not the `tokenizers` crate
//!
//! The goal is llama.cpp's ids, not Hugging Face's. llama.cpp does not run
//! its pre-tokenizer regexes as written: it uses hand-coded matchers with
//! their own segment rules (e.g. SmolLM's digit split first cuts the text,
//! then `\s+(?!\S)` cannot look past a digit), its own Unicode tables, and
//! its own handling of invalid UTF-8; its SentencePiece is a score-driven
//! BPE rather than the unigram or `tokenizers` BPE models. Building a
//! `tokenizers` model from the GGUF vocabulary would need custom
//! pre-tokenizers anyway, so we port llama.cpp's algorithms (src/llama-vocab.cpp,
//! src/unicode.cpp) and interned-id merge tables for speed, with
//! llama.cpp's own code-point class table (src/unicode_table.rs).
//!
//! ```no_run
//! use cria_gguf::GgufFile;
//! use cria_tokenizer::{Detokenizer, Tokenizer};
//!
//! let file = GgufFile::open("model.gguf")?;
//! let tok = Tokenizer::from_gguf(file.metadata())?;
//! let ids = tok.encode("Hello world", true, false)?;
//! let mut d = Detokenizer::from_start(&tok, false);
//! let text: String = ids.iter().map(|&id| d.push(id)).collect();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod bpe;
mod decode;
mod error;
mod fxhash;
mod pretok;
mod special;
mod spm;
mod unicode;
mod unicode_table;
mod vocab;

pub use decode::Detokenizer;
pub use error::{Error, ErrorKind, Result};
pub use pretok::PreTokenizer;
pub use vocab::{ModelKind, SpacePrefix, MAX_TOKENS, MAX_TOKEN_BYTES, PREPEND_SCHEME_KEY};

use bpe::{Bpe, BpeScratch};
use cria_gguf::Metadata;
use special::Fragment;
use spm::SpmScratch;
use vocab::{Defaults, Vocab, ATTR_CONTROL, ATTR_UNKNOWN};

/// Merges are "left right", each side at most a token long; their count is
/// bounded like the vocabulary's (merged strings get u32 ids too).
fn check_merges(merges: &[String]) -> Result<()> {
    let bad = |detail: String| -> Result<()> { Err(ErrorKind::BadVocab { detail }.into()) };
    if merges.len() > MAX_TOKENS {
        return bad(format!(
            "tokenizer.ggml.merges has {} entries; at most {MAX_TOKENS} are allowed",
            merges.len()
        ));
    }
    if let Some((i, m)) = merges
        .iter()
        .enumerate()
        .find(|(_, m)| m.len() > 2 * MAX_TOKEN_BYTES + 1)
    {
        return bad(format!(
            "merge {i} is {} bytes long; merges may have at most {}",
            m.len(),
            2 * MAX_TOKEN_BYTES + 1
        ));
    }
    Ok(())
}

/// A vocabulary and the algorithm that turns text into its ids.
pub struct Tokenizer {
    vocab: Vocab,
    kind: ModelKind,
    pre_name: String,
    algo: Algo,
    /// `token_to_piece(id, special = true)` of every token.
    pieces: Vec<Box<[u8]>>,
    clean_spaces: bool,
}

enum Algo {
    Spm {
        byte_tok: Box<[Option<u32>; 256]>,
        splitter: Box<spm::Splitter>,
    },
    Bpe {
        bpe: Box<Bpe>,
        pre: PreTokenizer,
    },
}

impl Tokenizer {
    /// Builds the tokenizer described by the `tokenizer.*` keys.
    pub fn from_gguf(md: &Metadata) -> Result<Tokenizer> {
        let model = md.get_str("tokenizer.ggml.model")?;
        let pre_name = md.try_str("tokenizer.ggml.pre")?.unwrap_or("").to_string();
        match model {
            "llama" => {
                let vocab = Vocab::load(
                    md,
                    Defaults {
                        kind: ModelKind::Spm,
                        add_bos: true,
                    },
                )?;
                let byte_tok = Box::new(spm::byte_tokens(&vocab));
                let splitter = Box::new(spm::Splitter::new(&vocab));
                let algo = Algo::Spm { byte_tok, splitter };
                Ok(Self::finish(vocab, ModelKind::Spm, pre_name, algo, false))
            }
            "gpt2" => {
                let cfg =
                    pretok::config_for(&pre_name).ok_or_else(|| ErrorKind::UnsupportedPre {
                        pre: pre_name.clone(),
                    })?;
                let vocab = Vocab::load(
                    md,
                    Defaults {
                        kind: ModelKind::Bpe,
                        add_bos: cfg.add_bos,
                    },
                )?;
                let merges = md.get_str_array("tokenizer.ggml.merges")?;
                check_merges(merges)?;
                let bpe = Box::new(Bpe::new(&vocab, merges, cfg.ignore_merges));
                let algo = Algo::Bpe { bpe, pre: cfg.pre };
                Ok(Self::finish(
                    vocab,
                    ModelKind::Bpe,
                    pre_name,
                    algo,
                    cfg.clean_spaces,
                ))
            }
            other => Err(ErrorKind::UnsupportedModel {
                model: other.to_string(),
            }
            .into()),
        }
    }

    fn finish(vocab: Vocab, kind: ModelKind, pre_name: String, algo: Algo, clean: bool) -> Self {
        let pieces = decode::build_pieces(&vocab, kind);
        Tokenizer {
            vocab,
            kind,
            pre_name,
            algo,
            pieces,
            clean_spaces: clean,
        }
    }

    /// Tokenizes `text`. `add_special` adds BOS/EOS as the vocabulary asks
    /// (`add_bos()`, `add_eos()`); `parse_special` turns the text of control
    /// tokens (`<|im_start|>`) into those tokens instead of plain text.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        self.encode_bytes(text.as_bytes(), add_special, parse_special)
    }

    /// Like [`Tokenizer::encode`], for bytes that may not be UTF-8 (a file
    /// or stdin). Invalid bytes are handled as llama.cpp does: SentencePiece
    /// emits them as byte tokens, BPE reads each as U+FFFD.
    pub fn encode_bytes(
        &self,
        text: &[u8],
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let v = &self.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.push(
                v.bos
                    .ok_or(ErrorKind::MissingSpecialToken { which: "BOS" })?,
            );
        }
        let frags = special::partition(v, text, parse_special);
        match &self.algo {
            Algo::Spm { byte_tok, splitter } => {
                let mut sc = SpmScratch::default();
                let mut buf = Vec::new();
                // A space is added before text at the start or after a
                // special token, like SentencePiece's dummy prefix (or as a
                // Metaspace pre-tokenizer says: see `SpacePrefix`).
                let mut prev_special = true;
                for f in frags {
                    match f {
                        Fragment::Text(a, b) => {
                            buf.clear();
                            let starts_with_space = text.get(a) == Some(&b' ');
                            let prefix = match v.space_prefix {
                                SpacePrefix::Always => prev_special,
                                SpacePrefix::MetaspaceAlways => prev_special && !starts_with_space,
                                SpacePrefix::MetaspaceFirst => a == 0 && !starts_with_space,
                            };
                            if v.add_space_prefix && prefix {
                                buf.extend_from_slice("\u{2581}".as_bytes());
                            }
                            for &c in &text[a..b] {
                                if c == b' ' {
                                    buf.extend_from_slice("\u{2581}".as_bytes());
                                } else {
                                    buf.push(c);
                                }
                            }
                            spm::tokenize(v, byte_tok, splitter, &buf, &mut sc, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Algo::Bpe { bpe, pre } => {
                let mut st = BpeState::default();
                for f in frags {
                    match f {
                        Fragment::Text(a, b) => st.fragment(v, bpe, *pre, &text[a..b], &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.push(
                v.eos
                    .ok_or(ErrorKind::MissingSpecialToken { which: "EOS" })?,
            );
        }
        Ok(out)
    }

    /// The bytes of one token, as llama.cpp's `token_to_piece`: byte tokens
    /// become their byte, `▁` a space (SentencePiece), GPT-2 byte characters
    /// their bytes (BPE). Control and unknown tokens render only if
    /// `special`. An id outside the vocabulary renders as nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(piece) = self.pieces.get(id as usize) else {
            return Vec::new();
        };
        if !special && self.vocab.attrs[id as usize] & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
            return Vec::new();
        }
        piece.to_vec()
    }

    /// A whole sequence back to text, as llama.cpp's `common_detokenize`
    /// (`remove_special = false`): the space SentencePiece added before the
    /// first token is removed; BPE vocabularies with `clean_spaces` drop the
    /// space before `?!.,` and some apostrophes. Invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], special: bool) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.detokenize(ids, false, special)?).into_owned())
    }

    /// The `clean_spaces` pass of [`Tokenizer::decode`] on a text (nothing
    /// for vocabularies without it): what separates a whole decode from the
    /// pieces a [`Detokenizer`] streams. Generated text is streamed piece
    /// by piece, as llama-server does (its replies are not cleaned either);
    /// `decode`, `/detokenize` and `cria detokenize` clean, as llama.cpp's
    /// `llama_detokenize` does.
    pub fn clean_spaces(&self, text: &str) -> String {
        if !self.clean_spaces {
            return text.to_owned();
        }
        let mut bytes = text.as_bytes().to_vec();
        decode::clean_spaces(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// llama.cpp's `llama_detokenize`, as bytes: `remove_special` drops a
    /// leading BOS and trailing EOS that the vocabulary adds (keeping the
    /// leading space then); `unparse_special` renders control tokens.
    pub fn detokenize(
        &self,
        mut ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        let v = &self.vocab;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= v.n_tokens()) {
            return Err(ErrorKind::TokenOutOfRange {
                id,
                vocab_size: v.n_tokens(),
            }
            .into());
        }
        let mut remove_space = v.add_space_prefix;
        if remove_special && v.add_bos && v.bos.is_some() && ids.first() == v.bos.as_ref() {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && v.add_eos && v.eos.is_some() && ids.last() == v.eos.as_ref() {
            ids = &ids[..ids.len() - 1];
        }
        let mut out = Vec::new();
        for &id in ids {
            let piece = self.token_to_piece(id, unparse_special);
            let p = if remove_space {
                piece.strip_prefix(b" ").unwrap_or(&piece)
            } else {
                &piece
            };
            out.extend_from_slice(p);
            remove_space = false;
        }
        if self.clean_spaces {
            decode::clean_spaces(&mut out);
        }
        Ok(out)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.n_tokens()
    }

    pub fn bos(&self) -> Option<u32> {
        self.vocab.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// End of turn: `tokenizer.ggml.eot_token_id`, else a token named like
    /// `<|eot_id|>`, `<|im_end|>`, `<|endoftext|>` (first found in that order).
    pub fn eot(&self) -> Option<u32> {
        self.vocab.eot
    }

    pub fn unk(&self) -> Option<u32> {
        self.vocab.unk
    }

    pub fn pad(&self) -> Option<u32> {
        self.vocab.pad
    }

    /// Whether `id` ends generation (EOS, EOT, EOM and the tokens llama.cpp
    /// lists by name, such as `<|im_end|>` and `<|endoftext|>`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// Whether `id` is a control token (rendered only when asked).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab
            .attrs
            .get(id as usize)
            .is_some_and(|a| a & ATTR_CONTROL != 0)
    }

    /// The token's text as stored in the vocabulary (`▁`, `Ġ` and all).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }

    /// The id of a token given its exact vocabulary text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.lookup(text.as_bytes())
    }

    pub fn model_kind(&self) -> ModelKind {
        self.kind
    }

    /// `tokenizer.ggml.pre` as stored ("" when absent).
    pub fn pre(&self) -> &str {
        &self.pre_name
    }

    /// Whether encoding with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether encoding with `add_special` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// Whether SentencePiece text gets a leading space.
    pub fn add_space_prefix(&self) -> bool {
        self.vocab.add_space_prefix
    }
}

/// Buffers for BPE encoding, reused across fragments and words.
#[derive(Default)]
struct BpeState {
    cpts: Vec<u32>,
    flags: Vec<u16>,
    ends: Vec<usize>,
    word: Vec<u8>,
    scratch: BpeScratch,
}

impl BpeState {
    fn fragment(
        &mut self,
        v: &Vocab,
        bpe: &Bpe,
        pre: PreTokenizer,
        text: &[u8],
        out: &mut Vec<u32>,
    ) {
        unicode::decode_cpts(text, &mut self.cpts);
        self.flags.clear();
        self.flags
            .extend(self.cpts.iter().map(|&c| unicode::flags(c)));
        self.ends.clear();
        pretok::split(pre, &self.cpts, &self.flags, &mut self.ends);
        let mut start = 0;
        for &end in &self.ends {
            self.word.clear();
            for &c in &self.cpts[start..end] {
                unicode::push_utf8(c, &mut self.word);
            }
            bpe.word(v, &self.word, &mut self.scratch, out);
            start = end;
        }
    }
}
