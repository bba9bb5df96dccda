//! A persistent thread pool: run `n_tasks` closures across `threads`
//! workers, the caller's thread included.
//!
//! Workers are spawned once. A [`ThreadPool::run`] publishes the job and
//! bumps an epoch; workers spinning on the epoch pick it up within
//! nanoseconds, those that have been idle longer than [`SPIN`] sleep on a
//! condvar and are woken. Tasks are handed out through an atomic counter,
//! so a worker slowed by another process on the machine simply takes fewer
//! of them, and both cores finish together. A dispatch costs a few
//! microseconds at most and allocates nothing.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps: long enough to bridge
/// the serial steps between two matmuls of a forward pass.
const SPIN: Duration = Duration::from_micros(200);

/// Runs parallel loops on up to `threads` threads (the caller's included).
/// Clones share the same workers.
#[derive(Clone)]
pub struct ThreadPool {
    threads: usize,
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish()
    }
}

/// The job being run: a type- and lifetime-erased `&dyn Fn(usize) + Sync`.
/// Only dereferenced between the epoch bump that publishes it and the
/// `active` count reaching zero, while `run` keeps the closure alive.
type Job = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    epoch: AtomicU64,
    job: UnsafeCell<Option<Job>>,
    n_tasks: AtomicUsize,
    /// The next task to hand out, alone on its cache lines: both threads
    /// take tasks from it, and it must not drag the lines the waiting
    /// thread reads (`epoch`, `active`) back and forth with it.
    next: Padded<AtomicUsize>,
    /// The epoch of the job workers may still join, 0 once `run` stops
    /// admitting them.
    open: AtomicU64,
    /// Workers inside the current job.
    active: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A value alone on its cache lines (128 bytes: the adjacent-line
/// prefetcher moves lines in pairs).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

// SAFETY: `job` is written only by the thread holding `Inner::busy` while no
// worker is active (see `run`), and read by workers only in between.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

struct Inner {
    shared: Arc<Shared>,
    /// Held for the duration of a `run`: one job at a time.
    busy: Mutex<()>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    workers: usize,
}

impl ThreadPool {
    /// A pool of `threads` workers; 0 is taken as 1. Spawns `threads - 1`
    /// threads (or none if spawning fails: the pool then runs serially).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        if threads == 1 {
            return ThreadPool {
                threads,
                inner: None,
            };
        }
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next: Padded(AtomicUsize::new(0)),
            open: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("cria-worker-{i}"))
                .spawn(move || worker(&s));
            match spawned {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        let workers = handles.len();
        ThreadPool {
            threads,
            inner: Some(Arc::new(Inner {
                shared,
                busy: Mutex::new(()),
                handles: Mutex::new(handles),
                workers,
            })),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Rows per task for light row-by-row work (norms, rope, SiLU,
    /// quantizing activations) on `n` rows: one task per thread below 32
    /// rows, since a task handed out costs about as much as a few rows of
    /// such work (8 sequences decoding gained 1-7 % over 4 tasks per
    /// thread, BENCHMARKS session 25); 4 per thread above, for balance.
    pub fn rows_per_task(&self, n: usize) -> usize {
        n.div_ceil(self.threads * if n < 32 { 1 } else { 4 }).max(1)
    }

    /// Call `f(task)` once for every task in `0..n_tasks`, in any order and
    /// on any worker; returns when all have finished. A panic in `f` is
    /// propagated to the caller. A `run` from inside a task (or while
    /// another thread is using the pool) runs serially on its caller.
    pub fn run<F>(&self, n_tasks: usize, f: F)
    where
        F: Fn(usize) + Sync,
    {
        let inner = match &self.inner {
            Some(inner) if n_tasks > 1 && inner.workers > 0 => inner,
            _ => return (0..n_tasks).for_each(f),
        };
        let busy = match inner.busy.try_lock() {
            Ok(guard) => guard,
            // Nothing below panics while holding it (a task's panic is
            // raised after it is released), but a poisoned lock must not
            // leave the pool serial for good either: the state it guards
            // is reset by every run.
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return (0..n_tasks).for_each(f),
        };
        let s = &*inner.shared;
        let f: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: erasing the lifetime is sound because this function does
        // not return (or unwind) before every worker has stopped using
        // `f`: see the wait below, which also runs on unwind via `Done`.
        let job: Job = unsafe { std::mem::transmute(f) };
        // SAFETY: no worker is inside a job (the previous run waited),
        // and we hold `busy`, so nobody else touches `job`.
        unsafe { *s.job.get() = Some(job) };
        s.n_tasks.store(n_tasks, Relaxed);
        s.next.store(0, Relaxed);
        let e = s.epoch.load(Relaxed) + 1;
        s.open.store(e, SeqCst);
        s.epoch.store(e, SeqCst);
        if s.sleeping.load(SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        struct Done<'a>(&'a Shared);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                // Admit no more workers, then wait for those inside. A
                // worker that was not scheduled in time is not waited for:
                // on a loaded machine the caller does its share instead.
                self.0.open.store(0, SeqCst);
                let mut spins = 0u32;
                while self.0.active.load(SeqCst) != 0 {
                    spins += 1;
                    if spins < 4096 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                // SAFETY: all workers are done with the job.
                unsafe { *self.0.job.get() = None };
            }
        }
        let done = Done(s);
        run_tasks(s, f);
        drop(done);
        let panicked = s.panicked.swap(false, Relaxed);
        // Released before the panic below, which would poison it: the
        // next run then took the serial path, and a server that survived
        // one panicking task ran on one thread from then on.
        drop(busy);
        if panicked {
            panic!("a thread pool task panicked");
        }
    }
}

impl ThreadPool {
    /// Calls `f(range)` on runs of `0..n` that together cover it once.
    /// Each thread owns a contiguous share (`n / threads`) and works
    /// through it front to back, `chunk` items at a time; a thread whose
    /// share is done takes chunks from the back of the others'. A share's
    /// counters sit on their own cache lines and only its owner touches
    /// them until a thread comes to help, so a small chunk costs little to
    /// take (against [`run`](Self::run)'s one counter for all, whose line
    /// moves between the cores at every task), and the threads still
    /// finish within a chunk of each other. A thread that never starts
    /// (a loaded machine) leaves its share to the others.
    pub fn run_split<F>(&self, n: usize, chunk: usize, f: F)
    where
        F: Fn(std::ops::Range<usize>) + Sync,
    {
        let parts = self.threads.min(n.max(1));
        if parts <= 1 || n > u32::MAX as usize {
            return f(0..n);
        }
        let chunk = chunk.max(1);
        // Share s: its next item to take from the front (high 32 bits)
        // and one past its last item not yet taken from the back (low).
        let pack = |front: usize, back: usize| ((front as u64) << 32) | back as u64;
        let share = |s: usize| Padded(AtomicU64::new(pack(s * n / parts, (s + 1) * n / parts)));
        // On the stack for up to 16 threads (a dispatch allocates nothing).
        const INLINE: usize = 16;
        let inline: [Padded<AtomicU64>; INLINE];
        let heap: Vec<Padded<AtomicU64>>;
        let shares: &[Padded<AtomicU64>] = if parts <= INLINE {
            // Entries past `parts` stay empty and unused.
            inline = std::array::from_fn(|s| match s < parts {
                true => share(s),
                false => Padded(AtomicU64::new(0)),
            });
            &inline[..parts]
        } else {
            heap = (0..parts).map(share).collect();
            &heap
        };
        // Takes up to `chunk` items of share `s`, from its front or back.
        let take = |s: usize, from_front: bool| -> Option<std::ops::Range<usize>> {
            let a = &shares[s];
            let mut cur = a.load(Acquire);
            loop {
                let (front, back) = ((cur >> 32) as usize, (cur & 0xffff_ffff) as usize);
                if front >= back {
                    return None;
                }
                let k = chunk.min(back - front);
                let (next, got) = if from_front {
                    (pack(front + k, back), front..front + k)
                } else {
                    (pack(front, back - k), back - k..back)
                };
                match a.compare_exchange_weak(cur, next, AcqRel, Acquire) {
                    Ok(_) => return Some(got),
                    Err(now) => cur = now,
                }
            }
        };
        self.run(parts, |s| {
            while let Some(r) = take(s, true) {
                f(r);
            }
            for other in (1..parts).map(|d| (s + d) % parts) {
                while let Some(r) = take(other, false) {
                    f(r);
                }
            }
        });
    }

    /// Runs `f(i, chunk)` for every `chunk_len`-long chunk of `out` (the
    /// last may be shorter), spread over the pool.
    pub fn for_each_chunk_mut<T: Send>(
        &self,
        out: &mut [T],
        chunk_len: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk_len = chunk_len.max(1);
        let (ptr, len) = (SendPtr(out.as_mut_ptr()), out.len());
        let ptr = &ptr;
        self.run(len.div_ceil(chunk_len), |i| {
            let start = i * chunk_len;
            let n = chunk_len.min(len - start);
            // SAFETY: chunk i covers start..start + n, disjoint from every
            // other task's, inside `out`, which we borrow mutably until
            // `run` returns.
            let chunk = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(start), n) };
            f(i, chunk)
        });
    }
}

