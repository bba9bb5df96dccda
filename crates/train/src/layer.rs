//! One transformer block, forward and backward, with LoRA beside its
//! matrices. The math is the model crate's (llama.rs): RMS norm, rope in
//! NORM mode, causal attention with GQA, SwiGLU; the base products are the
//! inference kernels' (`cria_model::matmul`), so what is trained is the
//! function cria and llama.cpp run.
//!
//! A batch is several sequences laid end to end (`Seqs`): the products
//! run over every row at once, attention within each sequence.
//!
//! Activation memory: the trainer keeps only each block's input (gradient
//! checkpointing per block) and runs [`forward`] again with a [`Saved`]
//! right before that block's [`backward`], so at most one block's
//! activations exist at a time.

use crate::error::Result;
use crate::lora::{Lora, Target};
use crate::ops::{axpy, base_backward, gemm_nt, rmsnorm_backward, transpose, Scratch2};
use cria_gguf::GgufFile;
use cria_kernels::ThreadPool;
use cria_model::{LayerWeights, LlamaConfig, Matrix};

/// Sequences of a batch: `(first row, length)` each, rows in order.
pub type Seqs = [(usize, usize)];

/// What a block's forward and backward share.
pub struct Ctx<'a> {
    pub file: &'a GgufFile,
    pub cfg: &'a LlamaConfig,
    pub lora: &'a Lora,
    pub pool: &'a ThreadPool,
    /// (rope_dim / 2) inverse frequencies, as inference computes them.
    pub inv_freq: Vec<f32>,
    /// The same, negated: rotating by minus the angle undoes rope.
    pub neg_inv_freq: Vec<f32>,
    /// LoRA dropout probability and the seed of this micro-batch's masks
    /// (None: no dropout, as in evaluation).
    pub dropout: Option<(f32, u64)>,
}

/// One product's saved state: the LoRA input's dropout mask (values 0 or
/// 1/(1-p); empty without dropout) and `u = A * dropout(x)` (n, rank).
#[derive(Default)]
struct LinSave {
    mask: Vec<f32>,
    u: Vec<f32>,
}

/// Activations of one block kept for its backward.
#[derive(Default)]
pub struct Saved {
    xn1: Vec<f32>,    // (n, dim) attention norm output
    q: Vec<f32>,      // (n, q_dim) after rope
    k: Vec<f32>,      // (n, kv_dim) after rope
    v: Vec<f32>,      // (n, kv_dim)
    p: Vec<Vec<f32>>, // per head: each sequence's (len, len) probabilities
    att: Vec<f32>,    // (n, q_dim) attention output
    h: Vec<f32>,      // (n, dim) residual after attention
    xn2: Vec<f32>,    // (n, dim) ffn norm output
    g: Vec<f32>,      // (n, ffn_dim) gate before silu
    up: Vec<f32>,     // (n, ffn_dim)
    act: Vec<f32>,    // (n, ffn_dim) silu(g) * up
    lin: [LinSave; 7],
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

impl Ctx<'_> {
    /// out (n, m.rows) = W x + s * B A dropout(x).
    #[allow(clippy::too_many_arguments)]
    fn lin(
        &self,
        layer: usize,
        t: Target,
        m: &Matrix,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        save: Option<&mut LinSave>,
    ) -> Result<()> {
        cria_model::matmul(self.file, m, x, out, self.pool)?;
        let Some(slot) = self.lora.slot(layer, t) else {
            return Ok(());
        };
        let r = self.lora.rank;
        let (a, b) = self.lora.ab(slot, &self.lora.params);
        let mut mask = Vec::new();
        let mut xd_buf = Vec::new();
        let xd: &[f32] = match self.dropout {
            Some((p, seed)) if p > 0.0 => {
                // splitmix64 keyed by (seed, layer, target): cheap, and the
                // same mask when the block is run again for its backward.
                let mut state = mix(seed ^ mix(((layer as u64) << 8) | t as u64));
                let keep = 1.0 / (1.0 - p);
                let cut = (p as f64 * (1u64 << 32) as f64) as u64;
                mask.extend((0..x.len()).map(|_| {
                    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    if mix(state) >> 32 < cut {
                        0.0
                    } else {
                        keep
                    }
                }));
                xd_buf.extend(x.iter().zip(&mask).map(|(x, m)| x * m));
                &xd_buf
            }
            _ => x,
        };
        let mut u = vec![0.0; n * r];
        gemm_nt(xd, a, slot.cols, &mut u, self.pool);
        let mut d = vec![0.0; n * slot.rows];
        gemm_nt(&u, b, r, &mut d, self.pool);
        axpy(out, self.lora.scale(), &d);
        if let Some(s) = save {
            s.mask = mask;
            s.u = u;
        }
        Ok(())
    }

