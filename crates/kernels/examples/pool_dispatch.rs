//! What a [`ThreadPool::run`] of small tasks costs against doing the same
//! work serially: `tasks` tasks of `work` multiply-adds each (a few
//! nanoseconds to a few tenths of a microsecond), 200,000 dispatches, the
//! mean per dispatch. Decode steps dispatch about 150 such jobs per token,
//! so a microsecond here is 0.15 ms a token.
//!
//!   cargo run --release -p cria-kernels --example pool_dispatch -- [THREADS]
//!
//! A measurement tool, not a test: run it on a quiet machine.
use cria_kernels::ThreadPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// `work` dependent multiply-adds from `seed` (the compiler cannot fold them).
fn spin(seed: usize, work: usize) -> usize {
    (0..work).fold(seed, |x, k| x.wrapping_mul(31).wrapping_add(k))
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let pool = ThreadPool::new(threads);
    let sink = AtomicUsize::new(0);
    let n = 200_000;
    println!("threads {threads}, {n} dispatches per line, mean microseconds per dispatch");
    for &(tasks, work) in &[(2usize, 0usize), (2, 200), (5, 200), (8, 500), (16, 500)] {
        let t = Instant::now();
        for _ in 0..n {
            pool.run(tasks, |i| {
                sink.fetch_add(spin(i, work) & 1, Ordering::Relaxed);
            });
        }
        let par = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        let t = Instant::now();
        for _ in 0..n {
            for i in 0..tasks {
                sink.fetch_add(spin(i, work) & 1, Ordering::Relaxed);
            }
        }
        let ser = t.elapsed().as_secs_f64() / n as f64 * 1e6;
        println!(
            "tasks {tasks:2} x {work:4} multiply-adds: pool.run {par:.3} us, serially {ser:.3} us"
        );
    }
    // Keep the sums alive.
    eprintln!("({})", sink.load(Ordering::Relaxed));
}
