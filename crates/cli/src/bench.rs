//! `cria bench`: llama-bench's method and table, so the two engines can be
//! compared on the same file, threads and sizes.
//!
//! - pp<p>: `p` random tokens evaluated as one batch on an empty cache
//!   (logits of the last one only), as llama-bench's prompt test.
//! - tg<n>: `n` tokens evaluated one at a time from an empty cache.
//! - `-d D` (depth): the cache first holds `D` random tokens (evaluated
//!   untimed, once per test, and kept between repetitions), and the test
//!   measures only the `p` prompt or `n` generated tokens after them, as
//!   llama-bench's `-d` does; the test is named `pp512 @ d4096`.
//! - one untimed warm-up run of each test, then `r` timed repetitions;
//!   t/s is reported as mean ± sample standard deviation over them.
//! - `-ctk`/`-ctv` (or `--cache-type`) set the cache types; the table gains
//!   llama-bench's `type_k`/`type_v` columns when they are not f16.
//! - `-npl B` (sequences decoding together) switches to
//!   llama-batched-bench's PP/TG/B table instead, through the server's
//!   engine: see `bench/batched.rs`.

use crate::gen_args::{all_cores, LoraArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Parser;
use cria_model::{KvType, Logits, Model, Session};
use std::time::Instant;

mod batched;

#[derive(Parser)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Prompt lengths to test, comma-separated (0 skips the prompt test)
    #[arg(
        short = 'p',
        long = "n-prompt",
        default_value = "512",
        value_delimiter = ','
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test, comma-separated (0 skips)
    #[arg(
        short = 'n',
        long = "n-gen",
        default_value = "128",
        value_delimiter = ','
    )]
    pub n_gen: Vec<usize>,
    /// Tokens already in the cache before each test, comma-separated
    #[arg(
        short = 'd',
        long = "n-depth",
        default_value = "0",
        value_delimiter = ','
    )]
    pub n_depth: Vec<usize>,
    /// Timed repetitions of each test
    #[arg(short, long, default_value_t = 5)]
    pub repetitions: usize,
    /// Print JSON (one object per test) instead of a markdown table
    #[arg(long)]
    pub json: bool,
    /// Sequences decoding together, comma-separated (also -npl): prints
    /// llama-batched-bench's PP/TG/B table for each -p, -n and B, every
    /// sequence a request through the server's engine (sampling included)
    #[arg(long = "n-parallel", value_name = "B", value_delimiter = ',')]
    pub n_parallel: Vec<usize>,
}

struct Row {
    threads: usize,
    test: String,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    samples: Vec<f64>,
}

