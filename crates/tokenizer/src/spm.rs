//! SentencePiece BPE (`tokenizer.ggml.model = llama`), as llama.cpp's
//! `llm_tokenizer_spm_session`: start from UTF-8 characters, repeatedly merge
//! the adjacent pair whose concatenation is the vocabulary token with the
//! highest score (leftmost first on ties), then emit each piece's token or,
//! for a piece that is no token, its bytes as `<0xNN>` tokens.

use crate::fxhash::FxHashMap;
use crate::unicode::len_utf8;
use crate::vocab::Vocab;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

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
///
/// The vocabulary is held as a byte trie, built in one pass over the token
/// bytes (a node per distinct prefix, at most the total bytes + 1). It used
/// to be a set of the hashes of every prefix of every token, which hashed
/// `len²/2` bytes per token: a file with one 1 MB token took minutes.
pub(crate) struct Splitter {
    /// `(node << 8 | byte) -> child`; node 0 is the empty prefix.
    edges: FxHashMap<u64, u32>,
    /// Whether the prefix ending at each node is a whole token.
    is_token: Vec<bool>,
    max_len: usize,
}

/// Pieces shorter than this are not worth cutting.
const MIN_PIECE: usize = 256;

/// Trie steps `tokenize` may spend looking for cuts, per byte of text (plus
/// a constant). Real vocabularies need a few hundred steps per cut; a
/// vocabulary of long look-alike tokens would need `max_len²`. When the
/// budget runs out the rest of the text is tokenized uncut: slower for that
/// text, never different.
const CUT_STEPS_PER_BYTE: usize = 64;
const CUT_STEPS_MIN: usize = 1 << 16;

impl Splitter {
    pub fn new(vocab: &Vocab) -> Splitter {
        let mut edges = FxHashMap::default();
        let mut is_token = vec![false];
        let mut max_len = 0;
        for t in &vocab.texts {
            let b = t.as_bytes();
            max_len = max_len.max(b.len());
            let mut node = 0u32;
            for &c in b {
                let next = is_token.len() as u32;
                node = *edges.entry((node as u64) << 8 | c as u64).or_insert(next);
                if node == next {
                    is_token.push(false);
                }
            }
            is_token[node as usize] = true;
        }
        Splitter {
            edges,
            is_token,
            max_len,
        }
    }

    /// Distinct prefixes of the vocabulary's tokens, the empty one included.
    #[cfg(test)]
    pub(crate) fn nodes(&self) -> usize {
        self.is_token.len()
    }

    /// Whether no token covers both byte `p - 1` and byte `p`; `None` when
    /// `budget` trie steps did not suffice to tell.
    fn can_cut(&self, text: &[u8], p: usize, budget: &mut usize) -> Option<bool> {
        for a in p.saturating_sub(self.max_len)..p {
            let mut node = 0u32;
            for (b, &c) in text.iter().enumerate().skip(a).take(self.max_len) {
                *budget = budget.checked_sub(1)?;
                match self.edges.get(&((node as u64) << 8 | c as u64)) {
                    Some(&child) => node = child,
                    None => break,
                }
                if b >= p && self.is_token[node as usize] {
                    return Some(false);
                }
            }
        }
        Some(true)
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
    let mut budget = CUT_STEPS_MIN.saturating_add(text.len().saturating_mul(CUT_STEPS_PER_BYTE));
    while p < text.len() {
        // Candidate cuts: just before a `▁` that follows something else.
        let at_word = text[p..].starts_with(SPACE) && !text[..p].ends_with(SPACE);
        if !at_word {
            p += 1;
            continue;
        }
        match splitter.can_cut(text, p, &mut budget) {
            Some(true) => {
                tokenize_piece(vocab, byte_tok, &text[start..p], sc, out);
                start = p;
                p += MIN_PIECE;
            }
            Some(false) => p += 1,
            None => break,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{Defaults, ModelKind};
    use cria_gguf::{Array, GgufFile, GgufWriter, Value};

    fn vocab(tokens: &[&str]) -> Vocab {
        let mut w = GgufWriter::new();
        let t = tokens.iter().map(|s| s.to_string()).collect();
        w.add_metadata("tokenizer.ggml.tokens", Value::Array(Array::String(t)));
        let mut bytes = Vec::new();
        w.write_to(&mut bytes).unwrap();
        let f = GgufFile::from_bytes(bytes).unwrap();
        let d = Defaults {
            kind: ModelKind::Spm,
            add_bos: true,
        };
        Vocab::load(f.metadata(), d).unwrap()
    }

    /// The definition `can_cut` implements: no occurrence of a token in
    /// `text` covers both byte `p - 1` and byte `p`.
    fn spans(v: &Vocab, text: &[u8], p: usize) -> bool {
        (0..p).any(|a| (p + 1..=text.len()).any(|b| v.lookup(&text[a..b]).is_some()))
    }

    #[test]
    fn the_trie_has_one_node_per_distinct_prefix() {
        let v = vocab(&["ab", "abc", "abd", "b", "bcd", "x"]);
        // "", a, ab, abc, abd, b, bc, bcd, x
        assert_eq!(Splitter::new(&v).nodes(), 9);
    }

    #[test]
    fn can_cut_is_the_definition_on_every_position() {
        let v = vocab(&["ab", "abc", "bca", "c", "cab", "aaaa", "a", "b"]);
        let s = Splitter::new(&v);
        // Every text of length 7 over {a, b, c}, every position.
        for n in 0..3usize.pow(7) {
            let text: Vec<u8> = (0..7).map(|i| b"abc"[n / 3usize.pow(i) % 3]).collect();
            for p in 1..text.len() {
                let mut budget = usize::MAX;
                let got = s.can_cut(&text, p, &mut budget);
                assert_eq!(got, Some(!spans(&v, &text, p)), "{:?} at {p}", text);
            }
        }
    }

    #[test]
    fn can_cut_gives_up_when_the_budget_runs_out() {
        let v = vocab(&["aaaaaaaa", "a"]);
        let s = Splitter::new(&v);
        let text = b"aaaaaaaaaaaaaaaa";
        let mut budget = 3;
        assert_eq!(s.can_cut(text, 8, &mut budget), None);
        let mut budget = usize::MAX;
        assert_eq!(s.can_cut(text, 8, &mut budget), Some(false));
    }
}
