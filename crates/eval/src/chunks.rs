//! [`Chunks`]: how llama-perplexity cuts a token list into evaluation windows.
//!
//! The text's tokens are cut into `n_chunk = len / n_ctx` windows of `n_ctx`
//! tokens (capped by `--chunks`; the remainder is dropped). Each window is
//! evaluated from an empty KV cache, with its first token replaced by BOS if
//! the vocabulary adds BOS. Only the second half is scored so every scored
//! token has at least `n_ctx/2` tokens of context: with `first = n_ctx/2`,
//! the logits at position `p` (for `p` in `first .. n_ctx-1`) score the
//! original token at `p + 1`, giving `n_ctx - 1 - first` scored tokens per
//! chunk. (The logits at position `n_ctx-1` are computed but unused.)

use crate::error::{ErrorKind, Result};

/// The windows of one evaluation run.
#[derive(Debug, Clone)]
pub struct Chunks {
    /// (n_chunk * n_ctx) the original tokens, as stored in a base file.
    tokens: Vec<u32>,
    n_ctx: usize,
    n_chunk: usize,
    bos: Option<u32>,
}

/// One window: what to feed the model and which tokens its logits score.
#[derive(Debug, Clone)]
pub struct Chunk<'a> {
    /// 0-based chunk number; llama.cpp prints it 1-based.
    pub index: usize,
    /// (n_ctx) original tokens of the window.
    tokens: &'a [u32],
    /// (n_ctx) tokens to decode at positions 0..n_ctx: `tokens` with the
    /// first one replaced by BOS when the vocabulary adds BOS.
    input: Vec<u32>,
}

/// First scored logits position for a context size: llama.cpp's `first = n_ctx/2`.
pub fn first_scored_position(n_ctx: usize) -> usize {
    n_ctx / 2
}

/// Tokens scored per chunk: `n_ctx - 1 - n_ctx/2`.
pub fn scored_per_chunk(n_ctx: usize) -> usize {
    n_ctx.saturating_sub(1 + n_ctx / 2)
}

impl Chunks {
    /// Chunks for `llama-perplexity`: needs at least `2 * n_ctx` tokens (as
    /// llama.cpp does); `max_chunks` is `--chunks` (`None` = all).
    /// `bos_id` is used only when `add_bos` is true.
    pub fn new(
        tokens: &[u32],
        n_ctx: usize,
        add_bos: bool,
        bos_id: u32,
        max_chunks: Option<usize>,
    ) -> Result<Chunks> {
        check_n_ctx(n_ctx)?;
        let need = 2 * n_ctx;
        if tokens.len() < need {
            return Err(ErrorKind::NotEnoughTokens {
                have: tokens.len(),
                need,
                n_ctx,
            }
            .into());
        }
        let n_max = tokens.len() / n_ctx;
        let n_chunk = max_chunks.map_or(n_max, |m| m.min(n_max));
        Ok(Chunks {
            tokens: tokens[..n_chunk * n_ctx].to_vec(),
            n_ctx,
            n_chunk,
            bos: add_bos.then_some(bos_id),
        })
    }

    /// Chunks for `--kl-divergence`: the windows of a base file (its tokens,
    /// `n_ctx` and `n_chunk`), with no minimum length (a base file made with
    /// `--chunks 1` holds just one window).
    pub fn from_base_file(
        header: &crate::BaseFileHeader,
        add_bos: bool,
        bos_id: u32,
    ) -> Result<Chunks> {
        check_n_ctx(header.n_ctx)?;
        Ok(Chunks {
            tokens: header.tokens.clone(),
            n_ctx: header.n_ctx,
            n_chunk: header.n_chunk,
            bos: add_bos.then_some(bos_id),
        })
    }

    /// Number of windows.
    pub fn n_chunk(&self) -> usize {
        self.n_chunk
    }

    /// Window length.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// First logits position that is scored (`n_ctx/2`); positions before it
    /// need no logits.
    pub fn first(&self) -> usize {
        first_scored_position(self.n_ctx)
    }

    /// Scored tokens per chunk (`n_ctx - 1 - n_ctx/2`).
    pub fn n_scored(&self) -> usize {
        scored_per_chunk(self.n_ctx)
    }

    /// (n_chunk * n_ctx) the original tokens of all windows, as written to a base file.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Window `index`, or `None` past the end.
    pub fn chunk(&self, index: usize) -> Option<Chunk<'_>> {
        if index >= self.n_chunk {
            return None;
        }
        let tokens = &self.tokens[index * self.n_ctx..(index + 1) * self.n_ctx];
        let mut input = tokens.to_vec();
        if let (Some(bos), Some(t)) = (self.bos, input.first_mut()) {
            *t = bos;
        }
        Some(Chunk {
            index,
            tokens,
            input,
        })
    }

    /// All windows in order.
    pub fn iter(&self) -> impl Iterator<Item = Chunk<'_>> + '_ {
        (0..self.n_chunk).filter_map(move |i| self.chunk(i))
    }
}

impl<'a> Chunk<'a> {
    /// (n_ctx) tokens to decode, at positions `0..n_ctx`.
    pub fn input_tokens(&self) -> &[u32] {
        &self.input
    }

    /// (n_ctx) the original tokens; pass these to the scorers.
    pub fn tokens(&self) -> &'a [u32] {
        self.tokens
    }

    /// Offset of this window in the whole token list.
    pub fn start(&self) -> usize {
        self.index * self.tokens.len()
    }

    /// First position whose logits are needed (`n_ctx/2`).
    pub fn first(&self) -> usize {
        first_scored_position(self.tokens.len())
    }

    /// (n_ctx - 1 - first) the tokens being scored, in order: row `j` of the
    /// logits (position `first + j`) scores `scored_tokens()[j]`.
    pub fn scored_tokens(&self) -> &'a [u32] {
        let n_ctx = self.tokens.len();
        &self.tokens[first_scored_position(n_ctx) + 1..n_ctx]
    }
}

pub(crate) fn check_n_ctx(n_ctx: usize) -> Result<()> {
    if scored_per_chunk(n_ctx) == 0 {
        return Err(ErrorKind::ContextTooSmall { n_ctx }.into());
    }
    Ok(())
}
