//! `cria convert SRC OUT.gguf`: a Hugging Face or Meta folder written as a
//! GGUF file that llama.cpp and cria both run.

use crate::gen_args::all_cores;
use anyhow::{bail, Result};
use cria_import::OutType;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Source folder: Hugging Face (config.json, *.safetensors, tokenizer.json)
    /// or Meta (params.json, consolidated.NN.pth, tokenizer.model)
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// Output GGUF file (written as OUT.part, renamed when complete)
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    /// Tensor type: f32, f16, bf16 or q8_0 (norms stay f32, as llama.cpp's converter does)
    #[arg(long, default_value = "f16", value_name = "TYPE")]
    pub outtype: String,
    /// Threads converting each tensor (default: all cores); reading and
    /// writing run alongside on their own threads
    #[arg(short, long)]
    pub threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let Some(outtype) = OutType::parse(&args.outtype) else {
        bail!(
            "--outtype {:?} is not one of f32, f16, bf16, q8_0 (for other types, convert then quantize)",
            args.outtype
        );
    };
    if args.out.is_dir() {
        bail!(
            "{} is a folder; give the output GGUF file's name",
            args.out.display()
        );
    }
    let threads = match args.threads {
        Some(0) => bail!("-t 0: give at least 1 thread"),
        Some(n) => n,
        None => all_cores(),
    };
    let t0 = Instant::now();
    let mut last = Instant::now();
    cria_import::convert_with(
        &args.src,
        &args.out,
        outtype,
        threads,
        &mut |done, total| {
            if last.elapsed().as_secs() >= 2 || done == total {
                eprint!("\rcria: {done}/{total} tensors");
                last = Instant::now();
            }
        },
    )?;
    let size = std::fs::metadata(&args.out).map_or(0, |m| m.len());
    eprintln!(
        "\ncria: wrote {} ({:.1} MB) in {:.1} s",
        args.out.display(),
        size as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
