//! aarch64 NEON GEMM tile: MR x 8 (two 4-lane accumulators per row), one
//! fused multiply-add per element and k, in k order (see the parent
//! module). A tile at the right edge of C goes through a stack copy, so
//! columns past `live` are never touched.

use std::arch::aarch64::*;

/// # Safety
/// The CPU must support NEON; see `super::tile` for the pointers.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile_neon<const MR: usize>(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    live: usize,
    load: bool,
) {
    let mut edge = [[0f32; 8]; MR];
    let mut acc = [[vdupq_n_f32(0.0); 2]; MR];
    if load {
        for i in 0..MR {
            let ci = c.add(i * ldc);
            if live == 8 {
                acc[i][0] = vld1q_f32(ci);
                acc[i][1] = vld1q_f32(ci.add(4));
            } else {
                std::ptr::copy_nonoverlapping(ci, edge[i].as_mut_ptr(), live);
                acc[i][0] = vld1q_f32(edge[i].as_ptr());
                acc[i][1] = vld1q_f32(edge[i].as_ptr().add(4));
            }
        }
    }
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let b0 = vld1q_f32(bp);
        let b1 = vld1q_f32(bp.add(4));
        for i in 0..MR {
            let av = vdupq_n_f32(*ap.add(i * rs));
            acc[i][0] = vfmaq_f32(acc[i][0], av, b0);
            acc[i][1] = vfmaq_f32(acc[i][1], av, b1);
        }
        ap = ap.wrapping_add(cs);
        bp = bp.add(8);
    }
    for i in 0..MR {
        let ci = c.add(i * ldc);
        if live == 8 {
            vst1q_f32(ci, acc[i][0]);
            vst1q_f32(ci.add(4), acc[i][1]);
        } else {
            vst1q_f32(edge[i].as_mut_ptr(), acc[i][0]);
            vst1q_f32(edge[i].as_mut_ptr().add(4), acc[i][1]);
            std::ptr::copy_nonoverlapping(edge[i].as_ptr(), ci, live);
        }
    }
}
