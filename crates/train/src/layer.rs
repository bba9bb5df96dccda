//! One transformer block, forward and backward, with LoRA beside its
//! matrices. The math is the model crate's (llama.rs): RMS norm, rope in
//! NORM mode, causal attention with GQA, SwiGLU; the base products are the
//! inference kernels' (`cria_model::matmul`), so what is trained is the
//! function cria and llama.cpp run.
//!
//! A batch is several sequences laid end to end (`Seqs`): the products
//! run over every row at once, attention within each sequence.
//!
//! Activation memory: [`forward`] with a [`Saved`] keeps what
//! [`backward`] needs. The trainer keeps those of as many of the last
//! blocks as fit its budget ([`crate::net::ACTIVATION_BUDGET`]); for the
//! others it keeps only the block's input and runs [`forward`] again right
//! before the block's [`backward`] (gradient checkpointing per block).

use crate::error::Result;
use crate::lora::{Lora, Target};
use crate::ops::{axpy, base_backward, mm, par_rows, par_rows2, rmsnorm_backward, strided, view};
use crate::transposed::Transposed;
use crate::workspace::Workspace;
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
    /// The base matrices' int8 transposes for the backward (None: every
    /// backward product on the exact f32 GEMM); see [`crate::transposed`].
    pub transposed: Option<&'a Transposed>,
    /// Buffers reused across blocks and steps.
    pub ws: Workspace,
}

/// A dropout mask, one bit per element (set: kept, and scaled by
/// `keep` = 1/(1-p); clear: dropped); empty without dropout. Bits rather
/// than the f32 factors: 1/32 of the memory (the default model's saved
/// masks were 136 MB at 256 tokens) and the same products.
#[derive(Default)]
struct Mask {
    bits: Vec<u64>,
    keep: f32,
}

impl Mask {
    fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    /// `dst[i] = src[i] * (keep or 0)`: the same product, bit for bit, as
    /// the f32 mask it replaces (a dropped negative element is -0.0).
    fn apply(&self, src: &[f32], dst: &mut [f32]) {
        let lut = self.lut();
        for ((d, s), &w) in dst.chunks_mut(64).zip(src.chunks(64)).zip(&self.bits) {
            for (k, (d, s)) in d.chunks_mut(8).zip(s.chunks(8)).enumerate() {
                let f = &lut[((w >> (8 * k)) & 0xff) as usize];
                for ((d, &s), &f) in d.iter_mut().zip(s).zip(f) {
                    *d = s * f;
                }
            }
        }
    }

    /// `x[i] *= (keep or 0)`.
    fn scale(&self, x: &mut [f32]) {
        let lut = self.lut();
        for (d, &w) in x.chunks_mut(64).zip(&self.bits) {
            for (k, d) in d.chunks_mut(8).enumerate() {
                let f = &lut[((w >> (8 * k)) & 0xff) as usize];
                d.iter_mut().zip(f).for_each(|(d, f)| *d *= f);
            }
        }
    }

    /// The 8 factors (keep or 0) of each byte of mask bits, so a product
    /// takes 8 factors per load instead of testing every bit.
    fn lut(&self) -> Vec<[f32; 8]> {
        (0..256u32)
            .map(|b| std::array::from_fn(|j| if (b >> j) & 1 == 1 { self.keep } else { 0.0 }))
            .collect()
    }
}

