//! A batch's attention for one layer: split into tasks for the threads
//! ([`plan_attention`]), each task's rows and heads attending over their
//! sequence's cache ([`attend_task`]), the outputs put in place
//! ([`attention`]).

use super::{rope_rotate, BatchRow, Scratch};
use crate::config::LlamaConfig;
use crate::kv_cache::{hadamard, KvCache};
use cria_kernels::ThreadPool;

/// A share of one layer's attention: rows `r0..r1` (of one sequence, in
/// position order) and heads `h0..h1`. Its output is (rows, heads) in row
/// order: a contiguous range of `att` ((n, q_dim)) when it holds one row
/// or all heads, otherwise written apart and scattered (see [`attention`]).
#[derive(Copy, Clone, Debug)]
pub(super) struct AttTask {
    r0: usize,
    r1: usize,
    h0: usize,
    h1: usize,
}

impl AttTask {
    fn len(&self, head_dim: usize) -> usize {
        (self.r1 - self.r0) * (self.h1 - self.h0) * head_dim
    }
}

/// Most rows of one sequence attended together (one read of each key and
/// value for all of them) in a batch of many rows (a prompt), and in one
/// of few rows, whose groups are then cut by heads for the threads.
const GROUP_ROWS: usize = 4;
const FEW_GROUP_ROWS: usize = 16;

/// `tasks` = the rows in groups of up to `most` consecutive rows of one
/// sequence, all heads each.
fn group_rows(rows: &[BatchRow], most: usize, nh: usize, tasks: &mut Vec<AttTask>) {
    tasks.clear();
    let mut r0 = 0;
    while r0 < rows.len() {
        let mut r1 = r0 + 1;
        while r1 < rows.len() && r1 - r0 < most && rows[r1].seq == rows[r0].seq {
            r1 += 1;
        }
        tasks.push(AttTask {
            r0,
            r1,
            h0: 0,
            h1: nh,
        });
        r0 = r1;
    }
}

/// Splits a batch's attention into tasks for `threads` threads, stored in
/// `tasks` biggest first, with each one's range of output in `ranges`.
/// Rows of one sequence go in groups of up to [`GROUP_ROWS`], so each key
/// and value is loaded once for the group's rows x every query head of its
/// KV head. With few groups (generation, a speculative verification) each
/// group's heads are cut into a few contiguous ranges ([`head_pieces`]); a
/// range reads each KV head it touches once for all its rows and query
/// heads, so one row at 2 threads reads its cache about 1.3 times, not once
/// per query head, and the 5 rows of a verification read it once between
/// them, not once each. How the work is split never changes the bits (see
/// [`cria_kernels::attend`]).
///
/// The ranges lay the tasks' outputs end to end in (row, head) order, which
/// is `att`'s own layout unless a task holds several rows but not all
/// heads: then (the return value is true) the outputs are written apart
/// and copied into place.
pub(super) fn plan_attention(
    cfg: &LlamaConfig,
    rows: &[BatchRow],
    threads: usize,
    tasks: &mut Vec<AttTask>,
    ranges: &mut Vec<(usize, usize)>,
) -> bool {
    let (nh, hd) = (cfg.n_heads, cfg.head_dim);
    group_rows(rows, GROUP_ROWS, nh, tasks);
    if threads > 1 && tasks.len() < 4 * threads {
        group_rows(rows, FEW_GROUP_ROWS, nh, tasks);
        let groups = tasks.len();
        let work = |t: &AttTask| rows[t.r0..t.r1].iter().map(|r| r.pos + 1).sum::<usize>();
        let total: usize = tasks.iter().map(work).sum();
        for g in 0..groups {
            let t = tasks[g];
            let p = head_pieces(groups, work(&t), total, threads, nh);
            for k in 0..p {
                tasks.push(AttTask {
                    h0: k * nh / p,
                    h1: (k + 1) * nh / p,
                    ..t
                });
            }
        }
        tasks.drain(..groups);
    }
    ranges.clear();
    let mut at = 0;
    for t in tasks.iter() {
        ranges.push((at, at + t.len(hd)));
        at += t.len(hd);
    }
    // Later rows see more keys: hand them out first.
    tasks.reverse();
    ranges.reverse();
    tasks
        .iter()
        .any(|t| t.r1 - t.r0 > 1 && (t.h0, t.h1) != (0, nh))
}

/// Into how many contiguous head ranges one of `groups` groups of rows
/// (`work` of the batch's `total` positions to attend) is cut for
/// `threads` threads: at least enough that the pieces divide evenly among
/// the threads (groups of equal work then balance exactly: one row at 2
/// threads is 2 pieces, 3 rows are 6), and more for a group holding more
/// than a thread's share of the work. Fewer pieces read fewer copies of
/// the cache: a piece reads each KV head it touches once.
fn head_pieces(groups: usize, work: usize, total: usize, threads: usize, nh: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let even = threads / gcd(groups, threads).max(1);
    // Pieces so that none holds more than a thread's share of the work.
    let share = (work * threads).div_ceil(total.max(1));
    even.max(share).clamp(1, nh.max(1))
}