    /// dx (n, m.cols) = dy W + s * ((dy B) A) * mask; adds dA and dB to `grad`.
    #[allow(clippy::too_many_arguments)]
    fn lin_back(
        &self,
        layer: usize,
        t: Target,
        m: &Matrix,
        x: &[f32],
        save: &LinSave,
        dy: &[f32],
        dx: &mut [f32],
        grad: &mut [f32],
        tmp: &mut Scratch2,
    ) -> Result<()> {
        base_backward(self.file, m, dy, dx, self.pool, tmp)?;
        let Some(slot) = self.lora.slot(layer, t) else {
            return Ok(());
        };
        let (r, s) = (self.lora.rank, self.lora.scale());
        let n = dy.len() / slot.rows;
        let (a, b) = self.lora.ab(slot, &self.lora.params);
        let (ga, gb) = self.lora.ab_mut(slot, grad);
        let (mut dyt, mut ut) = (Vec::new(), Vec::new());
        // dB (rows, r) += s * dy^T u
        transpose(dy, n, slot.rows, &mut dyt);
        transpose(&save.u, n, r, &mut ut);
        let mut tmp_b = vec![0.0; slot.rows * r];
        gemm_nt(&dyt, &ut, n, &mut tmp_b, self.pool);
        axpy(gb, s, &tmp_b);
        // tt (n, r) = dy B
        let mut bt = Vec::new();
        transpose(b, slot.rows, r, &mut bt);
        let mut tt = vec![0.0; n * r];
        gemm_nt(dy, &bt, slot.rows, &mut tt, self.pool);
        // dA (r, cols) += s * tt^T dropout(x)
        let xd: Vec<f32>;
        let xd: &[f32] = if save.mask.is_empty() {
            x
        } else {
            xd = x.iter().zip(&save.mask).map(|(x, m)| x * m).collect();
            &xd
        };
        let (mut ttt, mut xdt) = (Vec::new(), Vec::new());
        transpose(&tt, n, r, &mut ttt);
        transpose(xd, n, slot.cols, &mut xdt);
        let mut tmp_a = vec![0.0; r * slot.cols];
        gemm_nt(&ttt, &xdt, n, &mut tmp_a, self.pool);
        axpy(ga, s, &tmp_a);
        // dx += s * (tt A) * mask
        let mut at = Vec::new();
        transpose(a, r, slot.cols, &mut at);
        let mut dxl = vec![0.0; n * slot.cols];
        gemm_nt(&tt, &at, r, &mut dxl, self.pool);
        if !save.mask.is_empty() {
            dxl.iter_mut().zip(&save.mask).for_each(|(d, m)| *d *= m);
        }
        axpy(dx, s, &dxl);
        Ok(())
    }

    fn rope_rows(&self, x: &mut [f32], width: usize, seqs: &Seqs, inv: &[f32]) {
        let hd = self.cfg.head_dim;
        for &(s0, len) in seqs {
            for i in 0..len {
                let row = &mut x[(s0 + i) * width..(s0 + i + 1) * width];
                cria_model::rope(row, hd, i, inv);
            }
        }
    }
}

/// Per-head work of attention (forward: `o`, `p`; backward: `dq`, `dk`,
/// `dv`), one task each, so no two threads write the same buffer and the
/// sums are in a fixed order.
#[derive(Default)]
struct HeadWork {
    o: Vec<f32>,  // (n, hd) output, or dq in backward
    p: Vec<f32>,  // per sequence (len, len) probabilities, row-major
    dk: Vec<f32>, // (n, hd)
    dv: Vec<f32>, // (n, hd)
}

