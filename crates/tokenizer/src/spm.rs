//! SentencePiece BPE (`tokenizer.ggml.model = llama`), as llama.cpp's
//! `llm_tokenizer_spm_session`: start from UTF-8 characters, repeatedly merge
//! the adjacent pair whose concatenation is the vocabulary token with the
//! highest score (leftmost first on ties), then emit each piece's token or,
//! for a piece that is no token, its bytes as `<0xNN>` tokens.

use crate::fxhash::{FxHashSet, FxHasher};
use crate::unicode::len_utf8;
use crate::vocab::Vocab;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::hash::Hasher;

#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// Scratch buffers reused across fragments.
#[derive(Default)]
pub(crate) struct SpmScratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
}

/// The token of byte `b`: `<0xNN>`, else the byte itself as text; llama.cpp
/// aborts when neither exists, we fall back to the unknown token.
pub(crate) fn byte_tokens(vocab: &Vocab) -> [Option<u32>; 256] {
    let mut t = [None; 256];
    for (b, slot) in t.iter_mut().enumerate() {
        let hex = format!("<0x{b:02X}>");
        *slot = vocab
            .lookup(hex.as_bytes())
            .or_else(|| vocab.lookup(&[b as u8]))
            .or(vocab.unk);
    }
    t
}

/// Where a text may be cut into pieces that tokenize independently.
///
/// One fragment is one merge queue in llama.cpp; for a long text that queue
/// is huge and slow. A cut at byte `p` changes nothing if no vocabulary
/// token spans `p` (no pair across `p` could ever merge, and merges on each
/// side keep their relative order), so we cut at word starts where that
/// holds, checked against the real vocabulary.
pub(crate) struct Splitter {
    /// Hashes of every prefix of every token: a false positive only makes a
    /// cut less likely, never wrong.
    prefixes: FxHashSet<u64>,
    max_len: usize,
}

/// Pieces shorter than this are not worth cutting.
const MIN_PIECE: usize = 256;

fn hash(b: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(b);
    h.finish()
}

impl Splitter {
    pub fn new(vocab: &Vocab) -> Splitter {
        let mut prefixes = FxHashSet::default();
        let mut max_len = 0;
        for t in &vocab.texts {
            let b = t.as_bytes();
            max_len = max_len.max(b.len());
            for end in 1..=b.len() {
                prefixes.insert(hash(&b[..end]));
            }
        }
        Splitter { prefixes, max_len }
    }

    /// Whether no token covers both byte `p - 1` and byte `p`.
    fn can_cut(&self, vocab: &Vocab, text: &[u8], p: usize) -> bool {
        for a in p.saturating_sub(self.max_len)..p {
            let mut b = a + 1;
            while b <= text.len() && b - a <= self.max_len {
                let piece = &text[a..b];
                if !self.prefixes.contains(&hash(piece)) {
                    break;
                }
                if b > p && vocab.lookup(piece).is_some() {
                    return false;
                }
                b += 1;
            }
        }
        true
    }
}

/// Tokenizes `text` (spaces already replaced by `▁`), appending to `out`.
pub(crate) fn tokenize(
    vocab: &Vocab,
    byte_tok: &[Option<u32>; 256],
    splitter: &Splitter,
    text: &[u8],
    sc: &mut SpmScratch,
    out: &mut Vec<u32>,
) {
    const SPACE: &[u8] = "\u{2581}".as_bytes();
    let mut start = 0;
    let mut p = MIN_PIECE;
    while p < text.len() {
        // Candidate cuts: just before a `▁` that follows something else.
        let at_word = text[p..].starts_with(SPACE) && !text[..p].ends_with(SPACE);
        if at_word && splitter.can_cut(vocab, text, p) {
            tokenize_piece(vocab, byte_tok, &text[start..p], sc, out);
            start = p;
            p += MIN_PIECE;
        } else {
            p += 1;
        }
    }
    tokenize_piece(vocab, byte_tok, &text[start..], sc, out);
}

fn tokenize_piece(
    vocab: &Vocab,
    byte_tok: &[Option<u32>; 256],
    text: &[u8],
    sc: &mut SpmScratch,
    out: &mut Vec<u32>,
) {
    sc.syms.clear();
    sc.heap.clear();
    let mut offs = 0;
    while offs < text.len() {
        let len = len_utf8(text[offs]).min(text.len() - offs);
        let i = sc.syms.len() as u32;
        offs += len;
        sc.syms.push(Sym {
            start: (offs - len) as u32,
            len: len as u32,
            prev: if i == 0 { NONE } else { i - 1 },
            next: if offs == text.len() { NONE } else { i + 1 },
        });
    }
    for i in 1..sc.syms.len() as u32 {
        try_add(vocab, text, sc, i - 1, i);
    }

    while let Some(b) = sc.heap.pop() {
        let (l, r) = (sc.syms[b.left as usize], sc.syms[b.right as usize]);
        // Stale: one side was merged away or grew since the pair was queued.
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        sc.syms[b.left as usize].len += r.len;
        sc.syms[b.left as usize].next = r.next;
        sc.syms[b.right as usize].len = 0;
        if r.next != NONE {
            sc.syms[r.next as usize].prev = b.left;
        }
        try_add(vocab, text, sc, l.prev, b.left);
        try_add(vocab, text, sc, b.left, r.next);
    }

    let mut i = if sc.syms.is_empty() { NONE } else { 0 };
    while i != NONE {
        let s = sc.syms[i as usize];
        let piece = &text[s.start as usize..(s.start + s.len) as usize];
        match vocab.lookup(piece) {
            Some(id) => out.push(id),
            // Every merged piece is a token, so only single characters get
            // here (llama.cpp's `rev_merge` branch cannot be reached).
            None => out.extend(piece.iter().filter_map(|&b| byte_tok[b as usize])),
        }
        i = s.next;
    }
}

fn try_add(vocab: &Vocab, text: &[u8], sc: &mut SpmScratch, left: u32, right: u32) {
    if left == NONE || right == NONE {
        return;
    }
    let (l, r) = (sc.syms[left as usize], sc.syms[right as usize]);
    let size = l.len + r.len;
    let piece = &text[l.start as usize..(l.start + size) as usize];
    if let Some(id) = vocab.lookup(piece) {
        sc.heap.push(Bigram {
            score: vocab.scores[id as usize],
            left,
            right,
            size,
        });
    }
}
