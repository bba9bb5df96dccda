//! `cria finetune`: train a LoRA adapter on a JSONL file over the frozen,
//! still-quantized model (crates/train), and write it as llama.cpp's GGUF
//! adapter, with the loss curves as CSV and PNG.

use crate::gen_args::ModelArgs;
use anyhow::{bail, Context, Result};
use cria_train::data;
use cria_train::train::{self, Event, Options, Outputs};
use cria_train::Lora;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data, JSONL: {"messages": [...]} chats (loss on assistant turns),
    /// {"prompt": ..., "completion": ...} pairs (loss on the completion) or {"text": ...}
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Validation data (same format), evaluated every --eval-every steps
    #[arg(long, value_name = "FILE")]
    pub val: Option<PathBuf>,
    /// The adapter to write (llama.cpp's GGUF LoRA format)
    #[arg(short, long, value_name = "FILE", default_value = "adapter.gguf")]
    pub output: PathBuf,
    /// Matrices to adapt: comma-separated q, k, v, o, gate, up, down, or all
    #[arg(long = "lora-targets", value_name = "LIST", default_value = "all")]
    pub targets: String,
    /// Rank of each adapter pair
    #[arg(long = "lora-rank", value_name = "N", default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha: the deltas are scaled by alpha / rank
    #[arg(long = "lora-alpha", value_name = "X", default_value_t = 16.0)]
    pub alpha: f32,
    /// Dropout on the adapters' inputs while training
    #[arg(long = "lora-dropout", value_name = "P", default_value_t = 0.05)]
    pub dropout: f32,
    /// Peak learning rate (AdamW)
    #[arg(long, value_name = "LR", default_value_t = 1e-3)]
    pub lr: f32,
    /// Linear warm-up steps, then cosine decay
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub warmup: u64,
    /// Learning rate at the last step, as a fraction of --lr
    #[arg(long = "lr-min-ratio", value_name = "X", default_value_t = 0.1)]
    pub min_lr_ratio: f32,
    /// AdamW's decoupled weight decay
    #[arg(long = "weight-decay", value_name = "X", default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Sequences per micro-batch
    #[arg(
        short = 'b',
        long = "batch-size",
        value_name = "N",
        default_value_t = 4
    )]
    pub batch_size: usize,
    /// Micro-batches per optimizer step
    #[arg(long = "grad-accum", value_name = "N", default_value_t = 1)]
    pub grad_accum: usize,
    /// Passes over the training data
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub epochs: usize,
    /// Seed of the adapter's initial values, the data order and dropout
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: u64,
    /// Validate every N optimizer steps (0: only before and after)
    #[arg(long = "eval-every", value_name = "N", default_value_t = 10)]
    pub eval_every: u64,
    /// Write a checkpoint every N optimizer steps (0: only at the end)
    #[arg(long = "save-every", value_name = "N", default_value_t = 50)]
    pub save_every: u64,
    /// Stop after optimizer step N (the learning-rate schedule still spans the whole run);
    /// the checkpoint lets --resume go on from there
    #[arg(long = "stop-after", value_name = "N")]
    pub stop_after: Option<u64>,
    /// Checkpoint file (default: OUTPUT with .ckpt.gguf)
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Go on from the checkpoint (same data and options)
    #[arg(long)]
    pub resume: bool,
    /// Loss history as CSV (default: OUTPUT with .csv)
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Loss plot as PNG (default: OUTPUT with .png)
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// No progress bar (one line per validation instead)
    #[arg(long)]
    pub quiet: bool,
    /// Backward through the base in exact f32 over the stored weights, without the int8
    /// (Q8_0) transposes: saves ~1.06 bytes per base weight (a 7B: ~7 GB), slower
    #[arg(long = "exact-backward")]
    pub exact_backward: bool,
}

