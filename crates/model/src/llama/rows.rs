//! A batch's row-wise steps between the matmuls (norms, residual adds,
//! rope, SiLU), shared among the pool's threads by rows.

use super::rmsnorm;
use crate::kv_cache::KvCache;
use crate::BatchRow;
use cria_kernels::ThreadPool;

/// Batches from which a layer's row-wise steps (norms, rope, residual
/// adds, SiLU) are shared among the pool's threads; below it a dispatch
/// costs more than the step. (On one thread these steps were about 4% of a
/// 1B model's 128-token prompt, all of it serial at 2 threads.)
const PAR_ROWS: usize = 8;

/// `f(i, row i)` for every `width`-long row of `buf`, spread over the pool
/// for a batch of [`PAR_ROWS`] or more. Each row is computed by the same
/// code whichever thread takes it: the bits do not depend on the split.
pub(super) fn for_rows(
    pool: &ThreadPool,
    buf: &mut [f32],
    width: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let n = buf.len() / width.max(1);
    if n < PAR_ROWS || pool.threads() < 2 {
        buf.chunks_exact_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
        return;
    }
    let per = pool.rows_per_task(n);
    pool.for_each_chunk_mut(buf, per * width, |c, chunk| {
        for (k, row) in chunk.chunks_exact_mut(width).enumerate() {
            f(c * per + k, row)
        }
    });
}

/// Every row's key and value (rows of `k` and `v`, `kv_dim` wide) into
/// layer `layer` of its sequence's cache at its position. For a batch of
/// [`PAR_ROWS`] or more the sequences are spread over the pool, each cache
/// written by one task, its rows in batch order. (Serial, the stores were
/// 4 % of an 8-sequence step: each key scatters over its cache's 16-position
/// tiles, whose lines the other core's attention may hold.)
pub(super) fn store_rows(
    pool: &ThreadPool,
    caches: &mut [&mut KvCache],
    layer: usize,
    rows: &[BatchRow],
    k: &[f32],
    v: &[f32],
) {
    let kvd = k.len() / rows.len().max(1);
    let store = |seq: usize, cache: &mut KvCache| {
        for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.seq == seq) {
            let at = i * kvd..(i + 1) * kvd;
            cache.store(layer, r.pos, &k[at.clone()], &v[at]);
        }
    };
    // (Every row's sequence has a cache: `forward_rows` checked.)
    if rows.len() < PAR_ROWS || pool.threads() < 2 {
        for (seq, cache) in caches.iter_mut().enumerate() {
            store(seq, cache);
        }
        return;
    }
    pool.for_each_chunk_mut(caches, 1, |seq, cache| store(seq, &mut *cache[0]));
}

/// Per row: `x += add` (if given), then `xb = rmsnorm(x) * weight`.
pub(super) fn add_norm(
    pool: &ThreadPool,
    x: &mut [f32],
    add: Option<&[f32]>,
    xb: &mut [f32],
    weight: &[f32],
    eps: f32,
) {
    let dim = weight.len();
    let xb = XbRows(xb.as_mut_ptr(), xb.len());
    let xb = &xb;
    for_rows(pool, x, dim, |i, x| {
        if let Some(add) = add {
            x.iter_mut()
                .zip(&add[i * dim..(i + 1) * dim])
                .for_each(|(x, p)| *x += p);
        }
        // SAFETY: row i of `xb` is written by this call alone (for_rows
        // hands each row to one task) and `xb` outlives it.
        rmsnorm(unsafe { xb.row(i, dim) }, x, weight, eps);
    });
}

/// The normed rows' buffer of [`add_norm`], shared by its tasks, each of
/// which writes only its own rows.
struct XbRows(*mut f32, usize);

// SAFETY: only used through `row`, whose callers write disjoint rows.
unsafe impl Sync for XbRows {}

impl XbRows {
    /// # Safety
    /// No other thread may use row `i` meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, i: usize, dim: usize) -> &mut [f32] {
        assert!((i + 1) * dim <= self.1, "row {i} out of bounds");
        std::slice::from_raw_parts_mut(self.0.add(i * dim), dim)
    }
}
