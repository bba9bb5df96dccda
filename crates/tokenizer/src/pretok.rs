//! Pre-tokenizers: split text into words before BPE, as llama.cpp does.
//!
//! llama.cpp names a list of regexes per `tokenizer.ggml.pre`, but runs the
//! common ones through hand-written matchers in unicode.cpp (its std::regex
//! fallback is slow and approximates `\p{..}` classes). Those matchers, not
//! the regexes, define the ids llama.cpp produces, so we port the matchers
//! line by line, including their quirks:
//!
//! - GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! - LLaMA 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//! - SmolLM (and StarCoder): first `\p{N}` (every digit becomes its own
//!   word), then the GPT-2 matcher inside each piece between digits.
//!
//! Each matcher works on a segment of code points and treats the segment end
//! as the end of text (so `\s+(?!\S)` sees nothing after the last space).

use crate::unicode::{LETTER, MASK_CATEGORIES, NUMBER, WHITESPACE_BIT};

/// Names of `tokenizer.ggml.pre` this crate implements.
pub(crate) const SUPPORTED_NAMES: &[&str] = &[
    "llama-bpe",
    "llama3",
    "llama-v3",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "smollm",
    "starcoder",
    "gpt-2",
    "gpt2",
    "phi-2",
];

/// The pre-tokenizer chosen by `tokenizer.ggml.pre`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    Gpt2,
    Llama3,
    /// Digits split one by one, then GPT-2.
    Smollm,
}

/// What a `tokenizer.ggml.pre` name implies (llama.cpp's `load`).
pub(crate) struct PreConfig {
    pub pre: PreTokenizer,
    /// Use a whole word's token when the word is in the vocabulary,
    /// skipping merges (`ignore_merges`).
    pub ignore_merges: bool,
    pub add_bos: bool,
    /// Detokenizing removes spaces before `?!.,` and some apostrophes.
    pub clean_spaces: bool,
}

pub(crate) fn config_for(name: &str) -> Option<PreConfig> {
    let c = |pre, ignore_merges, add_bos, clean_spaces| PreConfig {
        pre,
        ignore_merges,
        add_bos,
        clean_spaces,
    };
    Some(match name {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => c(PreTokenizer::Llama3, true, true, true),
        "smollm" => c(PreTokenizer::Smollm, false, false, false),
        "starcoder" => c(PreTokenizer::Smollm, false, false, true),
        // "gpt2" is not a llama.cpp name (it says "gpt-2"); accepted as an alias.
        "gpt-2" | "gpt2" | "phi-2" => c(PreTokenizer::Gpt2, false, false, true),
        _ => return None,
    })
}

const OUT_OF_RANGE: u32 = u32::MAX;

/// Splits `cpts` (with `flags[i]` the class of `cpts[i]`) into words,
/// appending each word's end index to `ends`.
pub(crate) fn split(pre: PreTokenizer, cpts: &[u32], flags: &[u16], ends: &mut Vec<usize>) {
    match pre {
        PreTokenizer::Gpt2 => gpt2(cpts, flags, 0, ends),
        PreTokenizer::Llama3 => llama3(cpts, flags, 0, ends),
        PreTokenizer::Smollm => {
            // `\p{N}` as llama.cpp evaluates it: ASCII digits, and non-ASCII
            // code points whose only category is "number" (not whitespace).
            let is_num = |i: usize| {
                let c = cpts[i];
                if c < 128 {
                    (b'0' as u32..=b'9' as u32).contains(&c)
                } else {
                    flags[i] & WHITESPACE_BIT == 0 && flags[i] & MASK_CATEGORIES == NUMBER
                }
            };
            let mut start = 0;
            for i in 0..cpts.len() {
                if is_num(i) {
                    if start < i {
                        gpt2(&cpts[start..i], &flags[start..i], start, ends);
                    }
                    ends.push(i + 1);
                    start = i + 1;
                }
            }
            if start < cpts.len() {
                gpt2(&cpts[start..], &flags[start..], start, ends);
            }
        }
    }
}

/// A segment with llama.cpp's accessors: past the end, the code point is
/// `OUT_OF_RANGE` and the flags are 0 (no class at all).
struct Seg<'a> {
    c: &'a [u32],
    f: &'a [u16],
    base: usize,
    prev_end: usize,
}

impl Seg<'_> {
    #[inline]
    fn cpt(&self, p: usize) -> u32 {
        self.c.get(p).copied().unwrap_or(OUT_OF_RANGE)
    }

    #[inline]
    fn fl(&self, p: usize) -> u16 {
        self.f.get(p).copied().unwrap_or(0)
    }

    /// Ends the current word at `end`; returns its length.
    #[inline]
    fn add(&mut self, end: usize, ends: &mut Vec<usize>) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            ends.push(self.base + end);
        }
        self.prev_end = end;
        len
    }
}

const SP: u32 = b' ' as u32;
const CR: u32 = b'\r' as u32;
const LF: u32 = b'\n' as u32;
const WLN: u16 = WHITESPACE_BIT | LETTER | NUMBER;

/// `'s|'t|'re|'ve|'m|'ll|'d` after an apostrophe at `pos`: the match length.
#[inline]
fn contraction(s: &Seg, pos: usize, lower: bool) -> usize {
    let n = s.c.len();
    if s.c[pos] != b'\'' as u32 || pos + 1 >= n {
        return 0;
    }
    let low = |c: u32| {
        if lower && (b'A' as u32..=b'Z' as u32).contains(&c) {
            c + 32
        } else {
            c
        }
    };
    let c1 = low(s.cpt(pos + 1));
    if [b's', b't', b'm', b'd'].iter().any(|&b| c1 == b as u32) {
        return 2;
    }
    if pos + 2 < n {
        let c2 = low(s.cpt(pos + 2));
        let is = |a: u8, b: u8| c1 == a as u32 && c2 == b as u32;
        if is(b'r', b'e') || is(b'v', b'e') || is(b'l', b'l') {
            return 3;
        }
    }
    0
}

