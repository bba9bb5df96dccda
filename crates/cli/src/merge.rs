//! `cria merge`: adapters baked into a standalone model (llama-export-lora's
//! job), through cria-lora's merge.

use crate::default_model;
use crate::gen_args::all_cores;
use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(
    after_help = "Example:\n  cria merge -m base.gguf --lora style.gguf:0.8 --lora facts.gguf -o merged.gguf\n\
    Without --outtype, merged tensors of a quantized type are written as F16 (as llama-export-lora does) and the others keep their type."
)]
pub struct Args {
    /// Base model (GGUF; default: the cached default model)
    #[arg(short, long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Adapter (GGUF or PEFT folder), optionally with a scale: FILE or FILE:SCALE (repeatable)
    #[arg(long = "lora", value_name = "FILE[:SCALE]", required = true)]
    pub lora: Vec<String>,
    /// Output GGUF
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Type or mix of the output, as llama-quantize names it (F16, Q8_0, Q4_K_M, ...)
    #[arg(long, value_name = "TYPE")]
    pub outtype: Option<String>,
    /// Threads (default: all cores)
    #[arg(short, long)]
    pub threads: Option<usize>,
}

/// `FILE` or `FILE:SCALE` (a path may hold ':' itself: only a suffix that
/// parses as a number is a scale).
fn split_scale(arg: &str) -> Result<(PathBuf, f32)> {
    if let Some((file, scale)) = arg.rsplit_once(':') {
        if let Ok(s) = scale.parse::<f32>() {
            if !s.is_finite() {
                bail!("--lora {arg}: the scale must be a finite number");
            }
            return Ok((PathBuf::from(file), s));
        }
    }
    Ok((PathBuf::from(arg), 1.0))
}

pub fn run(args: Args) -> Result<()> {
    let path = default_model::resolve(args.model.as_deref())?;
    let mix = args
        .outtype
        .as_deref()
        .map(cria_quantize::Mix::parse)
        .transpose()?;
    let file = cria_gguf::GgufFile::open(&path)
        .with_context(|| format!("cannot read the base model {}", path.display()))?;
    let cfg = cria_model::LlamaConfig::from_file(&file)?;
    let mut adapters = Vec::new();
    for arg in &args.lora {
        let (p, scale) = split_scale(arg)?;
        let a = cria_lora::load_for(&p, &file, &cfg)
            .with_context(|| format!("cannot load the adapter {}", p.display()))?;
        adapters.push((Arc::new(a), scale));
    }
    let t0 = Instant::now();
    let threads = args.threads.unwrap_or_else(all_cores).max(1);
    let r = cria_lora::merge(&file, &adapters, &args.output, mix, threads, |_, _, _| {})?;
    eprintln!(
        "cria merge: {} adapters into {} of {} tensors ({} converted), {:.1} MiB in {:.1} s -> {}",
        adapters.len(),
        r.merged,
        r.tensors,
        r.converted,
        r.bytes_out as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64(),
        args.output.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_follow_the_last_colon() {
        assert_eq!(split_scale("a.gguf").unwrap(), ("a.gguf".into(), 1.0));
        assert_eq!(split_scale("a.gguf:0.5").unwrap(), ("a.gguf".into(), 0.5));
        assert_eq!(
            split_scale("c:/x/a.gguf").unwrap(),
            ("c:/x/a.gguf".into(), 1.0)
        );
        assert!(split_scale("a.gguf:inf").is_err());
    }
}
