//! Weights repacked once at load into 8-row interleaved panels (Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS on AVX-512
//! VNNI), about the size of the original blocks, so
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
//! - Q5_0 / Q5_1: the nibbles as Q4_0's, then one vector of high bits (bit
//!   `f` of row k's byte `4k + e` is the high bit of element `4f + e`), then
//!   `d` (and `m`). 176 / 192 bytes.
//! - IQ4_NL: Q4_0's layout (144 bytes); the kernel maps each nibble to its
//!   codebook value plus 128 with one byte shuffle, so the products are
//!   unsigned x signed as for Q8_0.
//! - Q8_0: 8 x 32 bytes, vector `s` holding elements `4s..4s + 4` of each
//!   row as `q + 128` (unsigned), then 8 f16 `d`. 272 bytes.
//! - K-quants (blocks of 256, as 8 units of 32 elements), in the order the
//!   kernel reads them, so that a mat-vec is one sequential stream (the
//!   hardware prefetcher then keeps up; with the high bits and scales in
//!   separate planes a 1B Q4_K model generated at 17 t/s instead of 28).
//!   Per unit: the nibbles as Q4_0 lays them out (4 x 32 bytes; low
//!   nibbles elements `4s + e`, high ones `16 + 4s + e`); the high bits,
//!   Q5_K one vector (bit `f` of row k's byte `4k + e` is the high bit of
//!   element `4f + e`), Q6_K two (vector `h`, bits `2f..2f + 2` of byte
//!   `4k + e`: the top two bits of element `4(4h + f) + e`); the scales,
//!   one byte per (sub-block, row) (Q4_K/Q5_K: 8 unsigned; Q6_K: 2 x 8
//!   signed). After the 8 units, Q4_K/Q5_K's mins, 16 bytes per pair of
//!   sub-blocks (row k at `2k`, `2k + 1`); then 8 f16 `d` and (Q4_K/Q5_K)
//!   8 f16 `dmin`. 1184 / 1440 / 1680 bytes (Q4_K/Q5_K grow by 2.8% /
//!   2.3%; Q6_K keeps its size). IQ4_XS: per unit the nibbles (as Q4_K's,
//!   mapped through the codebook as IQ4_NL's) and one signed byte per row,
//!   its sub-block scale `ls - 32`; then 8 f16 `d`. 1104 bytes (the
//!   original 8 x 136 = 1088).
//!
//! Per block and output the arithmetic is exactly `dot32`'s: the exact
//! integer `isum = sum(u * x) - off * sum(x) = sum(q * x)` (off 8 for
//! Q4_0, 128 for Q8_0 and the IQ4 codebook), `acc = fma(isum, dw * dx, acc)`, then for Q4_1
//! `acc = fma(mw, sx, acc)`; f16 to f32 is exact. So results are
//! bit-identical to the unpacked tiles, the GEMM and the reference. The
//! K-quants likewise follow their reference step for step: exact integer
//! sums per super-block (scales applied with `vpmulld`, Q4_K/Q5_K mins with
//! `vpdpwssd` against the activations' 32-sums, Q6_K's `-32` folded into
//! the chain's start, IQ4_XS's codebook `+ 128` taken back once per
//! super-block as `128 * sum(scale * 32-sum)`, one `vpdpwssd` per pair of
//! sub-blocks with the scales regathered in the mins' layout), then the
//! same fused multiply-adds.

use super::QuantActs;
use crate::buf::WeightBuf;
use cria_gguf::GgmlType;
use std::arch::x86_64::*;

mod out;
mod pair;
pub(crate) use out::OutRows;
pub(crate) use pair::{pair_available, pair_dot_rows};

/// Weight rows per panel.
pub(crate) const PANEL: usize = 8;

/// Bytes ahead of the block being read that every panel kernel asks the
/// L2 cache for (see [`fetch_ahead`]).
const AHEAD: usize = 8192;