/// Column slice `[h * hd, (h + 1) * hd)` of every row of `x` (n, width).
fn gather(x: &[f32], width: usize, h: usize, hd: usize) -> Vec<f32> {
    x.chunks_exact(width)
        .flat_map(|r| &r[h * hd..(h + 1) * hd])
        .copied()
        .collect()
}

fn scatter(x: &mut [f32], width: usize, h: usize, hd: usize, src: &[f32]) {
    for (r, s) in x.chunks_exact_mut(width).zip(src.chunks_exact(hd)) {
        r[h * hd..(h + 1) * hd].copy_from_slice(s);
    }
}

fn attention(
    cfg: &LlamaConfig,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &Seqs,
    pool: &ThreadPool,
) -> Vec<HeadWork> {
    let (hd, nh, qd, kvd) = (cfg.head_dim, cfg.n_heads, cfg.q_dim(), cfg.kv_dim());
    let per = nh / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let window = cfg.sliding_window.unwrap_or(usize::MAX);
    let mut work: Vec<HeadWork> = (0..nh).map(|_| HeadWork::default()).collect();
    pool.for_each_chunk_mut(&mut work, 1, |h, w| {
        let w = &mut w[0];
        let (qh, kh, vh) = (
            gather(q, qd, h, hd),
            gather(k, kvd, h / per, hd),
            gather(v, kvd, h / per, hd),
        );
        w.o = vec![0.0; qh.len()];
        w.p = Vec::with_capacity(seqs.iter().map(|s| s.1 * s.1).sum());
        for &(s0, len) in seqs {
            let base = w.p.len();
            w.p.resize(base + len * len, 0.0);
            for i in 0..len {
                let qi = &qh[(s0 + i) * hd..(s0 + i + 1) * hd];
                let row = &mut w.p[base + i * len..base + i * len + i + 1];
                for (j, s) in row.iter_mut().enumerate() {
                    *s = cria_kernels::dot(qi, &kh[(s0 + j) * hd..(s0 + j + 1) * hd]) * scale;
                }
                // A sliding window (Mistral 7B v0.1) gives earlier keys
                // probability 0, which also zeroes their gradients.
                let first = cria_kernels::window_start(i, window);
                row[..first].fill(0.0);
                cria_kernels::softmax(&mut row[first..]);
                let o = &mut w.o[(s0 + i) * hd..(s0 + i + 1) * hd];
                for (j, &p) in row.iter().enumerate() {
                    axpy(o, p, &vh[(s0 + j) * hd..(s0 + j + 1) * hd]);
                }
            }
        }
    });
    work
}

