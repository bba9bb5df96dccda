//! `cria quantize`: llama-quantize's command, same type names, same
//! per-tensor choices, same bytes.

use crate::gen_args::all_cores;
use anyhow::{Context, Result};
use clap::Parser;
use cria_quantize::{
    parse_tensor_override, parse_tensor_type, quantize_file, Imatrix, Mix, Overrides, Params,
};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    after_help = "Types: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M \
    Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS (Q3_K, Q4_K, Q5_K: the _M mixes)\n\n\
    Example:\n  cria quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M -t 2"
)]
pub struct Args {
    /// Input GGUF (F32/F16/BF16, or quantized with --allow-requantize)
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// Output GGUF
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// Quantization type or mix, as llama-quantize names it (e.g. Q4_K_M)
    #[arg(value_name = "TYPE")]
    pub ty: String,
    /// Threads (default: all cores)
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Every quantizable tensor gets TYPE's default type: no per-tensor mix rules
    #[arg(long)]
    pub pure: bool,
    /// REGEX=TYPE: tensors whose name matches REGEX get TYPE (repeatable; first match wins)
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    pub tensor_type: Vec<String>,
    /// Type of output.weight
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<String>,
    /// Type of token_embd.weight
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<String>,
    /// Importance matrix (llama.cpp GGUF or legacy .dat format)
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
    /// Allow quantizing tensors that are already quantized (dequantized to f32 first)
    #[arg(long)]
    pub allow_requantize: bool,
    /// Print one line per tensor
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mix = Mix::parse(&args.ty)?;
    let mut overrides = Overrides {
        pure: args.pure,
        ..Default::default()
    };
    for a in &args.tensor_type {
        overrides.tensor_types.push(parse_tensor_override(a)?);
    }
    overrides.output_tensor_type = args
        .output_tensor_type
        .as_deref()
        .map(parse_tensor_type)
        .transpose()
        .context("--output-tensor-type")?;
    overrides.token_embedding_type = args
        .token_embedding_type
        .as_deref()
        .map(parse_tensor_type)
        .transpose()
        .context("--token-embedding-type")?;
    let imatrix = match &args.imatrix {
        Some(p) => Some((p.clone(), Imatrix::read(p)?)),
        None => None,
    };
    if args.input == args.output {
        anyhow::bail!("IN and OUT are the same file; write the output elsewhere");
    }
    let params = Params {
        mix,
        threads: args.threads.unwrap_or_else(all_cores).max(1),
        overrides,
        allow_requantize: args.allow_requantize,
        imatrix,
    };
    let start = Instant::now();
    let verbose = args.verbose;
    let report = quantize_file(&args.input, &args.output, &params, |t| {
        if verbose {
            eprintln!(
                "{:<36} {:>16} {:>6} -> {:<6} {:>9.2} MiB{}",
                t.name,
                format!("{:?}", t.dims),
                t.from.name(),
                t.to.name(),
                t.bytes_out as f64 / (1 << 20) as f64,
                if t.weighted { " (imatrix)" } else { "" }
            );
        }
    })
    .with_context(|| format!("quantizing {}", args.input.display()))?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for t in &report.tensors {
        match counts.iter_mut().find(|(n, _)| n == t.to.name()) {
            Some(c) => c.1 += 1,
            None => counts.push((t.to.name().to_string(), 1)),
        }
    }
    let types: Vec<String> = counts.iter().map(|(n, c)| format!("{n}:{c}")).collect();
    println!(
        "{} -> {} ({}): {:.2} MiB -> {:.2} MiB, tensors {}, {} fallback(s), {:.2} s",
        args.input.display(),
        args.output.display(),
        mix.name(),
        mib(report.bytes_in),
        mib(report.bytes_out),
        types.join(" "),
        report.fallbacks,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
