//! Development measurement (a script, not a test): what a speculative
//! verification step of `n` rows costs against a one-row step, at a given
//! depth, and how much of it is the output projection.
//!
//!   cargo run --release -p cria-model --example verify_cost -- MODEL [DEPTH] [THREADS] [REPS] [ROWS]
//!
//! ROWS is a comma-separated list of row counts (default 1..=17), for
//! profiling one size at a time with `perf record`.
//!
//! For n = 1..=17 rows (every row with logits, as a verification pass) it
//! prints the median and minimum wall time of the whole forward pass and of
//! the output projection alone over `n` rows, and the extra cost of a row
//! relative to the one-row step. With 1 thread it also prints the mean
//! on-CPU time of the pass (from /proc/thread-self/schedstat), which other
//! processes on a loaded machine disturb far less than wall time.
use cria_model::{KvType, Logits, Model, Session};
use std::time::Instant;

/// Nanoseconds this thread has spent on a CPU (0 where /proc lacks it).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let Some(path) = a.get(1) else {
        return Err("usage: verify_cost MODEL [DEPTH] [THREADS] [REPS] [ROWS]".into());
    };
    let arg = |i: usize, d: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (depth, threads, reps) = (arg(2, 400), arg(3, 2), arg(4, 30));
    let model = Model::open(path)?;
    let nv = model.config.n_vocab as u32;
    let mut s = Session::new(&model, depth + 64, KvType::F16, 512, threads);
    // A deterministic spread of token ids as the context.
    let ctx: Vec<u32> = (0..depth as u32).map(|i| (i * 7919 + 13) % nv).collect();
    let mut logits = Vec::new();
    model.forward(&mut s, &ctx, Logits::Last, &mut logits)?;
    let dim = model.config.dim;
    let x: Vec<f32> = (0..17 * dim)
        .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
        .collect();
    let mut out = vec![0f32; 17 * nv as usize];
    println!("# depth {depth}, threads {threads}, reps {reps}; times in ms");
    println!("rows  fwd_med  fwd_min  out_med  out_min  extra/row(min, x one-row)  fwd_cpu_mean");
    let sizes: Vec<usize> = match a.get(5) {
        Some(list) => list
            .split(',')
            .map(|n| n.parse::<usize>().map(|n| n.clamp(1, 17)))
            .collect::<Result<_, _>>()?,
        None => (1..=17).collect(),
    };
    let mut base = 0.0;
    for n in sizes {
        let toks: Vec<u32> = (0..n as u32).map(|i| (i * 31 + 5) % nv).collect();
        let (mut f, mut o) = (Vec::new(), Vec::new());
        let mut cpu = 0;
        for _ in 0..reps {
            s.truncate(depth);
            let (t, c) = (Instant::now(), cpu_ns());
            model.forward(&mut s, &toks, Logits::All, &mut logits)?;
            cpu += cpu_ns() - c;
            f.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            cria_model::matmul(
                model.file(),
                &model.weights.output,
                &x[..n * dim],
                &mut out[..n * nv as usize],
                &s.pool,
            )?;
            o.push(t.elapsed().as_secs_f64() * 1e3);
        }
        f.sort_by(f64::total_cmp);
        o.sort_by(f64::total_cmp);
        if n == 1 {
            base = f[0];
        }
        let extra = if n > 1 {
            (f[0] - base) / (n - 1) as f64 / base
        } else {
            0.0
        };
        println!(
            "{n:4} {:8.3} {:8.3} {:8.3} {:8.3}  {extra:.3}  {:8.3}",
            f[reps / 2],
            f[0],
            o[reps / 2],
            o[0],
            cpu as f64 / reps as f64 / 1e6
        );
    }
    Ok(())
}
