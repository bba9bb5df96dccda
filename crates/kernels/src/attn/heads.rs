//! [`attend_f16_heads`]: the attention of several KV heads of one cache in
//! one pass, for decoding (few queries per KV head).
//!
//! Why: a decode step attends each KV head of each sequence with 1-4
//! query rows. Head by head, the keys are read as 2 KiB blocks 6 KiB
//! apart (a cache tile holds all KV heads) and the values as 128 bytes
//! of every 384-byte row, so each 4 KiB page is visited three times, in
//! short pieces, and the hardware prefetchers, which follow one page in
//! order, keep stopping. The loads then wait on memory one line-fill
//! buffer at a time (measured: 8-9 GB/s per core with the cache in L3,
//! against 26 GB/s for a plain sequential read of the same size; see
//! `examples/attn_decode.rs`). Here the heads take turns over short
//! ranges: the scores of blocks `b..b + 4` for every head, then the next
//! blocks; the values of positions `t..t + 32` for every head, then the
//! next positions. The keys and values are then read front to back,
//! each page once.
//!
//! The arithmetic is [`super::attend_f16`]'s: each score is the same
//! chain of fused multiply-adds, each output lane the same chain in
//! position order (partial sums are stored between ranges and loaded
//! again, which keeps their bits). Every query's output has the bits of
//! `attend_f16_window` over its head alone.

use super::{attend_f16_window, check_attend, softmax_window, KvHead};
use half::f16;

/// Blocks of 16 keys scored for one head before the next head's turn.
#[cfg(target_arch = "x86_64")]
const SCORE_BLOCKS: usize = 4;

/// Positions of values summed for one head before the next head's turn.
#[cfg(target_arch = "x86_64")]
const VALUE_POSITIONS: usize = 32;

/// The most queries a head may have for the heads to take turns: up to one
/// score tile (8 queries, e.g. 2 decode rows of 3 query heads, or a short
/// speculative draft). With more (prompts: 4 rows x the group) each key
/// is used by so many queries that the pass is bound by arithmetic, not
/// by memory, and one head at a time saves the extra calls.
#[cfg(target_arch = "x86_64")]
const INTERLEAVE_MAX: usize = 8;

/// Causal attention of several KV heads of one cache, each with its own
/// queries: head `h` is `heads[h]` with `counts[h]` queries, and the
/// queries, their last positions and their outputs are laid out head after
/// head (`q` is (sum of counts, d), `last` (sum of counts), `out` as `q`).
/// Query `j` sees positions `window_start(last[j], window)..=last[j]` of
/// its head; `out_j = softmax(scale * q_j . K) . V`.
///
/// Each query's output has the bits [`attend_f16_window`] gives it over
/// its head alone (and so alone, batched or split across threads).
/// `scores` is scratch, grown as needed.
///
/// Panics if `heads` and `counts` differ in length, the counts do not add
/// up to `last.len()`, `q` and `out` are not that many rows of one length,
/// or a head's keys or values are too short.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16_heads(
    q: &[f32],
    last: &[usize],
    heads: &[KvHead<f16>],
    counts: &[usize],
    window: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let cpu = crate::simd::Cpu::get();
    heads_with(cpu, q, last, heads, counts, window, scale, scores, out)
}

