//! Zeroed byte buffers for repacked weights, which the kernels read in
//! long streams once per token.
//!
//! On Linux the buffer is anonymous memory advised to use transparent huge
//! pages (`madvise(MADV_HUGEPAGE)`; many systems only grant huge pages on
//! request). With 2 MiB pages a 4 GB model needs ~2,000 TLB entries
//! instead of ~1,000,000, and the hardware prefetchers are not stopped at
//! every 4 KiB boundary. Elsewhere, or if the mapping fails, it is a
//! plain `Vec`.

use std::ops::{Deref, DerefMut};

/// A zero-initialised, fixed-size byte buffer.
pub(crate) struct WeightBuf(Inner);

enum Inner {
    #[cfg(target_os = "linux")]
    Map(memmap2::MmapMut),
    Vec(Vec<u8>),
}

impl WeightBuf {
    /// `len` zero bytes (huge pages where the system grants them).
    pub(crate) fn zeroed(len: usize) -> WeightBuf {
        #[cfg(target_os = "linux")]
        if len >= 2 << 20 {
            if let Ok(map) = memmap2::MmapMut::map_anon(len) {
                // Advice only: without huge pages the buffer still works.
                let _ = map.advise(memmap2::Advice::HugePage);
                return WeightBuf(Inner::Map(map));
            }
        }
        WeightBuf(Inner::Vec(vec![0u8; len]))
    }
}

/// Advises Linux to back the whole 2 MiB pages inside `buf` with
/// transparent huge pages (`madvise(MADV_HUGEPAGE)`), for buffers read in
/// long streams that are not [`WeightBuf`]s (the KV cache). Advice only:
/// contents are unchanged, and where the system refuses (or elsewhere)
/// nothing happens. Pages not yet touched stay unbacked until written.
pub fn advise_huge_pages<T>(buf: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (a, b) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if b > a {
            // SAFETY: [a, b) lies inside `buf`'s allocation, which we
            // borrow; MADV_HUGEPAGE changes how pages are backed, never
            // their contents. The result is ignored: it is advice.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// Backs every page of `buf` with memory now (`madvise(MADV_POPULATE_WRITE)`,
/// Linux 5.14 and later), so that the first writes into it do not fault.
/// A KV cache advised into huge pages was otherwise backed during its first
/// request: on this kind of machine the kernel then compacts memory to find
/// 2 MiB pages, and the first token of a request on a fresh server slot
/// waited 0.05-0.5 s for it (BENCHMARKS, session 26).
/// llama.cpp likewise clears its KV buffer when it allocates it. Contents are
/// unchanged; where the system refuses (older kernels, elsewhere) the pages
/// are backed on first touch as before.
pub fn populate<T>(buf: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let a = start.next_multiple_of(PAGE);
        if end > a {
            // SAFETY: [a, end) lies inside `buf`, which we borrow mutably;
            // MADV_POPULATE_WRITE faults pages in without changing their
            // contents. The result is ignored: pages not populated here are
            // populated when first written.
            unsafe { libc::madvise(a as *mut libc::c_void, end - a, libc::MADV_POPULATE_WRITE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

impl Deref for WeightBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            #[cfg(target_os = "linux")]
            Inner::Map(m) => m,
            Inner::Vec(v) => v,
        }
    }
}

impl DerefMut for WeightBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            #[cfg(target_os = "linux")]
            Inner::Map(m) => m,
            Inner::Vec(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populate_keeps_contents() {
        // Untouched (calloc'd) and written pages, odd sizes and offsets.
        for n in [0usize, 1, 4095, 3 << 20] {
            let mut v = vec![0u8; n + 7];
            for (i, b) in v.iter_mut().enumerate().skip(n / 2) {
                *b = (i % 251) as u8;
            }
            let want = v.clone();
            populate(&mut v[3..]);
            advise_huge_pages(&v);
            populate(&mut v);
            assert_eq!(v, want);
        }
    }

    #[test]
    fn zeroed_and_writable_small_and_large() {
        for len in [0, 1, 4096, 3 << 20] {
            let mut b = WeightBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            if len > 0 {
                b[len - 1] = 7;
                assert_eq!(b[len - 1], 7);
            }
        }
    }
}
