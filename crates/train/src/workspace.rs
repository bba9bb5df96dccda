//! Buffers reused across the products of a block, the blocks of a pass and
//! the steps of a run, so a step neither allocates nor zeroes what it
//! writes in full: a buffer handed back with [`Workspace::give`] is the
//! next [`Workspace::filled`] or [`Workspace::zeroed`] of a size it holds.
//!
//! The buffers are the same ones a step would allocate, kept between uses:
//! a use takes a free buffer of exactly its size, never grows one, and [`Workspace::end_pass`] frees what a whole micro-batch did not
//! use, so what is kept follows the current shapes and peak memory stays
//! the step's own peak (measured: `notes/train17.BENCHMARKS.md`).

use std::cell::RefCell;

/// A free list of f32 buffers (single-threaded: the calling thread takes
/// and gives; the pool's tasks only see slices).
#[derive(Default)]
pub struct Workspace {
    free: RefCell<Vec<Vec<f32>>>,
    /// The sequence lengths of the last pass.
    shape: RefCell<Vec<usize>>,
}

impl Workspace {
    /// A free buffer of exactly `len` floats, or a new one. (A bigger one
    /// would be held by a smaller use while a later use of its own size
    /// allocated anew: measured, the kept buffers then grew step after
    /// step.)
    fn take(&self, len: usize) -> Vec<f32> {
        if len == 0 {
            return Vec::new();
        }
        let mut free = self.free.borrow_mut();
        let fit = free.iter().rposition(|v| v.capacity() == len);
        match fit {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        }
    }

    /// Starts a pass (a micro-batch) over sequences of these lengths: the
    /// free buffers are kept if the last pass had the same ones (the same
    /// buffer sizes will be asked for, in the same order), and freed
    /// otherwise, so what is kept never adds to a pass of another shape.
    pub fn begin_pass(&self, seq_lens: impl Iterator<Item = usize>) {
        let shape: Vec<usize> = seq_lens.collect();
        let mut last = self.shape.borrow_mut();
        if *last != shape {
            self.free.borrow_mut().clear();
            *last = shape;
        }
    }

    /// `len` floats of unspecified (stale but finite) values, for an
    /// output that is written in full.
    pub fn filled(&self, len: usize) -> Vec<f32> {
        let mut v = self.take(len);
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        v
    }

    /// `len` zeros.
    pub fn zeroed(&self, len: usize) -> Vec<f32> {
        let mut v = self.take(len);
        v.clear();
        v.resize(len, 0.0);
        v
    }

    /// Hands a buffer back for reuse.
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() > 0 {
            self.free.borrow_mut().push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_reused_and_zeroed_on_request() {
        let ws = Workspace::default();
        let mut a = ws.zeroed(100);
        a.iter_mut().for_each(|v| *v = 7.0);
        let ptr = a.as_ptr();
        ws.give(a);
        let b = ws.zeroed(100);
        assert_eq!(b.as_ptr(), ptr, "the free buffer is reused");
        assert!(b.len() == 100 && b.iter().all(|&v| v == 0.0));
        ws.give(b);
        let c = ws.filled(100);
        assert_eq!((c.as_ptr(), c.len()), (ptr, 100));
    }

    #[test]
    fn only_a_buffer_of_the_same_size_is_reused() {
        let ws = Workspace::default();
        let (big, small) = (ws.zeroed(1000), ws.zeroed(10));
        let (pb, ps) = (big.as_ptr(), small.as_ptr());
        ws.give(big);
        ws.give(small);
        let (a, b) = (ws.filled(8), ws.filled(500));
        assert!(a.as_ptr() != ps && b.as_ptr() != pb);
        let (c, d) = (ws.filled(1000), ws.filled(10));
        assert_eq!((c.as_ptr(), d.as_ptr()), (pb, ps));
        assert!(ws.filled(0).capacity() == 0);
    }

    #[test]
    fn a_pass_of_another_shape_starts_empty() {
        let ws = Workspace::default();
        ws.begin_pass([4, 2].into_iter());
        ws.give(ws.zeroed(100));
        ws.begin_pass([4, 2].into_iter());
        assert_eq!(ws.free.borrow().len(), 1, "same shape: kept");
        ws.begin_pass([4].into_iter());
        assert!(ws.free.borrow().is_empty(), "another shape: freed");
    }
}
