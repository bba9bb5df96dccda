//! Weights repacked once at load into 8-row interleaved panels (Q4_0,
//! Q4_1, Q8_0 on AVX-512 VNNI), the same size as the original blocks, so
//! that one broadcast of 4 activation bytes feeds 8 weight rows through one
//! `vpdpbusd` and one vector fma scales 8 rows. Mat-vec (one activation
//! row) and the prompt GEMM (8 at a time) run the same kernel.
//!
//! Panel layout: panel `p` holds rows `8p..8p + 8` (zero rows pad the
//! last one), its blocks in order; block `b` of a panel:
//! - Q4_0 / Q4_1: 4 x 32 bytes of nibbles, vector `s` holding bytes
//!   `4s..4s + 4` of each row's 16 quant bytes side by side (row k at bytes
//!   `4k..4k + 4`): the low nibbles are elements `4s + e`, the high ones
//!   `16 + 4s + e`. Then 8 f16 `d`, then (Q4_1) 8 f16 `m`. 144 / 160 bytes.
//! - Q8_0: 8 x 32 bytes, vector `s` holding elements `4s..4s + 4` of each
//!   row as `q + 128` (unsigned), then 8 f16 `d`. 272 bytes.
//!
//! Per block and output the arithmetic is exactly `dot32`'s: the exact
//! integer `isum = sum(u * x) - off * sum(x) = sum(q * x)` (off 8 for
//! Q4_0, 128 for Q8_0), `acc = fma(isum, dw * dx, acc)`, then for Q4_1
//! `acc = fma(mw, sx, acc)`; f16 to f32 is exact. So results are
//! bit-identical to the unpacked tiles, the GEMM and the reference.

use super::QuantActs;
use cria_gguf::GgmlType;
use std::arch::x86_64::*;

/// Weight rows per panel.
pub(crate) const PANEL: usize = 8;

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// Whether `ty` can be packed on this machine.
pub(crate) fn available(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q8_0)
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// (quant bytes per row block, offset of the quants in an original block,
/// bytes of one packed block).
fn geometry(ty: GgmlType) -> (usize, usize, usize) {
    match ty {
        GgmlType::Q4_0 => (16, 2, 128 + 16),
        GgmlType::Q4_1 => (16, 4, 128 + 32),
        _ => (32, 2, 256 + 16),
    }
}

/// Bytes of one packed block (8 rows) of `ty`.
pub(crate) fn block_bytes(ty: GgmlType) -> usize {
    geometry(ty).2
}

/// Repack `rows` rows of `nb` blocks (`rb` bytes each) from `src`.
pub(crate) fn pack(ty: GgmlType, src: &[u8], rows: usize, rb: usize, nb: usize) -> Vec<u8> {
    let (ql, qo, pb) = geometry(ty);
    let bb = ty.block_bytes() as usize;
    let q8 = ty == GgmlType::Q8_0;
    let panels = rows.div_ceil(PANEL);
    let mut out = vec![0u8; panels * nb * pb];
    assert!(src.len() >= rows * rb && rb >= nb * bb);
    for r in 0..rows {
        let (p, k) = (r / PANEL, r % PANEL);
        for b in 0..nb {
            // SAFETY: block b of row r lies in `src` (asserted above) and
            // packed block (p, b) in `out` (sized for `panels` panels);
            // every access below stays within one block.
            unsafe {
                let blk = src.as_ptr().add(r * rb + b * bb);
                let dst = out.as_mut_ptr().add((p * nb + b) * pb);
                let q = blk.add(qo) as *const u32;
                for s in 0..ql / 4 {
                    let mut v = q.add(s).read_unaligned();
                    if q8 {
                        v ^= 0x8080_8080;
                    }
                    (dst.add(32 * s + 4 * k) as *mut u32).write_unaligned(v);
                }
                let sc = dst.add(8 * ql + 2 * k);
                std::ptr::copy_nonoverlapping(blk, sc, 2);
                if ty == GgmlType::Q4_1 {
                    std::ptr::copy_nonoverlapping(blk.add(2), sc.add(16), 2);
                }
            }
        }
    }
    out
}

/// `out[jj][k]` = dot(panel row k, activation row `j0 + jj`) for the panel
/// at `panel` (`nb` packed blocks of `ty`), for `N` activation rows
/// (N in 1, 4, 8).
///
/// # Safety
/// [`available`] must be true for `ty`; `panel` must hold `nb` packed
/// blocks; `j0 + N <= a.n`; `a` quantized as Q8x32 with `a.cols = 32 nb`.
pub(crate) unsafe fn panel_dot<const N: usize>(
    ty: GgmlType,
    panel: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    out: &mut [[f32; PANEL]; N],
) {
    match ty {
        GgmlType::Q4_0 => kernel::<N, Q4_0>(panel, nb, a, j0, out),
        GgmlType::Q4_1 => kernel::<N, Q4_1>(panel, nb, a, j0, out),
        _ => kernel::<N, Q8_0>(panel, nb, a, j0, out),
    }
}

