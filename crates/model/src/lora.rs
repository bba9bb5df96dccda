//! Low-rank adapters (LoRA) at inference, beside the weight matrices.
//!
//! An adapter holds, for some of a model's matrices W (rows = outputs,
//! cols = inputs), a pair A (rank, cols) and B (rows, rank). With adapters
//! `i` active on a row, that row's product is
//!
//!   y = W x + sum_i scale_i * B_i (A_i x),   scale_i = s_i * alpha_i / rank
//!
//! (`s_i` the user's scale; `scale_i = s_i` when the adapter's alpha is 0),
//! llama.cpp's `build_lora_mm`. The base product W x is computed once for
//! the whole batch; the deltas are added row by row, each row with its own
//! sequence's [`LoraSet`], so a batch can mix adapters and a row's result
//! never depends on its batch mates. Reading adapter files is cria-lora's
//! job; this module only applies what it built.

use std::sync::Arc;

/// The matrices of a layer an adapter can change, in [`Adapter::layers`]
/// order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Q = 0,
    K = 1,
    V = 2,
    O = 3,
    Gate = 4,
    Up = 5,
    Down = 6,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The short name (`q`, `k`, ..., `down`), as `--lora-targets` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// (out, in) of the base matrix.
    pub fn shape(self, c: &crate::LlamaConfig) -> (usize, usize) {
        match self {
            Target::Q => (c.q_dim(), c.dim),
            Target::K | Target::V => (c.kv_dim(), c.dim),
            Target::O => (c.dim, c.q_dim()),
            Target::Gate | Target::Up => (c.ffn_dim, c.dim),
            Target::Down => (c.dim, c.ffn_dim),
        }
    }

    /// The GGUF name of this matrix in layer `l` (`blk.L.attn_q.weight`).
    pub fn tensor_name(self, l: usize) -> String {
        let s = match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        };
        format!("blk.{l}.{s}.weight")
    }
}

/// One matrix's low-rank pair, in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraDelta {
    pub rank: usize,
    /// Output rows of the base matrix.
    pub rows: usize,
    /// Input columns of the base matrix.
    pub cols: usize,
    /// (rank, cols), row-major.
    pub a: Vec<f32>,
    /// (rows, rank), row-major.
    pub b: Vec<f32>,
}

impl LoraDelta {
    /// `out (rows) += scale * B (A x)`; `t` is scratch (rank).
    pub fn add_to(&self, x: &[f32], out: &mut [f32], scale: f32, t: &mut Vec<f32>) {
        t.clear();
        t.extend(
            self.a
                .chunks_exact(self.cols)
                .map(|a| cria_kernels::dot(a, &x[..self.cols])),
        );
        // B's rows are `rank` long (a few to a few dozen): a plain
        // left-to-right sum, the same on every machine and thread.
        for (o, b) in out[..self.rows]
            .iter_mut()
            .zip(self.b.chunks_exact(self.rank))
        {
            let mut acc = 0f32;
            for (bk, tk) in b.iter().zip(t.iter()) {
                acc += bk * tk;
            }
            *o += scale * acc;
        }
    }

    /// The dense delta `B A` (rows, cols), for merging into the weights.
    pub fn dense_row(&self, r: usize, out: &mut [f32]) {
        out[..self.cols].fill(0.0);
        let b = &self.b[r * self.rank..(r + 1) * self.rank];
        for (k, &bk) in b.iter().enumerate() {
            let a = &self.a[k * self.cols..(k + 1) * self.cols];
            for (o, &av) in out.iter_mut().zip(a) {
                *o += bk * av;
            }
        }
    }
}

/// An adapter checked against one model: a delta per changed matrix.
#[derive(Clone)]
pub struct Adapter {
    /// Where it came from (a path), for listings and errors.
    pub name: String,
    /// `adapter.lora.alpha`; 0 means "no alpha" (scale = user scale).
    pub alpha: f32,
    /// Per layer, per [`Target`].
    pub layers: Vec<[Option<LoraDelta>; 7]>,
    /// A delta of the output projection, if any.
    pub output: Option<LoraDelta>,
}

impl Adapter {
    /// The factor applied to `B (A x)` for user scale `s` (llama.cpp's
    /// `get_scale`: `s * alpha / rank`, or `s` when alpha is 0).
    pub fn scale(&self, d: &LoraDelta, s: f32) -> f32 {
        if self.alpha != 0.0 {
            s * self.alpha / d.rank as f32
        } else {
            s
        }
    }

    pub fn delta(&self, layer: usize, t: Target) -> Option<&LoraDelta> {
        self.layers.get(layer).and_then(|l| l[t as usize].as_ref())
    }

    /// Bytes held by the deltas.
    pub fn bytes(&self) -> usize {
        let one = |d: &LoraDelta| 4 * (d.a.len() + d.b.len());
        self.layers
            .iter()
            .flat_map(|l| l.iter().flatten())
            .chain(self.output.iter())
            .map(one)
            .sum()
    }
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.layers.iter().flatten().flatten().count() + self.output.iter().count();
        f.debug_struct("Adapter")
            .field("name", &self.name)
            .field("alpha", &self.alpha)
            .field("matrices", &n)
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// The adapters active on one sequence, each with the user's scale, in the
/// order they are applied. Empty: the base model.
pub type LoraSet = Vec<(Arc<Adapter>, f32)>;

/// Whether two sets are the same adapters at the same scales (a cached
/// prefix computed under one is valid for the other).
pub fn same_set(a: &LoraSet, b: &LoraSet) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((x, s), (y, t))| Arc::ptr_eq(x, y) && s.to_bits() == t.to_bits())
}

