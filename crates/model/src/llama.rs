//! The LLaMA forward pass: token ids and their positions in, logits out.
//!
//! Per layer (x is the residual stream, one row of `dim` per token):
//!   h = x + Wo * attention(rope(Wq * norm(x)), rope(Wk * norm(x)), Wv * norm(x))
//!   x = h + Wdown * (silu(Wgate * norm(h)) * (Wup * norm(h)))
//! then logits = Woutput * norm(x). This is llama.cpp's LLM_ARCH_LLAMA graph
//! with rope in NORM mode (adjacent pairs rotate together).

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{ErrorKind, Result};
use crate::kv_cache::{KvData, KvElem, KvStore};
use crate::linear::matmul;
use crate::threads::for_each_chunk_mut;
use crate::weights::{Matrix, Weights};
use crate::Session;
use cria_gguf::GgufFile;

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
    /// (rope_dim / 2) inverse frequencies, with rope_freqs and scaling folded in.
    inv_freq: Vec<f32>,
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
            inv_freq: inverse_frequencies(cfg, w.rope_freqs.as_deref()),
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
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &f) in inv_freq.iter().enumerate() {
            let theta = pos as f32 * f;
            let (sin, cos) = theta.sin_cos();
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * cos - b * sin;
            head[2 * i + 1] = a * sin + b * cos;
        }
    }
}

pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (ss + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// Which rows of logits the caller wants.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, scoring).
    All,
}

/// Runs `tokens` (at positions `session.n_past..`) through the model in
/// batches, appending their keys and values to the cache, and writes the
/// requested logits to `out` ((rows, n_vocab), resized to fit).
pub fn forward(
    file: &GgufFile,
    cfg: &LlamaConfig,
    w: &Weights,
    session: &mut Session,
    tokens: &[u32],
    which: Logits,
    out: &mut Vec<f32>,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(ErrorKind::BadArgument {
            detail: "no tokens to evaluate".into(),
        }
        .into());
    }
    let needed = session.n_past + tokens.len();
    if needed > session.cache.n_ctx {
        return Err(ErrorKind::ContextFull {
            needed,
            n_ctx: session.cache.n_ctx,
        }
        .into());
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.n_vocab) {
        return Err(ErrorKind::BadToken {
            token: bad,
            n_vocab: cfg.n_vocab,
        }
        .into());
    }
    let rows_out = match which {
        Logits::Last => 1,
        Logits::All => tokens.len(),
    };
    out.resize(rows_out * cfg.n_vocab, 0.0);
    let n_batch = session.scratch.n_batch;
    for (b, batch) in tokens.chunks(n_batch).enumerate() {
        let start = session.n_past;
        forward_batch(file, cfg, w, session, batch, start)?;
        session.n_past += batch.len();
        let s = &mut session.scratch;
        let n = batch.len();
        // Final norm and output projection only for the rows asked for.
        let (first_row, dst) = match which {
            Logits::All => (
                0,
                &mut out[b * n_batch * cfg.n_vocab..(b * n_batch + n) * cfg.n_vocab],
            ),
            Logits::Last if b * n_batch + n == tokens.len() => (n - 1, &mut out[..]),
            Logits::Last => continue,
        };
        for i in first_row..n {
            let row = i * cfg.dim;
            rmsnorm(
                &mut s.xb[row..row + cfg.dim],
                &s.x[row..row + cfg.dim],
                &w.output_norm,
                cfg.rms_eps,
            );
        }
        matmul(
            file,
            &w.output,
            &s.xb[first_row * cfg.dim..n * cfg.dim],
            dst,
            &session.pool,
        )?;
    }
    Ok(())
}

