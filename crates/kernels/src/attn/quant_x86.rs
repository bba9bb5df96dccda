//! x86-64 kernels of the quantized-cache attention ([`super::quant`]):
//! AVX-512 VNNI and AVX2. Each gives the scalar reference's bits: the
//! integer block sums are exact, and the float steps are the same
//! operations in the same order.

use super::quant::{QKeys, QQueries, QType, QValues, QBLOCK};
use std::arch::x86_64::*;

/// The f16 scale at `p` as f32 (exact), by F16C.
#[inline(always)]
unsafe fn scale_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// See [`super::quant::scores_q`]: per tile of 16 keys (kept in L1 while
/// every query reads it), per block, 8 `vpdpbusd` of 4 dimensions x 16
/// keys against 4 query bytes broadcast.
///
/// # Safety
/// AVX-512F/BW, VNNI and F16C; shapes and bounds as `scores_q` asserts.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn scores_512(
    qq: &QQueries,
    last: &[usize],
    keys: &QKeys,
    scale: f32,
    np: usize,
    scores: &mut [f32],
) {
    let nb = keys.blocks;
    let tb = keys.block_stride;
    let max = last.iter().copied().max().unwrap_or(0);
    let sv = _mm512_set1_ps(scale);
    let nib = _mm512_set1_epi8(0x0F);
    for s in 0..=max / 16 {
        let tile = keys.bytes.as_ptr().add(s * keys.tile_stride);
        // The next tile of each block's stream, fetched while this one is
        // scored (a stream crosses pages every few tiles).
        let next = keys.bytes.as_ptr().wrapping_add((s + 1) * keys.tile_stride) as *const i8;
        for b in 0..nb {
            for off in (0..keys.tile_stride).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(b * tb + off));
            }
        }
        for (j, &lj) in last.iter().enumerate() {
            if lj / 16 < s {
                continue;
            }
            let mut acc = _mm512_setzero_ps();
            for b in 0..nb {
                let kb = tile.add(b * tb);
                let qb = qq.qs.as_ptr().add((j * nb + b) * QBLOCK) as *const i32;
                let mut isum = _mm512_setzero_si512();
                let offset = match keys.ty {
                    QType::Q8_0 => {
                        for g in 0..8 {
                            let k = _mm512_loadu_si512(kb.add(32 + 64 * g) as *const _);
                            let q = _mm512_set1_epi32(qb.add(g).read_unaligned());
                            isum = _mm512_dpbusd_epi32(isum, k, q);
                        }
                        128
                    }
                    QType::Q4_0 => {
                        for c in 0..4 {
                            let raw = _mm512_loadu_si512(kb.add(32 + 64 * c) as *const _);
                            let lo = _mm512_and_si512(raw, nib);
                            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nib);
                            let q0 = _mm512_set1_epi32(qb.add(c).read_unaligned());
                            let q1 = _mm512_set1_epi32(qb.add(c + 4).read_unaligned());
                            isum = _mm512_dpbusd_epi32(isum, lo, q0);
                            isum = _mm512_dpbusd_epi32(isum, hi, q1);
                        }
                        8
                    }
                };
                let corr = _mm512_set1_epi32(offset * qq.sum[j * nb + b]);
                let isum = _mm512_sub_epi32(isum, corr);
                let dk = _mm512_cvtph_ps(_mm256_loadu_si256(kb as *const __m256i));
                let c = _mm512_mul_ps(dk, _mm512_set1_ps(qq.d[j * nb + b]));
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), c, acc);
            }
            let o = scores.as_mut_ptr().add(j * np + 16 * s);
            _mm512_storeu_ps(o, _mm512_mul_ps(acc, sv));
        }
    }
}

