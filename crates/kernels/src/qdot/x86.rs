//! x86-64 integer dot kernels (32-element block types and Q4_K/Q5_K/Q6_K), in two
//! builds of one body: AVX-512 VNNI (`vpdpbusd`, 256-bit vectors through
//! AVX-512VL) and AVX2 (`pmaddubsw` + `pmaddwd`).
//!
//! A weight block is unpacked to 32 bytes in element order; unsigned types
//! (Q4_1, Q5_1) dot directly with the int8 activations and add `m * sx`;
//! signed ones (Q4_0, Q5_0, Q8_0) use `|w| * sign(x, w)`, which keeps the
//! unsigned-by-signed instructions exact (|w| <= 128, |x| <= 127: no
//! `pmaddubsw` saturation).

use super::TileFn;
use crate::simd::{Cpu, Isa};
use cria_gguf::GgmlType;
use std::arch::x86_64::*;

pub(super) const Q4_0: u8 = 0;
pub(super) const Q4_1: u8 = 1;
pub(super) const Q5_0: u8 = 2;
pub(super) const Q5_1: u8 = 3;
pub(super) const Q8_0: u8 = 4;
pub(super) const Q4K: u8 = 5;
pub(super) const Q5K: u8 = 6;
pub(super) const Q6K: u8 = 7;
pub(super) const IQ4NL: u8 = 8;
pub(super) const IQ4XS: u8 = 9;

/// Block bytes of the 32-element types, by their constant.
const BLOCK_BYTES: [usize; 9] = [18, 20, 22, 24, 34, 0, 0, 0, 18];

const fn signed(t: u8) -> bool {
    matches!(t, Q4_0 | Q5_0 | Q8_0 | IQ4NL)
}

/// Whether this machine has the AVX-512 subsets the VNNI build uses.
fn has_vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("f16c")
}

pub(super) fn kernel(cpu: Cpu, ty: GgmlType) -> Option<[TileFn; 4]> {
    use GgmlType as G;
    let t = match ty {
        G::Q4_0 => Q4_0,
        G::Q4_1 => Q4_1,
        G::Q5_0 => Q5_0,
        G::Q5_1 => Q5_1,
        G::Q8_0 => Q8_0,
        G::Q4_K => Q4K,
        G::Q5_K => Q5K,
        G::Q6_K => Q6K,
        G::IQ4_NL => IQ4NL,
        G::IQ4_XS => IQ4XS,
        _ => return None,
    };
    let vnni = cpu.isa() == Isa::Avx512 && has_vnni();
    if !vnni && !is_x86_feature_detected!("f16c") {
        return None;
    }
    macro_rules! pick {
        ($m:ident) => {
            match t {
                Q4_0 => $m::tiles::<Q4_0>(),
                Q4_1 => $m::tiles::<Q4_1>(),
                Q5_0 => $m::tiles::<Q5_0>(),
                Q5_1 => $m::tiles::<Q5_1>(),
                Q8_0 => $m::tiles::<Q8_0>(),
                IQ4NL => $m::tiles::<IQ4NL>(),
                IQ4XS => $m::tiles_k::<IQ4XS>(),
                Q4K => $m::tiles_k::<Q4K>(),
                Q5K => $m::tiles_k::<Q5K>(),
                _ => $m::tiles_k::<Q6K>(),
            }
        };
    }
    Some(if vnni { pick!(vnni) } else { pick!(avx2) })
}

