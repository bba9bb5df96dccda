//! The LLaMA forward pass: token ids and their positions in, logits out.
//!
//! Per layer (x is the residual stream, one row of `dim` per token):
//!   h = x + Wo * attention(rope(Wq * norm(x)), rope(Wk * norm(x)), Wv * norm(x))
//!   x = h + Wdown * (silu(Wgate * norm(h)) * (Wup * norm(h)))
//! then logits = Woutput * norm(x). This is llama.cpp's LLM_ARCH_LLAMA graph
//! with rope in NORM mode (adjacent pairs rotate together).

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{ErrorKind, Result};
use crate::kv_cache::{hadamard, KvCache};
use crate::linear::{matmul, matmul_many};
use crate::lora::{add_deltas, LoraSet, Site, Target};
use crate::weights::{Matrix, Weights};
use attention::{attention, plan_attention, AttTask};
use cria_gguf::GgufFile;
use cria_kernels::ThreadPool;
use rows::{add_norm, for_rows, store_rows};

mod attention;
mod rows;

/// Activations for a batch of up to `n_batch` tokens, allocated once per
/// session so the forward pass allocates nothing per token.
pub struct Scratch {
    pub n_batch: usize,
    x: Vec<f32>,    // (n_batch, dim) residual stream
    xb: Vec<f32>,   // (n_batch, dim) normed input of a sub-block
    q: Vec<f32>,    // (n_batch, q_dim)
    k: Vec<f32>,    // (n_batch, kv_dim)
    v: Vec<f32>,    // (n_batch, kv_dim)
    att: Vec<f32>,  // (n_batch, q_dim) attention output before Wo
    proj: Vec<f32>, // (n_batch, dim) output of Wo or Wdown
    gate: Vec<f32>, // (n_batch, ffn_dim)
    up: Vec<f32>,   // (n_batch, ffn_dim)
    /// The batch's attention split into tasks, and each one's range of
    /// its output (see [`plan_attention`]).
    att_tasks: Vec<AttTask>,
    att_ranges: Vec<(usize, usize)>,
    /// Whether the tasks' outputs go through `att_tmp` (some task holds
    /// several rows but not all heads), and that buffer: (n_batch, q_dim).
    att_scatter: bool,
    att_tmp: Vec<f32>,
    /// (rope_dim / 2) inverse frequencies, with rope_freqs and scaling folded in.
    inv_freq: Vec<f32>,
    /// (n_batch, rope_dim / 2) (sin, cos) of each row's angles.
    rope_sc: Vec<(f32, f32)>,
    /// The sequence of each row of logits in a batch's output projection.
    out_seqs: Vec<usize>,
}

impl Scratch {
    pub fn new(cfg: &LlamaConfig, w: &Weights, n_batch: usize) -> Scratch {
        let n = n_batch;
        Scratch {
            n_batch,
            x: vec![0.0; n * cfg.dim],
            xb: vec![0.0; n * cfg.dim],
            q: vec![0.0; n * cfg.q_dim()],
            k: vec![0.0; n * cfg.kv_dim()],
            v: vec![0.0; n * cfg.kv_dim()],
            att: vec![0.0; n * cfg.q_dim()],
            proj: vec![0.0; n * cfg.dim],
            gate: vec![0.0; n * cfg.ffn_dim],
            up: vec![0.0; n * cfg.ffn_dim],
            att_tasks: Vec::new(),
            att_ranges: Vec::new(),
            att_scatter: false,
            att_tmp: vec![0.0; n * cfg.q_dim()],
            inv_freq: inverse_frequencies(cfg, w.rope_freqs.as_deref()),
            rope_sc: vec![(0.0, 0.0); n * (cfg.rope_dim / 2)],
            out_seqs: Vec::new(),
        }
    }
}

/// theta_i = pos * freq_scale * base^(-2i/rope_dim) / factor_i, computed the
/// way ggml does (repeated multiplication in f32) so angles match it.
pub fn inverse_frequencies(cfg: &LlamaConfig, factors: Option<&[f32]>) -> Vec<f32> {
    let half = cfg.rope_dim / 2;
    let theta_scale = cfg.rope_base.powf(-2.0 / cfg.rope_dim as f32);
    let freq_scale = match cfg.rope_scaling {
        RopeScaling::None => 1.0,
        RopeScaling::Linear { factor } => 1.0 / factor,
    };
    let mut out = Vec::with_capacity(half);
    let mut theta = 1.0f32;
    for i in 0..half {
        let ff = factors.map_or(1.0, |f| f[i]);
        out.push(freq_scale * theta / ff);
        theta *= theta_scale;
    }
    out
}

