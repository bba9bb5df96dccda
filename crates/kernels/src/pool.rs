//! A minimal thread pool: run `n_tasks` closures across `threads` workers.
//!
//! This version spawns scoped threads on each [`ThreadPool::run`] (about
//! 10-30 us per call) and hands tasks out through an atomic counter, so a
//! worker slowed by another process on the machine simply takes fewer
//! tasks. The API is what a persistent spin-then-park pool will keep.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs parallel loops on up to `threads` threads (the caller's included).
#[derive(Clone, Debug)]
pub struct ThreadPool {
    threads: usize,
}

impl ThreadPool {
    /// A pool of `threads` workers; 0 is taken as 1.
    pub fn new(threads: usize) -> ThreadPool {
        ThreadPool {
            threads: threads.max(1),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Call `f(task)` once for every task in `0..n_tasks`, in any order and
    /// on any worker; returns when all have finished. A panic in `f` is
    /// propagated to the caller.
    pub fn run<F>(&self, n_tasks: usize, f: F)
    where
        F: Fn(usize) + Sync,
    {
        let workers = self.threads.min(n_tasks);
        if workers <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let next = AtomicUsize::new(0);
        let work = || loop {
            let task = next.fetch_add(1, Ordering::Relaxed);
            if task >= n_tasks {
                break;
            }
            f(task);
        };
        std::thread::scope(|s| {
            for _ in 1..workers {
                s.spawn(work);
            }
            work();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in [0, 1, 2, 5] {
            for n in [0, 1, 3, 100] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                ThreadPool::new(threads).run(n, |t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }
}
