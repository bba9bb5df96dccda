//! The whole model for training: token embedding, the blocks with their
//! adapters, the final norm, the output head and cross-entropy, forward and
//! backward over a batch of sequences.
//!
//! Memory: the blocks' inputs are kept (n x dim floats per block), and the
//! activations of the last blocks up to [`ACTIVATION_BUDGET`] bytes; the
//! other blocks are run again right before their backward (see
//! [`crate::layer`]).
//! The output head's logits are made only for the rows that have a target,
//! [`HEAD_ROWS`] rows at a time, and its backward reads the head as stored
//! (dequantized block by block inside the GEMM): peak memory stays near
//! inference memory plus the checkpoints.

use crate::error::{ErrorKind, Result};
use crate::layer::{self, Ctx, Saved};
use crate::lora::Lora;
use crate::ops::{base_backward, rmsnorm_backward};
use crate::transposed::{TMatrix, Transposed};
use cria_kernels::{LogSoftmax, ThreadPool};
use cria_model::Model;

/// Rows of logits computed at once.
pub const HEAD_ROWS: usize = 256;

/// A batch: sequences end to end, each with its targets.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<u32>,
    /// `(first row, length)` of each sequence.
    pub seqs: Vec<(usize, usize)>,
    /// For each row, the token it must predict next (None: no loss there).
    pub targets: Vec<Option<u32>>,
}

impl Batch {
    /// Appends a sequence whose token `i` is a target when `mask[i]`.
    pub fn push(&mut self, tokens: &[u32], mask: &[bool]) {
        let s0 = self.tokens.len();
        self.seqs.push((s0, tokens.len()));
        self.tokens.extend_from_slice(tokens);
        for i in 0..tokens.len() {
            let t = (i + 1 < tokens.len() && mask[i + 1]).then(|| tokens[i + 1]);
            self.targets.push(t);
        }
    }

    pub fn n_targets(&self) -> usize {
        self.targets.iter().filter(|t| t.is_some()).count()
    }
}

/// Builds the per-batch context of the blocks.
pub fn ctx<'a>(
    model: &'a Model,
    lora: &'a Lora,
    pool: &'a ThreadPool,
    dropout: Option<(f32, u64)>,
) -> Ctx<'a> {
    let inv = cria_model::inverse_frequencies(&model.config, model.weights.rope_freqs.as_deref());
    Ctx {
        file: model.file(),
        cfg: &model.config,
        lora,
        pool,
        neg_inv_freq: inv.iter().map(|f| -f).collect(),
        inv_freq: inv,
        dropout,
        transposed: None,
        ws: Default::default(),
    }
}

fn embed(model: &Model, tokens: &[u32]) -> Result<Vec<f32>> {
    let (cfg, w) = (&model.config, &model.weights);
    let e = &w.token_embd;
    let bytes = e.bytes(model.file());
    let rb = e.row_bytes();
    let mut x = vec![0.0; tokens.len() * cfg.dim];
    for (t, row) in tokens.iter().zip(x.chunks_exact_mut(cfg.dim)) {
        let t = *t as usize;
        if t >= cfg.n_vocab {
            return Err(ErrorKind::BadOption {
                detail: format!("token id {t} is outside the vocabulary of {}", cfg.n_vocab),
            }
            .into());
        }
        cria_kernels::dequantize_row(e.ty, &bytes[t * rb..(t + 1) * rb], row).map_err(|e| {
            ErrorKind::ModelDetail {
                detail: format!("token_embd.weight: {e}"),
            }
        })?;
    }
    Ok(x)
}

/// One row of logits with a target, as the head processes it.
struct HeadRow<'a> {
    logits: &'a mut [f32],
    target: usize,
    nll: f64,
    lp: Vec<f32>,
}