/// Causal attention of every (row, head) over its sequence's cache,
/// positions `0..=pos` (the last `sliding_window` of them, when the model
/// has one), for layer `l`, as planned by [`plan_attention`].
/// Writes `s.att`.
pub(super) fn attention(
    cfg: &LlamaConfig,
    caches: &[&mut KvCache],
    l: usize,
    rows: &[BatchRow],
    s: &mut Scratch,
    pool: &ThreadPool,
) {
    let (n, qd, hd) = (rows.len(), cfg.q_dim(), cfg.head_dim);
    let (q, tasks, sc) = (&s.q, &s.att_tasks, &s.rope_sc);
    let out = if s.att_scatter {
        &mut s.att_tmp[..n * qd]
    } else {
        &mut s.att[..n * qd]
    };
    pool.for_each_range_mut(out, &s.att_ranges, |i, out| {
        let r = rows[tasks[i].r0];
        attend_task(cfg, caches[r.seq], l, rows, tasks[i], q, sc, out);
    });
    if s.att_scatter {
        for (t, &(a, _)) in tasks.iter().zip(&s.att_ranges) {
            let w = (t.h1 - t.h0) * hd;
            for (j, r) in (t.r0..t.r1).enumerate() {
                let src = &s.att_tmp[a + j * w..a + (j + 1) * w];
                s.att[r * qd + t.h0 * hd..r * qd + t.h1 * hd].copy_from_slice(src);
            }
        }
    }
}

/// Per-thread buffers of [`attend_task`], grown on first use and then
/// reused, so attention allocates nothing per token.
#[derive(Default)]
struct AttBuffers {
    scratch: cria_kernels::AttScratch,
    /// (queries, head_dim): the queries of one KV head, in (row, head) order.
    q: Vec<f32>,
    /// (queries, head_dim): their outputs.
    out: Vec<f32>,
    /// The last position each query sees.
    last: Vec<usize>,
}

thread_local! {
    static ATT_BUFFERS: std::cell::RefCell<AttBuffers> = std::cell::RefCell::new(AttBuffers::default());
}