/// Asks for the `bytes` of weights [`AHEAD`] bytes past `p` to be brought
/// into L2 (`prefetcht1`), one request per cache line.
///
/// Weights are read once per token or step, from memory, by every kernel
/// here. Fetching them into L2 from well ahead keeps many more lines in
/// flight than the L1 fill buffers allow, which is what a stream from
/// memory needs. Measured on the default model's shapes (a 64-128 MiB set
/// of Q4_1 matrices, `examples/stream_probe`, this machine under load,
/// GMAC/s at 1 / 2 threads, 8 activation rows): 73-75 / 112-117 with
/// `prefetcht0` 1536 bytes ahead (the previous setting), 65 / 108-123
/// with none, 109-118 / 158-183 with `prefetcht1` 8192 bytes ahead. For
/// one row (a mat-vec, which had no software prefetch) the same setting
/// raised tg128 by 40-90 % at 2 threads (BENCHMARKS). A prompt's panels
/// are in cache after its first rows: there it costs nothing.
///
/// # Safety
/// None beyond `p` being derived from a live allocation: a prefetch of an
/// address past its end is harmless (no fault, no architectural effect).
#[inline(always)]
unsafe fn fetch_ahead(p: *const u8, bytes: usize) {
    for l in (0..bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(AHEAD + l) as *const i8);
    }
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;
const Q4K: u8 = 3;
const Q5K: u8 = 4;
const Q6K: u8 = 5;
const Q5_0: u8 = 6;
const Q5_1: u8 = 7;
const IQ4NL: u8 = 8;
const IQ4XS: u8 = 9;

/// The IQ4 codebook plus 128 (as unsigned bytes), repeated to `N` bytes:
/// the table of the byte shuffle that turns nibbles into `vpdpbusd`'s
/// unsigned operand (32 for 256 bits; 64 for 512 bits, where `vpshufb`
/// reads 16 entries per 128-bit lane and `vpermb` all 64, so the bits
/// above a nibble need no mask). Built at compile time.
const fn iq4_table<const N: usize>() -> [u8; N] {
    let mut t = [0u8; N];
    let mut i = 0;
    while i < N {
        t[i] = (crate::quant::KVALUES_IQ4NL[i % 16] as i32 + 128) as u8;
        i += 1;
    }
    t
}

/// [`iq4_table`] for the 256-bit kernels.
static IQ4_LUT32: [u8; 32] = iq4_table();
/// [`iq4_table`] for the 512-bit kernels.
static IQ4_LUT64: [u8; 64] = iq4_table();

/// The layout of a packed K-quant block (8 rows of one super-block), in
/// the order the kernel reads it: 8 units of (nibbles, high bits, scales),
/// then the mins and d, dmin. Returns (unit stride, scales' offset in a
/// unit, mins, d, block bytes); dmin follows d.
const fn k_layout(t: u8) -> (usize, usize, usize, usize, usize) {
    match t {
        Q4K => (136, 128, 1088, 1152, 1184),
        Q5K => (168, 160, 1344, 1408, 1440),
        IQ4XS => (136, 128, 1088, 1088, 1104),
        _ => (208, 192, 1664, 1664, 1680),
    }
}

/// The layout of a packed 32-element block (8 rows) and its integer
/// offset: (block bytes, offset of the 8 `d`, the value subtracted from
/// each weight byte so that `sum(u * x) - off * sum(x) = sum(q * x)`).
const fn layout32(t: u8) -> (usize, usize, i32) {
    match t {
        Q4_0 => (144, 128, 8),
        IQ4NL => (144, 128, 128),
        Q4_1 => (160, 128, 0),
        Q5_0 => (176, 160, 16),
        Q5_1 => (192, 160, 0),
        _ => (272, 256, 128),
    }
}

/// Two 256-bit vectors joined, `p`'s in the low half and `z`'s in the
/// high: the same bytes of two panels, for the two-panel kernels.
///
/// # Safety
/// AVX-512F; 32 readable bytes at `p` and at `z`.
#[inline]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn join(p: *const u8, z: *const u8) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(p as *const __m256i)),
        _mm256_loadu_si256(z as *const __m256i),
    )
}

