//! Buffers reused across the products of a block, the blocks of a pass and
//! the steps of a run, so a step neither allocates nor zeroes what it
//! writes in full: a buffer handed back with [`Workspace::give`] is the
//! next [`Workspace::filled`] or [`Workspace::zeroed`] of a size it holds.
//!
//! The buffers are the same ones a step would allocate, kept between uses,
//! so peak memory is the step's own peak (plus what best-fit leaves
//! unused), not more.

use std::cell::RefCell;

/// A free list of f32 buffers (single-threaded: the calling thread takes
/// and gives; the pool's tasks only see slices).
#[derive(Default)]
pub struct Workspace {
    free: RefCell<Vec<Vec<f32>>>,
}

impl Workspace {
    /// The free buffer that best fits `len` (the smallest that holds it,
    /// else the largest, which grows), or a new one.
    fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.free.borrow_mut();
        let fit = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)
            .or_else(|| {
                free.iter()
                    .enumerate()
                    .max_by_key(|(_, v)| v.capacity())
                    .map(|(i, _)| i)
            });
        match fit {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
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
        let b = ws.zeroed(60);
        assert_eq!(b.as_ptr(), ptr, "the free buffer is reused");
        assert!(b.len() == 60 && b.iter().all(|&v| v == 0.0));
        ws.give(b);
        let c = ws.filled(100);
        assert_eq!((c.as_ptr(), c.len()), (ptr, 100));
    }

    #[test]
    fn best_fit_takes_the_smallest_buffer_that_holds_the_size() {
        let ws = Workspace::default();
        let (big, small) = (ws.zeroed(1000), ws.zeroed(10));
        let (pb, ps) = (big.as_ptr(), small.as_ptr());
        ws.give(big);
        ws.give(small);
        assert_eq!(ws.filled(8).as_ptr(), ps);
        assert_eq!(ws.filled(500).as_ptr(), pb);
    }
}