/// [`attend_f16_heads`] on `cpu`: interleaved on AVX-512, otherwise one
/// head at a time (tests run both on a machine that has AVX-512).
#[allow(clippy::too_many_arguments)]
fn heads_with(
    cpu: crate::simd::Cpu,
    q: &[f32],
    last: &[usize],
    heads: &[KvHead<f16>],
    counts: &[usize],
    window: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    assert_eq!(
        heads.len(),
        counts.len(),
        "attend_f16_heads: heads vs counts"
    );
    let total: usize = counts.iter().sum();
    assert_eq!(total, last.len(), "attend_f16_heads: counts vs positions");
    assert_eq!(q.len(), out.len(), "attend_f16_heads: queries vs outputs");
    if total == 0 {
        assert!(q.is_empty(), "attend_f16_heads: queries without positions");
        return;
    }
    assert!(
        q.len().is_multiple_of(total),
        "attend_f16_heads: queries not {total} rows"
    );
    let d = q.len() / total;
    let mut at = 0;
    for (kv, &c) in heads.iter().zip(counts) {
        let r = at * d..(at + c) * d;
        check_attend(&q[r.clone()], &last[at..at + c], kv, &out[r]);
        at += c;
    }
    #[cfg(target_arch = "x86_64")]
    if counts.iter().all(|&c| c <= INTERLEAVE_MAX)
        && d.is_multiple_of(16)
        && super::has_f16_simd()
        && cpu.isa() == crate::simd::Isa::Avx512
    {
        // SAFETY: AVX-512F and F16C detected; every head's shapes and
        // bounds checked above.
        return unsafe { interleaved_512(q, last, heads, counts, d, window, scale, scores, out) };
    }
    let _ = cpu;
    let mut at = 0;
    for (&kv, &c) in heads.iter().zip(counts) {
        let (r, l) = (at * d..(at + c) * d, &last[at..at + c]);
        attend_f16_window(&q[r.clone()], l, window, kv, scale, scores, &mut out[r]);
        at += c;
    }
}

