//! The training loop: epochs over shuffled examples, micro-batches of
//! `batch_size` sequences, an AdamW step every `grad_accum` of them,
//! validation every `eval_every` steps, checkpoints for `--resume`.
//!
//! Determinism: the order of examples comes from the seed and the epoch,
//! each micro-batch's dropout masks from the seed and the micro-batch's
//! index, and every gradient sum is in a fixed order whatever the thread
//! count (see [`crate::ops`]). So the same seed and data give the same
//! adapter bits, on any thread count, and a resumed run ends where an
//! uninterrupted one does.

use crate::adapter_out;
use crate::data::Example;
use crate::error::{io, ErrorKind, Result};
use crate::lora::{Lora, Target};
use crate::net::{self, Batch};
use crate::optim::{schedule, AdamW, Moments};
use crate::transposed::Transposed;
use crate::workspace::Workspace;
use cria_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use cria_kernels::ThreadPool;
use cria_model::Model;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that shapes a run.
#[derive(Clone, Debug)]
pub struct Options {
    pub targets: Vec<Target>,
    pub rank: usize,
    pub alpha: f32,
    pub dropout: f32,
    pub lr: f32,
    pub warmup: u64,
    /// The learning rate at the end, as a fraction of `lr`.
    pub min_lr_ratio: f32,
    pub weight_decay: f32,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    pub grad_accum: usize,
    pub epochs: usize,
    pub seed: u64,
    /// Validate every this many optimizer steps (0: only at the start and end).
    pub eval_every: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    /// Stop after this optimizer step (the schedule still spans the whole
    /// run), with a checkpoint, so `--resume` goes on from there.
    pub stop_after: Option<u64>,
    pub threads: usize,
    /// The backward through the base on the exact f32 GEMM over the
    /// stored weights instead of the int8 transposes
    /// ([`crate::transposed`]): no Q8_0 copies (about 1.06 bytes per base
    /// weight saved), slower.
    pub exact_backward: bool,
}

impl Options {
    pub fn check(&self) -> Result<()> {
        let bad = |d: String| Err(ErrorKind::BadOption { detail: d }.into());
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "--lora-dropout must be in [0, 1), not {}",
                self.dropout
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be finite and positive, not {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "--lr-min-ratio must be in [0, 1], not {}",
                self.min_lr_ratio
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay must be >= 0, not {}",
                self.weight_decay
            ));
        }
        if self.batch_size == 0 || self.grad_accum == 0 || self.epochs == 0 {
            return bad("--batch-size, --grad-accum and --epochs must be at least 1".into());
        }
        Ok(())
    }
}

/// One row of the loss history (the CSV).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub step: u64,
    pub epoch: usize,
    pub lr: f32,
    /// Mean loss per target token of this step (None for the row before training).
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    /// Target tokens trained on so far, and tokens processed so far.
    pub tokens: u64,
    pub seconds: f64,
}

/// What the loop reports as it goes.
pub enum Event<'a> {
    Start {
        total_steps: u64,
        first_step: u64,
    },
    Step {
        row: &'a Row,
        total_steps: u64,
        tokens_per_sec: f64,
    },
    Val {
        row: &'a Row,
    },
    Checkpoint {
        path: &'a Path,
    },
}

/// Where a run writes.
pub struct Outputs {
    pub adapter: PathBuf,
    pub checkpoint: PathBuf,
    pub csv: Option<PathBuf>,
    pub png: Option<PathBuf>,
}

/// Micro-batches of every optimizer step, in order: example indices.
fn plan(n: usize, o: &Options) -> Vec<Vec<Vec<usize>>> {
    let mut micros = Vec::new();
    for epoch in 0..o.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(o.seed ^ (0x9e37_79b9 * (epoch as u64 + 1)));
        order.shuffle(&mut rng);
        for c in order.chunks(o.batch_size) {
            micros.push((epoch, c.to_vec()));
        }
    }
    let mut steps = Vec::new();
    for c in micros.chunks(o.grad_accum) {
        steps.push(c.iter().map(|(_, m)| m.clone()).collect());
    }
    steps
}

fn epoch_of(step: usize, steps_per_epoch: f64) -> usize {
    (step as f64 / steps_per_epoch) as usize
}

fn batch_of(data: &[Example], idx: &[usize]) -> Batch {
    let mut b = Batch::default();
    for &i in idx {
        b.push(&data[i].tokens, &data[i].mask);
    }
    b
}

/// Mean loss per target token over `data`, without dropout.
pub fn evaluate(
    model: &Model,
    lora: &Lora,
    pool: &ThreadPool,
    data: &[Example],
    batch_size: usize,
) -> Result<f64> {
    let c = net::ctx(model, lora, pool, None);
    let (mut nll, mut n) = (0.0, 0usize);
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let b = batch_of(data, chunk);
        n += b.n_targets();
        nll += net::loss(&c, model, &b)?;
    }
    Ok(if n == 0 { f64::NAN } else { nll / n as f64 })
}

