//! `cria imatrix`: an importance matrix for `cria quantize --imatrix` (or
//! llama-quantize's), collected as llama-imatrix collects it.
//!
//! The text is cut into chunks of `-c` tokens (the first of each replaced
//! by BOS when the vocabulary adds one), each evaluated from an empty
//! cache. For every matrix product in the layers (`blk.*`) whose batch has
//! at least 16 rows, the squares of its input activations are summed per
//! column and the rows counted; the file is llama.cpp's GGUF imatrix.

use crate::gen_args::ModelArgs;
use anyhow::{bail, Context, Result};
use cria_model::{set_matmul_observer, Logits, Session};
use cria_quantize::{Entry, Imatrix};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to run through the model
    #[arg(short = 'f', long = "file", value_name = "TEXT")]
    pub file: PathBuf,
    /// Output file (llama.cpp's GGUF imatrix format)
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "imatrix.gguf"
    )]
    pub output: PathBuf,
    /// Process at most N chunks
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
}

/// Per weight: (cols) sums of squares, and rows summed.
type Stats = BTreeMap<String, (Vec<f32>, u64)>;

/// llama-imatrix skips products of fewer rows than this.
const MIN_ROWS: usize = 16;

pub fn run(args: Args) -> Result<()> {
    let threads = args.model.threads()?;
    let n_ctx = args.model.ctx_size(MIN_ROWS)?.unwrap_or(512);
    let kv = args.model.kv_type();
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let loaded = args.model.load()?;
    let (m, tok) = (&loaded.model, &loaded.tokenizer);
    let tokens = tok.encode(&text, tok.add_bos(), false)?;
    let mut n_chunk = tokens.len() / n_ctx;
    if let Some(c) = args.chunks {
        n_chunk = n_chunk.min(c);
    }
    if n_chunk == 0 {
        bail!(
            "{} has {} tokens, fewer than one chunk of {n_ctx} (use a longer text or a smaller -c)",
            args.file.display(),
            tokens.len()
        );
    }
    let stats: Arc<Mutex<Stats>> = Arc::default();
    let sink = Arc::clone(&stats);
    set_matmul_observer(Some(Arc::new(move |name: &str, x: &[f32], cols: usize| {
        if !name.starts_with("blk.") || cols == 0 || x.len() / cols < MIN_ROWS {
            return;
        }
        let Ok(mut s) = sink.lock() else { return };
        let e = s
            .entry(name.to_string())
            .or_insert_with(|| (vec![0f32; cols], 0));
        if e.0.len() != cols {
            return;
        }
        for row in x.chunks_exact(cols) {
            for (a, v) in e.0.iter_mut().zip(row) {
                *a += v * v;
            }
        }
        e.1 += (x.len() / cols) as u64;
    })));
    eprintln!(
        "imatrix: {} tokens, {n_chunk} chunks of {n_ctx}, {threads} threads",
        tokens.len()
    );
    let mut session = Session::new(m, n_ctx, kv, n_ctx, threads);
    let mut logits = Vec::new();
    let t0 = Instant::now();
    let result = (|| -> Result<()> {
        for i in 0..n_chunk {
            let mut input = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
            if tok.add_bos() {
                input[0] = tok.bos().unwrap_or(0);
            }
            session.truncate(0);
            m.forward(&mut session, &input, Logits::Last, &mut logits)?;
            if i == 0 {
                let per = t0.elapsed().as_secs_f64();
                eprintln!(
                    "imatrix: {per:.2} s per chunk, ETA {:.1} min",
                    per * n_chunk as f64 / 60.0
                );
            }
        }
        Ok(())
    })();
    set_matmul_observer(None);
    result?;
    let stats = std::mem::take(&mut *stats.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let mut im = Imatrix {
        datasets: vec![args.file.display().to_string()],
        chunk_count: n_chunk as u32,
        chunk_size: n_ctx as u32,
        ..Default::default()
    };
    for (name, (sums, count)) in stats {
        im.entries.insert(
            name,
            Entry {
                sums,
                counts: vec![count as f32],
            },
        );
    }
    if im.entries.is_empty() {
        bail!("no matrix products were observed (is -c at least {MIN_ROWS}?)");
    }
    im.write_gguf(&args.output)?;
    println!(
        "imatrix: {} entries from {n_chunk} chunks written to {} in {:.1} s",
        im.entries.len(),
        args.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