fn gpt2(c: &[u32], f: &[u16], base: usize, ends: &mut Vec<usize>) {
    let mut s = Seg {
        c,
        f,
        base,
        prev_end: 0,
    };
    let n = c.len();
    let mut pos = 0;
    while pos < n {
        let cpt = c[pos];
        let k = contraction(&s, pos, false);
        if k > 0 {
            pos += s.add(pos + k, ends);
            continue;
        }
        let flags2 = if cpt == SP { s.fl(pos + 1) } else { f[pos] };
        let sp = (cpt == SP) as usize;
        // <space>?\p{L}+ , then <space>?\p{N}+
        if flags2 & LETTER != 0 {
            pos += sp;
            while s.fl(pos) & LETTER != 0 {
                pos += 1;
            }
            s.add(pos, ends);
            continue;
        }
        if flags2 & NUMBER != 0 {
            pos += sp;
            while s.fl(pos) & NUMBER != 0 {
                pos += 1;
            }
            s.add(pos, ends);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+
        if flags2 & WLN == 0 && flags2 != 0 {
            pos += sp;
            while s.fl(pos) & WLN == 0 && s.fl(pos) != 0 {
                pos += 1;
            }
            s.add(pos, ends);
            continue;
        }
        let mut nws = 0;
        while s.fl(pos + nws) & WHITESPACE_BIT != 0 {
            nws += 1;
        }
        // \s+(?!\S): leave the last space to prefix the next word.
        if nws > 1 && s.cpt(pos + nws) != OUT_OF_RANGE {
            pos += nws - 1;
        } else if nws > 0 {
            pos += nws;
        } else {
            pos += 1;
        }
        s.add(pos, ends);
    }
}

fn llama3(c: &[u32], f: &[u16], base: usize, ends: &mut Vec<usize>) {
    let mut s = Seg {
        c,
        f,
        base,
        prev_end: 0,
    };
    let n = c.len();
    let mut pos = 0;
    while pos < n {
        let cpt = c[pos];
        let flags = f[pos];
        let k = contraction(&s, pos, true);
        if k > 0 {
            pos += s.add(pos + k, ends);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(cpt == CR || cpt == LF || flags & NUMBER != 0)
            && (flags & LETTER != 0 || s.fl(pos + 1) & LETTER != 0)
        {
            pos += 1;
            while s.fl(pos) & LETTER != 0 {
                pos += 1;
            }
            s.add(pos, ends);
            continue;
        }
        // \p{N}{1,3}
        if flags & NUMBER != 0 {
            let mut ini = pos;
            while s.fl(pos) & NUMBER != 0 {
                pos += 1;
                if pos - ini >= 3 {
                    s.add(pos, ends);
                    ini = pos;
                }
            }
            s.add(pos, ends);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (llama.cpp tests `flags`, not
        // `flags2`, for "has a class" here; we keep that).
        let flags2 = if cpt == SP { s.fl(pos + 1) } else { flags };
        if flags2 & WLN == 0 && flags != 0 {
            pos += (cpt == SP) as usize;
            while s.fl(pos) & WLN == 0 && s.fl(pos) != 0 {
                pos += 1;
            }
            while matches!(s.cpt(pos), CR | LF) {
                pos += 1;
            }
            s.add(pos, ends);
            continue;
        }
        let mut nws = 0;
        let mut last_crlf_end = 0;
        while s.fl(pos + nws) & WHITESPACE_BIT != 0 {
            if matches!(s.cpt(pos + nws), CR | LF) {
                last_crlf_end = pos + nws + 1;
            }
            nws += 1;
        }
        if last_crlf_end > 0 {
            // \s*[\r\n]+
            pos = last_crlf_end;
        } else if nws > 1 && s.cpt(pos + nws) != OUT_OF_RANGE {
            // \s+(?!\S)
            pos += nws - 1;
        } else if nws > 0 {
            pos += nws;
        } else {
            pos += 1;
        }
        s.add(pos, ends);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unicode::flags;

    fn words(pre: PreTokenizer, text: &str) -> Vec<String> {
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let fl: Vec<u16> = cpts.iter().map(|&c| flags(c)).collect();
        let mut ends = Vec::new();
        split(pre, &cpts, &fl, &mut ends);
        let mut out = Vec::new();
        let mut start = 0;
        for e in ends {
            out.push(text.chars().skip(start).take(e - start).collect());
            start = e;
        }
        out
    }

    #[test]
    fn gpt2_words() {
        let w = words(PreTokenizer::Gpt2, "Hello, world's  end 123!!\n\n x");
        assert_eq!(
            w,
            ["Hello", ",", " world", "'s", " ", " end", " 123", "!!", "\n\n", " x"]
        );
    }

    #[test]
    fn llama3_words() {
        let w = words(PreTokenizer::Llama3, "I'M 12345 ok\n\n  x");
        assert_eq!(w, ["I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"]);
    }

    #[test]
    fn smollm_digits() {
        let w = words(PreTokenizer::Smollm, "ab 12  x");
        assert_eq!(w, ["ab", " ", "1", "2", " ", " x"]);
    }
}
