//! What happens when a request does not fit the context
//! (`--context-overflow`), and the report of what was done.
//!
//! - [`ContextOverflow::Error`] (the default): a prompt that does not fit
//!   is refused with both numbers; generation stops when the cache is full.
//! - [`ContextOverflow::TruncateMiddle`]: tokens are dropped from the
//!   middle of the prompt ([`truncate_middle`]), keeping its start (the
//!   system prompt) and its end (the latest message), so the prompt and
//!   `max_tokens` fit. Done by the caller before submitting (the CLI, the
//!   server), which reports it.
//! - [`ContextOverflow::Shift`]: llama.cpp's context shift. When a slot's
//!   cache is full during generation, the engine keeps its first
//!   [`shift_keep`] tokens, discards the oldest half of the rest, and moves
//!   the newer half down, re-rotating their keys to their new positions
//!   (`Model::shift_cache`: one rotation by minus the distance moved, as
//!   llama.cpp's K-shift; a quantized key is dequantized, rotated and
//!   quantized again). Nothing is evaluated again. The request's
//!   [`crate::Done`] reports the tokens discarded. A prompt that does not
//!   fit is still an error.

use std::fmt;
use std::str::FromStr;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ContextOverflow {
    #[default]
    Error,
    TruncateMiddle,
    Shift,
}

impl ContextOverflow {
    pub fn name(self) -> &'static str {
        match self {
            ContextOverflow::Error => "error",
            ContextOverflow::TruncateMiddle => "truncate-middle",
            ContextOverflow::Shift => "shift",
        }
    }
}

impl fmt::Display for ContextOverflow {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ContextOverflow {
    type Err = String;
    fn from_str(s: &str) -> Result<ContextOverflow, String> {
        [
            ContextOverflow::Error,
            ContextOverflow::TruncateMiddle,
            ContextOverflow::Shift,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| {
            format!("unknown context overflow mode {s:?}: use error, truncate-middle or shift")
        })
    }
}

/// What was done to make a request fit: `dropped_tokens` prompt tokens cut
/// (truncate-middle) or cached tokens discarded (shift, summed over every
/// shift of the request).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OverflowReport {
    pub action: ContextOverflow,
    pub dropped_tokens: usize,
}

impl fmt::Display for OverflowReport {
    /// `truncate-middle; dropped_tokens=N`: the CLI note and the
    /// `x-cria-context-overflow` header.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}; dropped_tokens={}", self.action, self.dropped_tokens)
    }
}

/// Cuts the middle of `prompt` so that it and `max_tokens` (at least 1, at
/// most half the context, so the prompt keeps at least half) fit in
/// `n_ctx`: the first half of what is kept comes from the start, the rest
/// from the end. Returns the number of tokens dropped (0: it already fit).
pub fn truncate_middle(prompt: &mut Vec<u32>, max_tokens: Option<usize>, n_ctx: usize) -> usize {
    let reserve = max_tokens.unwrap_or(1).clamp(1, (n_ctx / 2).max(1));
    let limit = n_ctx.saturating_sub(reserve).max(1);
    if prompt.len() <= limit {
        return 0;
    }
    let head = limit / 2;
    let tail = limit - head;
    let dropped = prompt.len() - limit;
    prompt.drain(head..prompt.len() - tail);
    dropped
}

/// The tokens a context shift keeps at the start of a slot: the whole
/// prompt (instructions, system prompt) when it is at most half the
/// context, else its first half of the context.
pub fn shift_keep(prompt_len: usize, n_ctx: usize) -> usize {
    prompt_len.min(n_ctx / 2)
}

/// For a full cache of `n_past` tokens keeping `n_keep`: how many to
/// discard (half of the rest, at least 1).
pub fn shift_discard(n_past: usize, n_keep: usize) -> usize {
    (n_past.saturating_sub(n_keep) / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_middle_keeps_start_and_end() {
        let mut p: Vec<u32> = (0..100).collect();
        // 100 + 20 > 64: keep 44, 22 from each end.
        assert_eq!(truncate_middle(&mut p, Some(20), 64), 56);
        assert_eq!(p.len(), 44);
        assert_eq!(&p[..22], &(0..22).collect::<Vec<_>>()[..]);
        assert_eq!(&p[22..], &(78..100).collect::<Vec<_>>()[..]);
        // Fits already: untouched.
        let mut q: Vec<u32> = (0..10).collect();
        assert_eq!(truncate_middle(&mut q, Some(20), 64), 0);
        assert_eq!(q.len(), 10);
        // A huge max_tokens reserves at most half; None reserves one.
        let mut r: Vec<u32> = (0..100).collect();
        assert_eq!(truncate_middle(&mut r, Some(1000), 64), 68);
        let mut s: Vec<u32> = (0..100).collect();
        assert_eq!(truncate_middle(&mut s, None, 64), 37);
        assert_eq!(s.len() + 1, 64);
    }

    #[test]
    fn modes_parse_and_print() {
        for m in ["error", "truncate-middle", "shift"] {
            assert_eq!(m.parse::<ContextOverflow>().unwrap().to_string(), m);
        }
        assert!("middle".parse::<ContextOverflow>().is_err());
        let r = OverflowReport {
            action: ContextOverflow::Shift,
            dropped_tokens: 7,
        };
        assert_eq!(r.to_string(), "shift; dropped_tokens=7");
        assert_eq!(shift_keep(10, 64), 10);
        assert_eq!(shift_keep(50, 64), 32);
        assert_eq!(shift_discard(64, 10), 27);
    }
}