/// One task: for each KV head its heads read, the rows' queries of those
/// heads, rotated (rope with the rows' angles `sc`, then the cache's
/// Hadamard rotation of keys, if any), attend together; `out` is the
/// task's output, (rows, heads).
#[allow(clippy::too_many_arguments)]
fn attend_task(
    cfg: &LlamaConfig,
    cache: &KvCache,
    l: usize,
    rows: &[BatchRow],
    t: AttTask,
    q: &[f32],
    sc: &[(f32, f32)],
    out: &mut [f32],
) {
    let (hd, qd, half) = (cfg.head_dim, cfg.q_dim(), cfg.rope_dim / 2);
    let rotation = cache.ty().rotation(hd).0;
    let per_kv = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let tw = (t.h1 - t.h0) * hd;
    ATT_BUFFERS.with(|cell| {
        let b = &mut *cell.borrow_mut();
        let mut h = t.h0;
        while h < t.h1 {
            let kvh = h / per_kv;
            let he = ((kvh + 1) * per_kv).min(t.h1);
            b.q.clear();
            b.last.clear();
            for (i, r) in rows.iter().enumerate().take(t.r1).skip(t.r0) {
                let at = b.q.len();
                b.q.extend_from_slice(&q[i * qd + h * hd..i * qd + he * hd]);
                let x = &mut b.q[at..];
                rope_rotate(x, hd, &sc[i * half..(i + 1) * half]);
                if let Some(n) = rotation {
                    hadamard(x, n);
                }
                b.last.extend(std::iter::repeat_n(r.pos, he - h));
            }
            b.out.resize(b.q.len(), 0.0);
            let (keys, values) = cache.head(l, kvh * hd, hd);
            let s = &mut b.scratch;
            let window = cfg.sliding_window.unwrap_or(usize::MAX);
            let (q, last, o) = (&b.q, &b.last, &mut b.out);
            cria_kernels::attend_window(q, last, window, keys, values, scale, s, o);
            let w = (he - h) * hd;
            for (j, src) in b.out.chunks_exact(w).enumerate() {
                let at = j * tw + (h - t.h0) * hd;
                out[at..at + w].copy_from_slice(src);
            }
            h = he;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    fn smol() -> LlamaConfig {
        LlamaConfig {
            n_vocab: 10,
            dim: 576,
            n_layers: 1,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            ffn_dim: 8,
            n_ctx_train: 8192,
            rms_eps: 1e-5,
            rope_base: 10000.0,
            rope_dim: 64,
            rope_scaling: RopeScaling::None,
            sliding_window: None,
        }
    }

    fn row(seq: usize, pos: usize) -> BatchRow {
        BatchRow {
            seq,
            token: 0,
            pos,
            logits: true,
        }
    }

    /// Plans `rows` and checks that every (row, head) is attended exactly
    /// once, that the tasks' ranges lay their outputs end to end, and that
    /// they are `att`'s own places unless the plan says to scatter.
    fn plan(cfg: &LlamaConfig, rows: &[BatchRow], threads: usize) -> Vec<AttTask> {
        let (mut tasks, mut ranges) = (Vec::new(), Vec::new());
        let scatter = plan_attention(cfg, rows, threads, &mut tasks, &mut ranges);
        let (nh, qd, hd) = (cfg.n_heads, cfg.q_dim(), cfg.head_dim);
        let mut seen = vec![0u32; rows.len() * nh];
        let mut end = rows.len() * qd;
        let mut direct = true;
        for (t, &(a, b)) in tasks.iter().zip(&ranges) {
            assert!(t.r0 < t.r1 && t.h0 < t.h1 && t.h1 <= nh, "{t:?}");
            assert!(rows[t.r0..t.r1].iter().all(|r| r.seq == rows[t.r0].seq));
            assert_eq!((b, b - a), (end, t.len(hd)), "{t:?}");
            end = a;
            direct &= (a, b) == (t.r0 * qd + t.h0 * hd, (t.r1 - 1) * qd + t.h1 * hd);
            for r in t.r0..t.r1 {
                for h in t.h0..t.h1 {
                    seen[r * nh + h] += 1;
                }
            }
        }
        assert_eq!(end, 0);
        assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
        assert_eq!(scatter, !direct, "{tasks:?}");
        tasks
    }

    #[test]
    fn one_generating_row_is_cut_in_as_many_head_ranges_as_threads() {
        let cfg = smol();
        for pos in [0, 5, 4095] {
            let rows = [row(0, pos)];
            assert_eq!(plan(&cfg, &rows, 1).len(), 1);
            let two = plan(&cfg, &rows, 2);
            // Two ranges of 4 and 5 heads: 4 KV-head reads, not 9.
            assert_eq!(two.len(), 2, "{two:?}");
            assert_eq!(plan(&cfg, &rows, 3).len(), 3);
        }
    }

    #[test]
    fn few_rows_share_the_threads_evenly_and_long_rows_are_cut_finer() {
        let cfg = smol();
        // Three rows of one length at 2 threads: 6 pieces, 3 per thread.
        let rows: Vec<BatchRow> = (0..3).map(|s| row(s, 100)).collect();
        assert_eq!(plan(&cfg, &rows, 2).len(), 6);
        // A long row beside a short one at 2 threads: the long one in 2.
        let rows = [row(0, 4000), row(1, 9)];
        let tasks = plan(&cfg, &rows, 2);
        assert_eq!(tasks.iter().filter(|t| t.r0 == 0).count(), 2, "{tasks:?}");
        assert_eq!(tasks.iter().filter(|t| t.r0 == 1).count(), 1, "{tasks:?}");
        // Eight decoding rows at 2 threads: one task per row, all heads.
        let rows: Vec<BatchRow> = (0..8).map(|s| row(s, 10 * s)).collect();
        assert_eq!(plan(&cfg, &rows, 2).len(), 8);
        // A verification (a pending token and 4 drafts): its 5 rows
        // together, in two head ranges (4 KV-head reads, not 5 x 4).
        let rows: Vec<BatchRow> = (0..5).map(|p| row(0, 200 + p)).collect();
        let tasks = plan(&cfg, &rows, 2);
        assert_eq!(tasks.len(), 2, "{tasks:?}");
        assert!(tasks.iter().all(|t| (t.r0, t.r1) == (0, 5)), "{tasks:?}");
        // Two sequences verifying beside a decoding one.
        let mut rows: Vec<BatchRow> = (0..3).map(|p| row(0, 50 + p)).collect();
        rows.push(row(1, 7));
        rows.extend((0..6).map(|p| row(2, 900 + p)));
        for threads in 1..=4 {
            plan(&cfg, &rows, threads);
        }
        // A prompt: groups of rows of one sequence.
        let rows: Vec<BatchRow> = (0..64).map(|p| row(0, p)).collect();
        let tasks = plan(&cfg, &rows, 2);
        assert_eq!(tasks.len(), 16, "{tasks:?}");
        // Mixed: prompts of two sequences and a generating row.
        let mut rows: Vec<BatchRow> = (0..5).map(|p| row(0, p)).collect();
        rows.push(row(1, 300));
        rows.extend((0..7).map(|p| row(2, p)));
        for threads in 1..=4 {
            plan(&cfg, &rows, threads);
        }
    }
}
