//! Byte-level BPE (`tokenizer.ggml.model = gpt2`), as llama.cpp's
//! `llm_tokenizer_bpe_session`: each word's bytes become GPT-2 byte
//! characters, then the adjacent pair with the lowest merge rank is merged
//! (leftmost first on ties) until no ranked pair is left.
//!
//! llama.cpp compares strings at every step; we intern every string a merge
//! can produce or consume once, at load, and merge over integer ids. Ids
//! below the vocabulary size are tokens; higher ids are merge strings that
//! are not tokens (normally none), kept so the result is the same even then.

use crate::fxhash::FxHashMap;
use crate::unicode::byte_to_char_table;
use crate::vocab::Vocab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub(crate) struct Bpe {
    n_vocab: u32,
    /// Interned id of each byte's GPT-2 character.
    byte_sym: [u32; 256],
    /// GPT-2 character of each byte, as UTF-8.
    byte_char: [([u8; 4], u8); 256],
    /// (left id, right id) -> (rank, merged id).
    merges: FxHashMap<(u32, u32), (u32, u32)>,
    /// Texts of interned strings that are not tokens (id - n_vocab).
    extra_texts: Vec<Box<[u8]>>,
    /// Token of a one-byte text, for llama.cpp's last-resort fallback.
    single_byte_token: [Option<u32>; 256],
    ignore_merges: bool,
}

/// Scratch buffers reused across words.
#[derive(Default)]
pub(crate) struct BpeScratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Reverse<(u32, u32, u32, u32)>>,
    encoded: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

const NONE: u32 = u32::MAX;

impl Bpe {
    pub fn new(vocab: &Vocab, merges: &[String], ignore_merges: bool) -> Bpe {
        let n_vocab = vocab.n_tokens() as u32;
        let mut extra: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        let mut extra_texts: Vec<Box<[u8]>> = Vec::new();
        let mut intern = |s: &[u8]| -> u32 {
            if let Some(id) = vocab.lookup(s) {
                return id;
            }
            if let Some(&id) = extra.get(s) {
                return id;
            }
            let id = n_vocab + extra_texts.len() as u32;
            extra.insert(s.into(), id);
            extra_texts.push(s.into());
            id
        };

        let chars = byte_to_char_table();
        let mut byte_sym = [0u32; 256];
        let mut byte_char = [([0u8; 4], 0u8); 256];
        for b in 0..256 {
            let mut buf = [0u8; 4];
            let len = chars[b].encode_utf8(&mut buf).len();
            byte_char[b] = (buf, len as u8);
            byte_sym[b] = intern(&buf[..len]);
        }

        let mut table = FxHashMap::default();
        table.reserve(merges.len());
        let mut merged = Vec::new();
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte; a
            // merge without one can never match, so it is skipped.
            let b = m.as_bytes();
            let Some(sp) = b.iter().skip(1).position(|&c| c == b' ').map(|p| p + 1) else {
                continue;
            };
            let (l, r) = (&b[..sp], &b[sp + 1..]);
            let (li, ri) = (intern(l), intern(r));
            merged.clear();
            merged.extend_from_slice(l);
            merged.extend_from_slice(r);
            let mi = intern(&merged);
            // The first rank of a duplicated pair wins (llama.cpp emplaces).
            table.entry((li, ri)).or_insert((rank as u32, mi));
        }

        let mut single_byte_token = [None; 256];
        for (b, t) in single_byte_token.iter_mut().enumerate().take(128) {
            *t = vocab.lookup(&[b as u8]);
        }

        Bpe {
            n_vocab,
            byte_sym,
            byte_char,
            merges: table,
            extra_texts,
            single_byte_token,
            ignore_merges,
        }
    }

    /// Tokenizes one pre-tokenized word given as raw UTF-8 bytes.
    pub fn word(&self, vocab: &Vocab, word: &[u8], sc: &mut BpeScratch, out: &mut Vec<u32>) {
        if self.ignore_merges {
            sc.encoded.clear();
            for &b in word {
                let (buf, n) = &self.byte_char[b as usize];
                sc.encoded.extend_from_slice(&buf[..*n as usize]);
            }
            if let Some(id) = vocab.lookup(&sc.encoded) {
                out.push(id);
                return;
            }
        }

        let n = word.len();
        sc.syms.clear();
        sc.heap.clear();
        for (i, &b) in word.iter().enumerate() {
            sc.syms.push(Sym {
                id: self.byte_sym[b as usize],
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == n { NONE } else { i as u32 + 1 },
                alive: true,
            });
        }
        for i in 1..n {
            self.push_pair(sc, i as u32 - 1, i as u32);
        }

        while let Some(Reverse((_rank, left, lid, rid))) = sc.heap.pop() {
            let l = sc.syms[left as usize];
            if !l.alive || l.id != lid || l.next == NONE {
                continue;
            }
            let right = l.next;
            let r = sc.syms[right as usize];
            if !r.alive || r.id != rid {
                continue;
            }
            let Some(&(_, merged)) = self.merges.get(&(lid, rid)) else {
                continue;
            };
            sc.syms[left as usize].id = merged;
            sc.syms[left as usize].next = r.next;
            sc.syms[right as usize].alive = false;
            if r.next != NONE {
                sc.syms[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                self.push_pair(sc, l.prev, left);
            }
            if r.next != NONE {
                self.push_pair(sc, left, r.next);
            }
        }

        let mut i = 0;
        while i != NONE {
            let s = sc.syms[i as usize];
            if s.id < self.n_vocab {
                out.push(s.id);
            } else {
                // A piece that is no token: llama.cpp looks up each of its
                // bytes as a one-byte token and drops those that are none.
                let text = &self.extra_texts[(s.id - self.n_vocab) as usize];
                out.extend(
                    text.iter()
                        .filter_map(|&b| self.single_byte_token[b as usize]),
                );
            }
            i = s.next;
        }
    }

    #[inline]
    fn push_pair(&self, sc: &mut BpeScratch, left: u32, right: u32) {
        let (lid, rid) = (sc.syms[left as usize].id, sc.syms[right as usize].id);
        if let Some(&(rank, _)) = self.merges.get(&(lid, rid)) {
            sc.heap.push(Reverse((rank, left, lid, rid)));
        }
    }
}
