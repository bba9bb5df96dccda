//! The vocabulary as llguidance sees it: each token's bytes in a trie.

use std::sync::Arc;

use cria_tokenizer::Tokenizer;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// The trie and nothing else: llguidance asks the environment to tokenize
/// only for forced tokens and prompt healing, which cria does not use, so
/// greedy longest-match over the trie is enough there.
struct TrieEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
}

/// Every token's bytes as the detokenizer produces them (`token_to_piece`
/// without specials); control and unknown tokens as the special marker
/// (0xFF) followed by their text, so grammar text never matches them but
/// Lark's `<name>` syntax can. End-of-generation tokens are the trie's EOS
/// set: llguidance allows them exactly where the output is complete.
pub(crate) fn token_env(tok: &Tokenizer) -> Result<TokEnv, String> {
    let n = tok.vocab_size();
    let mut words = Vec::with_capacity(n);
    for id in 0..n as u32 {
        let piece = tok.token_to_piece(id, false);
        if tok.is_control(id) || (piece.is_empty() && tok.token_text(id).is_some()) {
            let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            w.extend_from_slice(tok.token_text(id).unwrap_or("").as_bytes());
            words.push(w);
        } else {
            words.push(piece);
        }
    }
    let eog: Vec<u32> = tok.eog_ids().to_vec();
    let Some(&eos) = eog.first().or(tok.eos().as_ref()) else {
        return Err(
            "the vocabulary has no end-of-generation token, so a grammar could never end".into(),
        );
    };
    let mut info = TokRxInfo::new(n as u32, eos);
    info.tok_bos = tok.bos();
    info.tok_unk = tok.unk();
    info.tok_pad = tok.pad();
    info.tok_end_of_turn = tok.eot();
    let mut trie = TokTrie::from(&info, &words);
    if !eog.is_empty() {
        trie = trie.with_eos_tokens(&eog);
    }
    Ok(Arc::new(TrieEnv { trie }))
}
