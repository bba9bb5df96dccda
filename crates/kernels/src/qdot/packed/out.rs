//! [`OutRows`]: where the panel kernels store their results.

/// Where a panel kernel stores its results: activation row `jj`'s outputs
/// at `ptr + jj * stride`, the first `live` lanes of the panel's (or
/// pair's) weight rows. The lanes past a matrix's last row are computed
/// but not stored. The kernels write straight into the product's output
/// with masked stores: a zeroed local array and a copy per row were 4-5 %
/// of the 8-sequence step's profile (`memset` and `memmove`).
#[derive(Clone, Copy)]
pub(crate) struct OutRows {
    ptr: *mut f32,
    stride: usize,
    live: usize,
}

impl OutRows {
    /// Rows at `ptr`, `stride` apart, `live` lanes of each stored.
    ///
    /// # Safety
    /// For every activation row `jj` a kernel is then given,
    /// `ptr + jj * stride .. + live` must be writable, and accessed by
    /// nothing else during the call.
    pub(crate) unsafe fn new(ptr: *mut f32, stride: usize, live: usize) -> Self {
        OutRows { ptr, stride, live }
    }

    /// The rows of a local array, every lane stored (a kernel given this
    /// must not be asked for more rows than `rows` has).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn of<const W: usize>(rows: &mut [[f32; W]]) -> Self {
        OutRows {
            ptr: rows.as_mut_ptr().cast(),
            stride: W,
            live: W,
        }
    }

    /// The same rows from row `k` on.
    pub(super) fn skip_rows(self, k: usize) -> Self {
        OutRows {
            ptr: self.ptr.wrapping_add(k * self.stride),
            ..self
        }
    }

    /// Row `jj`'s first output.
    ///
    /// # Safety
    /// As [`OutRows::new`]: row `jj` is one the kernel was given.
    #[inline(always)]
    pub(super) unsafe fn row(&self, jj: usize) -> *mut f32 {
        self.ptr.add(jj * self.stride)
    }

    /// The store mask of `width` lanes (8 or 16): the live ones.
    #[inline(always)]
    pub(super) fn mask(&self, width: usize) -> u32 {
        debug_assert!(self.live <= width);
        ((1u64 << self.live.min(width)) - 1) as u32
    }
}