fn forward_batch(
    file: &GgufFile,
    cfg: &LlamaConfig,
    w: &Weights,
    session: &mut Session,
    tokens: &[u32],
    start: usize,
) -> Result<()> {
    let n = tokens.len();
    let (dim, qd, kvd, fd) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
    let pool = &session.pool;
    let threads = pool.threads();
    let s = &mut session.scratch;
    let embd = w.token_embd.bytes(file);
    let row_bytes = w.token_embd.row_bytes();
    for (i, &t) in tokens.iter().enumerate() {
        let src = &embd[t as usize * row_bytes..(t as usize + 1) * row_bytes];
        dequant(&w.token_embd, src, &mut s.x[i * dim..(i + 1) * dim])?;
    }
    for (l, lw) in w.layers.iter().enumerate() {
        for i in 0..n {
            let r = i * dim..(i + 1) * dim;
            rmsnorm(&mut s.xb[r.clone()], &s.x[r], &lw.attn_norm, cfg.rms_eps);
        }
        let xb = &s.xb[..n * dim];
        matmul(file, &lw.wq, xb, &mut s.q[..n * qd], pool)?;
        matmul(file, &lw.wk, xb, &mut s.k[..n * kvd], pool)?;
        matmul(file, &lw.wv, xb, &mut s.v[..n * kvd], pool)?;
        for i in 0..n {
            rope(
                &mut s.q[i * qd..(i + 1) * qd],
                cfg.head_dim,
                start + i,
                &s.inv_freq,
            );
            rope(
                &mut s.k[i * kvd..(i + 1) * kvd],
                cfg.head_dim,
                start + i,
                &s.inv_freq,
            );
        }
        match &mut session.cache.data {
            KvData::F16(st) => attention(cfg, st, session.cache.n_ctx, l, start, n, s, threads),
            KvData::F32(st) => attention(cfg, st, session.cache.n_ctx, l, start, n, s, threads),
        }
        matmul(file, &lw.wo, &s.att[..n * qd], &mut s.proj[..n * dim], pool)?;
        s.x[..n * dim]
            .iter_mut()
            .zip(&s.proj[..n * dim])
            .for_each(|(x, p)| *x += p);

        for i in 0..n {
            let r = i * dim..(i + 1) * dim;
            rmsnorm(&mut s.xb[r.clone()], &s.x[r], &lw.ffn_norm, cfg.rms_eps);
        }
        let xb = &s.xb[..n * dim];
        matmul(file, &lw.w_gate, xb, &mut s.gate[..n * fd], pool)?;
        matmul(file, &lw.w_up, xb, &mut s.up[..n * fd], pool)?;
        for (g, u) in s.gate[..n * fd].iter_mut().zip(&s.up[..n * fd]) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        matmul(
            file,
            &lw.w_down,
            &s.gate[..n * fd],
            &mut s.proj[..n * dim],
            pool,
        )?;
        s.x[..n * dim]
            .iter_mut()
            .zip(&s.proj[..n * dim])
            .for_each(|(x, p)| *x += p);
    }
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

/// Stores this batch's keys and values at positions `start..start + n` of
/// layer `l`, then computes causal attention for every (token, head).
#[allow(clippy::too_many_arguments)]
fn attention<T: KvElem>(
    cfg: &LlamaConfig,
    st: &mut KvStore<T>,
    n_ctx: usize,
    l: usize,
    start: usize,
    n: usize,
    s: &mut Scratch,
    threads: usize,
) {
    let (hd, kvd, qd) = (cfg.head_dim, cfg.kv_dim(), cfg.q_dim());
    let layer = l * n_ctx * kvd;
    for i in 0..n {
        let dst = layer + (start + i) * kvd;
        for j in 0..kvd {
            st.k[dst + j] = T::from_f32(s.k[i * kvd + j]);
            st.v[dst + j] = T::from_f32(s.v[i * kvd + j]);
        }
    }
    let (k, v) = (
        &st.k[layer..layer + n_ctx * kvd],
        &st.v[layer..layer + n_ctx * kvd],
    );
    let group = cfg.n_heads / cfg.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let q = &s.q;
    // One task per (token, head); each writes its own head_dim slice.
    for_each_chunk_mut(&mut s.att[..n * qd], hd, threads, |task, out| {
        let (i, h) = (task / cfg.n_heads, task % cfg.n_heads);
        let q = &q[i * qd + h * hd..i * qd + (h + 1) * hd];
        let kv_off = (h / group) * hd;
        let len = start + i + 1;
        let mut scores = Vec::with_capacity(len);
        for t in 0..len {
            let kt = &k[t * kvd + kv_off..t * kvd + kv_off + hd];
            let dot: f32 = q.iter().zip(kt).map(|(a, b)| a * b.to_f32()).sum();
            scores.push(dot * scale);
        }
        softmax(&mut scores);
        out.fill(0.0);
        for (t, &p) in scores.iter().enumerate() {
            let vt = &v[t * kvd + kv_off..t * kvd + kv_off + hd];
            for (o, x) in out.iter_mut().zip(vt) {
                *o += p * x.to_f32();
            }
        }
    });
}