/// Runs block `l` on `x` (n, dim) in place; with `save`, keeps what
/// [`backward`] needs.
pub fn forward(
    c: &Ctx,
    lw: &LayerWeights,
    l: usize,
    x: &mut [f32],
    seqs: &Seqs,
    save: Option<&mut Saved>,
) -> Result<()> {
    let cfg = c.cfg;
    let (dim, qd, kvd, fd) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
    let n = x.len() / dim;
    let mut xn1 = vec![0.0; n * dim];
    for (o, r) in xn1.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        cria_model::rmsnorm(o, r, &lw.attn_norm, cfg.rms_eps);
    }
    let (mut q, mut k, mut v) = (vec![0.0; n * qd], vec![0.0; n * kvd], vec![0.0; n * kvd]);
    let mut ls: [LinSave; 7] = Default::default();
    let sv = save.is_some();
    let [sq, sk, svv, so, sg, su, sd] = &mut ls;
    c.lin(l, Target::Q, &lw.wq, &xn1, n, &mut q, sv.then_some(sq))?;
    c.lin(l, Target::K, &lw.wk, &xn1, n, &mut k, sv.then_some(sk))?;
    c.lin(l, Target::V, &lw.wv, &xn1, n, &mut v, sv.then_some(svv))?;
    c.rope_rows(&mut q, qd, seqs, &c.inv_freq);
    c.rope_rows(&mut k, kvd, seqs, &c.inv_freq);
    let heads = attention(cfg, &q, &k, &v, seqs, c.pool);
    let mut att = vec![0.0; n * qd];
    for (h, w) in heads.iter().enumerate() {
        scatter(&mut att, qd, h, cfg.head_dim, &w.o);
    }
    let mut proj = vec![0.0; n * dim];
    c.lin(l, Target::O, &lw.wo, &att, n, &mut proj, sv.then_some(so))?;
    axpy(x, 1.0, &proj);
    let h = save.as_ref().map(|_| x.to_vec());
    let mut xn2 = vec![0.0; n * dim];
    for (o, r) in xn2.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        cria_model::rmsnorm(o, r, &lw.ffn_norm, cfg.rms_eps);
    }
    let (mut g, mut up) = (vec![0.0; n * fd], vec![0.0; n * fd]);
    c.lin(
        l,
        Target::Gate,
        &lw.w_gate,
        &xn2,
        n,
        &mut g,
        sv.then_some(sg),
    )?;
    c.lin(l, Target::Up, &lw.w_up, &xn2, n, &mut up, sv.then_some(su))?;
    let mut act = g.clone();
    cria_kernels::silu_mul(&mut act, &up);
    c.lin(
        l,
        Target::Down,
        &lw.w_down,
        &act,
        n,
        &mut proj,
        sv.then_some(sd),
    )?;
    axpy(x, 1.0, &proj);
    if let Some(s) = save {
        *s = Saved {
            xn1,
            q,
            k,
            v,
            p: heads.into_iter().map(|w| w.p).collect(),
            att,
            h: h.unwrap_or_default(),
            xn2,
            g,
            up,
            act,
            lin: ls,
        };
    }
    Ok(())
}