#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn kernel<const N: usize, const T: u8>(
    panel: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    out: &mut [[f32; PANEL]; N],
) {
    let cols = a.cols;
    let (xq, xd, xs, xsum) = (a.qs.as_ptr(), a.d.as_ptr(), a.s.as_ptr(), a.qsum.as_ptr());
    let (pb, sc) = match T {
        Q4_0 => (144, 128),
        Q4_1 => (160, 128),
        _ => (272, 256),
    };
    let off = match T {
        Q4_0 => 8,
        Q4_1 => 0,
        _ => 128,
    };
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let p = panel.add(b * pb);
        if N == 1 {
            // One stream per thread; run ahead of the hardware prefetcher.
            for l in (0..pb).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(1024 + l) as *const i8);
            }
        }
        let mut wv = [_mm256_setzero_si256(); 8];
        if T == Q8_0 {
            for t in 0..8 {
                wv[t] = _mm256_loadu_si256(p.add(32 * t) as *const __m256i);
            }
        } else {
            for s in 0..4 {
                let v = _mm256_loadu_si256(p.add(32 * s) as *const __m256i);
                wv[s] = _mm256_and_si256(v, mask);
                wv[4 + s] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
            }
        }
        let dv = _mm256_cvtph_ps(_mm_loadu_si128(p.add(sc) as *const __m128i));
        let mv = if T == Q4_1 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(sc + 16) as *const __m128i))
        } else {
            _mm256_setzero_ps()
        };
        for j in 0..N {
            let row = j0 + j;
            let x = xq.add(row * cols + 32 * b);
            macro_rules! bx {
                ($t:expr) => {
                    _mm256_set1_epi32((x.add(4 * $t) as *const i32).read_unaligned())
                };
            }
            // Two chains of integer sums (exact, so order is free).
            let mut i0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv[0], bx!(0));
            let mut i1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv[1], bx!(1));
            for t in (2..8).step_by(2) {
                i0 = _mm256_dpbusd_epi32(i0, wv[t], bx!(t));
                i1 = _mm256_dpbusd_epi32(i1, wv[t + 1], bx!(t + 1));
            }
            let at = row * (cols / 32) + b;
            let mut isum = _mm256_add_epi32(i0, i1);
            if off != 0 {
                isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(off * *xsum.add(at)));
            }
            let scale = _mm256_mul_ps(dv, _mm256_set1_ps(*xd.add(at)));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[j]);
            if T == Q4_1 {
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
    fn packed_matches_reference() {
        use GgmlType::*;
        let mut rng = rand::rngs::StdRng::seed_from_u64(37);
        for ty in [Q4_0, Q4_1, Q8_0] {
            if !available(ty) {
                return;
            }
            let nb = 7;
            let cols = 32 * nb;
            let rows = 13;
            let bb = ty.block_bytes() as usize;
            let rb = nb * bb;
            let mut w: Vec<u8> = (0..rows * rb).map(|_| rng.gen()).collect();
            for blk in w.chunks_exact_mut(bb) {
                for o in [0, 2] {
                    let d = half::f16::from_f32(rng.gen_range(-0.05..0.05));
                    blk[o..o + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
            let packed = pack(ty, &w, rows, rb, nb);
            let pb = block_bytes(ty);
            for n in [1, 4, 8, 11] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let mut a = QuantActs::default();
                a.quantize(super::super::ActKind::Q8x32, &x, cols);
                for p in 0..rows.div_ceil(PANEL) {
                    for j in 0..n {
                        let mut o = [[f32::NAN; PANEL]; 1];
                        // SAFETY: checked `available`; panel p exists.
                        unsafe {
                            panel_dot::<1>(ty, packed[p * nb * pb..].as_ptr(), nb, &a, j, &mut o)
                        };
                        let mut o4 = [[f32::NAN; PANEL]; 4];
                        if j + 4 <= n {
                            // SAFETY: as above, rows j..j + 4 exist.
                            unsafe {
                                panel_dot::<4>(
                                    ty,
                                    packed[p * nb * pb..].as_ptr(),
                                    nb,
                                    &a,
                                    j,
                                    &mut o4,
                                )
                            };
                        }
                        let mut o8 = [[f32::NAN; PANEL]; 8];
                        if j + 8 <= n {
                            // SAFETY: as above, rows j..j + 8 exist.
                            unsafe {
                                panel_dot::<8>(
                                    ty,
                                    packed[p * nb * pb..].as_ptr(),
                                    nb,
                                    &a,
                                    j,
                                    &mut o8,
                                )
                            };
                        }
                        for k in 0..PANEL.min(rows - p * PANEL) {
                            let r = p * PANEL + k;
                            let want =
                                super::super::dot_ref(ty, &w[r * rb..(r + 1) * rb], &a, j).unwrap();
                            assert_eq!(o[0][k].to_bits(), want.to_bits(), "{ty} n{n} ({j},{r})");
                            if j + 4 <= n {
                                assert_eq!(o4[0][k].to_bits(), want.to_bits(), "{ty} x4 ({j},{r})");
                            }
                            if j + 8 <= n {
                                assert_eq!(o8[0][k].to_bits(), want.to_bits(), "{ty} x8 ({j},{r})");
                            }
                        }
                    }
                }
            }
        }
    }
}