/// State saved by a checkpoint.
struct State {
    step: u64,
    moments: Moments,
    history: Vec<Row>,
    tokens: u64,
    seconds: f64,
}

fn save_checkpoint(path: &Path, lora: &Lora, o: &Options, s: &State) -> Result<()> {
    let adapter = adapter_out::encode(lora, path)?;
    let mut w = GgufWriter::new();
    adapter.add_to(&mut w)?;
    let n = lora.params.len() as u64;
    w.add_tensor(
        "train.adam_m",
        GgmlType::F32,
        &[n],
        bytemuck::cast_slice(&s.moments.m),
    )?;
    w.add_tensor(
        "train.adam_v",
        GgmlType::F32,
        &[n],
        bytemuck::cast_slice(&s.moments.v),
    )?;
    w.add_metadata("train.step", Value::U64(s.step));
    w.add_metadata("train.tokens", Value::U64(s.tokens));
    w.add_metadata("train.seconds", Value::F64(s.seconds));
    w.add_metadata("train.seed", Value::U64(o.seed));
    w.add_metadata("train.rank", Value::U64(lora.rank as u64));
    let names: Vec<&str> = lora.targets.iter().map(|t| t.name()).collect();
    w.add_metadata("train.targets", Value::String(names.join(",")));
    let hist = serde_json::to_string(&s.history).unwrap_or_default();
    w.add_metadata("train.history", Value::String(hist));
    adapter_out::write_file(path, &w)
}

fn load_checkpoint(path: &Path, lora: &mut Lora, o: &Options) -> Result<State> {
    let bad = |d: String| ErrorKind::BadCheckpoint {
        path: path.to_path_buf(),
        detail: d,
    };
    let f = GgufFile::open(path)?;
    let m = f.metadata();
    let names: Vec<&str> = lora.targets.iter().map(|t| t.name()).collect();
    let (rank, targets, seed) = (
        m.get_u64("train.rank")?,
        m.get_str("train.targets")?,
        m.get_u64("train.seed")?,
    );
    if rank != lora.rank as u64 || targets != names.join(",") || seed != o.seed {
        return Err(bad(format!(
            "it was made with rank {rank}, targets {targets}, seed {seed}; this run has rank {}, targets {}, seed {}: resume with the same options",
            lora.rank,
            names.join(","),
            o.seed
        ))
        .into());
    }
    let n = lora.params.len();
    let mut moments = Moments::new(n);
    adapter_out::read_f32(&f, "train.adam_m", &mut moments.m)?;
    adapter_out::read_f32(&f, "train.adam_v", &mut moments.v)?;
    adapter_out::read_params(&f, lora)?;
    let history = serde_json::from_str(m.get_str("train.history")?)
        .map_err(|e| bad(format!("train.history is not a loss history: {e}")))?;
    Ok(State {
        step: m.get_u64("train.step")?,
        moments,
        history,
        tokens: m.get_u64("train.tokens")?,
        seconds: match m.get("train.seconds") {
            Some(Value::F64(v)) => *v,
            _ => 0.0,
        },
    })
}

