//! aarch64 NEON tile, 4 lanes. See the parent module for the per-element
//! instruction sequence.

use std::arch::aarch64::*;

/// # Safety
/// The CPU must support NEON; `w` must hold `R * len` and `x` `N * len`
/// floats.
// Indexed loops keep the R x N register tile explicit.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "neon")]
pub(super) unsafe fn tile_neon<const R: usize, const N: usize>(
    w: &[f32],
    x: &[f32],
    len: usize,
    out: &mut [[f32; N]; R],
) {
    debug_assert!(w.len() >= R * len && x.len() >= N * len);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let full = len / 4 * 4;
    let mut acc = [[vdupq_n_f32(0.0); N]; R];
    let mut k = 0;
    while k < full {
        let mut wv = [vdupq_n_f32(0.0); R];
        for (r, v) in wv.iter_mut().enumerate() {
            *v = vld1q_f32(wp.add(r * len + k));
        }
        for j in 0..N {
            let xv = vld1q_f32(xp.add(j * len + k));
            for r in 0..R {
                acc[r][j] = vfmaq_f32(acc[r][j], wv[r], xv);
            }
        }
        k += 4;
    }
    for r in 0..R {
        for j in 0..N {
            let mut s = vaddvq_f32(acc[r][j]);
            for t in full..len {
                s += *wp.add(r * len + t) * *xp.add(j * len + t);
            }
            out[r][j] = s;
        }
    }
}