/// [`scores_512`] on 8 lanes: each tile as two halves of 8 keys, the
/// integer dot by `pmaddubsw` (Q8_0 with the sign trick, so no pair sum
/// saturates) and `pmaddwd`.
///
/// # Safety
/// AVX2, FMA and F16C; shapes and bounds as `scores_q` asserts.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scores_avx2(
    qq: &QQueries,
    last: &[usize],
    keys: &QKeys,
    scale: f32,
    np: usize,
    scores: &mut [f32],
) {
    let nb = keys.blocks;
    let tb = keys.block_stride;
    let max = last.iter().copied().max().unwrap_or(0);
    let sv = _mm256_set1_ps(scale);
    let nib = _mm256_set1_epi8(0x0F);
    let flip = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    for s in 0..=max / 16 {
        let tile = keys.bytes.as_ptr().add(s * keys.tile_stride);
        for (j, &lj) in last.iter().enumerate() {
            if lj / 16 < s {
                continue;
            }
            for h in 0..2 {
                let mut acc = _mm256_setzero_ps();
                for b in 0..nb {
                    let kb = tile.add(b * tb);
                    let qb = qq.qs.as_ptr().add((j * nb + b) * QBLOCK) as *const i32;
                    let mut isum = _mm256_setzero_si256();
                    let corr = match keys.ty {
                        QType::Q8_0 => {
                            for g in 0..8 {
                                let k =
                                    _mm256_loadu_si256(kb.add(32 + 64 * g + 32 * h) as *const _);
                                let k = _mm256_xor_si256(k, flip);
                                let q = _mm256_set1_epi32(qb.add(g).read_unaligned());
                                let p = _mm256_maddubs_epi16(
                                    _mm256_abs_epi8(q),
                                    _mm256_sign_epi8(k, q),
                                );
                                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, ones));
                            }
                            0
                        }
                        QType::Q4_0 => {
                            for c in 0..4 {
                                let raw =
                                    _mm256_loadu_si256(kb.add(32 + 64 * c + 32 * h) as *const _);
                                let lo = _mm256_and_si256(raw, nib);
                                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nib);
                                let q0 = _mm256_set1_epi32(qb.add(c).read_unaligned());
                                let q1 = _mm256_set1_epi32(qb.add(c + 4).read_unaligned());
                                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, q0), ones);
                                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, q1), ones);
                                isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
                            }
                            8 * qq.sum[j * nb + b]
                        }
                    };
                    let isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(corr));
                    let dk = _mm256_cvtph_ps(_mm_loadu_si128(kb.add(16 * h) as *const __m128i));
                    let c = _mm256_mul_ps(dk, _mm256_set1_ps(qq.d[j * nb + b]));
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), c, acc);
                }
                let o = scores.as_mut_ptr().add(j * np + 16 * s + 8 * h);
                _mm256_storeu_ps(o, _mm256_mul_ps(acc, sv));
            }
        }
    }
}

/// 16 values of a ggml block at `blk` as f32: elements `16 h..16 h + 16`.
#[inline(always)]
unsafe fn load16(ty: QType, blk: *const u8, h: usize) -> __m512 {
    let i = match ty {
        QType::Q8_0 => _mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(2 + 16 * h) as *const _)),
        QType::Q4_0 => {
            let raw = _mm_loadu_si128(blk.add(2) as *const _);
            let n = if h == 0 {
                _mm_and_si128(raw, _mm_set1_epi8(0x0F))
            } else {
                _mm_and_si128(_mm_srli_epi16::<4>(raw), _mm_set1_epi8(0x0F))
            };
            _mm512_sub_epi32(_mm512_cvtepu8_epi32(n), _mm512_set1_epi32(8))
        }
    };
    _mm512_cvtepi32_ps(i)
}

/// See [`super::quant::pv_q`]: up to 4 queries x 2 blocks (64 columns)
/// held in registers; each value converted once for the queries sharing
/// it.
///
/// # Safety
/// AVX-512F/BW and F16C; shapes and bounds as `pv_q` asserts.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
pub(super) unsafe fn pv_512(p: &[f32], np: usize, last: &[usize], vals: &QValues, out: &mut [f32]) {
    let (g, nb) = (last.len(), vals.blocks);
    let d = nb * QBLOCK;
    let mut j0 = 0;
    while j0 < g {
        let j1 = (j0 + 4).min(g);
        let mut b0 = 0;
        while b0 < nb {
            let w = (nb - b0).min(2);
            let t = PvTile {
                p: p.as_ptr().add(j0 * np),
                np,
                vals,
                b0,
                out: out.as_mut_ptr().add(j0 * d + b0 * QBLOCK),
                d,
            };
            let l = &last[j0..j1];
            match (j1 - j0, w) {
                (4, 2) => pv_tile_512::<4, 2>(&t, l),
                (3, 2) => pv_tile_512::<3, 2>(&t, l),
                (2, 2) => pv_tile_512::<2, 2>(&t, l),
                (1, 2) => pv_tile_512::<1, 2>(&t, l),
                (4, _) => pv_tile_512::<4, 1>(&t, l),
                (3, _) => pv_tile_512::<3, 1>(&t, l),
                (2, _) => pv_tile_512::<2, 1>(&t, l),
                _ => pv_tile_512::<1, 1>(&t, l),
            }
            b0 += w;
        }
        j0 = j1;
    }
}

/// A register tile of the values' product: `G` queries' probability rows
/// from `p` (`np` apart), blocks `b0..b0 + W` of the values, outputs from
/// `out` (`d` apart).
struct PvTile<'a> {
    p: *const f32,
    np: usize,
    vals: &'a QValues<'a>,
    b0: usize,
    out: *mut f32,
    d: usize,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