/// Trains `lora` on `train`, validating on `val`; writes the adapter, the
/// checkpoint, and the CSV and PNG of the losses. Returns the history.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Model,
    lora: &mut Lora,
    train: &[Example],
    val: &[Example],
    o: &Options,
    out: &Outputs,
    resume: Option<&Path>,
    mut report: impl FnMut(Event),
) -> Result<Vec<Row>> {
    o.check()?;
    let pool = ThreadPool::new(o.threads);
    let opt = AdamW {
        lr: o.lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: o.weight_decay,
    };
    let steps = plan(train.len(), o);
    let total = steps.len() as u64;
    let steps_per_epoch = total as f64 / o.epochs as f64;
    let warmup = o.warmup.min(total);
    let mut st = match resume {
        Some(p) => load_checkpoint(p, lora, o)?,
        None => State {
            step: 0,
            moments: Moments::new(lora.params.len()),
            history: Vec::new(),
            tokens: 0,
            seconds: 0.0,
        },
    };
    if st.step > total {
        return Err(ErrorKind::BadCheckpoint {
            path: resume.map(Path::to_path_buf).unwrap_or_default(),
            detail: format!(
                "it is at step {} but this run has only {total} steps",
                st.step
            ),
        }
        .into());
    }
    report(Event::Start {
        total_steps: total,
        first_step: st.step,
    });
    let val_now = |lora: &Lora, st: &mut State, report: &mut dyn FnMut(Event)| -> Result<()> {
        if val.is_empty() {
            return Ok(());
        }
        let loss = evaluate(model, lora, &pool, val, o.batch_size)?;
        let step = st.step;
        let at = st
            .history
            .iter()
            .position(|r| r.step == step && r.train_loss.is_some() || step == 0 && r.step == 0);
        match at {
            Some(i) => st.history[i].val_loss = Some(loss),
            None => st.history.push(Row {
                step,
                epoch: epoch_of(step as usize, steps_per_epoch),
                lr: 0.0,
                train_loss: None,
                val_loss: Some(loss),
                tokens: st.tokens,
                seconds: st.seconds,
            }),
        }
        let row = st.history.last().cloned();
        if let Some(row) = row {
            report(Event::Val { row: &row });
        }
        Ok(())
    };
    if st.step == 0 {
        val_now(lora, &mut st, &mut report)?;
    }
    // Made once, before the clock starts (set-up, like loading the model):
    // the base matrices' int8 transposes for the backward, and the buffers
    // every micro-batch reuses.
    let transposed = if o.exact_backward {
        None
    } else {
        Some(Transposed::build(model, &pool)?)
    };
    let mut ws = Workspace::default();
    let t0 = Instant::now();
    let base_seconds = st.seconds;
    let mut run_tokens = 0u64;
    let mut grad = vec![0.0f32; lora.params.len()];
    let mut micro_index: u64 = steps[..st.step as usize]
        .iter()
        .map(|s| s.len() as u64)
        .sum();
    while (st.step as usize) < steps.len() {
        let step = st.step as usize;
        let batches: Vec<Batch> = steps[step].iter().map(|m| batch_of(train, m)).collect();
        let n_targets: usize = batches.iter().map(Batch::n_targets).sum();
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut nll = 0.0;
        if n_targets > 0 {
            let scale = 1.0 / n_targets as f32;
            for b in &batches {
                let dropout = (o.dropout > 0.0).then_some((
                    o.dropout,
                    o.seed ^ (micro_index.wrapping_mul(0x2545_f491_4f6c_dd1d)),
                ));
                micro_index += 1;
                let mut c = net::ctx(model, lora, &pool, dropout);
                c.transposed = transposed.as_ref();
                c.ws = std::mem::take(&mut ws);
                c.ws.begin_pass(b.seqs.iter().map(|s| s.1));
                nll += net::loss_and_grad(&c, model, b, scale, &mut grad)?;
                ws = c.ws;
                run_tokens += b.tokens.len() as u64;
                st.tokens += b.tokens.len() as u64;
            }
        } else {
            micro_index += batches.len() as u64;
        }
        let lr = schedule(o.lr, st.step, total, warmup, o.min_lr_ratio);
        if n_targets > 0 {
            let mut params = std::mem::take(&mut lora.params);
            opt.step(&mut params, &grad, &mut st.moments, st.step + 1, lr);
            lora.params = params;
        }
        st.step += 1;
        let secs = t0.elapsed().as_secs_f64();
        st.seconds = base_seconds + secs;
        let row = Row {
            step: st.step,
            epoch: epoch_of(step, steps_per_epoch),
            lr,
            train_loss: (n_targets > 0).then(|| nll / n_targets as f64),
            val_loss: None,
            tokens: st.tokens,
            seconds: st.seconds,
        };
        st.history.push(row.clone());
        report(Event::Step {
            row: &row,
            total_steps: total,
            tokens_per_sec: run_tokens as f64 / secs.max(1e-9),
        });
        let stop = o.stop_after.is_some_and(|s| st.step >= s);
        let last = st.step == total || stop;
        if last || (o.eval_every > 0 && st.step % o.eval_every == 0) {
            val_now(lora, &mut st, &mut report)?;
            write_curves(&st.history, out)?;
        }
        if last || (o.save_every > 0 && st.step % o.save_every == 0) {
            save_checkpoint(&out.checkpoint, lora, o, &st)?;
            report(Event::Checkpoint {
                path: &out.checkpoint,
            });
        }
        if stop {
            break;
        }
    }
    let name = out
        .adapter
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    adapter_out::write(&out.adapter, lora, &name)?;
    write_curves(&st.history, out)?;
    Ok(st.history)
}

/// The CSV (`step,epoch,lr,train_loss,val_loss,tokens,seconds`; empty
/// cells where a loss was not measured) and the PNG.
pub fn write_curves(history: &[Row], out: &Outputs) -> Result<()> {
    if let Some(p) = &out.csv {
        let mut s = String::from("step,epoch,lr,train_loss,val_loss,tokens,seconds\n");
        let f = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        for r in history {
            s += &format!(
                "{},{},{:.6e},{},{},{},{:.2}\n",
                r.step,
                r.epoch,
                r.lr,
                f(r.train_loss),
                f(r.val_loss),
                r.tokens,
                r.seconds
            );
        }
        std::fs::write(p, s).map_err(io("cannot write", p))?;
    }
    if let Some(p) = &out.png {
        crate::plot::draw(history, p)?;
    }
    Ok(())
}
