//! Finding special tokens in text before tokenizing (llama.cpp's
//! `tokenizer_st_partition`): for each special token, longest text first,
//! every occurrence in the remaining plain-text fragments becomes that token.
//!
//! Control and unknown tokens are looked for only when the caller asks
//! (`parse_special`); user-defined tokens always are, as in llama.cpp and
//! Hugging Face tokenizers.

use crate::vocab::{Vocab, ATTR_CONTROL, ATTR_UNKNOWN};
use memchr::memmem;

/// A piece of the input: plain text (a byte range) or a token found in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(usize, usize),
    Token(u32),
}

pub(crate) fn partition(vocab: &Vocab, text: &[u8], parse_special: bool) -> Vec<Fragment> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text(0, text.len()));
    let mut next = Vec::new();
    for &id in &vocab.special_cache {
        if !parse_special && vocab.attrs[id as usize] & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
            continue;
        }
        let needle = vocab.texts[id as usize].as_bytes();
        // Cheap test first: most specials occur nowhere in most texts.
        let finder = memmem::Finder::new(needle);
        let any = frags.iter().any(|f| match *f {
            Fragment::Text(a, b) => finder.find(&text[a..b]).is_some(),
            Fragment::Token(_) => false,
        });
        if !any {
            continue;
        }
        next.clear();
        for &f in &frags {
            let Fragment::Text(a, b) = f else {
                next.push(f);
                continue;
            };
            let mut start = a;
            for m in finder.find_iter(&text[a..b]) {
                let m = a + m;
                if m < start {
                    continue; // overlapping occurrence: already consumed
                }
                if m > start {
                    next.push(Fragment::Text(start, m));
                }
                next.push(Fragment::Token(id));
                start = m + needle.len();
            }
            if start < b {
                next.push(Fragment::Text(start, b));
            }
        }
        std::mem::swap(&mut frags, &mut next);
    }
    frags
}