impl ThreadPool {
    /// Runs `f(i, &mut out[ranges[i].0..ranges[i].1])` for every `i`,
    /// spread over the pool and started in list order (list the biggest
    /// first to balance the threads). The ranges must be disjoint and listed
    /// in increasing or decreasing order; panics otherwise, or if one is
    /// out of bounds.
    pub fn for_each_range_mut<T: Send>(
        &self,
        out: &mut [T],
        ranges: &[(usize, usize)],
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let ok = |a: &(usize, usize)| a.0 <= a.1 && a.1 <= out.len();
        let up = ranges.windows(2).all(|w| w[0].1 <= w[1].0);
        let down = ranges.windows(2).all(|w| w[1].1 <= w[0].0);
        assert!(
            ranges.iter().all(ok) && (up || down),
            "for_each_range_mut: ranges overlap, are unordered or out of bounds"
        );
        let ptr = SendPtr(out.as_mut_ptr());
        let ptr = &ptr;
        self.run(ranges.len(), |i| {
            let (start, end) = ranges[i];
            // SAFETY: the ranges are in bounds and pairwise disjoint
            // (checked above: ordered and non-overlapping neighbours), and
            // we borrow `out` mutably until `run` returns.
            let chunk = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(start), end - start) };
            f(i, chunk)
        });
    }
}