pub fn run(args: Args) -> Result<()> {
    let threads = args.model.threads()?;
    let n_ctx = args.model.ctx_size(2)?.unwrap_or(512);
    let targets = cria_train::parse_targets(&args.targets)?;
    let opts = Options {
        targets: targets.clone(),
        rank: args.rank,
        alpha: args.alpha,
        dropout: args.dropout,
        lr: args.lr,
        warmup: args.warmup,
        min_lr_ratio: args.min_lr_ratio,
        weight_decay: args.weight_decay,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        epochs: args.epochs,
        seed: args.seed,
        eval_every: args.eval_every,
        save_every: args.save_every,
        stop_after: args.stop_after,
        threads,
        exact_backward: args.exact_backward,
    };
    opts.check()?;
    let with_ext = |ext: &str| args.output.with_extension(ext);
    let outputs = Outputs {
        adapter: args.output.clone(),
        checkpoint: args
            .checkpoint
            .clone()
            .unwrap_or_else(|| with_ext("ckpt.gguf")),
        csv: Some(args.csv.clone().unwrap_or_else(|| with_ext("csv"))),
        png: Some(args.plot.clone().unwrap_or_else(|| with_ext("png"))),
    };
    if args.resume && !outputs.checkpoint.exists() {
        bail!(
            "--resume: no checkpoint at {} (pass --checkpoint FILE)",
            outputs.checkpoint.display()
        );
    }
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let template = cria_prompt::ChatTemplate::load(model.file().metadata(), tok, None)
        .map_err(|e| e.full_message());
    let template = template.as_ref().map_err(String::as_str);
    let train_set = data::load(&args.data, tok, template, n_ctx)?;
    let val_set = match &args.val {
        Some(p) => data::load(p, tok, template, n_ctx)?,
        None => Vec::new(),
    };
    let count = |d: &[data::Example]| -> (usize, usize) {
        (
            d.iter().map(|e| e.tokens.len()).sum(),
            d.iter().map(|e| e.n_targets()).sum(),
        )
    };
    let (tt, tg) = count(&train_set);
    eprintln!(
        "cria: {} training sequences ({tt} tokens, {tg} with loss), {} validation; {} threads",
        train_set.len(),
        val_set.len(),
        threads
    );
    let mut lora = Lora::new(&model.config, &targets, args.rank, args.alpha, args.seed)?;
    eprintln!(
        "cria: LoRA rank {} alpha {} on {} ({} trainable parameters)",
        args.rank,
        args.alpha,
        args.targets,
        lora.params.len()
    );
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30} step {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .context("progress bar template")?,
    );
    let resume = args.resume.then_some(outputs.checkpoint.as_path());
    let history = train::run(
        model,
        &mut lora,
        &train_set,
        &val_set,
        &opts,
        &outputs,
        resume,
        |e| match e {
            Event::Start {
                total_steps,
                first_step,
            } => {
                pb.set_length(total_steps);
                pb.set_position(first_step);
            }
            Event::Step {
                row,
                tokens_per_sec,
                ..
            } => {
                pb.set_position(row.step);
                pb.set_message(format!(
                    "loss {:.4} | {:.1} tok/s | lr {:.2e}",
                    row.train_loss.unwrap_or(f64::NAN),
                    tokens_per_sec,
                    row.lr
                ));
            }
            Event::Val { row } => pb.println(format!(
                "step {:>5}: validation loss {:.4}",
                row.step,
                row.val_loss.unwrap_or(f64::NAN)
            )),
            Event::Checkpoint { .. } => {}
        },
    )?;
    pb.finish();
    let last_val = history.iter().rev().find_map(|r| r.val_loss);
    let first_val = history.iter().find_map(|r| r.val_loss);
    if let (Some(a), Some(b)) = (first_val, last_val) {
        eprintln!("cria: validation loss {a:.4} -> {b:.4}");
    }
    eprintln!(
        "cria: wrote {} (and {}, {}, {})",
        outputs.adapter.display(),
        outputs.checkpoint.display(),
        outputs
            .csv
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string()),
        outputs
            .png
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string())
    );
    Ok(())
}