pub fn run(args: Args) -> Result<()> {
    if args.model.ctx_size.is_some() {
        bail!("bench sizes the context from -p and -n; -c does not apply");
    }
    let thread_counts = match &args.model.threads[..] {
        [] => vec![all_cores()],
        t => t.to_vec(),
    };
    let kv = args.model.kv_type();
    let loaded = args.model.load()?;
    if !args.n_parallel.is_empty() {
        return batched::run(&args, loaded, &thread_counts);
    }
    let (path, model) = (&loaded.path, &loaded.model);
    let lora = args.lora.load(model)?;
    kv.check(model.config.head_dim)?;
    let load_s = loaded.load_time.as_secs_f64();
    let (size, params, ty) = describe(model);
    let name = format!("llama {} {ty}", human(params as f64, ""));
    let reps = args.repetitions.max(1);
    let mut rows = Vec::new();
    for &threads in &thread_counts {
        let threads = threads.max(1);
        let mut tests: Vec<(usize, usize, usize)> = Vec::new();
        for &p in args.n_prompt.iter().filter(|&&p| p > 0) {
            tests.extend(args.n_depth.iter().map(|&d| (p, 0, d)));
        }
        for &n in args.n_gen.iter().filter(|&&n| n > 0) {
            tests.extend(args.n_depth.iter().map(|&d| (0, n, d)));
        }
        for (p, n, d) in tests {
            let n_ctx = p
                .checked_add(n)
                .and_then(|x| x.checked_add(d))
                .context("-p + -n + -d overflows")?
                .max(1);
            cria_engine::memory::fits(
                &format!("a test of {n_ctx} tokens"),
                cria_engine::memory::kv_bytes(model, n_ctx, kv),
                "lower -p, -n or -d",
            )?;
            let n_batch = p.max(512).min(n_ctx);
            let mut session = Session::new(model, n_ctx, kv, n_batch, threads);
            session.lora = lora.clone();
            let tokens = random_tokens(model.config.n_vocab, d + p.max(n), 42);
            let mut logits = Vec::new();
            if d > 0 {
                model.forward(&mut session, &tokens[..d], Logits::Last, &mut logits)?;
            }
            let tokens = &tokens[d..];
            let mut once = |session: &mut Session| -> Result<f64> {
                session.truncate(d);
                let t = Instant::now();
                if p > 0 {
                    model.forward(session, &tokens[..p], Logits::Last, &mut logits)?;
                } else {
                    for tok in &tokens[..n] {
                        model.forward(
                            session,
                            std::slice::from_ref(tok),
                            Logits::Last,
                            &mut logits,
                        )?;
                    }
                }
                Ok((p + n) as f64 / t.elapsed().as_secs_f64())
            };
            once(&mut session)?; // warm-up
            let samples = (0..reps)
                .map(|_| once(&mut session))
                .collect::<Result<Vec<_>>>()?;
            let mut test = if p > 0 {
                format!("pp{p}")
            } else {
                format!("tg{n}")
            };
            if d > 0 {
                test += &format!(" @ d{d}");
            }
            rows.push(Row {
                threads,
                test,
                n_prompt: p,
                n_gen: n,
                n_depth: d,
                samples,
            });
        }
    }
    if args.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                let (mean, sd) = mean_sd(&r.samples);
                serde_json::json!({
                    "model_filename": path.display().to_string(),
                    "model_type": name,
                    "model_size": size,
                    "model_n_params": params,
                    "load_s": load_s,
                    "n_threads": r.threads,
                    "test": r.test,
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "n_depth": r.n_depth,
                    "type_k": kv.k.name(),
                    "type_v": kv.v.name(),
                    "avg_ts": mean,
                    "stddev_ts": sd,
                    "samples_ts": r.samples,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    // As llama-bench: the cache types are shown when they are not f16.
    let types = kv != KvType::F16.into();
    let (th, tl) = if types {
        (" type_k | type_v |", " ---: | ---: |")
    } else {
        ("", "")
    };
    println!("| model | size | params | backend | threads |{th} test | t/s |");
    println!("| ---: | ---: | ---: | --- | ---: |{tl} ---: | ---: |");
    for r in &rows {
        let (mean, sd) = mean_sd(&r.samples);
        let tv = if types {
            format!(" {} | {} |", kv.k, kv.v)
        } else {
            String::new()
        };
        println!(
            "| {name} | {} | {} | CPU | {} |{tv} {} | {mean:.2} ± {sd:.2} |",
            human_bytes(size),
            human(params as f64, ""),
            r.threads,
            r.test
        );
    }
    Ok(())
}

/// (bytes of tensor data, parameter count, most common weight type).
fn describe(model: &Model) -> (u64, u64, String) {
    let file = model.file();
    let (mut bytes, mut params) = (0u64, 0u64);
    let mut by_type: Vec<(String, u64)> = Vec::new();
    for t in file.tensors() {
        bytes += file.tensor_data(t).len() as u64;
        params += t.n_elements;
        let ty = t.ty.to_string();
        match by_type.iter_mut().find(|(k, _)| *k == ty) {
            Some((_, n)) => *n += t.n_elements,
            None => by_type.push((ty, t.n_elements)),
        }
    }
    let ty = by_type
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or_else(String::new, |(t, _)| t);
    (bytes, params, ty)
}

/// Reproducible token ids below `n_vocab` (a small LCG; the values do not
/// matter for timing, only that they are valid).
fn random_tokens(n_vocab: usize, n: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % n_vocab.max(1) as u64) as u32
        })
        .collect()
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn human(x: f64, unit: &str) -> String {
    if x >= 1e9 {
        format!("{:.2} B{unit}", x / 1e9)
    } else {
        format!("{:.2} M{unit}", x / 1e6)
    }
}

fn human_bytes(b: u64) -> String {
    let mib = b as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.2} MiB")
    }
}