fn k_code(ty: GgmlType) -> Option<u8> {
    match ty {
        GgmlType::Q4_K => Some(Q4K),
        GgmlType::Q5_K => Some(Q5K),
        GgmlType::Q6_K => Some(Q6K),
        GgmlType::IQ4_XS => Some(IQ4XS),
        _ => None,
    }
}

/// Whether `ty` can be packed on this machine.
pub(crate) fn available(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | Q4_K | Q5_K | Q6_K | IQ4_XS
    ) && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// (quant bytes per row block, offset of the quants in an original block,
/// bytes of one packed block).
fn geometry(ty: GgmlType) -> (usize, usize, usize) {
    match ty {
        GgmlType::Q4_0 | GgmlType::IQ4_NL => (16, 2, 128 + 16),
        GgmlType::Q4_1 => (16, 4, 128 + 32),
        GgmlType::Q5_0 => (16, 6, 128 + 32 + 16),
        GgmlType::Q5_1 => (16, 8, 128 + 32 + 32),
        _ => (32, 2, 256 + 16),
    }
}

/// Bytes of one packed block (8 rows) of `ty`.
pub(crate) fn block_bytes(ty: GgmlType) -> usize {
    match k_code(ty) {
        Some(t) => k_layout(t).4,
        None => geometry(ty).2,
    }
}

/// Elements per block of `ty` (32, or 256 for the K-quants).
pub(crate) fn block_len(ty: GgmlType) -> usize {
    if k_code(ty).is_some() {
        256
    } else {
        32
    }
}

/// Repack `rows` rows of `nb` blocks (`rb` bytes each) from `src`.
pub(crate) fn pack(ty: GgmlType, src: &[u8], rows: usize, rb: usize, nb: usize) -> WeightBuf {
    let mut out = WeightBuf::zeroed(rows.div_ceil(PANEL) * nb * block_bytes(ty));
    pack_into(ty, src, rows, rb, nb, &mut out);
    out
}

/// [`pack`] into `out` (`rows.div_ceil(8) * nb * block_bytes(ty)` bytes):
/// every byte of a panel's live rows is written; the pad rows of a last,
/// partial panel are left as they were (zero them for a clean panel).
pub(crate) fn pack_into(
    ty: GgmlType,
    src: &[u8],
    rows: usize,
    rb: usize,
    nb: usize,
    out: &mut [u8],
) {
    if let Some(t) = k_code(ty) {
        return pack_k(t, src, rows, rb, nb, out);
    }
    let (ql, qo, pb) = geometry(ty);
    let bb = ty.block_bytes() as usize;
    let q8 = ty == GgmlType::Q8_0;
    let panels = rows.div_ceil(PANEL);
    assert!(out.len() >= panels * nb * pb);
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
                let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
                if five {
                    // Bit f of byte 4k + e: the high bit of element 4f + e.
                    let qh = blk.add(qo - 4).cast::<u32>().read_unaligned();
                    for e in 0..4 {
                        let mut byte = 0u8;
                        for f in 0..8 {
                            byte |= (((qh >> (4 * f + e)) & 1) as u8) << f;
                        }
                        *dst.add(128 + 4 * k + e) = byte;
                    }
                }
                let sc = dst.add(8 * ql + if five { 32 } else { 0 } + 2 * k);
                std::ptr::copy_nonoverlapping(blk, sc, 2);
                if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    std::ptr::copy_nonoverlapping(blk.add(2), sc.add(16), 2);
                }
            }
        }
    }
}