/// Rotates adjacent pairs of the first `2 * inv_freq.len()` elements of each
/// `head_dim`-wide head in `x` by the angles for position `pos`.
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32]) {
    let mut sc = vec![(0.0, 0.0); inv_freq.len()];
    rope_angles(pos, inv_freq, &mut sc);
    rope_rotate(x, head_dim, &sc);
}

/// `(sin, cos)` of each angle `pos * inv_freq[i]`: one table per position,
/// shared by every query and key head.
fn rope_angles(pos: usize, inv_freq: &[f32], sc: &mut [(f32, f32)]) {
    for (sc, &f) in sc.iter_mut().zip(inv_freq) {
        *sc = (pos as f32 * f).sin_cos();
    }
}

/// [`rope`] with the angles' sines and cosines given.
pub(crate) fn rope_rotate(x: &mut [f32], head_dim: usize, sc: &[(f32, f32)]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(sin, cos)) in sc.iter().enumerate() {
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * cos - b * sin;
            head[2 * i + 1] = a * sin + b * cos;
        }
    }
}

/// RMS norm, the squares summed in f64 as ggml does ([`cria_kernels::rmsnorm`]).
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    cria_kernels::rmsnorm(out, x, weight, eps)
}

/// Which rows of logits the caller wants.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, scoring).
    All,
}

/// One token of a batch: the sequence (index into the caches) it belongs
/// to, its id, its position in that sequence, and whether its logits are
/// wanted. Rows of one sequence must come in increasing position order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BatchRow {
    pub seq: usize,
    pub token: u32,
    pub pos: usize,
    pub logits: bool,
}

/// Where the rows that ask for output (`BatchRow::logits`) write it: their
/// logits, or, for rows of a sequence marked in `hidden_seqs`, their final
/// hidden state `norm(x)` (the input of the output projection, which
/// embeddings pool).
pub struct Outputs<'a> {
    /// (rows with logits, n_vocab), in row order.
    pub logits: &'a mut Vec<f32>,
    /// Indexed by sequence; a sequence past its end is not marked.
    pub hidden_seqs: &'a [bool],
    /// (rows with hidden output, dim), in row order.
    pub hidden: &'a mut Vec<f32>,
}

