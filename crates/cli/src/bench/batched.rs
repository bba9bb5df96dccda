//! `cria bench -npl B`: llama-batched-bench's PP/TG/B table, with every
//! sequence a request through the server's engine.
//!
//! For each prompt length PP (`-p`), generation length TG (`-n`) and
//! number of sequences B (`-npl`, llama.cpp's spelling of
//! `--n-parallel`), an engine with B slots gets B requests at once, each a
//! prompt of PP random tokens that asks for exactly TG tokens (greedy,
//! end-of-generation ignored). It is the server's path without HTTP:
//! continuous batching, sampling, detokenizing and the event channels
//! all count, so this table separates the engine's cost from the HTTP
//! layer's (`scripts/load.py` measures both together).
//!
//! - T_PP: from submitting to the last sequence's first token (the prompts
//!   go through in steps of [`STEP_TOKENS`] rows; when B x PP is larger,
//!   the sequences that got their first token decode meanwhile, as in the
//!   server). S_PP = B x PP / T_PP.
//! - T_TG: from there to the last sequence's end. After its first token a
//!   sequence needs TG - 1 decode steps, so S_TG = B x (TG - 1) / T_TG
//!   (llama-batched-bench evaluates TG given tokens per sequence instead,
//!   with no sampling: B x TG / T_TG).
//! - T = T_PP + T_TG, S = B x (PP + TG) / T.
//!
//! A sequence's end is when its last event arrives; its first token is
//! that end less the generation time the engine measured, so a receiving
//! thread that runs late (all of them, under `chrt`, until the engine's
//! threads yield) does not shift time between T_PP and T_TG.
//!
//! One untimed warm-up run, then `-r` timed runs with fresh random prompts
//! (so no slot reuses a cached prefix); times are their means.

use super::{mean_sd, random_tokens, Args};
use anyhow::{bail, Context, Result};
use cria_engine::{Engine, EngineConfig, Event, GenerateParams, Loaded, Request, SubmitError};
use cria_sampler::SamplerConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows per forward pass: llama.cpp's default micro-batch (the server's
/// engine takes 256, which changes only how the prompts are split).
pub const STEP_TOKENS: usize = 512;

/// One timed run: seconds to the last first token, and to the last end.
struct Timing {
    t_pp: f64,
    t_end: f64,
}

/// One line of the table.
struct Line {
    threads: usize,
    pp: usize,
    tg: usize,
    b: usize,
    runs: Vec<Timing>,
}

impl Line {
    fn n_kv(&self) -> usize {
        self.b * (self.pp + self.tg)
    }
    /// Mean (T_PP, T_TG, T) over the runs, in seconds.
    fn times(&self) -> (f64, f64, f64) {
        let pp: Vec<f64> = self.runs.iter().map(|r| r.t_pp).collect();
        let tg: Vec<f64> = self.runs.iter().map(|r| r.t_end - r.t_pp).collect();
        let t: Vec<f64> = self.runs.iter().map(|r| r.t_end).collect();
        (mean_sd(&pp).0, mean_sd(&tg).0, mean_sd(&t).0)
    }
    /// (S_PP, S_TG, S) in tokens per second.
    fn speeds(&self) -> (f64, f64, f64) {
        let (t_pp, t_tg, t) = self.times();
        let b = self.b as f64;
        (
            b * self.pp as f64 / t_pp,
            b * (self.tg - 1) as f64 / t_tg,
            b * (self.pp + self.tg) as f64 / t,
        )
    }
}