/// The heads taking turns (module doc), on AVX-512.
///
/// # Safety
/// AVX-512F and F16C; shapes and bounds as [`attend_f16_heads`] checks.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn interleaved_512(
    q: &[f32],
    last: &[usize],
    heads: &[KvHead<f16>],
    counts: &[usize],
    d: usize,
    window: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    use super::x86::{pv_512, scores_512};
    let max = last.iter().copied().max().unwrap_or(0);
    let np = (max + 1).next_multiple_of(16);
    scores.clear();
    scores.resize(last.len() * np, 0.0);
    // (first query, count, largest position) of each head with queries.
    let spans = || {
        let mut at = 0;
        heads.iter().zip(counts).filter_map(move |(kv, &c)| {
            let s = (at, c);
            at += c;
            (c > 0).then(|| (kv, s.0, s.1, last[s.0..s.0 + c].iter().max().copied()))
        })
    };
    let mut b = 0;
    while b <= max / 16 {
        for (kv, j, c, _) in spans() {
            let (qh, lh) = (&q[j * d..(j + c) * d], &last[j..j + c]);
            let sh = &mut scores[j * np..(j + c) * np];
            let blocks = b..b + SCORE_BLOCKS;
            scores_512(qh, lh, kv, scale, np, sh, blocks);
        }
        b += SCORE_BLOCKS;
    }
    for (j, &lj) in last.iter().enumerate() {
        softmax_window(&mut scores[j * np..j * np + lj + 1], window);
    }
    let mut t = 0;
    while t <= max {
        for (kv, j, c, mh) in spans() {
            if mh.is_some_and(|m| m >= t) {
                let (ph, lh) = (&scores[j * np..(j + c) * np], &last[j..j + c]);
                let oh = &mut out[j * d..(j + c) * d];
                pv_512(ph, np, lh, kv.v, kv.v_row, oh, t..t + VALUE_POSITIONS);
            }
        }
        t += VALUE_POSITIONS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attn::attend_f16;
    use crate::simd::Cpu;
    use rand::{Rng, SeedableRng};

    /// A cache of `nkv` heads of `d` as `KvCache` lays it out: key tiles of
    /// 16 positions x all heads, value rows of all heads.
    fn cache(rng: &mut impl Rng, nkv: usize, d: usize, n: usize) -> (Vec<f16>, Vec<f16>) {
        let kvd = nkv * d;
        let mut r = |len: usize| -> Vec<f16> {
            (0..len)
                .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
                .collect()
        };
        (r(n.next_multiple_of(16) * kvd), r(n * kvd))
    }

    fn head<'a>(k: &'a [f16], v: &'a [f16], nkv: usize, d: usize, h: usize) -> KvHead<'a, f16> {
        KvHead {
            k: &k[16 * h * d..],
            k_block: 16 * nkv * d,
            v: &v[h * d..],
            v_row: nkv * d,
        }
    }

    #[test]
    fn heads_together_have_the_bits_of_each_head_alone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let mut sc = Vec::new();
        for (nkv, d, n) in [
            (3, 64, 300),
            (2, 16, 40),
            (4, 128, 97),
            (3, 48, 33),
            (1, 8, 20),
        ] {
            let (k, v) = cache(&mut rng, nkv, d, n);
            let heads: Vec<_> = (0..nkv).map(|h| head(&k, &v, nkv, d, h)).collect();
            for counts in [
                vec![3; nkv],
                (0..nkv).map(|h| h % 3).collect(),
                (0..nkv).map(|h| 1 + 4 * h).collect(),
                vec![12; nkv],
            ] {
                let total: usize = counts.iter().sum();
                let q: Vec<f32> = (0..total * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
                // Decode rows (one position for a head's group), draft rows
                // (a few consecutive), and scattered positions.
                let last: Vec<usize> = (0..total)
                    .map(|j| match j % 3 {
                        0 => n - 1,
                        1 => n - 1 - (j % 5),
                        _ => rng.gen_range(0..n),
                    })
                    .collect();
                for (window, cpu) in [usize::MAX, 17]
                    .into_iter()
                    .flat_map(|w| Cpu::all_available().into_iter().map(move |c| (w, c)))
                {
                    let mut got = vec![f32::NAN; total * d];
                    let (h, c) = (&heads, &counts);
                    heads_with(cpu, &q, &last, h, c, window, 0.125, &mut sc, &mut got);
                    let mut at = 0;
                    for (h, &c) in counts.iter().enumerate() {
                        for j in at..at + c {
                            let mut alone = vec![0f32; d];
                            let qj = &q[j * d..(j + 1) * d];
                            attend_f16_window(
                                qj,
                                &[last[j]],
                                window,
                                heads[h],
                                0.125,
                                &mut sc,
                                &mut alone,
                            );
                            let gj = &got[j * d..(j + 1) * d];
                            for i in 0..d {
                                assert_eq!(
                                    gj[i].to_bits(),
                                    alone[i].to_bits(),
                                    "{nkv} heads of {d}, counts {counts:?}, query {j} (head {h}, last {}), window {window}, {:?}, lane {i}",
                                    last[j],
                                    cpu.isa()
                                );
                            }
                        }
                        at += c;
                    }
                }
            }
            // No window: the bits of plain attention too.
            let q: Vec<f32> = (0..nkv * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let last = vec![n - 1; nkv];
            let mut got = vec![0f32; nkv * d];
            let counts = vec![1; nkv];
            attend_f16_heads(
                &q,
                &last,
                &heads,
                &counts,
                usize::MAX,
                0.3,
                &mut sc,
                &mut got,
            );
            for h in 0..nkv {
                let mut alone = vec![0f32; d];
                attend_f16(
                    &q[h * d..(h + 1) * d],
                    &[n - 1],
                    heads[h],
                    0.3,
                    &mut sc,
                    &mut alone,
                );
                assert!(alone
                    .iter()
                    .zip(&got[h * d..])
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn no_queries_is_nothing_to_do() {
        let mut sc = Vec::new();
        let (k, v) = (vec![f16::ZERO; 16 * 16], vec![f16::ZERO; 16]);
        let kv = KvHead {
            k: &k,
            k_block: 256,
            v: &v,
            v_row: 16,
        };
        attend_f16_heads(
            &[],
            &[],
            &[kv, kv],
            &[0, 0],
            usize::MAX,
            1.0,
            &mut sc,
            &mut [],
        );
        attend_f16_heads(&[], &[], &[], &[], usize::MAX, 1.0, &mut sc, &mut []);
    }

    #[test]
    #[should_panic(expected = "counts vs positions")]
    fn counts_that_do_not_add_up_are_refused() {
        let mut sc = Vec::new();
        let (k, v) = (vec![f16::ZERO; 16 * 16], vec![f16::ZERO; 16]);
        let kv = KvHead {
            k: &k,
            k_block: 256,
            v: &v,
            v_row: 16,
        };
        let mut out = [0f32; 32];
        attend_f16_heads(
            &[0.0; 32],
            &[0, 0],
            &[kv],
            &[1],
            usize::MAX,
            1.0,
            &mut sc,
            &mut out,
        );
    }
}