/// Given the block's input `x` (n, dim), its saved activations and `dx` =
/// d loss / d output, replaces `dx` by d loss / d input and adds the
/// LoRA gradients to `grad`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    c: &Ctx,
    lw: &LayerWeights,
    l: usize,
    x: &[f32],
    s: &Saved,
    seqs: &Seqs,
    dx: &mut [f32],
    grad: &mut [f32],
) -> Result<()> {
    let cfg = c.cfg;
    let (dim, qd, kvd, fd, hd) = (
        cfg.dim,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.ffn_dim,
        cfg.head_dim,
    );
    let n = x.len() / dim;
    let mut tmp = Scratch2::default();
    // Feed-forward: out = h + Wdown (silu(g) * up).
    let mut dact = vec![0.0; n * fd];
    c.lin_back(
        l,
        Target::Down,
        &lw.w_down,
        &s.act,
        &s.lin[6],
        dx,
        &mut dact,
        grad,
        &mut tmp,
    )?;
    let (mut dg, mut du) = (vec![0.0; n * fd], vec![0.0; n * fd]);
    for i in 0..n * fd {
        let g = s.g[i];
        let sig = 1.0 / (1.0 + (-g).exp());
        let silu = g * sig;
        du[i] = dact[i] * silu;
        dg[i] = dact[i] * s.up[i] * sig * (1.0 + g * (1.0 - sig));
    }
    let mut dxn2 = vec![0.0; n * dim];
    let mut part = vec![0.0; n * dim];
    c.lin_back(
        l,
        Target::Gate,
        &lw.w_gate,
        &s.xn2,
        &s.lin[4],
        &dg,
        &mut dxn2,
        grad,
        &mut tmp,
    )?;
    c.lin_back(
        l,
        Target::Up,
        &lw.w_up,
        &s.xn2,
        &s.lin[5],
        &du,
        &mut part,
        grad,
        &mut tmp,
    )?;
    axpy(&mut dxn2, 1.0, &part);
    // dx is now d/dh: the residual path plus the norm's.
    for i in 0..n {
        let r = i * dim..(i + 1) * dim;
        let (hh, dyy) = (&s.h[r.clone()], &dxn2[r.clone()]);
        rmsnorm_backward(hh, &lw.ffn_norm, dyy, cfg.rms_eps, &mut dx[r]);
    }
    // Attention: h = x + Wo att.
    let mut datt = vec![0.0; n * qd];
    c.lin_back(
        l,
        Target::O,
        &lw.wo,
        &s.att,
        &s.lin[3],
        dx,
        &mut datt,
        grad,
        &mut tmp,
    )?;
    let per = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut work: Vec<HeadWork> = (0..cfg.n_heads).map(|_| HeadWork::default()).collect();
    c.pool.for_each_chunk_mut(&mut work, 1, |h, w| {
        let w = &mut w[0];
        let g = h / per;
        let (qh, kh, vh) = (
            gather(&s.q, qd, h, hd),
            gather(&s.k, kvd, g, hd),
            gather(&s.v, kvd, g, hd),
        );
        let doh = gather(&datt, qd, h, hd);
        let p = &s.p[h];
        w.o = vec![0.0; n * hd];
        w.dk = vec![0.0; n * hd];
        w.dv = vec![0.0; n * hd];
        let mut pbase = 0;
        let mut ds = Vec::new();
        for &(s0, len) in seqs {
            for i in 0..len {
                let prow = &p[pbase + i * len..pbase + i * len + i + 1];
                let doi = &doh[(s0 + i) * hd..(s0 + i + 1) * hd];
                ds.clear();
                ds.extend(
                    (0..=i).map(|j| cria_kernels::dot(doi, &vh[(s0 + j) * hd..(s0 + j + 1) * hd])),
                );
                let dot_pp: f32 = prow.iter().zip(&ds).map(|(p, d)| p * d).sum();
                let qi = &qh[(s0 + i) * hd..(s0 + i + 1) * hd];
                for j in 0..=i {
                    let pj = prow[j];
                    let dsj = pj * (ds[j] - dot_pp) * scale;
                    let kj = &kh[(s0 + j) * hd..(s0 + j + 1) * hd];
                    axpy(&mut w.o[(s0 + i) * hd..(s0 + i + 1) * hd], dsj, kj);
                    axpy(&mut w.dk[(s0 + j) * hd..(s0 + j + 1) * hd], dsj, qi);
                    axpy(&mut w.dv[(s0 + j) * hd..(s0 + j + 1) * hd], pj, doi);
                }
            }
            pbase += len * len;
        }
    });
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * qd], vec![0.0; n * kvd], vec![0.0; n * kvd]);
    for g in 0..cfg.n_kv_heads {
        let (mut sk, mut svv) = (vec![0.0; n * hd], vec![0.0; n * hd]);
        for w in &work[g * per..(g + 1) * per] {
            axpy(&mut sk, 1.0, &w.dk);
            axpy(&mut svv, 1.0, &w.dv);
        }
        scatter(&mut dk, kvd, g, hd, &sk);
        scatter(&mut dv, kvd, g, hd, &svv);
    }
    for (h, w) in work.iter().enumerate() {
        scatter(&mut dq, qd, h, hd, &w.o);
    }
    c.rope_rows(&mut dq, qd, seqs, &c.neg_inv_freq);
    c.rope_rows(&mut dk, kvd, seqs, &c.neg_inv_freq);
    let mut dxn1 = vec![0.0; n * dim];
    c.lin_back(
        l,
        Target::Q,
        &lw.wq,
        &s.xn1,
        &s.lin[0],
        &dq,
        &mut dxn1,
        grad,
        &mut tmp,
    )?;
    c.lin_back(
        l,
        Target::K,
        &lw.wk,
        &s.xn1,
        &s.lin[1],
        &dk,
        &mut part,
        grad,
        &mut tmp,
    )?;
    axpy(&mut dxn1, 1.0, &part);
    c.lin_back(
        l,
        Target::V,
        &lw.wv,
        &s.xn1,
        &s.lin[2],
        &dv,
        &mut part,
        grad,
        &mut tmp,
    )?;
    axpy(&mut dxn1, 1.0, &part);
    for i in 0..n {
        let r = i * dim..(i + 1) * dim;
        rmsnorm_backward(
            &x[r.clone()],
            &lw.attn_norm,
            &dxn1[r.clone()],
            cfg.rms_eps,
            &mut dx[r],
        );
    }
    Ok(())
}
