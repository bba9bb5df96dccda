//! Batched (prompt) products for the 32-element block types on AVX-512
//! VNNI: 8 weight rows are repacked on the fly into an interleaved panel
//! so that one `vpdpbusd` multiplies 4 elements of 8 rows by the same 4
//! activations, and each unpacked weight block is reused by 8 activation
//! rows while it sits in registers.
//!
//! Panel layout, per block b of 32 elements (320 bytes):
//! `q[s][k][e]` (s < 8, k < 8, e < 4) = unsigned quant of row k, element
//! `4 s + e`; then `d[k]`, `m[k]` as f32. Every type is written as
//! unsigned `u = q + off` (Q4_0 off 8, Q5_0 16, Q8_0 128; Q4_1 and Q5_1 are
//! unsigned already, off 0). `sum(q * qx) = sum(u * qx) - off * sum(qx)` is
//! exact in integers, and then a block adds `isum * (d * dx)` and, for
//! Q4_1/Q5_1, `m * sx`, with the same fused operations in the same order as
//! the mat-vec tiles and the scalar reference (see `dot32`), so a row's
//! result does not depend on which path computed it.

use super::QuantActs;
use cria_gguf::GgmlType;
use std::arch::x86_64::*;

/// Weight rows per panel.
pub(crate) const PANEL: usize = 8;
/// Bytes of one block of a panel.
const BLOCK: usize = 32 * PANEL + 2 * 4 * PANEL;

/// Whether [`gemm_panel`] handles `ty` on this machine.
pub(crate) fn available(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("fma")
}

/// What is added to a type's quants to make them unsigned.
fn offset(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        GgmlType::Q8_0 => 128,
        _ => 0,
    }
}

/// Repack rows `w[0..8]` (each `rb` bytes, `nb` blocks of `ty`) into `panel`.
fn repack(ty: GgmlType, w: &[u8], rb: usize, nb: usize, panel: &mut Vec<u8>) {
    panel.resize(nb * BLOCK, 0);
    let bb = ty.block_bytes() as usize;
    for k in 0..PANEL {
        for b in 0..nb {
            let blk = &w[k * rb + b * bb..][..bb];
            let (q, d, m) = super::block32(ty, blk);
            // block32 gives signed q for the symmetric types; shift to u.
            let off = offset(ty);
            let p = &mut panel[b * BLOCK..(b + 1) * BLOCK];
            for (e, &q) in q.iter().enumerate() {
                p[(e / 4) * 32 + k * 4 + e % 4] = (q + off) as u8;
            }
            p[256 + 4 * k..260 + 4 * k].copy_from_slice(&d.to_le_bytes());
            p[288 + 4 * k..292 + 4 * k].copy_from_slice(&m.to_le_bytes());
        }
    }
}

thread_local! {
    static PANEL_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `put(j, k, v)` for every activation row j of `a` and panel row k < 8:
/// the dot of weight row k (of the 8 starting at `w`) with row j.
///
/// # Safety
/// [`available`] must be true for `ty`; `w` must hold 8 rows of `rb` bytes
/// of `a.cols` elements of `ty`, and `a` be quantized as Q8x32.
pub(crate) unsafe fn gemm_panel(
    ty: GgmlType,
    w: &[u8],
    rb: usize,
    a: &QuantActs,
    mut put: impl FnMut(usize, usize, f32),
) {
    let nb = a.cols / 32;
    PANEL_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        repack(ty, w, rb, nb, &mut buf);
        let mut out = [[0f32; PANEL]; 8];
        let mut j = 0;
        while j < a.n {
            if j + 8 <= a.n {
                kernel::<8>(&buf, a, j, nb, offset(ty), super::has_min(ty), &mut out);
                for (jj, o) in out.iter().enumerate() {
                    o.iter().enumerate().for_each(|(k, &v)| put(j + jj, k, v));
                }
                j += 8;
            } else {
                kernel::<1>(&buf, a, j, nb, offset(ty), super::has_min(ty), &mut out);
                out[0].iter().enumerate().for_each(|(k, &v)| put(j, k, v));
                j += 1;
            }
        }
    });
}

/// `out[jj][k]` for activation rows `j0..j0 + N`.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
unsafe fn kernel<const N: usize>(
    panel: &[u8],
    a: &QuantActs,
    j0: usize,
    nb: usize,
    off: i32,
    has_min: bool,
    out: &mut [[f32; PANEL]; 8],
) {
    let cols = a.cols;
    let (xq, xd, xs, xsum) = (a.qs.as_ptr(), a.d.as_ptr(), a.s.as_ptr(), a.qsum.as_ptr());
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let p = panel.as_ptr().add(b * BLOCK);
        let mut wv = [_mm256_setzero_si256(); 8];
        for (s, v) in wv.iter_mut().enumerate() {
            *v = _mm256_loadu_si256(p.add(32 * s) as *const __m256i);
        }
        let dv = _mm256_loadu_ps(p.add(256) as *const f32);
        let mv = _mm256_loadu_ps(p.add(288) as *const f32);
        let mut xi = [_mm256_setzero_si256(); N];
        for s in 0..8 {
            for j in 0..N {
                let x = (xq.add((j0 + j) * cols + 32 * b + 4 * s) as *const i32).read_unaligned();
                xi[j] = _mm256_dpbusd_epi32(xi[j], wv[s], _mm256_set1_epi32(x));
            }
        }
        for j in 0..N {
            let at = (j0 + j) * nb + b;
            // sum(q * x) = sum(u * x) - off * sum(x), exact in i32.
            let isum = _mm256_sub_epi32(xi[j], _mm256_set1_epi32(off * *xsum.add(at)));
            let scale = _mm256_mul_ps(dv, _mm256_set1_ps(*xd.add(at)));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[j]);
            if has_min {
                acc[j] = _mm256_fmadd_ps(mv, _mm256_set1_ps(*xs.add(at)), acc[j]);
            }
        }
    }
    for j in 0..N {
        _mm256_storeu_ps(out[j].as_mut_ptr(), acc[j]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn panel_matches_reference() {
        use GgmlType::*;
        let mut rng = rand::rngs::StdRng::seed_from_u64(31);
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
            if !available(ty) {
                return;
            }
            let cols = 32 * 7;
            let bb = ty.block_bytes() as usize;
            let mut w: Vec<u8> = (0..8 * 7 * bb).map(|_| rng.gen()).collect();
            for blk in w.chunks_exact_mut(bb) {
                for o in [0, 2] {
                    let d = half::f16::from_f32(rng.gen_range(-0.05..0.05));
                    blk[o..o + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
            let rb = 7 * bb;
            for n in [1, 8, 11] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let mut a = QuantActs::default();
                a.quantize(super::super::ActKind::Q8x32, &x, cols);
                let mut got = vec![f32::NAN; n * 8];
                // SAFETY: checked `available`; 8 rows of 7 blocks.
                unsafe { gemm_panel(ty, &w, rb, &a, |j, k, v| got[j * 8 + k] = v) };
                for j in 0..n {
                    for k in 0..8 {
                        let want =
                            super::super::dot_ref(ty, &w[k * rb..(k + 1) * rb], &a, j).unwrap();
                        let g = got[j * 8 + k];
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{ty} n{n} ({j},{k}): {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