/// Over the rows with a target: their summed negative log-likelihood, and
/// (with `grad_scale`) the gradient of `grad_scale * that sum` with respect
/// to the final hidden rows.
#[allow(clippy::too_many_arguments)]
fn head(
    model: &Model,
    pool: &ThreadPool,
    tt: Option<&TMatrix>,
    xf: &[f32],
    targets: &[u32],
    grad_scale: Option<f32>,
    mut per_row: Option<&mut Vec<Vec<f32>>>,
) -> Result<(f64, Vec<f32>)> {
    let (cfg, w) = (&model.config, &model.weights);
    let (dim, nv) = (cfg.dim, cfg.n_vocab);
    let m = targets.len();
    let mut dxf = vec![0.0; if grad_scale.is_some() { m * dim } else { 0 }];
    let mut nll = 0.0f64;
    for c0 in (0..m).step_by(HEAD_ROWS) {
        let c1 = (c0 + HEAD_ROWS).min(m);
        let k = c1 - c0;
        let mut logits = vec![0.0f32; k * nv];
        cria_model::matmul(
            model.file(),
            &w.output,
            &xf[c0 * dim..c1 * dim],
            &mut logits,
            pool,
        )?;
        // Each row on its own (in parallel): its loss, its log-probabilities
        // if asked, and in place the gradient of `grad_scale * loss` with
        // respect to its logits, p - onehot(target), times grad_scale.
        let want_lp = per_row.is_some();
        let mut rows: Vec<HeadRow> = logits
            .chunks_exact_mut(nv)
            .zip(&targets[c0..c1])
            .map(|(logits, &t)| HeadRow {
                logits,
                target: t as usize,
                nll: 0.0,
                lp: Vec::new(),
            })
            .collect();
        pool.for_each_chunk_mut(&mut rows, 8, |_, chunk| {
            for r in chunk {
                let ls = LogSoftmax::new(r.logits);
                r.nll = -ls.of(r.logits[r.target]);
                if want_lp {
                    r.lp = r.logits.iter().map(|&v| ls.of(v) as f32).collect();
                }
                if let Some(gs) = grad_scale {
                    let (max, f) = (ls.max(), (gs as f64 / ls.sum_exp()) as f32);
                    r.logits.iter_mut().for_each(|v| *v -= max);
                    cria_kernels::exp_inplace(r.logits);
                    r.logits.iter_mut().for_each(|v| *v *= f);
                    r.logits[r.target] -= gs;
                }
            }
        });
        for r in rows {
            nll += r.nll;
            if let Some(pr) = per_row.as_deref_mut() {
                pr.push(r.lp);
            }
        }
        if grad_scale.is_none() {
            continue;
        }
        // dxf rows (k, dim) = dlogits (k, nv) * Woutput (nv, dim), the head
        // read as stored.
        base_backward(
            model.file(),
            &w.output,
            tt,
            &logits,
            &mut dxf[c0 * dim..c1 * dim],
            false,
            &mut Vec::new(),
            pool,
        )?;
    }
    Ok((nll, dxf))
}

/// Bytes of block activations [`loss_and_grad`] keeps from its forward
/// pass for the backward; blocks past the budget are run again right
/// before their backward (gradient checkpointing), which costs a second
/// forward of those blocks but no memory. The last blocks are the ones
/// kept. 768 MB holds every block of the default model at 1024 tokens a
/// micro-batch, and 11 of the 16 of a 1B model at 256.
pub const ACTIVATION_BUDGET: usize = 768 << 20;

/// The final residual rows, each block's input, and each block's kept
/// activations (if kept).
type Trunk = (Vec<f32>, Vec<Vec<f32>>, Vec<Option<Saved>>);

/// Runs the blocks; returns the final residual rows, each block's input
/// (when `keep` is set) and, for the last blocks whose activations fit in
/// `budget` bytes, what their backward needs (`None` for the others).
fn trunk(c: &Ctx, model: &Model, batch: &Batch, keep: bool, budget: usize) -> Result<Trunk> {
    let mut x = embed(model, &batch.tokens)?;
    let layers = &model.weights.layers;
    let mut inputs = Vec::new();
    let mut saved: Vec<Option<Saved>> = (0..layers.len()).map(|_| None).collect();
    // Blocks from `first` on keep their activations; block 0 measures them.
    let mut first = layers.len();
    for (l, lw) in layers.iter().enumerate() {
        if keep {
            let mut input = c.ws.filled(x.len());
            input.copy_from_slice(&x);
            inputs.push(input);
        }
        if keep && (l == 0 || l >= first) {
            let mut s = Saved::default();
            layer::forward(c, lw, l, &mut x, &batch.seqs, Some(&mut s))?;
            if l == 0 {
                let fit = budget / s.bytes().max(1);
                first = layers.len().saturating_sub(fit);
            }
            if l >= first {
                saved[l] = Some(s);
            }
        } else {
            layer::forward(c, lw, l, &mut x, &batch.seqs, None)?;
        }
    }
    Ok((x, inputs, saved))
}