/// One product's saved state: the LoRA input's dropout mask and
/// `u = A * dropout(x)` (n, rank).
#[derive(Default)]
struct LinSave {
    mask: Mask,
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

impl Saved {
    /// Hands every buffer back to `ws`, leaving `self` empty.
    pub fn recycle(&mut self, ws: &Workspace) {
        let s = std::mem::take(self);
        for v in [s.xn1, s.q, s.k, s.v, s.att, s.h, s.xn2, s.g, s.up, s.act] {
            ws.give(v);
        }
        s.p.into_iter().for_each(|v| ws.give(v));
        s.lin.into_iter().for_each(|l| ws.give(l.u));
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let f = |v: &Vec<f32>| v.len();
        let masks: usize = self.lin.iter().map(|l| 8 * l.mask.bits.len()).sum();
        let lin: usize = self.lin.iter().map(|l| l.u.len()).sum();
        let p: usize = self.p.iter().map(f).sum();
        let rows = [
            &self.xn1, &self.q, &self.k, &self.v, &self.att, &self.h, &self.xn2, &self.g, &self.up,
            &self.act,
        ];
        masks + 4 * (lin + p + rows.iter().map(|v| f(v)).sum::<usize>())
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

impl Ctx<'_> {
    /// The LoRA input's dropout mask for one product (empty without
    /// dropout): element i is dropped when splitmix64 keyed by (seed,
    /// layer, target) and i falls under p, so the block's second forward
    /// (right before its backward) draws the same mask.
    fn mask(&self, layer: usize, t: Target, len: usize) -> Mask {
        let Some((p, seed)) = self.dropout.filter(|d| d.0 > 0.0) else {
            return Mask::default();
        };
        let base = mix(seed ^ mix(((layer as u64) << 8) | t as u64));
        let cut = (p as f64 * (1u64 << 32) as f64) as u64;
        let mut bits = vec![0u64; len.div_ceil(64)];
        // 64 words (4096 elements) per task.
        const WORDS: usize = 64;
        self.pool.for_each_chunk_mut(&mut bits, WORDS, |ci, words| {
            for (wj, w) in words.iter_mut().enumerate() {
                let i0 = (ci * WORDS + wj) * 64;
                for b in 0..64.min(len.saturating_sub(i0)) {
                    let i = (i0 + b) as u64;
                    let z = mix(base.wrapping_add((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                    if z >> 32 >= cut {
                        *w |= 1 << b;
                    }
                }
            }
        });
        Mask {
            bits,
            keep: 1.0 / (1.0 - p),
        }
    }

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
        let (r, s) = (self.lora.rank, self.lora.scale());
        let (a, b) = self.lora.ab(slot, &self.lora.params);
        let mask = self.mask(layer, t, x.len());
        let xd = self.masked(x, &mask);
        let xdr: &[f32] = if mask.is_empty() { x } else { &xd };
        // u (n, r) = xd A^T; out += (s u) B^T
        let mut u = self.ws.filled(n * r);
        let at = view(a, r, slot.cols)?.t();
        mm(view(xdr, n, slot.cols)?, at, &mut u, r, false, self.pool)?;
        self.ws.give(xd);
        let mut su = self.ws.filled(n * r);
        su.iter_mut().zip(&u).for_each(|(d, v)| *d = v * s);
        let bt = view(b, slot.rows, r)?.t();
        mm(view(&su, n, r)?, bt, out, slot.rows, true, self.pool)?;
        self.ws.give(su);
        match save {
            Some(sv) => {
                sv.mask = mask;
                self.ws.give(std::mem::replace(&mut sv.u, u));
            }
            None => self.ws.give(u),
        }
        Ok(())
    }

    /// dx (n, m.cols) [+]= dy W + s * ((dy B) A) * mask; adds dA and dB to
    /// `grad`. With `accumulate`, dx is added to rather than overwritten.
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
        accumulate: bool,
        grad: &mut [f32],
    ) -> Result<()> {
        let tm = self.transposed.and_then(|tr| tr.get(layer, t));
        // An accumulating int8 product is made here, then added.
        let need = if accumulate && tm.is_some() {
            dx.len()
        } else {
            0
        };
        let mut scratch = self.ws.filled(need);
        base_backward(
            self.file,
            m,
            tm,
            dy,
            dx,
            accumulate,
            &mut scratch,
            self.pool,
        )?;
        self.ws.give(scratch);
        let Some(slot) = self.lora.slot(layer, t) else {
            return Ok(());
        };
        let (r, s, pool) = (self.lora.rank, self.lora.scale(), self.pool);
        let (rows, cols) = (slot.rows, slot.cols);
        let n = dy.len() / rows;
        let (a, b) = self.lora.ab(slot, &self.lora.params);
        let (ga, gb) = self.lora.ab_mut(slot, grad);
        let dyv = view(dy, n, rows)?;
        // st (n, r) = s * dy B
        let mut st = self.ws.filled(n * r);
        mm(dyv, view(b, rows, r)?, &mut st, r, false, pool)?;
        st.iter_mut().for_each(|v| *v *= s);
        // dB (rows, r) += dy^T (s u)
        let mut su = self.ws.filled(n * r);
        su.iter_mut().zip(&save.u).for_each(|(d, v)| *d = v * s);
        mm(dyv.t(), view(&su, n, r)?, gb, r, true, pool)?;
        self.ws.give(su);
        // dA (r, cols) += st^T dropout(x)
        let xd = self.masked(x, &save.mask);
        let xdr: &[f32] = if save.mask.is_empty() { x } else { &xd };
        let stv = view(&st, n, r)?;
        mm(stv.t(), view(xdr, n, cols)?, ga, cols, true, pool)?;
        self.ws.give(xd);
        // dx += (st A) * mask
        let av = view(a, r, cols)?;
        if save.mask.is_empty() {
            mm(stv, av, dx, cols, true, pool)?;
        } else {
            let mut dxl = self.ws.filled(n * cols);
            mm(stv, av, &mut dxl, cols, false, pool)?;
            save.mask.scale(&mut dxl);
            axpy(dx, 1.0, &dxl);
            self.ws.give(dxl);
        }
        self.ws.give(st);
        Ok(())
    }

    /// `x * mask` in a workspace buffer (empty without a mask).
    fn masked(&self, x: &[f32], mask: &Mask) -> Vec<f32> {
        if mask.is_empty() {
            return self.ws.filled(0);
        }
        let mut xd = self.ws.filled(x.len());
        mask.apply(x, &mut xd);
        xd
    }

    fn rope_rows(&self, x: &mut [f32], width: usize, seqs: &Seqs, inv: &[f32]) {
        let hd = self.cfg.head_dim;
        let pos: Vec<usize> = seqs.iter().flat_map(|&(_, len)| 0..len).collect();
        par_rows(self.pool, x, width, |i, row| {
            cria_model::rope(row, hd, pos[i], inv)
        });
    }
}

/// Per-head work of attention (forward: `o`, `p`; backward: `dq` in `o`,
/// `dk`, `dv`), one task each, so no two threads write the same buffer and
/// the sums are in a fixed order.
#[derive(Default)]
struct HeadWork {
    o: Vec<f32>,  // (n, hd) output, or dq in backward
    p: Vec<f32>,  // per sequence (len, len) probabilities, row-major, 0 above the diagonal
    dk: Vec<f32>, // (n, hd)
    dv: Vec<f32>, // (n, hd)
    ds: Vec<f32>, // backward: one sequence's (len, len) dS
}

impl HeadWork {
    fn recycle(self, ws: &Workspace) {
        for v in [self.o, self.p, self.dk, self.dv, self.ds] {
            ws.give(v);
        }
    }
}

/// Query rows per causal block: a block's scores are computed against keys
/// 0..(its last row), so only the diagonal blocks compute masked entries.
const RB: usize = 64;

fn scatter(x: &mut [f32], width: usize, h: usize, hd: usize, src: &[f32]) {
    for (r, s) in x.chunks_exact_mut(width).zip(src.chunks_exact(hd)) {
        r[h * hd..(h + 1) * hd].copy_from_slice(s);
    }
}

/// Causal attention per head, as GEMMs on the head's columns of q, k, v
/// (strided views, no copies): S = Q K^T / sqrt(hd), P = softmax, O = P V.
fn attention(c: &Ctx, q: &[f32], k: &[f32], v: &[f32], seqs: &Seqs) -> Result<Vec<HeadWork>> {
    let (cfg, pool) = (c.cfg, c.pool);
    let (hd, nh, qd, kvd) = (cfg.head_dim, cfg.n_heads, cfg.q_dim(), cfg.kv_dim());
    let per = nh / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let window = cfg.sliding_window.unwrap_or(usize::MAX);
    let n = q.len() / qd;
    // Every element of o and p is written below (p's masked entries
    // as zeros), so the buffers need no clearing.
    let plen = seqs.iter().map(|s| s.1 * s.1).sum();
    let mut work: Vec<HeadWork> = (0..nh)
        .map(|_| HeadWork {
            o: c.ws.filled(n * hd),
            p: c.ws.filled(plen),
            ..Default::default()
        })
        .collect();
    let mut results: Vec<Result<()>> = (0..nh).map(|_| Ok(())).collect();
    let mut both: Vec<(&mut HeadWork, &mut Result<()>)> =
        work.iter_mut().zip(results.iter_mut()).collect();
    pool.for_each_chunk_mut(&mut both, 1, |h, w| {
        let (w, res) = &mut w[0];
        **res = (|| -> Result<()> {
            // Inside a task the products run on this thread alone.
            let one = ThreadPool::new(1);
            let (qc, kc) = (h * hd, (h / per) * hd);
            let mut base = 0;
            for &(s0, len) in seqs {
                let p = &mut w.p[base..base + len * len];
                for i0 in (0..len).step_by(RB) {
                    let i1 = (i0 + RB).min(len);
                    let qv = strided(&q[(s0 + i0) * qd + qc..], i1 - i0, hd, qd)?;
                    let kt = strided(&k[s0 * kvd + kc..], i1, hd, kvd)?.t();
                    mm(qv, kt, &mut p[i0 * len..], len, false, &one)?;
                    for i in i0..i1 {
                        let row = &mut p[i * len..(i + 1) * len];
                        row[..=i].iter_mut().for_each(|s| *s *= scale);
                        // A sliding window (Mistral 7B v0.1) gives earlier
                        // keys probability 0, which also zeroes their
                        // gradients.
                        let first = cria_kernels::window_start(i, window);
                        row[..first].fill(0.0);
                        cria_kernels::softmax(&mut row[first..=i]);
                        row[i + 1..].fill(0.0);
                    }
                    let pv = strided(&p[i0 * len..], i1 - i0, i1, len)?;
                    let vv = strided(&v[s0 * kvd + kc..], i1, hd, kvd)?;
                    mm(pv, vv, &mut w.o[(s0 + i0) * hd..], hd, false, &one)?;
                }
                base += len * len;
            }
            Ok(())
        })();
    });
    drop(both);
    results.into_iter().collect::<Result<()>>()?;
    Ok(work)
}

/// The attention backward of head `h` into `w` (dq in `w.o`, `w.dk`,
/// `w.dv`), given `datt` = d loss / d attention output (n, q_dim):
/// dP = dO V^T, dS = P * (dP - rowsum(P * dP)) / sqrt(hd), dQ = dS K,
/// dK = dS^T Q, dV = P^T dO.
#[allow(clippy::too_many_arguments)]
fn attention_back(
    cfg: &LlamaConfig,
    s: &Saved,
    datt: &[f32],
    seqs: &Seqs,
    h: usize,
    w: &mut HeadWork,
) -> Result<()> {
    let (hd, qd, kvd) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
    let per = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let one = ThreadPool::new(1);
    let (qc, kc) = (h * hd, (h / per) * hd);
    // w.o, w.dk, w.dv (n, hd) and w.ds (at least the longest len^2) come
    // from the workspace; every element read is written first.
    let ds = &mut w.ds;
    let mut pbase = 0;
    for &(s0, len) in seqs {
        let p = &s.p[h][pbase..pbase + len * len];
        for i0 in (0..len).step_by(RB) {
            let i1 = (i0 + RB).min(len);
            let dov = strided(&datt[(s0 + i0) * qd + qc..], i1 - i0, hd, qd)?;
            let vt = strided(&s.v[s0 * kvd + kc..], i1, hd, kvd)?.t();
            mm(dov, vt, &mut ds[i0 * len..], len, false, &one)?;
            for i in i0..i1 {
                let (prow, drow) = (
                    &p[i * len..i * len + i + 1],
                    &mut ds[i * len..(i + 1) * len],
                );
                let dot_pp: f32 = prow.iter().zip(drow.iter()).map(|(p, d)| p * d).sum();
                for (d, &pj) in drow.iter_mut().zip(prow) {
                    *d = pj * (*d - dot_pp) * scale;
                }
                drow[i + 1..].fill(0.0);
            }
            let dsv = strided(&ds[i0 * len..], i1 - i0, i1, len)?;
            let kv = strided(&s.k[s0 * kvd + kc..], i1, hd, kvd)?;
            mm(dsv, kv, &mut w.o[(s0 + i0) * hd..], hd, false, &one)?;
        }
        // Rows j of dK and dV take queries i >= j: columns j0.. of dS and P.
        for j0 in (0..len).step_by(RB) {
            let j1 = (j0 + RB).min(len);
            let dst = strided(&ds[j0 * len + j0..], len - j0, j1 - j0, len)?.t();
            let qv = strided(&s.q[(s0 + j0) * qd + qc..], len - j0, hd, qd)?;
            mm(dst, qv, &mut w.dk[(s0 + j0) * hd..], hd, false, &one)?;
            let pt = strided(&p[j0 * len + j0..], len - j0, j1 - j0, len)?.t();
            let dov = strided(&datt[(s0 + j0) * qd + qc..], len - j0, hd, qd)?;
            mm(pt, dov, &mut w.dv[(s0 + j0) * hd..], hd, false, &one)?;
        }
        pbase += len * len;
    }
    Ok(())
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
    let norm = |out: &mut [f32], x: &[f32], w: &[f32]| {
        par_rows(c.pool, out, dim, |i, o| {
            cria_model::rmsnorm(o, &x[i * dim..(i + 1) * dim], w, cfg.rms_eps)
        })
    };
    let mut save = save;
    if let Some(s) = save.as_mut() {
        s.recycle(&c.ws);
    }
    // Every buffer below is written in full before it is read.
    let mut xn1 = c.ws.filled(n * dim);
    norm(&mut xn1, x, &lw.attn_norm);
    let (mut q, mut k, mut v) = (
        c.ws.filled(n * qd),
        c.ws.filled(n * kvd),
        c.ws.filled(n * kvd),
    );
    let mut ls: [LinSave; 7] = Default::default();
    let sv = save.is_some();
    let [sq, sk, svv, so, sg, su, sd] = &mut ls;
    c.lin(l, Target::Q, &lw.wq, &xn1, n, &mut q, sv.then_some(sq))?;
    c.lin(l, Target::K, &lw.wk, &xn1, n, &mut k, sv.then_some(sk))?;
    c.lin(l, Target::V, &lw.wv, &xn1, n, &mut v, sv.then_some(svv))?;
    c.rope_rows(&mut q, qd, seqs, &c.inv_freq);
    c.rope_rows(&mut k, kvd, seqs, &c.inv_freq);
    let heads = attention(c, &q, &k, &v, seqs)?;
    let mut att = c.ws.filled(n * qd);
    for (h, w) in heads.iter().enumerate() {
        scatter(&mut att, qd, h, cfg.head_dim, &w.o);
    }
    let mut proj = c.ws.filled(n * dim);
    c.lin(l, Target::O, &lw.wo, &att, n, &mut proj, sv.then_some(so))?;
    axpy(x, 1.0, &proj);
    let h = if sv {
        let mut h = c.ws.filled(x.len());
        h.copy_from_slice(x);
        h
    } else {
        Vec::new()
    };
    let mut xn2 = c.ws.filled(n * dim);
    norm(&mut xn2, x, &lw.ffn_norm);
    let (mut g, mut up) = (c.ws.filled(n * fd), c.ws.filled(n * fd));
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
    let mut act = c.ws.filled(n * fd);
    act.copy_from_slice(&g);
    par_rows(c.pool, &mut act, fd, |i, a| {
        cria_kernels::silu_mul(a, &up[i * fd..(i + 1) * fd])
    });
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
    c.ws.give(proj);
    match save {
        Some(s) => {
            let mut p = Vec::with_capacity(heads.len());
            for w in heads {
                p.push(w.p);
                c.ws.give(w.o);
            }
            *s = Saved {
                xn1,
                q,
                k,
                v,
                p,
                att,
                h,
                xn2,
                g,
                up,
                act,
                lin: ls,
            };
        }
        None => {
            heads.into_iter().for_each(|w| w.recycle(&c.ws));
            for b in [xn1, q, k, v, att, h, xn2, g, up, act] {
                c.ws.give(b);
            }
            ls.into_iter().for_each(|l| c.ws.give(l.u));
        }
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
    // Feed-forward: out = h + Wdown (silu(g) * up).
    // Every buffer below is written in full before it is read.
    let mut dact = c.ws.filled(n * fd);
    let sl = &s.lin;
    c.lin_back(
        l,
        Target::Down,
        &lw.w_down,
        &s.act,
        &sl[6],
        dx,
        &mut dact,
        false,
        grad,
    )?;
    // dg = dact * up * silu'(g); du = dact * silu(g), in place of dact.
    let mut dg = c.ws.filled(n * fd);
    par_rows2(c.pool, &mut dg, &mut dact, fd, |i, dg, da| {
        let r = i * fd..(i + 1) * fd;
        for ((dg, da), (&g, &up)) in dg
            .iter_mut()
            .zip(da)
            .zip(s.g[r.clone()].iter().zip(&s.up[r]))
        {
            let sig = 1.0 / (1.0 + (-g).exp());
            *dg = *da * up * sig * (1.0 + g * (1.0 - sig));
            *da *= g * sig;
        }
    });
    let du = dact;
    let mut dxn2 = c.ws.filled(n * dim);
    c.lin_back(
        l,
        Target::Gate,
        &lw.w_gate,
        &s.xn2,
        &sl[4],
        &dg,
        &mut dxn2,
        false,
        grad,
    )?;
    c.lin_back(
        l,
        Target::Up,
        &lw.w_up,
        &s.xn2,
        &sl[5],
        &du,
        &mut dxn2,
        true,
        grad,
    )?;
    // dx is now d/dh: the residual path plus the norm's.
    par_rows(c.pool, dx, dim, |i, d| {
        let r = i * dim..(i + 1) * dim;
        rmsnorm_backward(&s.h[r.clone()], &lw.ffn_norm, &dxn2[r], cfg.rms_eps, d)
    });
    // Attention: h = x + Wo att.
    c.ws.give(dxn2);
    c.ws.give(dg);
    c.ws.give(du);
    let mut datt = c.ws.filled(n * qd);
    c.lin_back(
        l,
        Target::O,
        &lw.wo,
        &s.att,
        &sl[3],
        dx,
        &mut datt,
        false,
        grad,
    )?;
    let per = cfg.n_heads / cfg.n_kv_heads;
    let longest = seqs.iter().map(|s| s.1 * s.1).max().unwrap_or(0);
    let mut work: Vec<HeadWork> = (0..cfg.n_heads)
        .map(|_| HeadWork {
            o: c.ws.filled(n * hd),
            dk: c.ws.filled(n * hd),
            dv: c.ws.filled(n * hd),
            ds: c.ws.filled(longest),
            ..Default::default()
        })
        .collect();
    let mut results: Vec<Result<()>> = (0..cfg.n_heads).map(|_| Ok(())).collect();
    let mut both: Vec<(&mut HeadWork, &mut Result<()>)> =
        work.iter_mut().zip(results.iter_mut()).collect();
    c.pool.for_each_chunk_mut(&mut both, 1, |h, w| {
        let (w, res) = &mut w[0];
        **res = attention_back(cfg, s, &datt, seqs, h, w);
    });
    drop(both);
    results.into_iter().collect::<Result<()>>()?;
    c.ws.give(datt);
    let (mut dq, mut dk, mut dv) = (
        c.ws.filled(n * qd),
        c.ws.filled(n * kvd),
        c.ws.filled(n * kvd),
    );
    let (mut sk, mut svv) = (c.ws.filled(n * hd), c.ws.filled(n * hd));
    for g in 0..cfg.n_kv_heads {
        sk.fill(0.0);
        svv.fill(0.0);
        for w in &work[g * per..(g + 1) * per] {
            axpy(&mut sk, 1.0, &w.dk);
            axpy(&mut svv, 1.0, &w.dv);
        }
        scatter(&mut dk, kvd, g, hd, &sk);
        scatter(&mut dv, kvd, g, hd, &svv);
    }
    c.ws.give(sk);
    c.ws.give(svv);
    for (h, w) in work.iter().enumerate() {
        scatter(&mut dq, qd, h, hd, &w.o);
    }
    work.into_iter().for_each(|w| w.recycle(&c.ws));
    c.rope_rows(&mut dq, qd, seqs, &c.neg_inv_freq);
    c.rope_rows(&mut dk, kvd, seqs, &c.neg_inv_freq);
    let mut dxn1 = c.ws.filled(n * dim);
    c.lin_back(
        l,
        Target::Q,
        &lw.wq,
        &s.xn1,
        &sl[0],
        &dq,
        &mut dxn1,
        false,
        grad,
    )?;
    c.lin_back(
        l,
        Target::K,
        &lw.wk,
        &s.xn1,
        &sl[1],
        &dk,
        &mut dxn1,
        true,
        grad,
    )?;
    c.lin_back(
        l,
        Target::V,
        &lw.wv,
        &s.xn1,
        &sl[2],
        &dv,
        &mut dxn1,
        true,
        grad,
    )?;
    par_rows(c.pool, dx, dim, |i, d| {
        let r = i * dim..(i + 1) * dim;
        rmsnorm_backward(&x[r.clone()], &lw.attn_norm, &dxn1[r], cfg.rms_eps, d)
    });
    for b in [dq, dk, dv, dxn1] {
        c.ws.give(b);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Mask;

    #[test]
    fn a_bit_mask_gives_the_f32_masks_products() {
        // 130 elements: two whole words and a partial one.
        let x: Vec<f32> = (0..130).map(|i| (i as f32 - 60.0) / 7.0).collect();
        let keep = 1.0 / (1.0 - 0.3f32);
        let kept: Vec<bool> = (0..130).map(|i| (i * 37 + 11) % 10 >= 3).collect();
        let mut bits = vec![0u64; 3];
        for (i, &k) in kept.iter().enumerate() {
            if k {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        let mask = Mask { bits, keep };
        let factors: Vec<f32> = kept.iter().map(|&k| if k { keep } else { 0.0 }).collect();
        let want: Vec<f32> = x.iter().zip(&factors).map(|(x, m)| x * m).collect();
        let mut got = vec![9.0; 130];
        mask.apply(&x, &mut got);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "-0.0 for dropped negatives too");
        let mut scaled = x.clone();
        mask.scale(&mut scaled);
        assert_eq!(bits(&scaled), bits(&want));
    }
}