/// One K-quant super-block decoded: the 256 unsigned quants, the
/// per-sub-block scales (8 for Q4_K/Q5_K, 16 for Q6_K, as bytes) and mins,
/// and the f16 bits of d and dmin.
fn decode_k(t: u8, blk: &[u8]) -> ([u8; 256], [u8; 16], [u8; 8], [u8; 4]) {
    let mut q = [0u8; 256];
    let mut sc = [0u8; 16];
    let mut mn = [0u8; 8];
    let mut dd = [0u8; 4];
    if t == Q6K {
        // ggml's element order: per half n, four runs of 32.
        let (ql, qh) = (&blk[0..128], &blk[128..192]);
        for n in 0..2 {
            let (ql, qh, q) = (
                &ql[64 * n..64 * n + 64],
                &qh[32 * n..32 * n + 32],
                &mut q[128 * n..],
            );
            for l in 0..32 {
                let h = qh[l];
                q[l] = (ql[l] & 0x0F) | (h & 3) << 4;
                q[l + 32] = (ql[l + 32] & 0x0F) | ((h >> 2) & 3) << 4;
                q[l + 64] = (ql[l] >> 4) | ((h >> 4) & 3) << 4;
                q[l + 96] = (ql[l + 32] >> 4) | ((h >> 6) & 3) << 4;
            }
        }
        sc.copy_from_slice(&blk[192..208]);
        dd[..2].copy_from_slice(&blk[208..210]);
    } else if t == IQ4XS {
        // Sub-block s: 16 bytes, low nibbles elements 0..16, high 16..32;
        // its 6-bit scale from 4 low bits and 2 high bits, less 32.
        let sh = u16::from_le_bytes([blk[2], blk[3]]);
        for s in 0..8 {
            let ls = ((blk[4 + s / 2] >> (4 * (s % 2))) & 0xF) | (((sh >> (2 * s)) & 3) as u8) << 4;
            sc[s] = (ls as i8 - 32) as u8;
            for l in 0..16 {
                let v = blk[8 + 16 * s + l];
                q[32 * s + l] = v & 0x0F;
                q[32 * s + l + 16] = v >> 4;
            }
        }
        dd[..2].copy_from_slice(&blk[0..2]);
    } else {
        let five = t == Q5K;
        let (s8, m8) = super::scale_min_k4(&blk[4..16]);
        sc[..8].copy_from_slice(&s8);
        mn = m8;
        dd.copy_from_slice(&blk[0..4]);
        let qs = if five { &blk[48..176] } else { &blk[16..144] };
        for s in 0..8 {
            let (c, hf) = (s / 2, s % 2);
            for l in 0..32 {
                let mut v = (qs[32 * c + l] >> (4 * hf)) & 0x0F;
                if five {
                    v |= ((blk[16 + l] >> s) & 1) << 4;
                }
                q[32 * s + l] = v;
            }
        }
    }
    (q, sc, mn, dd)
}