/// u8 x i8 -> i32 lanes, each the sum of 4 adjacent products.
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
unsafe fn dot_vnni(w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(w: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
}

/// Byte j = 0xFF if bit j of `bits` is set.
#[inline]
#[target_feature(enable = "avx2,avx512bw,avx512vl")]
unsafe fn bits_vnni(bits: u32) -> __m256i {
    _mm256_movm_epi8(bits)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bits_avx2(bits: u32) -> __m256i {
    // Byte j takes byte j / 8 of `bits`, then tests bit j % 8.
    let v = _mm256_set1_epi32(bits as i32);
    let idx = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let v = _mm256_shuffle_epi8(v, idx);
    let m = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(v, m), m)
}

macro_rules! isa_kernels {
    ($m:ident, $feat:literal, $dot:ident, $bits:ident) => {
        pub(super) mod $m {
            use super::super::QuantActs;
            use super::*;

            pub(in super::super) fn tiles<const T: u8>() -> [TileFn; 4] {
                [
                    tile::<4, 4, T>,
                    tile::<1, 4, T>,
                    tile::<4, 1, T>,
                    tile::<1, 1, T>,
                ]
            }

            pub(in super::super) fn tiles_k<const T: u8>() -> [TileFn; 4] {
                [
                    tile_k::<4, 4, T>,
                    tile_k::<1, 4, T>,
                    tile_k::<4, 1, T>,
                    tile_k::<1, 1, T>,
                ]
            }

            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn f16_1(p: *const u8) -> f32 {
                let h = (p as *const u16).read_unaligned();
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
            }

            /// Two adjacent f16 values.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn f16_2(p: *const u8) -> (f32, f32) {
                let h = (p as *const u32).read_unaligned();
                let v = _mm_cvtph_ps(_mm_cvtsi32_si128(h as i32));
                (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
            }

            /// 16 bytes of nibbles -> 32 bytes: low nibbles, then high.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn nibbles(p: *const u8) -> __m256i {
                let q = _mm_loadu_si128(p as *const __m128i);
                let m = _mm_set1_epi8(0x0F);
                _mm256_set_m128i(
                    _mm_and_si128(_mm_srli_epi16::<4>(q), m),
                    _mm_and_si128(q, m),
                )
            }

            /// Nibbles 0..16 to the IQ4 table's int8 values.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn iq4_values(nib: __m256i) -> __m256i {
                let t = _mm_loadu_si128(crate::quant::KVALUES_IQ4NL.as_ptr() as *const __m128i);
                _mm256_shuffle_epi8(_mm256_set_m128i(t, t), nib)
            }

            /// IQ4_XS super-block: sum_s (ls_s - 32) * sum(T[q] * x) as
            /// i32 lanes (exact: |T| <= 127, |x| <= 127).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn sb_iq4xs(p: *const u8, x: *const i8) -> __m256i {
                let sh = (p.add(2) as *const u16).read_unaligned();
                let mut sumi = _mm256_setzero_si256();
                for s in 0..8 {
                    let ls = ((*p.add(4 + s / 2) >> (4 * (s % 2))) & 0xF) as i32
                        | ((((sh >> (2 * s)) & 3) as i32) << 4);
                    let v = iq4_values(nibbles(p.add(8 + 16 * s)));
                    let xv = _mm256_loadu_si256(x.add(32 * s) as *const __m256i);
                    let d = $dot(_mm256_sign_epi8(v, v), _mm256_sign_epi8(xv, v));
                    sumi =
                        _mm256_add_epi32(sumi, _mm256_mullo_epi32(d, _mm256_set1_epi32(ls - 32)));
                }
                sumi
            }

            /// The fifth bits of a Q5 block (a u32 at `p`) as 0x10 bytes.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn high(p: *const u8) -> __m256i {
                let bits = (p as *const u32).read_unaligned();
                _mm256_and_si256($bits(bits), _mm256_set1_epi8(0x10))
            }

            /// A block as (32 quants in element order, d, m).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn decode<const T: u8>(p: *const u8) -> (__m256i, f32, f32) {
                match T {
                    Q4_0 => (
                        _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)),
                        f16_1(p),
                        0.0,
                    ),
                    Q4_1 => {
                        let (d, m) = f16_2(p);
                        (nibbles(p.add(4)), d, m)
                    }
                    Q5_0 => {
                        let v = _mm256_or_si256(nibbles(p.add(6)), high(p.add(2)));
                        (_mm256_sub_epi8(v, _mm256_set1_epi8(16)), f16_1(p), 0.0)
                    }
                    Q5_1 => {
                        let (d, m) = f16_2(p);
                        (_mm256_or_si256(nibbles(p.add(8)), high(p.add(4))), d, m)
                    }
                    IQ4NL => (iq4_values(nibbles(p.add(2))), f16_1(p), 0.0),
                    _ => (
                        _mm256_loadu_si256(p.add(2) as *const __m256i),
                        f16_1(p),
                        0.0,
                    ),
                }
            }

            /// 32-element block types; see [`TileFn`].
            // Indexed loops keep the R x N register tile explicit.
            #[allow(clippy::needless_range_loop)]
            #[target_feature(enable = $feat)]
            unsafe fn tile<const R: usize, const N: usize, const T: u8>(
                w: *const u8,
                rb: usize,
                a: &QuantActs,
                j0: usize,
                out: &mut [f32],
            ) {
                let cols = a.cols;
                let nb = cols / 32;
                let bb = BLOCK_BYTES[T as usize];
                debug_assert!(j0 + N <= a.n && out.len() >= R * N);
                let (xq, xd, xs) = (a.qs.as_ptr(), a.d.as_ptr(), a.s.as_ptr());
                // Lane r of acc[j]: output (row r, activation j). Per block
                // the integer dot is summed exactly, then scaled with the
                // same fused operations as `dot32` and the GEMM, so every
                // path gives the same bits for an output.
                let mut acc = [_mm_setzero_ps(); N];
                for b in 0..nb {
                    let mut wv = [_mm256_setzero_si256(); R];
                    let mut aw = [_mm256_setzero_si256(); R];
                    let mut dw = [0f32; 4];
                    let mut mw = [0f32; 4];
                    for r in 0..R {
                        if N == 1 {
                            // Mat-vec streams the weights once and is bound
                            // by memory latency without this: fetch the same
                            // block of the rows 4 tiles ahead (+40% tg).
                            _mm_prefetch::<_MM_HINT_T0>(
                                w.wrapping_add((r + 4 * R) * rb + b * bb) as *const i8
                            );
                        }
                        (wv[r], dw[r], mw[r]) = decode::<T>(w.add(r * rb + b * bb));
                        aw[r] = if signed(T) {
                            _mm256_sign_epi8(wv[r], wv[r])
                        } else {
                            wv[r]
                        };
                    }
                    let dwv = _mm_loadu_ps(dw.as_ptr());
                    let mwv = _mm_loadu_ps(mw.as_ptr());
                    for j in 0..N {
                        let row = j0 + j;
                        let xv = _mm256_loadu_si256(xq.add(row * cols + 32 * b) as *const __m256i);
                        let mut p = [_mm256_setzero_si256(); 4];
                        for r in 0..R {
                            p[r] = if signed(T) {
                                $dot(aw[r], _mm256_sign_epi8(xv, wv[r]))
                            } else {
                                $dot(wv[r], xv)
                            };
                        }
                        let isum = reduce4(p[0], p[1], p[2], p[3]);
                        let scale = _mm_mul_ps(dwv, _mm_set1_ps(*xd.add(row * nb + b)));
                        acc[j] = _mm_fmadd_ps(_mm_cvtepi32_ps(isum), scale, acc[j]);
                        if !signed(T) {
                            acc[j] = _mm_fmadd_ps(mwv, _mm_set1_ps(*xs.add(row * nb + b)), acc[j]);
                        }
                    }
                }
                for j in 0..N {
                    let mut lanes = [0f32; 4];
                    _mm_storeu_ps(lanes.as_mut_ptr(), acc[j]);
                    for r in 0..R {
                        out[r * N + j] = lanes[r];
                    }
                }
            }

            /// Four vectors of 8 i32 lanes to their four totals (exact).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn reduce4(p0: __m256i, p1: __m256i, p2: __m256i, p3: __m256i) -> __m128i {
                let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
                _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
            }

            /// Q4_K / Q5_K super-block: (sum_s sc_s * dot_s as i32 lanes,
            /// sum_s m_s * sum(x_s)).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn sb_q45k(
                five: bool,
                p: *const u8,
                x: *const i8,
                bs: *const i16,
            ) -> (__m256i, i32) {
                let (sc, m) = super::super::scale_min_k4(std::slice::from_raw_parts(p.add(4), 12));
                let qs = p.add(if five { 48 } else { 16 });
                let mask = _mm256_set1_epi8(0x0F);
                let b4 = _mm256_set1_epi8(0x10);
                let mut qh = if five {
                    _mm256_loadu_si256(p.add(16) as *const __m256i)
                } else {
                    _mm256_setzero_si256()
                };
                let mut sumi = _mm256_setzero_si256();
                for c in 0..4 {
                    let q = _mm256_loadu_si256(qs.add(32 * c) as *const __m256i);
                    let mut lo = _mm256_and_si256(q, mask);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
                    if five {
                        // Bits 2c and 2c + 1 of each qh byte, moved to bit 4.
                        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(qh), b4));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(qh), b4));
                        qh = _mm256_srli_epi16::<2>(qh);
                    }
                    let xl = _mm256_loadu_si256(x.add(64 * c) as *const __m256i);
                    let xh = _mm256_loadu_si256(x.add(64 * c + 32) as *const __m256i);
                    let pl = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(lo, xl),
                        _mm256_set1_epi16(sc[2 * c] as i16),
                    );
                    let ph = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(hi, xh),
                        _mm256_set1_epi16(sc[2 * c + 1] as i16),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
                }
                let mut msum = 0i32;
                for s in 0..8 {
                    msum += m[s] as i32 * (*bs.add(2 * s) as i32 + *bs.add(2 * s + 1) as i32);
                }
                (sumi, msum)
            }

            /// Q6_K super-block: sum_s sc_s * sum((q - 32) * x) as i32
            /// lanes (the -32 folded in through the activation sums).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn sb_q6k(p: *const u8, x: *const i8, bs: *const i16) -> __m256i {
                let mask = _mm256_set1_epi8(0x0F);
                let m30 = _mm256_set1_epi8(0x30);
                let sc = p.add(192) as *const i8;
                let mut sumi = _mm256_setzero_si256();
                let mut corr = 0i32;
                for n in 0..2 {
                    let ql = p.add(64 * n);
                    let qh = _mm256_loadu_si256(p.add(128 + 32 * n) as *const __m256i);
                    let l0 = _mm256_loadu_si256(ql as *const __m256i);
                    let l1 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
                    let v = [
                        _mm256_or_si256(
                            _mm256_and_si256(l0, mask),
                            _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(l1, mask),
                            _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(l0), mask),
                            _mm256_and_si256(qh, m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(l1), mask),
                            _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                        ),
                    ];
                    for (k, v) in v.into_iter().enumerate() {
                        let s0 = *sc.add(8 * n + 2 * k) as i16;
                        let s1 = *sc.add(8 * n + 2 * k + 1) as i16;
                        let xv = _mm256_loadu_si256(x.add(128 * n + 32 * k) as *const __m256i);
                        let scale = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                        sumi = _mm256_add_epi32(
                            sumi,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(v, xv), scale),
                        );
                        let sb = 8 * n + 2 * k;
                        corr += s0 as i32 * *bs.add(sb) as i32 + s1 as i32 * *bs.add(sb + 1) as i32;
                    }
                }
                // Lane 0 carries the -32 * sum(sc * sum(x)) correction.
                _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * corr, 0, 0, 0, 0, 0, 0, 0))
            }

            /// K-quant types (Q8K activations); see [`TileFn`].
            #[allow(clippy::needless_range_loop)]
            #[target_feature(enable = $feat)]
            unsafe fn tile_k<const R: usize, const N: usize, const T: u8>(
                w: *const u8,
                rb: usize,
                a: &QuantActs,
                j0: usize,
                out: &mut [f32],
            ) {
                let cols = a.cols;
                let nb = cols / 256;
                let bb = match T {
                    Q4K => 144,
                    Q5K => 176,
                    IQ4XS => 136,
                    _ => 210,
                };
                debug_assert!(j0 + N <= a.n && out.len() >= R * N);
                let (xq, xd, xb) = (a.qs.as_ptr(), a.d.as_ptr(), a.bsums.as_ptr());
                let mut acc = [[0f32; N]; R];
                for b in 0..nb {
                    for r in 0..R {
                        let p = w.add(r * rb + b * bb);
                        if N == 1 {
                            // As in `tile`: fetch 4 tiles ahead.
                            for off in (0..bb).step_by(64) {
                                _mm_prefetch::<_MM_HINT_T0>(
                                    p.wrapping_add(4 * R * rb + off) as *const i8
                                );
                            }
                        }
                        for j in 0..N {
                            let row = j0 + j;
                            let x = xq.add(row * cols + 256 * b);
                            let bs = xb.add(row * cols / 16 + 16 * b);
                            let dx = *xd.add(row * nb + b);
                            // The canonical steps of the reference: exact
                            // integer sums, then one fma each.
                            match T {
                                IQ4XS => {
                                    let isum = hsum_i32(sb_iq4xs(p, x));
                                    let d = f16_1(p) * dx;
                                    acc[r][j] = (isum as f32).mul_add(d, acc[r][j]);
                                }
                                Q6K => {
                                    let isum = hsum_i32(sb_q6k(p, x, bs));
                                    let d = f16_1(p.add(208)) * dx;
                                    acc[r][j] = (isum as f32).mul_add(d, acc[r][j]);
                                }
                                _ => {
                                    let (s, msum) = sb_q45k(T == Q5K, p, x, bs);
                                    let (d, dmin) = f16_2(p);
                                    let isum = hsum_i32(s);
                                    acc[r][j] = (isum as f32).mul_add(d * dx, acc[r][j]);
                                    acc[r][j] = (msum as f32).mul_add(-(dmin * dx), acc[r][j]);
                                }
                            }
                        }
                    }
                }
                for r in 0..R {
                    for j in 0..N {
                        out[r * N + j] = acc[r][j];
                    }
                }
            }

            /// The exact sum of 8 i32 lanes.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn hsum_i32(v: __m256i) -> i32 {
                let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
                _mm_cvtsi128_si32(s)
            }
        }
    };
}

isa_kernels!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot_vnni,
    bits_vnni
);
isa_kernels!(avx2, "avx2,fma,f16c", dot_avx2, bits_avx2);