/// Evaluates a batch of rows from any number of sequences in one pass per
/// `scratch.n_batch` rows: the projections run once over all rows, attention
/// per row over its own sequence's cache. The rows that ask for output
/// write it to `out` (see [`Outputs`]). `lora[seq]` are the adapters of
/// each sequence's rows (empty: none for any).
#[allow(clippy::too_many_arguments)]
pub fn forward_rows(
    file: &GgufFile,
    cfg: &LlamaConfig,
    w: &Weights,
    scratch: &mut Scratch,
    pool: &ThreadPool,
    caches: &mut [&mut KvCache],
    rows: &[BatchRow],
    out: Outputs<'_>,
    lora: &[LoraSet],
) -> Result<()> {
    if rows.is_empty() {
        return Err(ErrorKind::BadArgument {
            detail: "no tokens to evaluate".into(),
        }
        .into());
    }
    for r in rows {
        let Some(cache) = caches.get(r.seq) else {
            return Err(ErrorKind::BadArgument {
                detail: format!(
                    "row names sequence {} but only {} caches were given",
                    r.seq,
                    caches.len()
                ),
            }
            .into());
        };
        if r.pos >= cache.n_ctx {
            return Err(ErrorKind::ContextFull {
                needed: r.pos + 1,
                n_ctx: cache.n_ctx,
            }
            .into());
        }
        if r.token as usize >= cfg.n_vocab {
            return Err(ErrorKind::BadToken {
                token: r.token,
                n_vocab: cfg.n_vocab,
            }
            .into());
        }
        if cache.n_layers != cfg.n_layers || cache.kv_dim != cfg.kv_dim() {
            return Err(ErrorKind::BadArgument {
                detail: "a KV cache was made for another model".into(),
            }
            .into());
        }
    }
    let Outputs {
        logits: out,
        hidden_seqs,
        hidden,
    } = out;
    // Batches where no row has adapters take the base model's path.
    let lora = match rows
        .iter()
        .any(|r| lora.get(r.seq).is_some_and(|s| !s.is_empty()))
    {
        true => lora,
        false => &[],
    };
    let is_hidden = |r: &BatchRow| hidden_seqs.get(r.seq).copied().unwrap_or(false);
    let n_hidden = rows.iter().filter(|r| r.logits && is_hidden(r)).count();
    let n_out = rows.iter().filter(|r| r.logits).count() - n_hidden;
    out.resize(n_out * cfg.n_vocab, 0.0);
    hidden.resize(n_hidden * cfg.dim, 0.0);
    let (mut done, mut done_hidden) = (0, 0);
    for batch in rows.chunks(scratch.n_batch) {
        forward_batch(file, cfg, w, scratch, pool, caches, batch, lora)?;
        // Final norm only for the rows asked for: hidden states go out as
        // they are, rows for logits are gathered into the first rows of xb
        // for the output projection.
        let mut k = 0;
        scratch.out_seqs.clear();
        for (i, r) in batch.iter().enumerate() {
            if !r.logits {
                continue;
            }
            if !is_hidden(r) {
                scratch.out_seqs.push(r.seq);
            }
            let src = &scratch.x[i * cfg.dim..(i + 1) * cfg.dim];
            let dst = if is_hidden(r) {
                done_hidden += 1;
                &mut hidden[(done_hidden - 1) * cfg.dim..done_hidden * cfg.dim]
            } else {
                k += 1;
                &mut scratch.xb[(k - 1) * cfg.dim..k * cfg.dim]
            };
            rmsnorm(dst, src, &w.output_norm, cfg.rms_eps);
        }
        if k > 0 {
            let dst = &mut out[done * cfg.n_vocab..(done + k) * cfg.n_vocab];
            matmul(file, &w.output, &scratch.xb[..k * cfg.dim], dst, pool)?;
            let seqs = &scratch.out_seqs;
            let x = &scratch.xb[..k * cfg.dim];
            add_deltas(
                lora,
                |i| seqs[i],
                Site::Output,
                x,
                cfg.dim,
                dst,
                cfg.n_vocab,
                pool,
            );
            done += k;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn forward_batch(
    file: &GgufFile,
    cfg: &LlamaConfig,
    w: &Weights,
    s: &mut Scratch,
    pool: &ThreadPool,
    caches: &mut [&mut KvCache],
    rows: &[BatchRow],
    lora: &[LoraSet],
) -> Result<()> {
    let n = rows.len();
    let (dim, qd, kvd, fd) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
    let embd = w.token_embd.bytes(file);
    let row_bytes = w.token_embd.row_bytes();
    for (i, r) in rows.iter().enumerate() {
        let t = r.token as usize;
        dequant(
            &w.token_embd,
            &embd[t * row_bytes..(t + 1) * row_bytes],
            &mut s.x[i * dim..(i + 1) * dim],
        )?;
    }
    s.att_scatter = plan_attention(
        cfg,
        rows,
        pool.threads(),
        &mut s.att_tasks,
        &mut s.att_ranges,
    );
    // Each row's rope angles, once for all layers.
    let half = cfg.rope_dim / 2;
    for (i, r) in rows.iter().enumerate() {
        rope_angles(r.pos, &s.inv_freq, &mut s.rope_sc[i * half..(i + 1) * half]);
    }
    let eps = cfg.rms_eps;
    for (l, lw) in w.layers.iter().enumerate() {
        // x += the previous layer's Wdown output, then the attention norm.
        let add = (l > 0).then_some(&s.proj[..n * dim]);
        add_norm(
            pool,
            &mut s.x[..n * dim],
            add,
            &mut s.xb[..n * dim],
            &lw.attn_norm,
            eps,
        );
        let xb = &s.xb[..n * dim];
        matmul_many(
            file,
            &mut [
                (&lw.wq, &mut s.q[..n * qd]),
                (&lw.wk, &mut s.k[..n * kvd]),
                (&lw.wv, &mut s.v[..n * kvd]),
            ],
            xb,
            pool,
        )?;
        let seq = |i: usize| rows[i].seq;
        if !lora.is_empty() {
            let site = |target| Site::Layer(l, target);
            add_deltas(
                lora,
                seq,
                site(Target::Q),
                xb,
                dim,
                &mut s.q[..n * qd],
                qd,
                pool,
            );
            add_deltas(
                lora,
                seq,
                site(Target::K),
                xb,
                dim,
                &mut s.k[..n * kvd],
                kvd,
                pool,
            );
            add_deltas(
                lora,
                seq,
                site(Target::V),
                xb,
                dim,
                &mut s.v[..n * kvd],
                kvd,
                pool,
            );
        }
        {
            let (hd, sc, cs) = (cfg.head_dim, &s.rope_sc, &*caches);
            // A quantized cache holds rotated keys and values (KvTypes::rotation).
            let rotation = |i: usize| cs[rows[i].seq].ty().rotation(hd);
            let rope = |i: usize, x: &mut [f32]| {
                rope_rotate(x, hd, &sc[i * half..(i + 1) * half]);
                if let Some(n) = rotation(i).0 {
                    hadamard(x, n);
                }
            };
            // The queries are rotated by the attention tasks, in parallel.
            for_rows(pool, &mut s.k[..n * kvd], kvd, rope);
            if (0..n).any(|i| rotation(i).1.is_some()) {
                for_rows(pool, &mut s.v[..n * kvd], kvd, |i, v| {
                    if let Some(n) = rotation(i).1 {
                        hadamard(v, n);
                    }
                });
            }
        }
        // Keys and values of every row go into their caches first, so a row
        // can attend to earlier rows of its own sequence in this batch.
        store_rows(pool, caches, l, rows, &s.k[..n * kvd], &s.v[..n * kvd]);
        attention(cfg, caches, l, rows, s, pool);
        for (i, r) in rows.iter().enumerate() {
            if let (_, Some(n)) = caches[r.seq].ty().rotation(cfg.head_dim) {
                hadamard(&mut s.att[i * qd..(i + 1) * qd], n);
            }
        }
        matmul(file, &lw.wo, &s.att[..n * qd], &mut s.proj[..n * dim], pool)?;
        let (att, proj) = (&s.att[..n * qd], &mut s.proj[..n * dim]);
        add_deltas(
            lora,
            seq,
            Site::Layer(l, Target::O),
            att,
            qd,
            proj,
            dim,
            pool,
        );
        let add = Some(&s.proj[..n * dim]);
        add_norm(
            pool,
            &mut s.x[..n * dim],
            add,
            &mut s.xb[..n * dim],
            &lw.ffn_norm,
            eps,
        );
        let xb = &s.xb[..n * dim];
        matmul_many(
            file,
            &mut [
                (&lw.w_gate, &mut s.gate[..n * fd]),
                (&lw.w_up, &mut s.up[..n * fd]),
            ],
            xb,
            pool,
        )?;
        if !lora.is_empty() {
            let site = |target| Site::Layer(l, target);
            add_deltas(
                lora,
                seq,
                site(Target::Gate),
                xb,
                dim,
                &mut s.gate[..n * fd],
                fd,
                pool,
            );
            add_deltas(
                lora,
                seq,
                site(Target::Up),
                xb,
                dim,
                &mut s.up[..n * fd],
                fd,
                pool,
            );
        }
        let up = &s.up[..n * fd];
        for_rows(pool, &mut s.gate[..n * fd], fd, |i, g| {
            cria_kernels::silu_mul(g, &up[i * fd..(i + 1) * fd])
        });
        matmul(
            file,
            &lw.w_down,
            &s.gate[..n * fd],
            &mut s.proj[..n * dim],
            pool,
        )?;
        let (gate, proj) = (&s.gate[..n * fd], &mut s.proj[..n * dim]);
        add_deltas(
            lora,
            seq,
            Site::Layer(l, Target::Down),
            gate,
            fd,
            proj,
            dim,
            pool,
        );
    }
    // The last layer's Wdown output.
    let proj = &s.proj[..n * dim];
    for_rows(pool, &mut s.x[..n * dim], dim, |i, x| {
        x.iter_mut()
            .zip(&proj[i * dim..(i + 1) * dim])
            .for_each(|(x, p)| *x += p)
    });
    Ok(())
}

fn dequant(m: &Matrix, src: &[u8], dst: &mut [f32]) -> Result<()> {
    cria_kernels::dequantize_row(m.ty, src, dst).map_err(|e| {
        ErrorKind::BadArgument {
            detail: format!("tensor {:?}: {e}", m.name),
        }
        .into()
    })
}