/// [`pack`] for the K-quants (see the module docs for the layout).
fn pack_k(t: u8, src: &[u8], rows: usize, rb: usize, nb: usize, out: &mut [u8]) {
    let bb = match t {
        Q4K => 144,
        Q5K => 176,
        IQ4XS => 136,
        _ => 210,
    };
    let (us, sci, mno, dof, pb) = k_layout(t);
    let panels = rows.div_ceil(PANEL);
    assert!(out.len() >= panels * nb * pb);
    assert!(src.len() >= rows * rb && rb >= nb * bb);
    for r in 0..rows {
        let (p, k) = (r / PANEL, r % PANEL);
        for b in 0..nb {
            let (q, sc, mn, dd) = decode_k(t, &src[r * rb + b * bb..][..bb]);
            let dst = &mut out[(p * nb + b) * pb..][..pb];
            for u in 0..8 {
                let q = &q[32 * u..32 * u + 32];
                let unit = &mut dst[us * u..us * (u + 1)];
                for s in 0..4 {
                    let at = 32 * s + 4 * k;
                    for e in 0..4 {
                        unit[at + e] = (q[4 * s + e] & 0x0F) | (q[16 + 4 * s + e] & 0x0F) << 4;
                    }
                }
                match t {
                    Q5K => {
                        for e in 0..4 {
                            let mut byte = 0u8;
                            for f in 0..8 {
                                byte |= ((q[4 * f + e] >> 4) & 1) << f;
                            }
                            unit[128 + 4 * k + e] = byte;
                        }
                    }
                    Q6K => {
                        for h in 0..2 {
                            for e in 0..4 {
                                let mut byte = 0u8;
                                for f in 0..4 {
                                    byte |= ((q[4 * (4 * h + f) + e] >> 4) & 3) << (2 * f);
                                }
                                unit[128 + 32 * h + 4 * k + e] = byte;
                            }
                        }
                    }
                    _ => {}
                }
            }
            let subs = if t == Q6K { 16 } else { 8 };
            for (s, &v) in sc.iter().enumerate().take(subs) {
                // Q6_K: sub-blocks 2u and 2u + 1 share unit u.
                let (u, i) = if t == Q6K { (s / 2, s % 2) } else { (s, 0) };
                dst[us * u + sci + 8 * i + k] = v;
            }
            if t == Q4K || t == Q5K {
                for s in 0..8 {
                    dst[mno + 16 * (s / 2) + 2 * k + s % 2] = mn[s];
                }
                dst[dof + 2 * k..dof + 2 * k + 2].copy_from_slice(&dd[0..2]);
                dst[dof + 16 + 2 * k..dof + 16 + 2 * k + 2].copy_from_slice(&dd[2..4]);
            } else {
                dst[dof + 2 * k..dof + 2 * k + 2].copy_from_slice(&dd[0..2]);
            }
        }
    }
}

/// Output row `jj`'s lane `k` of `out` = dot(panel row k, activation row
/// `j0 + jj`) for the panel at `panel` (`nb` packed blocks of `ty`), for
/// `N` activation rows (N from 1 to 8).
///
/// # Safety
/// [`available`] must be true for `ty`; `panel` must hold `nb` packed
/// blocks; `j0 + N <= a.n`; `a` quantized as `act_kind(ty)` with
/// `a.cols = block_len(ty) * nb`; `out` valid for rows `0..N` with at
/// most [`PANEL`] live lanes.
pub(crate) unsafe fn panel_dot<const N: usize>(
    ty: GgmlType,
    panel: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    out: OutRows,
) {
    match ty {
        GgmlType::Q4_0 => kernel::<N, Q4_0>(panel, nb, a, j0, out),
        GgmlType::Q4_1 => kernel::<N, Q4_1>(panel, nb, a, j0, out),
        GgmlType::Q5_0 => kernel::<N, Q5_0>(panel, nb, a, j0, out),
        GgmlType::Q5_1 => kernel::<N, Q5_1>(panel, nb, a, j0, out),
        GgmlType::Q4_K => kernel_k::<N, Q4K>(panel, nb, a, j0, out),
        GgmlType::Q5_K => kernel_k::<N, Q5K>(panel, nb, a, j0, out),
        GgmlType::Q6_K => kernel_k::<N, Q6K>(panel, nb, a, j0, out),
        GgmlType::IQ4_NL => kernel::<N, IQ4NL>(panel, nb, a, j0, out),
        GgmlType::IQ4_XS => kernel_k::<N, IQ4XS>(panel, nb, a, j0, out),
        _ => kernel::<N, Q8_0>(panel, nb, a, j0, out),
    }
}

