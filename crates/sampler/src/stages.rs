//! The stages of the chain, each a small function over the candidate list.
//!
//! Semantics follow llama.cpp's `src/llama-sampler.cpp` (default chain:
//! logit bias -> penalties -> top-k -> top-p -> min-p -> temperature -> dist),
//! down to the order the candidates are in when `dist` walks them and the
//! float types of each sum, so that the same uniform number picks the same
//! token. Where llama.cpp leaves ties to its sort, we break them by token id
//! so the result never depends on the sort algorithm or platform.

use std::cmp::Ordering;
use std::collections::VecDeque;

/// One token still in the running: its id, current logit and (after a
/// softmax stage) probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

/// Highest logit first; equal logits by lower id. A total order (no NaN
/// reaches the candidate list), so every sort gives the same sequence.
pub(crate) fn by_logit_desc(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Makes a raw logit safe for the arithmetic below: NaN can never be drawn
/// (it becomes -inf), and +inf becomes the largest finite value so that
/// `l - max` stays a number.
pub(crate) fn sanitize(l: f32) -> f32 {
    if l.is_nan() {
        f32::NEG_INFINITY
    } else if l == f32::INFINITY {
        f32::MAX
    } else {
        l
    }
}

/// Repetition / frequency / presence penalties on a logits row indexed by
/// token id, llama.cpp semantics: for each distinct token in `history` with
/// `count` occurrences, `logit <= 0` is multiplied by `repeat`, a positive one
/// divided by it, then `count * freq + presence` is subtracted.
///
/// `seen` is scratch of length `logits.len()`, all false on entry and exit.
pub(crate) fn apply_penalties(
    logits: &mut [f32],
    history: &VecDeque<u32>,
    counts: &[u32],
    seen: &mut [bool],
    repeat: f32,
    freq: f32,
    presence: f32,
) {
    for &t in history {
        let t = t as usize;
        if seen[t] {
            continue;
        }
        seen[t] = true;
        let count = counts[t];
        let l = &mut logits[t];
        if *l <= 0.0 {
            *l *= repeat;
        } else {
            *l /= repeat;
        }
        *l -= count as f32 * freq + if count > 0 { presence } else { 0.0 };
    }
    for &t in history {
        seen[t as usize] = false;
    }
}

/// The candidate list for the chain: every token whose logit is not -inf,
/// or with `k > 0` a subset holding all of the `k` that [`top_k`] keeps
/// (by [`by_logit_desc`], a total order, so `top_k` of the subset is the
/// same list as `top_k` of them all). While scanning, each time the list
/// reaches `2k + 64` it is cut to its best `k`, and from then on a token
/// must rank above the `k`-th kept to enter (an equal logit with a later id
/// ranks below it): with 49k tokens and k = 40 the list stays small and no
/// full select runs.
pub(crate) fn candidates(work: &[f32], k: usize, cands: &mut Vec<Candidate>) {
    cands.clear();
    let cap = if k == 0 {
        usize::MAX
    } else {
        k.saturating_mul(2).saturating_add(64)
    };
    let mut floor = f32::NEG_INFINITY;
    for (id, &logit) in work.iter().enumerate() {
        if logit.total_cmp(&floor) != Ordering::Greater || logit == f32::NEG_INFINITY {
            continue;
        }
        cands.push(Candidate {
            id: id as u32,
            logit,
            p: 0.0,
        });
        if cands.len() >= cap {
            cands.select_nth_unstable_by(k - 1, by_logit_desc);
            cands.truncate(k);
            floor = cands
                .iter()
                .map(|c| c.logit)
                .min_by(f32::total_cmp)
                .unwrap_or(f32::NEG_INFINITY);
        }
    }
}

/// Keeps the `k` highest logits, sorted; `k == 0` keeps all in their order.
/// A `k >= len` keeps all but still sorts them, as llama.cpp does (the
/// order is the order `dist` walks, so it decides which token a draw picks).
pub(crate) fn top_k(cands: &mut Vec<Candidate>, k: usize) {
    if k == 0 {
        return;
    }
    if k < cands.len() {
        cands.select_nth_unstable_by(k - 1, by_logit_desc);
        cands.truncate(k);
    }
    cands.sort_unstable_by(by_logit_desc);
}

/// Fills `p` with the softmax of the logits (f32, as llama.cpp's
/// `softmax_impl`). The list must be non-empty.
pub(crate) fn softmax(cands: &mut [Candidate]) {
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for c in cands.iter_mut() {
        c.p = exp_shifted(c.logit, max);
        sum += c.p;
    }
    for c in cands.iter_mut() {
        c.p /= sum;
    }
}

/// `exp(l - max)`, defined as 1 at the maximum even when `max` overflowed to
/// +inf (a large logit divided by a small temperature).
fn exp_shifted(l: f32, max: f32) -> f32 {
    if l == max {
        1.0
    } else {
        (l - max).exp()
    }
}

/// Nucleus: sorts, then keeps the smallest prefix whose probability mass
/// reaches `p` (f32 running sum, as llama.cpp). `p >= 1` keeps all.
pub(crate) fn top_p(cands: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 || cands.is_empty() {
        return;
    }
    softmax(cands);
    cands.sort_unstable_by(by_logit_desc);
    let mut cum = 0.0f32;
    let mut keep = cands.len();
    for (i, c) in cands.iter().enumerate() {
        cum += c.p;
        if cum >= p {
            keep = i + 1;
            break;
        }
    }
    cands.truncate(keep);
}

/// Keeps tokens whose probability is at least `p` times the top one's, i.e.
/// `logit >= max_logit + ln(p)` (in logit space, so no softmax needed).
/// Order is preserved. `p <= 0` keeps all.
pub(crate) fn min_p(cands: &mut Vec<Candidate>, p: f32) {
    if p <= 0.0 || cands.is_empty() {
        return;
    }
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let min_logit = max + p.ln();
    // The maximum itself always passes, so the list never empties.
    cands.retain(|c| c.logit >= min_logit);
}

/// Divides the logits by `t` (`t > 0`; greedy is handled before the chain).
pub(crate) fn temperature(cands: &mut [Candidate], t: f32) {
    for c in cands.iter_mut() {
        c.logit /= t;
    }
}

/// Picks one candidate with probability proportional to `exp(logit)` using
/// the uniform number `u` in [0, 1), as llama.cpp's `dist`: f32 weights
/// `exp(logit - max)`, an f64 total, and the first candidate (in list
/// order) where the f64 running sum reaches `total * u`. Leaves each
/// candidate's `p` normalized (the post-sampling probabilities). Returns
/// the index into `cands`, which must be non-empty.
pub(crate) fn dist(cands: &mut [Candidate], u: f64) -> usize {
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for c in cands.iter_mut() {
        c.p = exp_shifted(c.logit, max);
        sum += c.p as f64;
    }
    let target = sum * u;
    let mut run = 0.0f64;
    let mut picked = None;
    let mut last_nonzero = 0;
    for (i, c) in cands.iter().enumerate() {
        if c.p > 0.0 {
            last_nonzero = i;
        }
        run += c.p as f64;
        // llama.cpp's `>=`; a weight-0 token is never picked (llama.cpp
        // would take one for u == 0 exactly, a 2^-64 chance).
        if picked.is_none() && run >= target && c.p > 0.0 {
            picked = Some(i);
        }
    }
    for c in cands.iter_mut() {
        c.p = (c.p as f64 / sum) as f32;
    }
    // `None` only through rounding in the running sum.
    picked.unwrap_or(last_nonzero)
}

/// Index of the largest value that is not -inf; ties go to the lowest index.
/// NaN never wins. [`cria_kernels::argmax`], SIMD where the machine has
/// it (the greedy pick of every decoding row).
pub(crate) fn argmax(logits: &[f32]) -> Option<usize> {
    cria_kernels::argmax(logits)
}

/// Sets every logit whose bit in `mask` is clear to -inf (bit `id % 32` of
/// word `id / 32`; ids past the mask's end count as clear).
pub(crate) fn apply_mask(work: &mut [f32], mask: &[u32]) {
    for (w, chunk) in work.chunks_mut(32).enumerate() {
        let bits = mask.get(w).copied().unwrap_or(0);
        if bits == u32::MAX {
            continue;
        }
        for (b, l) in chunk.iter_mut().enumerate() {
            if bits >> b & 1 == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}
