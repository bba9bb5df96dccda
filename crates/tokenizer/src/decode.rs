//! Ids back to text: per-token pieces (llama.cpp's `token_to_piece`), whole
//! sequences (`detokenize`), and the streaming [`Detokenizer`].

use crate::unicode::byte_to_char_table;
use crate::vocab::{
    ModelKind, Vocab, ATTR_BYTE, ATTR_CONTROL, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_USER_DEFINED,
};
use crate::Tokenizer;

/// The piece of every token as llama.cpp renders it with `special = true`.
pub(crate) fn build_pieces(vocab: &Vocab, kind: ModelKind) -> Vec<Box<[u8]>> {
    let mut char_to_byte = std::collections::HashMap::new();
    for (b, c) in byte_to_char_table().iter().enumerate() {
        char_to_byte.insert(*c, b as u8);
    }
    (0..vocab.n_tokens())
        .map(|i| {
            let text = &vocab.texts[i];
            let attr = vocab.attrs[i];
            let piece: Vec<u8> = if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
                text.as_bytes().to_vec()
            } else if attr & ATTR_NORMAL != 0 {
                match kind {
                    ModelKind::Spm => text.replace('\u{2581}', " ").into_bytes(),
                    ModelKind::Bpe => unmap_bytes(text, &char_to_byte),
                }
            } else if attr & ATTR_BYTE != 0 {
                // `<0xNN>`: llama.cpp reads the two hex digits at offset 3.
                let hex = text.get(3..5).unwrap_or("");
                vec![u8::from_str_radix(hex, 16).unwrap_or(0)]
            } else {
                Vec::new() // unused and undefined tokens render as nothing
            };
            piece.into_boxed_slice()
        })
        .collect()
}

/// Reverses GPT-2's byte-to-character map; a character outside the map is
/// rendered the way llama.cpp does (`[UNK_BYTE_0x..text]`).
fn unmap_bytes(text: &str, map: &std::collections::HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match map.get(&c) {
            Some(&b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's `clean_spaces` pass (BPE vocabularies except a few): removes
/// the space before `?!.,`, around a lone `'`, and before `'s 'm 're 've`.
pub(crate) fn clean_spaces(t: &mut Vec<u8>) {
    if t.is_empty() {
        return;
    }
    // " ?", " !", " .", " ,"
    let mut out = Vec::with_capacity(t.len());
    out.push(t[0]);
    for i in 1..t.len() {
        if t[i - 1] == b' ' && matches!(t[i], b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(t[i]);
    }
    // " ' " -> "'"
    let src = std::mem::take(&mut out);
    out.push(src[0]);
    let mut i = 1;
    // llama.cpp overwrites the skipped space with NUL in place, and the
    // next step reads that NUL as its previous byte.
    let mut prev = src[0];
    while i < src.len() {
        let x = src[i];
        if x == b'\'' && i + 1 < src.len() && prev == b' ' && src[i + 1] == b' ' {
            out.pop();
            out.push(x);
            i += 2;
            prev = 0;
            continue;
        }
        out.push(x);
        prev = x;
        i += 1;
    }
    // " 's", " 'm", " 're", " 've"
    let src = std::mem::take(&mut out);
    out.push(src[0]);
    for i in 1..src.len() {
        let x = src[i];
        if src[i - 1] == b' ' && x == b'\'' && i + 1 < src.len() {
            let x1 = src[i + 1];
            let x2 = src.get(i + 2).copied();
            let drop = matches!(x1, b's' | b'm')
                || (i + 2 < src.len()
                    && matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))));
            if drop {
                out.pop();
            }
        }
        out.push(x);
    }
    *t = out;
}

/// Turns ids into text one at a time, yielding only whole UTF-8 characters.
///
/// A character whose bytes arrive in several byte tokens is held back until
/// complete; bytes that can never form a character come out as U+FFFD.
///
/// ```no_run
/// # fn demo(tok: &cria_tokenizer::Tokenizer, ids: &[u32]) {
/// use cria_tokenizer::Detokenizer;
/// let mut d = Detokenizer::new(tok, false);
/// for &id in ids {
///     print!("{}", d.push(id));
/// }
/// print!("{}", d.finish());
/// # }
/// ```
pub struct Detokenizer<'a> {
    tok: &'a Tokenizer,
    special: bool,
    strip_space: bool,
    pending: Vec<u8>,
}

impl<'a> Detokenizer<'a> {
    /// A detokenizer for ids that continue a text (generated tokens): every
    /// piece is rendered as is. `special` renders control tokens.
    pub fn new(tok: &'a Tokenizer, special: bool) -> Detokenizer<'a> {
        Detokenizer {
            tok,
            special,
            strip_space: false,
            pending: Vec::new(),
        }
    }

    /// A detokenizer for ids from the start of a text: for SentencePiece
    /// vocabularies with `add_space_prefix`, the space the tokenizer added
    /// before the first token is removed, as llama.cpp's `detokenize` does.
    pub fn from_start(tok: &'a Tokenizer, special: bool) -> Detokenizer<'a> {
        Detokenizer {
            tok,
            special,
            strip_space: tok.vocab.add_space_prefix,
            pending: Vec::new(),
        }
    }

    /// Adds one id; returns the text that is now complete (maybe empty).
    /// An id outside the vocabulary renders as nothing.
    pub fn push(&mut self, id: u32) -> String {
        let piece = self.tok.token_to_piece(id, self.special);
        let mut piece = piece.as_slice();
        if self.strip_space {
            // Only the first token, and only if it renders at all.
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
            self.strip_space = false;
        }
        self.pending.extend_from_slice(piece);
        self.take_complete()
    }

    /// Returns what is left, incomplete characters as U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // Checked by from_utf8 just above.
                    out.push_str(std::str::from_utf8(&rest[..good]).unwrap_or_default());
                    match e.error_len() {
                        // Invalid, not merely unfinished: never completes.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &rest[good + n..];
                        }
                        None => {
                            rest = &rest[good..];
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }
}