/// [`panel_dot`] for any number of activation rows from `j0` on, 8 at a
/// time, the last 1 to 7 in one pass over the panel (each row's outputs
/// are the same bits whatever the count: the rows' chains are independent
/// in the kernel). Nothing for 0.
///
/// # Safety
/// As [`panel_dot`], with `j0 + rows <= a.n` and `out` valid for rows
/// `0..rows`.
pub(crate) unsafe fn panel_dot_rows(
    ty: GgmlType,
    panel: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    rows: usize,
    out: OutRows,
) {
    let mut j = 0;
    while j + 8 <= rows {
        panel_dot::<8>(ty, panel, nb, a, j0 + j, out.skip_rows(j));
        j += 8;
    }
    let (j1, o) = (j0 + j, out.skip_rows(j));
    match rows - j {
        0 => {}
        1 => panel_dot::<1>(ty, panel, nb, a, j1, o),
        2 => panel_dot::<2>(ty, panel, nb, a, j1, o),
        3 => panel_dot::<3>(ty, panel, nb, a, j1, o),
        4 => panel_dot::<4>(ty, panel, nb, a, j1, o),
        5 => panel_dot::<5>(ty, panel, nb, a, j1, o),
        6 => panel_dot::<6>(ty, panel, nb, a, j1, o),
        _ => panel_dot::<7>(ty, panel, nb, a, j1, o),
    }
}

/// The 8 dot sources of one 32-element unit: its 4 nibble vectors at `p`,
/// low nibbles (elements `4s + e`) then high ones (`16 + 4s + e`).
///
/// # Safety
/// AVX2; `p` points at 128 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(p: *const u8) -> [__m256i; 8] {
    let mask = _mm256_set1_epi8(0x0F);
    let mut wv = [_mm256_setzero_si256(); 8];
    for s in 0..4 {
        let v = _mm256_loadu_si256(p.add(32 * s) as *const __m256i);
        wv[s] = _mm256_and_si256(v, mask);
        wv[4 + s] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
    }
    wv
}

/// Maps the sources' nibbles to the IQ4 codebook values plus 128.
///
/// # Safety
/// AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn codebook(wv: &mut [__m256i; 8], lut: __m256i) {
    for w in wv.iter_mut() {
        *w = _mm256_shuffle_epi8(lut, *w);
    }
}

/// ORs the fifth bit into the sources from the Q5_0/Q5_1/Q5_K high-bit
/// vector at `h` (bit `f` of each byte belongs to source `f`).
///
/// # Safety
/// AVX2; `h` points at 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn high_bit(wv: &mut [__m256i; 8], h: *const u8) {
    let h = _mm256_loadu_si256(h as *const __m256i);
    let bit = [
        _mm256_slli_epi16::<4>(h),
        _mm256_slli_epi16::<3>(h),
        _mm256_slli_epi16::<2>(h),
        _mm256_slli_epi16::<1>(h),
        h,
        _mm256_srli_epi16::<1>(h),
        _mm256_srli_epi16::<2>(h),
        _mm256_srli_epi16::<3>(h),
    ];
    let b10 = _mm256_set1_epi8(0x10);
    for (w, b) in wv.iter_mut().zip(bit) {
        *w = _mm256_or_si256(*w, _mm256_and_si256(b, b10));
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
    out: OutRows,
) {
    let cols = a.cols;
    let (xq, xd, xs, xsum) = (a.qs.as_ptr(), a.d.as_ptr(), a.s.as_ptr(), a.qsum.as_ptr());
    let (pb, sc, off) = layout32(T);
    let min = matches!(T, Q4_1 | Q5_1);
    let lut = _mm256_loadu_si256(IQ4_LUT32.as_ptr() as *const __m256i);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let p = panel.add(b * pb);
        fetch_ahead(p, pb);
        let mut wv = [_mm256_setzero_si256(); 8];
        if T == Q8_0 {
            for t in 0..8 {
                wv[t] = _mm256_loadu_si256(p.add(32 * t) as *const __m256i);
            }
        } else {
            wv = nibbles(p);
            if matches!(T, Q5_0 | Q5_1) {
                high_bit(&mut wv, p.add(128));
            }
            if T == IQ4NL {
                codebook(&mut wv, lut);
            }
        }
        let dv = _mm256_cvtph_ps(_mm_loadu_si128(p.add(sc) as *const __m128i));
        let mv = if min {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(sc + 16) as *const __m128i))
        } else {
            _mm256_setzero_ps()
        };
        // Integer sums first, t outer and rows inner: N independent chains
        // interleaved (exact, so the order is free), kept in registers.
        // Each row's chain starts at `-off * sum(x)` (exact integers, so
        // the same sum as subtracting it at the end, one operation less).
        let mut is = [_mm256_setzero_si256(); N];
        if off != 0 {
            for (j, is) in is.iter_mut().enumerate() {
                let at = (j0 + j) * (cols / 32) + b;
                *is = _mm256_set1_epi32(-(off * *xsum.add(at)));
            }
        }
        for t in 0..8 {
            for j in 0..N {
                let x = xq.add((j0 + j) * cols + 32 * b + 4 * t);
                let xv = _mm256_set1_epi32((x as *const i32).read_unaligned());
                is[j] = _mm256_dpbusd_epi32(is[j], wv[t], xv);
            }
        }
        for j in 0..N {
            let at = (j0 + j) * (cols / 32) + b;
            let isum = is[j];
            let scale = _mm256_mul_ps(dv, _mm256_set1_ps(*xd.add(at)));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[j]);
            if min {
                acc[j] = _mm256_fmadd_ps(mv, _mm256_set1_ps(*xs.add(at)), acc[j]);
            }
        }
    }
    let mask = out.mask(PANEL) as __mmask8;
    for j in 0..N {
        _mm256_mask_storeu_ps(out.row(j), mask, acc[j]);
    }
}