/// Which matrix a product is: a layer's, or the output projection.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Site {
    Layer(usize, Target),
    Output,
}

/// Adds every active adapter's delta to each row of `out` (n, out_dim):
/// row `i` uses `sets[seq_of(i)]`. Nothing happens when `sets` is empty,
/// so the base model's path costs one branch per product. Rows are shared
/// among the pool's threads; each row's arithmetic is the same however
/// they are shared, so a row's result never depends on its batch mates.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_deltas(
    sets: &[LoraSet],
    seq_of: impl Fn(usize) -> usize + Sync,
    site: Site,
    x: &[f32],
    in_dim: usize,
    out: &mut [f32],
    out_dim: usize,
    pool: &cria_kernels::ThreadPool,
) {
    if sets.is_empty() {
        return;
    }
    let n = out.len() / out_dim;
    // Enough rows per task for the threads to share, at least one.
    let per_task = n.div_ceil(4 * pool.threads().max(1)).max(1);
    pool.for_each_chunk_mut(out, per_task * out_dim, |task, chunk| {
        LORA_T.with(|cell| {
            let t = &mut *cell.borrow_mut();
            for (k, row) in chunk.chunks_exact_mut(out_dim).enumerate() {
                let i = task * per_task + k;
                add_row(
                    sets,
                    seq_of(i),
                    site,
                    &x[i * in_dim..(i + 1) * in_dim],
                    row,
                    t,
                );
            }
        })
    });
}

thread_local! {
    /// (rank) scratch of [`add_deltas`]' threads, grown once and reused.
    static LORA_T: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn add_row(sets: &[LoraSet], seq: usize, site: Site, x: &[f32], out: &mut [f32], t: &mut Vec<f32>) {
    let Some(set) = sets.get(seq) else {
        return;
    };
    for (adapter, s) in set {
        let d = match site {
            Site::Layer(l, target) => adapter.delta(l, target),
            Site::Output => adapter.output.as_ref(),
        };
        if let Some(d) = d {
            d.add_to(x, out, adapter.scale(d, *s), t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(rank: usize, rows: usize, cols: usize, seed: u32) -> LoraDelta {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        LoraDelta {
            rank,
            rows,
            cols,
            a: (0..rank * cols).map(|_| next()).collect(),
            b: (0..rows * rank).map(|_| next()).collect(),
        }
    }

    #[test]
    fn delta_matches_dense_product() {
        let d = delta(3, 5, 7, 1);
        let x: Vec<f32> = (0..7).map(|i| i as f32 * 0.25 - 1.0).collect();
        let mut out = vec![1.0f32; 5];
        d.add_to(&x, &mut out, 0.5, &mut Vec::new());
        let mut row = vec![0.0; 7];
        for (r, o) in out.iter().enumerate() {
            d.dense_row(r, &mut row);
            let want = 1.0 + 0.5 * row.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>();
            assert!((o - want).abs() < 1e-5, "row {r}: {o} vs {want}");
        }
    }

    #[test]
    fn scale_is_alpha_over_rank_unless_alpha_is_zero() {
        let d = delta(4, 2, 2, 2);
        let mut a = Adapter {
            name: "t".into(),
            alpha: 8.0,
            layers: vec![],
            output: None,
        };
        assert_eq!(a.scale(&d, 0.5), 1.0);
        a.alpha = 0.0;
        assert_eq!(a.scale(&d, 0.5), 0.5);
    }

    #[test]
    fn rows_use_their_own_sets() {
        let d = delta(2, 3, 4, 3);
        let mut layer: [Option<LoraDelta>; 7] = Default::default();
        layer[Target::V as usize] = Some(d);
        let a = Arc::new(Adapter {
            name: "a".into(),
            alpha: 0.0,
            layers: vec![layer],
            output: None,
        });
        let sets = vec![Vec::new(), vec![(a.clone(), 1.0)]];
        let x = vec![0.5f32; 8];
        let mut out = vec![0.0f32; 6];
        let seqs = [1usize, 0];
        let pool = cria_kernels::ThreadPool::new(2);
        let site = Site::Layer(0, Target::V);
        add_deltas(&sets, |i| seqs[i], site, &x, 4, &mut out, 3, &pool);
        assert!(out[..3].iter().any(|&v| v != 0.0));
        assert!(out[3..].iter().all(|&v| v == 0.0));
        // Another target of the same layer is untouched.
        let mut out2 = vec![0.0f32; 6];
        let site = Site::Layer(0, Target::Q);
        add_deltas(&sets, |i| seqs[i], site, &x, 4, &mut out2, 3, &pool);
        assert!(out2.iter().all(|&v| v == 0.0));
    }
}