unsafe fn pv_tile_512<const G: usize, const W: usize>(t: &PvTile, last: &[usize]) {
    let v = t.vals;
    let bb = v.block_stride;
    let mut acc = [[[_mm512_setzero_ps(); 2]; W]; G];
    let shared = last.iter().min().map_or(0, |&m| m + 1);
    let row = |k: usize| v.bytes.as_ptr().add(k * v.row_stride + t.b0 * bb);
    for k in 0..shared {
        let r = row(k);
        // Each block's values are a stream of rows: fetch 8 rows ahead.
        let ahead = v
            .bytes
            .as_ptr()
            .wrapping_add((k + 8) * v.row_stride + t.b0 * bb) as *const i8;
        for w in 0..W {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(w * bb));
        }
        for w in 0..W {
            let blk = r.add(w * bb);
            let dv = scale_at(blk);
            let x = [load16(v.ty, blk, 0), load16(v.ty, blk, 1)];
            for (j, a) in acc.iter_mut().enumerate() {
                let c = _mm512_set1_ps(*t.p.add(j * t.np + k) * dv);
                a[w][0] = _mm512_fmadd_ps(c, x[0], a[w][0]);
                a[w][1] = _mm512_fmadd_ps(c, x[1], a[w][1]);
            }
        }
    }
    for (j, a) in acc.iter_mut().enumerate() {
        for k in shared..last[j] + 1 {
            let r = row(k);
            for (w, a) in a.iter_mut().enumerate() {
                let blk = r.add(w * bb);
                let c = _mm512_set1_ps(*t.p.add(j * t.np + k) * scale_at(blk));
                a[0] = _mm512_fmadd_ps(c, load16(v.ty, blk, 0), a[0]);
                a[1] = _mm512_fmadd_ps(c, load16(v.ty, blk, 1), a[1]);
            }
        }
        for (w, a) in a.iter().enumerate() {
            let o = t.out.add(j * t.d + w * QBLOCK);
            _mm512_storeu_ps(o, a[0]);
            _mm512_storeu_ps(o.add(16), a[1]);
        }
    }
}

/// 8 values of a ggml block at `blk` as f32: elements `8 e..8 e + 8`.
#[inline(always)]
unsafe fn load8(ty: QType, blk: *const u8, e: usize) -> __m256 {
    let i = match ty {
        QType::Q8_0 => _mm256_cvtepi8_epi32(_mm_loadl_epi64(blk.add(2 + 8 * e) as *const _)),
        QType::Q4_0 => {
            let raw = _mm_loadl_epi64(blk.add(2 + 8 * (e % 2)) as *const _);
            let n = if e < 2 {
                _mm_and_si128(raw, _mm_set1_epi8(0x0F))
            } else {
                _mm_and_si128(_mm_srli_epi16::<4>(raw), _mm_set1_epi8(0x0F))
            };
            _mm256_sub_epi32(_mm256_cvtepu8_epi32(n), _mm256_set1_epi32(8))
        }
    };
    _mm256_cvtepi32_ps(i)
}

/// [`pv_512`] on 8 lanes: up to 3 queries x 1 block (4 registers each).
///
/// # Safety
/// AVX2, FMA and F16C; shapes and bounds as `pv_q` asserts.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pv_avx2(
    p: &[f32],
    np: usize,
    last: &[usize],
    vals: &QValues,
    out: &mut [f32],
) {
    let (g, nb) = (last.len(), vals.blocks);
    let d = nb * QBLOCK;
    let mut j0 = 0;
    while j0 < g {
        let j1 = (j0 + 3).min(g);
        for b0 in 0..nb {
            let t = PvTile {
                p: p.as_ptr().add(j0 * np),
                np,
                vals,
                b0,
                out: out.as_mut_ptr().add(j0 * d + b0 * QBLOCK),
                d,
            };
            let l = &last[j0..j1];
            match j1 - j0 {
                3 => pv_tile_avx2::<3>(&t, l),
                2 => pv_tile_avx2::<2>(&t, l),
                _ => pv_tile_avx2::<1>(&t, l),
            }
        }
        j0 = j1;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pv_tile_avx2<const G: usize>(t: &PvTile, last: &[usize]) {
    let v = t.vals;
    let bb = v.block_stride;
    let mut acc = [[_mm256_setzero_ps(); 4]; G];
    let shared = last.iter().min().map_or(0, |&m| m + 1);
    let blk_at = |k: usize| v.bytes.as_ptr().add(k * v.row_stride + t.b0 * bb);
    for k in 0..shared {
        let blk = blk_at(k);
        let dv = scale_at(blk);
        let x = [
            load8(v.ty, blk, 0),
            load8(v.ty, blk, 1),
            load8(v.ty, blk, 2),
            load8(v.ty, blk, 3),
        ];
        for (j, a) in acc.iter_mut().enumerate() {
            let c = _mm256_set1_ps(*t.p.add(j * t.np + k) * dv);
            for (a, x) in a.iter_mut().zip(&x) {
                *a = _mm256_fmadd_ps(c, *x, *a);
            }
        }
    }
    for (j, a) in acc.iter_mut().enumerate() {
        for k in shared..last[j] + 1 {
            let blk = blk_at(k);
            let c = _mm256_set1_ps(*t.p.add(j * t.np + k) * scale_at(blk));
            for (e, a) in a.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(c, load8(v.ty, blk, e), *a);
            }
        }
        for (e, a) in a.iter().enumerate() {
            _mm256_storeu_ps(t.out.add(j * t.d + 8 * e), *a);
        }
    }
}