/// The K-quant panel kernel; see [`panel_dot`] and the module docs.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn kernel_k<const N: usize, const T: u8>(
    panel: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    out: OutRows,
) {
    let cols = a.cols;
    let (xq, xd) = (a.qs.as_ptr(), a.d.as_ptr());
    let (xbs, xbp) = (a.bsums.as_ptr(), a.bpairs.as_ptr());
    let (us, sci, mno, dof, pb) = k_layout(T);
    let b30 = _mm256_set1_epi8(0x30);
    let lut = _mm256_loadu_si256(IQ4_LUT32.as_ptr() as *const __m256i);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..nb {
        let p = panel.add(b * pb);
        fetch_ahead(p, pb);
        let mut isum = [_mm256_setzero_si256(); N];
        for u in 0..8 {
            let q = p.add(us * u);
            let mut wv = nibbles(q);
            if T == Q5K {
                high_bit(&mut wv, q.add(128));
            }
            if T == IQ4XS {
                codebook(&mut wv, lut);
            }
            if T == Q6K {
                for h in 0..2 {
                    let v = _mm256_loadu_si256(q.add(128 + 32 * h) as *const __m256i);
                    let two = [
                        _mm256_slli_epi16::<4>(v),
                        _mm256_slli_epi16::<2>(v),
                        v,
                        _mm256_srli_epi16::<2>(v),
                    ];
                    for f in 0..4 {
                        let w = &mut wv[4 * h + f];
                        *w = _mm256_or_si256(*w, _mm256_and_si256(two[f], b30));
                    }
                }
            }
            let sc = q.add(sci);
            let (sa, sb) = if T == Q6K {
                (
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc as *const __m128i)),
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.add(8) as *const __m128i)),
                )
            } else if T == IQ4XS {
                let v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc as *const __m128i));
                (v, v)
            } else {
                let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sc as *const __m128i));
                (v, v)
            };
            // Sums per (row, sub-block) with t outer and rows inner: 2N
            // independent chains interleaved (exact, so order is free).
            let mut s0 = [_mm256_setzero_si256(); N];
            let mut s1 = [_mm256_setzero_si256(); N];
            if T == Q6K {
                // Sub-blocks 2u and 2u + 1 (16 elements each), each chain
                // started at -32 * sum(x) for the -32 offset. (IQ4_XS's
                // -128, the codebook's + 128, is taken once per
                // super-block below, against the 32-sums.)
                for j in 0..N {
                    let bs = xbs.add((j0 + j) * cols / 16 + 16 * b + 2 * u);
                    s0[j] = _mm256_set1_epi32(-32 * *bs as i32);
                    s1[j] = _mm256_set1_epi32(-32 * *bs.add(1) as i32);
                }
            }
            // Q6_K: sources t and 4 + t are elements 4t.. and 16 + 4t..,
            // of sub-blocks 2u and 2u + 1; Q4_K/Q5_K/IQ4_XS: one sub-block, two
            // chains over sources 2t and 2t + 1.
            let (step, second) = if T == Q6K { (1, 4) } else { (2, 1) };
            for t in (0..8).step_by(step).take(4) {
                for j in 0..N {
                    let x = xq.add((j0 + j) * cols + 256 * b + 32 * u);
                    let bx = |src: usize| {
                        _mm256_set1_epi32((x.add(4 * src) as *const i32).read_unaligned())
                    };
                    s0[j] = _mm256_dpbusd_epi32(s0[j], wv[t], bx(t));
                    s1[j] = _mm256_dpbusd_epi32(s1[j], wv[t + second], bx(t + second));
                }
            }
            for j in 0..N {
                let s = if T == Q6K {
                    _mm256_add_epi32(_mm256_mullo_epi32(s0[j], sa), _mm256_mullo_epi32(s1[j], sb))
                } else {
                    _mm256_mullo_epi32(_mm256_add_epi32(s0[j], s1[j]), sa)
                };
                isum[j] = _mm256_add_epi32(isum[j], s);
            }
        }
        let dv = _mm256_cvtph_ps(_mm_loadu_si128(p.add(dof) as *const __m128i));
        let (mv, mn) = if T == Q6K {
            (_mm256_setzero_ps(), [_mm256_setzero_si256(); 4])
        } else if T == IQ4XS {
            // The sub-block scales as Q4_K's mins lie (sub-blocks 2t and
            // 2t + 1 of row k at 16-bit lanes 2k, 2k + 1), gathered from
            // the units once per panel block for all N rows.
            let mut mn = [_mm256_setzero_si256(); 4];
            for t in 0..4 {
                let lo = _mm_loadl_epi64(p.add(us * 2 * t + sci) as *const __m128i);
                let hi = _mm_loadl_epi64(p.add(us * (2 * t + 1) + sci) as *const __m128i);
                mn[t] = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(lo, hi));
            }
            (_mm256_setzero_ps(), mn)
        } else {
            let mv = _mm256_cvtph_ps(_mm_loadu_si128(p.add(dof + 16) as *const __m128i));
            let mut mn = [_mm256_setzero_si256(); 4];
            for t in 0..4 {
                mn[t] =
                    _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(mno + 16 * t) as *const __m128i));
            }
            (mv, mn)
        };
        for j in 0..N {
            let row = j0 + j;
            let dx = _mm256_set1_ps(*xd.add(row * nb + b));
            if T == IQ4XS {
                // isum - 128 * sum over sub-blocks of scale * sum(x): the
                // codebook's + 128 taken back, exactly.
                let bp = xbp.add(row * cols / 64 + 4 * b);
                let mut m = _mm256_setzero_si256();
                for t in 0..4 {
                    m = _mm256_dpwssd_epi32(m, mn[t], _mm256_set1_epi32(*bp.add(t)));
                }
                isum[j] = _mm256_sub_epi32(isum[j], _mm256_slli_epi32::<7>(m));
            }
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(dv, dx), acc[j]);
            if T == Q4K || T == Q5K {
                let bp = xbp.add(row * cols / 64 + 4 * b);
                let mut m = _mm256_setzero_si256();
                for t in 0..4 {
                    m = _mm256_dpwssd_epi32(m, mn[t], _mm256_set1_epi32(*bp.add(t)));
                }
                // acc - msum * (dmin * dx): one rounding, as the reference's
                // fma with -(dmin * dx).
                acc[j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(mv, dx), acc[j]);
            }
        }
    }
    let mask = out.mask(PANEL) as __mmask8;
    for j in 0..N {
        _mm256_mask_storeu_ps(out.row(j), mask, acc[j]);
    }
}

#[cfg(test)]
mod tests;