fn final_rows(model: &Model, x: &[f32], batch: &Batch) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let dim = model.config.dim;
    let mut rows = Vec::new();
    let mut tgts = Vec::new();
    let mut xf = Vec::new();
    for (i, t) in batch.targets.iter().enumerate() {
        if let Some(t) = t {
            rows.push(i);
            tgts.push(*t);
            let mut o = vec![0.0; dim];
            cria_model::rmsnorm(
                &mut o,
                &x[i * dim..(i + 1) * dim],
                &model.weights.output_norm,
                model.config.rms_eps,
            );
            xf.extend_from_slice(&o);
        }
    }
    (rows, tgts, xf)
}

/// Summed negative log-likelihood of the batch's targets, no gradient.
pub fn loss(c: &Ctx, model: &Model, batch: &Batch) -> Result<f64> {
    let (x, _, _) = trunk(c, model, batch, false, 0)?;
    let (_, tgts, xf) = final_rows(model, &x, batch);
    Ok(head(model, c.pool, None, &xf, &tgts, None, None)?.0)
}

/// Log-probabilities (n_vocab each) of the rows with targets, in row order.
pub fn log_probs(c: &Ctx, model: &Model, batch: &Batch) -> Result<Vec<Vec<f32>>> {
    let (x, _, _) = trunk(c, model, batch, false, 0)?;
    let (_, tgts, xf) = final_rows(model, &x, batch);
    let mut out = Vec::new();
    head(model, c.pool, None, &xf, &tgts, None, Some(&mut out))?;
    Ok(out)
}

/// Log-probabilities (n_vocab) of the token after `tokens` (one sequence).
pub fn next_log_probs(c: &Ctx, model: &Model, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut b = Batch::default();
    b.push(tokens, &vec![false; tokens.len()]);
    let (x, _, _) = trunk(c, model, &b, false, 0)?;
    let dim = model.config.dim;
    let mut xf = vec![0.0; dim];
    let last = &x[x.len() - dim..];
    cria_model::rmsnorm(
        &mut xf,
        last,
        &model.weights.output_norm,
        model.config.rms_eps,
    );
    let mut out = Vec::new();
    head(model, c.pool, None, &xf, &[0], None, Some(&mut out))?;
    Ok(out.pop().unwrap_or_default())
}

/// Summed negative log-likelihood of the batch's targets; adds the
/// gradient of `grad_scale * that sum` to `grad` (laid out as
/// `lora.params`).
pub fn loss_and_grad(
    c: &Ctx,
    model: &Model,
    batch: &Batch,
    grad_scale: f32,
    grad: &mut [f32],
) -> Result<f64> {
    loss_and_grad_within(c, model, batch, grad_scale, grad, ACTIVATION_BUDGET)
}

/// [`loss_and_grad`] keeping at most `budget` bytes of block activations
/// (0: every block is run again before its backward). The result is the
/// same bits whatever the budget.
pub fn loss_and_grad_within(
    c: &Ctx,
    model: &Model,
    batch: &Batch,
    grad_scale: f32,
    grad: &mut [f32],
    budget: usize,
) -> Result<f64> {
    let dim = model.config.dim;
    let (x, inputs, mut kept) = trunk(c, model, batch, true, budget)?;
    let (rows, tgts, xf) = final_rows(model, &x, batch);
    let (nll, dxf) = head(
        model,
        c.pool,
        c.transposed.and_then(Transposed::output),
        &xf,
        &tgts,
        Some(grad_scale),
        None,
    )?;
    let mut dx = vec![0.0; x.len()];
    for (j, &i) in rows.iter().enumerate() {
        let r = i * dim..(i + 1) * dim;
        rmsnorm_backward(
            &x[r.clone()],
            &model.weights.output_norm,
            &dxf[j * dim..(j + 1) * dim],
            model.config.rms_eps,
            &mut dx[r],
        );
    }
    drop(x);
    let mut again = Saved::default();
    let mut xl = Vec::new();
    for (l, lw) in model.weights.layers.iter().enumerate().rev() {
        let saved = match kept[l].take() {
            Some(s) => {
                again.recycle(&c.ws);
                again = s;
                &again
            }
            None => {
                c.ws.give(std::mem::take(&mut xl));
                xl = c.ws.filled(inputs[l].len());
                xl.copy_from_slice(&inputs[l]);
                layer::forward(c, lw, l, &mut xl, &batch.seqs, Some(&mut again))?;
                &again
            }
        };
        layer::backward(c, lw, l, &inputs[l], saved, &batch.seqs, &mut dx, grad)?;
    }
    again.recycle(&c.ws);
    c.ws.give(xl);
    inputs.into_iter().for_each(|v| c.ws.give(v));
    Ok(nll)
}