pub fn run(args: &Args, loaded: Loaded, threads: &[usize]) -> Result<()> {
    if args.n_depth.iter().any(|&d| d > 0) {
        bail!("-d does not apply with -npl: each sequence starts from its prompt");
    }
    if let Some(&b) = args.n_parallel.iter().find(|&&b| b == 0) {
        bail!("-npl {b}: give at least 1 sequence");
    }
    if let Some(&p) = args.n_prompt.iter().find(|&&p| p == 0) {
        bail!("-p {p} with -npl: every sequence needs a prompt of at least 1 token");
    }
    if let Some(&n) = args.n_gen.iter().find(|&&n| n < 2) {
        bail!("-n {n} with -npl: give at least 2 (the first token comes from the prompt)");
    }
    let kv = args.model.kv_type();
    let lora = args.lora.load(&loaded.model)?;
    kv.check(loaded.model.config.head_dim)?;
    let n_vocab = loaded.model.config.n_vocab;
    let model = Arc::new(loaded.model);
    let tok = Arc::new(loaded.tokenizer);
    let reps = args.repetitions.max(1);
    let mut lines = Vec::new();
    for &threads in threads {
        let threads = threads.max(1);
        for &pp in &args.n_prompt {
            for &tg in &args.n_gen {
                for &b in &args.n_parallel {
                    let n_ctx = pp.checked_add(tg).context("-p + -n overflows")?;
                    let config = EngineConfig {
                        slots: b,
                        max_queue: 0,
                        step_tokens: STEP_TOKENS.max(b),
                        lora: lora.clone(),
                        ..EngineConfig::single(n_ctx, kv, threads)
                    };
                    let engine = Engine::start(model.clone(), tok.clone(), config)?;
                    let mut seed = 42;
                    let mut once = || {
                        seed += 1;
                        one_run(&engine, n_vocab, pp, tg, b, seed)
                    };
                    once()?; // warm-up
                    let runs = (0..reps).map(|_| once()).collect::<Result<Vec<_>>>()?;
                    engine.shutdown();
                    lines.push(Line {
                        threads,
                        pp,
                        tg,
                        b,
                        runs,
                    });
                }
            }
        }
    }
    if args.json {
        let out: Vec<_> = lines
            .iter()
            .map(|l| {
                let (t_pp, t_tg, t) = l.times();
                let (s_pp, s_tg, s) = l.speeds();
                serde_json::json!({
                    "model_filename": loaded.path.display().to_string(),
                    "n_threads": l.threads,
                    "n_batch": STEP_TOKENS.max(l.b),
                    "type_k": kv.k.name(),
                    "type_v": kv.v.name(),
                    "pp": l.pp,
                    "tg": l.tg,
                    "pl": l.b,
                    "n_kv": l.n_kv(),
                    "t_pp": t_pp,
                    "speed_pp": s_pp,
                    "t_tg": t_tg,
                    "speed_tg": s_tg,
                    "t": t,
                    "speed": s,
                    "runs": l.runs.len(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "cria bench (batched, through the engine): step_tokens = {STEP_TOKENS}, type_k = {}, \
         type_v = {}, mean of {reps} runs",
        kv.k.name(),
        kv.v.name()
    );
    println!();
    println!(
        "| threads |     PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |"
    );
    println!(
        "|--------:|-------:|-------:|-----:|-------:|---------:|---------:|---------:|---------:|---------:|---------:|"
    );
    for l in &lines {
        let (t_pp, t_tg, t) = l.times();
        let (s_pp, s_tg, s) = l.speeds();
        println!(
            "| {:7} | {:6} | {:6} | {:4} | {:6} | {t_pp:8.3} | {s_pp:8.2} | {t_tg:8.3} | {s_tg:8.2} | {t:8.3} | {s:8.2} |",
            l.threads,
            l.pp,
            l.tg,
            l.b,
            l.n_kv()
        );
    }
    Ok(())
}

/// B requests submitted together; waits for every one to end.
fn one_run(
    engine: &Engine,
    n_vocab: usize,
    pp: usize,
    tg: usize,
    b: usize,
    seed: u64,
) -> Result<Timing> {
    let params = GenerateParams {
        max_tokens: Some(tg),
        stop: Vec::new(),
        sampler: SamplerConfig::greedy(),
        ignore_eos: true,
        constraint: None,
    };
    let prompts = random_tokens(n_vocab, b * pp, seed);
    let t0 = Instant::now();
    let mut receivers = Vec::with_capacity(b);
    for prompt in prompts.chunks_exact(pp) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let req = Request::new(prompt.to_vec(), params.clone(), tx);
        match engine.submit(req) {
            Ok(()) => {}
            Err(SubmitError::Invalid(e)) => return Err(e.into()),
            Err(SubmitError::Stopped) => bail!("the engine stopped"),
            Err(SubmitError::QueueFull { .. }) => {
                bail!("the engine refused a request: more requests than -npl slots")
            }
        }
        receivers.push(rx);
    }
    // One thread per sequence, each timing its end (its first token is
    // placed by the engine's clock, see the module doc).
    let ends: Vec<Result<(Duration, Duration)>> = std::thread::scope(|s| {
        let handles: Vec<_> = receivers
            .into_iter()
            .map(|mut rx| {
                s.spawn(move || -> Result<(Duration, Duration)> {
                    loop {
                        match rx.blocking_recv() {
                            Some(Event::Token(_)) => {}
                            Some(Event::Done(d)) => {
                                let end = t0.elapsed();
                                if d.completion_tokens != tg {
                                    bail!(
                                        "a sequence ended after {} tokens ({:?}), not {tg}",
                                        d.completion_tokens,
                                        d.finish
                                    );
                                }
                                return Ok((end.saturating_sub(d.generation_time), end));
                            }
                            Some(Event::Error(e)) => return Err(e.into()),
                            // Only sent to requests that ask for it.
                            Some(Event::Progress(_)) => {}
                            Some(Event::Embedding(_)) => {
                                bail!("a generation request was answered with an embedding")
                            }
                            None => bail!("the engine stopped"),
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a receiver thread panicked")))
            })
            .collect()
    });
    let (mut t_pp, mut t_end) = (0f64, 0f64);
    for e in ends {
        let (first, end) = e?;
        t_pp = t_pp.max(first.as_secs_f64());
        t_end = t_end.max(end.as_secs_f64());
    }
    Ok(Timing { t_pp, t_end })
}
