//! `cria perplexity`: llama-perplexity's protocol, its output, and its
//! KL-divergence base files, so results compare line for line.

use crate::gen_args::{LoraArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use cria_eval::{
    BaseChunk, BaseFileReader, BaseFileWriter, Chunks, KlDivergence, PerplexityAccumulator,
    CHUNK_HEADER, MIN_TOKENS_FOR_REPORT,
};
use cria_model::{KvTypes, Logits, Model, Session};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Text file to score
    #[arg(short = 'f', long = "file", value_name = "TEXT")]
    pub file: Option<PathBuf>,
    /// Score at most N chunks
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
    /// Without --kl-divergence: write each scored token's log-probabilities
    /// to FILE (llama-perplexity's format). With it: read them from FILE.
    #[arg(long, value_name = "FILE")]
    pub kl_divergence_base: Option<PathBuf>,
    /// Compare against --kl-divergence-base instead of scoring a text
    #[arg(long, requires = "kl_divergence_base")]
    pub kl_divergence: bool,
}

pub fn run(args: Args) -> Result<()> {
    let threads = args.model.threads()?;
    let n_ctx = args.model.ctx_size(2)?.unwrap_or(512);
    let kv = args.model.kv_type();
    let model = args.model.load()?;
    let lora = args.lora.load(&model.model)?;
    if args.kl_divergence {
        let base = args
            .kl_divergence_base
            .as_ref()
            .context("--kl-divergence needs --kl-divergence-base FILE")?;
        return kl_divergence(&model.model, &model.tokenizer, base, threads, kv, lora);
    }
    let Some(text_path) = &args.file else {
        bail!("no text to score: pass -f TEXT (or --kl-divergence with --kl-divergence-base FILE)");
    };
    let text = std::fs::read_to_string(text_path)
        .with_context(|| format!("cannot read {}", text_path.display()))?;
    let tok = &model.tokenizer;
    let tokens = tok.encode(&text, tok.add_bos(), false)?;
    if tokens.len() < 2 * n_ctx {
        bail!(
            "{} has {} tokens; perplexity needs at least 2 * ctx-size = {} (use a longer text or a smaller -c)",
            text_path.display(),
            tokens.len(),
            2 * n_ctx
        );
    }
    let chunks = Chunks::new(
        &tokens,
        n_ctx,
        tok.add_bos(),
        tok.bos().unwrap_or(0),
        args.chunks,
    )?;
    let m = &model.model;
    let n_vocab = m.config.n_vocab;
    eprintln!(
        "perplexity: {} tokens, {} chunks of {n_ctx}, scoring the second half of each, {threads} threads",
        tokens.len(),
        chunks.n_chunk()
    );
    let mut writer = match &args.kl_divergence_base {
        Some(p) => Some(BaseFileWriter::create(
            p,
            n_ctx,
            n_vocab,
            chunks.n_chunk(),
            chunks.tokens(),
        )?),
        None => None,
    };
    check_memory(m, n_ctx, kv)?;
    let mut session = Session::new(m, n_ctx, kv, n_ctx, threads);
    session.lora = lora;
    let mut acc = PerplexityAccumulator::new(n_vocab);
    let mut logits = Vec::new();
    let t0 = Instant::now();
    for (i, chunk) in chunks.iter().enumerate() {
        session.truncate(0);
        m.forward(&mut session, chunk.input_tokens(), Logits::All, &mut logits)?;
        let scored = &logits[chunk.first() * n_vocab..];
        match writer.as_mut() {
            Some(w) => {
                acc.add_nll(w.write_chunk_logits(scored, chunk.tokens())?);
            }
            None => {
                acc.add_chunk(scored, chunk.tokens())?;
            }
        }
        if i == 0 {
            let per = t0.elapsed().as_secs_f64();
            eprintln!(
                "perplexity: {per:.2} seconds per pass - ETA {:.1} minutes",
                per * chunks.n_chunk() as f64 / 60.0
            );
        }
        print!("{}", acc.progress_line());
        use std::io::Write;
        std::io::stdout().flush().ok();
    }
    println!();
    if let Some(w) = writer {
        w.finish()?;
    }
    println!("{}", acc.estimate()?);
    Ok(())
}

fn kl_divergence(
    model: &Model,
    tok: &cria_tokenizer::Tokenizer,
    base: &std::path::Path,
    threads: usize,
    kv: KvTypes,
    lora: cria_model::LoraSet,
) -> Result<()> {
    let mut reader = BaseFileReader::open(base)?;
    let header = reader.header().clone();
    header.check_vocab(model.config.n_vocab)?;
    let chunks = Chunks::from_base_file(&header, tok.add_bos(), tok.bos().unwrap_or(0))?;
    let n_vocab = model.config.n_vocab;
    eprintln!(
        "kl-divergence: {} chunks of {} tokens from {}, {threads} threads",
        chunks.n_chunk(),
        chunks.n_ctx(),
        base.display()
    );
    check_memory(model, chunks.n_ctx(), kv)?;
    let mut session = Session::new(model, chunks.n_ctx(), kv, chunks.n_ctx(), threads);
    session.lora = lora;
    let mut kld = KlDivergence::new(n_vocab);
    let mut stored = BaseChunk::default();
    let mut logits = Vec::new();
    println!("{CHUNK_HEADER}");
    for chunk in chunks.iter() {
        if !reader.read_chunk(&mut stored)? {
            bail!("{} ends before chunk {}", base.display(), chunk.index + 1);
        }
        session.truncate(0);
        model.forward(&mut session, chunk.input_tokens(), Logits::All, &mut logits)?;
        kld.add_chunk(&stored, &logits[chunk.first() * n_vocab..], chunk.tokens())?;
        println!("{}", kld.chunk_line());
    }
    if kld.count() < MIN_TOKENS_FOR_REPORT {
        bail!(
            "only {} tokens scored; at least {MIN_TOKENS_FOR_REPORT} are needed for statistics",
            kld.count()
        );
    }
    println!("{}", kld.report()?);
    Ok(())
}

/// Refuses a chunk size whose cache and logits (every row's) would not fit
/// in memory, before allocating them.
fn check_memory(model: &Model, n_ctx: usize, kv: KvTypes) -> Result<()> {
    use cria_engine::memory::{fits, kv_bytes};
    kv.check(model.config.head_dim)?;
    let logits = (n_ctx as u64).saturating_mul(model.config.n_vocab as u64 * 4);
    fits(
        &format!("scoring chunks of {n_ctx} tokens"),
        kv_bytes(model, n_ctx, kv).saturating_add(logits),
        "lower --ctx-size",
    )?;
    Ok(())
}