struct SendPtr<T>(*mut T);
// SAFETY: only used to hand disjoint chunks to tasks (above).
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// Take tasks until none are left; a panicking task is recorded (and the
/// remaining tasks still run, so `run` always completes).
fn run_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let n = s.n_tasks.load(Relaxed);
    loop {
        let task = s.next.fetch_add(1, Relaxed);
        if task >= n {
            break;
        }
        if catch_unwind(AssertUnwindSafe(|| f(task))).is_err() {
            s.panicked.store(true, Relaxed);
        }
    }
}

fn worker(s: &Shared) {
    // Epoch 0 is "no job yet": a run published before this thread got
    // here must still be seen as new.
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Acquire) {
                return;
            }
            let e = s.epoch.load(Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if !spins.is_multiple_of(256) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleeping.fetch_add(1, SeqCst);
            while s.epoch.load(SeqCst) == seen && !s.shutdown.load(SeqCst) {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleeping.fetch_sub(1, SeqCst);
            drop(g);
            spins = 0;
        }
        // Join the job unless `run` has closed it already.
        s.active.fetch_add(1, SeqCst);
        if s.open.load(SeqCst) == seen {
            // SAFETY: the job of epoch `seen` is still open, so `run` has
            // published it and keeps it alive until `active` drops to 0.
            if let Some(job) = unsafe { *s.job.get() } {
                run_tasks(s, unsafe { &*job });
            }
        }
        s.active.fetch_sub(1, SeqCst);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in [0, 1, 2, 5] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 3, 100, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, |t| {
                    hits[t].fetch_add(1, Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Relaxed) == 1));
            }
        }
    }

    #[test]
    fn split_runs_cover_every_item_once() {
        // 17 threads keep their shares' counters on the heap.
        for threads in [1, 2, 3, 17] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 2, 5, 64, 1001] {
                for chunk in [0, 1, 3, 8, 5000] {
                    let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                    pool.run_split(n, chunk, |r| {
                        assert!(r.start < r.end || n == 0, "{r:?}");
                        assert!(r.len() <= chunk.max(1) || threads == 1 || n < 2);
                        for i in r {
                            hits[i].fetch_add(1, Relaxed);
                        }
                    });
                    assert!(
                        hits.iter().all(|h| h.load(Relaxed) == 1),
                        "threads {threads} n {n} chunk {chunk}"
                    );
                }
            }
        }
        // From inside a task (the pool busy) it runs serially, and still
        // covers everything.
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        pool.run(2, |_| {
            pool.run_split(10, 2, |r| {
                total.fetch_add(r.len(), Relaxed);
            })
        });
        assert_eq!(total.load(Relaxed), 20);
    }

    #[test]
    fn chunks_cover_the_slice_once() {
        let pool = ThreadPool::new(2);
        let mut v = vec![0usize; 103];
        pool.for_each_chunk_mut(&mut v, 10, |i, c| c.iter_mut().for_each(|x| *x += i + 1));
        for (k, x) in v.iter().enumerate() {
            assert_eq!(*x, k / 10 + 1);
        }
    }

    #[test]
    fn ranges_cover_what_they_name_once() {
        let pool = ThreadPool::new(2);
        for ranges in [vec![(0, 3), (3, 3), (5, 9)], vec![(7, 10), (2, 7), (0, 1)]] {
            let mut v = vec![0usize; 10];
            pool.for_each_range_mut(&mut v, &ranges, |i, c| {
                c.iter_mut().for_each(|x| *x += i + 1)
            });
            for (k, x) in v.iter().enumerate() {
                let want = ranges.iter().position(|r| (r.0..r.1).contains(&k));
                assert_eq!(*x, want.map_or(0, |i| i + 1));
            }
        }
        for bad in [
            vec![(0, 4), (3, 5)],
            vec![(0, 2), (5, 6), (3, 4)],
            vec![(8, 11)],
        ] {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                pool.for_each_range_mut(&mut [0u8; 10], &bad, |_, _| {});
            }));
            assert!(r.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn many_small_runs_and_sleeping_workers() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        for i in 0..2000 {
            pool.run(4, |t| {
                total.fetch_add(t + 1, Relaxed);
            });
            if i % 500 == 0 {
                // Let the workers fall asleep, then wake them.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert_eq!(total.load(Relaxed), 2000 * 10);
    }

    #[test]
    fn nested_and_concurrent_runs_complete() {
        let pool = ThreadPool::new(2);
        let count = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..2 {
                sc.spawn(|| {
                    for _ in 0..100 {
                        pool.run(3, |_| {
                            pool.run(2, |_| {
                                count.fetch_add(1, Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(count.load(Relaxed), 2 * 100 * 3 * 2);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(10, |t| {
                if t == 7 {
                    panic!("task 7");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(10, |_| {
            count.fetch_add(1, Relaxed);
        });
        assert_eq!(count.load(Relaxed), 10);
        // Still parallel, not fallen back to the caller alone: a task
        // waits until another thread has run one.
        let others = AtomicUsize::new(0);
        let me = std::thread::current().id();
        pool.run(2, |_| {
            if std::thread::current().id() != me {
                others.fetch_add(1, SeqCst);
                return;
            }
            let start = Instant::now();
            while others.load(SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
                std::hint::spin_loop();
            }
        });
        assert_eq!(others.load(SeqCst), 1, "the worker ran no task");
    }
}
