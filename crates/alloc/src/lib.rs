//! Per-thread accounting of heap memory, for the bound on what a chat
//! template keeps alive while it renders (cria-prompt's grow.rs).
//!
//! A render runs on a thread of its own, so the bytes that thread has
//! allocated and not yet freed are what the template holds: strings and
//! lists in its variables, namespaces and loop state. Sizes of single
//! values are checked before they are built (grow.rs); this catches many
//! values each within the bound (`{% set a1 = s ~ s %}{% set a2 = s ~ s
//! %}...`), which no per-operation check can see.
//!
//! [`ThreadCounted`] must be the program's global allocator (the `cria`
//! binary, the prompt tests and the fuzz target install it); without it
//! [`live`] says so and only the per-value bounds apply. It is the system
//! allocator plus one thread-local addition per call. Written here because
//! the allocator crates seen (stats_alloc, cap) count per process, and a
//! render is one thread among a server's many.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// Whether [`ThreadCounted`] has counted anything in this process.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting each thread's live bytes.
pub struct ThreadCounted;

fn add(d: isize) {
    // After a thread's locals are gone (its last frees), nothing to count.
    let _ = LIVE.try_with(|c| c.set(c.get().wrapping_add(d)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting touches only a thread-local integer (no allocation, no unwind).
unsafe impl GlobalAlloc for ThreadCounted {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            add(l.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            add(l.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        add(-(l.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            add((new as isize).wrapping_sub(l.size() as isize));
        }
        q
    }
}

/// This thread's live bytes, or `None` if [`ThreadCounted`] is not the
/// global allocator.
pub fn live() -> Option<isize> {
    if !INSTALLED.load(Ordering::Relaxed) {
        // One allocation tells: counted only under ThreadCounted.
        let before = LIVE.with(Cell::get);
        let probe = std::hint::black_box(Box::new(0u64));
        let counted = LIVE.with(Cell::get) != before;
        drop(probe);
        if !counted {
            return None;
        }
        INSTALLED.store(true, Ordering::Relaxed);
    }
    Some(LIVE.with(Cell::get))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOC: ThreadCounted = ThreadCounted;

    #[test]
    fn counts_this_threads_live_bytes() {
        let before = live().expect("installed in this test binary");
        let v: Vec<u8> = Vec::with_capacity(1 << 20);
        let during = live().unwrap();
        assert!(during - before >= 1 << 20, "{before} -> {during}");
        drop(v);
        let after = live().unwrap();
        assert!(after - before < 1 << 10, "{before} -> {after}");
        // Another thread's allocations are its own.
        std::thread::spawn(|| {
            let start = live().unwrap();
            let big = vec![0u8; 4 << 20];
            assert!(live().unwrap() - start >= 4 << 20);
            drop(big);
        })
        .join()
        .unwrap();
        assert!(live().unwrap() - after < 1 << 10);
    }
}
