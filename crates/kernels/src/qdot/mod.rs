//! Integer dot products of quantized weight rows with quantized activations.
//!
//! The activations of a matmul are quantized once ([`QuantActs`]) to int8
//! with one f32 scale per block: blocks of 32 (`Q8x32`, for the 32-element
//! weight types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) or of 256 (`Q8K`, for the
//! K-quants, with int16 sums per 16 elements). A weight block then meets its
//! activation block in integer arithmetic (`vpdpbusd` on AVX-512 VNNI,
//! `pmaddubsw` + `pmaddwd` on AVX2), and only the block's integer sum is
//! scaled to f32. This is what ggml does; it reads each weight byte once and
//! never expands weights to f32.
//!
//! Every kernel computes one output element with the same instruction
//! sequence whatever tile it sits in, so results do not depend on how rows
//! are grouped or split across threads. [`dot_ref`] is the scalar
//! reference: the same algebra, one block at a time.

mod acts;
#[cfg(all(test, target_arch = "x86_64"))]
use acts::{quant256_k, quant256_k_avx512, quant_avx512, quant_blocks32, quant_blocks32_avx512};
pub(crate) use acts::{ActKind, QuantActs};
#[cfg(target_arch = "x86_64")]
pub(crate) mod packed;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::dequant::QK_K;
use crate::quant::KVALUES_IQ4NL;
use crate::simd::{Cpu, Isa};
use cria_gguf::GgmlType;

/// `out[r * N + jj] = dot(weight row r, activation row j0 + jj)` for `R`
/// weight rows starting at `w` (each `row_bytes` long) and `N` activation
/// rows. `(R, N)` is one of the shapes in [`QKernel::tiles`].
///
/// # Safety
/// The CPU must support the kernel's ISA; `w` must point at `R` rows of
/// `a.cols` elements of the kernel's type, `j0 + N <= a.n`, and `a` must be
/// quantized with the kernel's [`ActKind`].
pub(crate) type TileFn =
    unsafe fn(w: *const u8, row_bytes: usize, a: &QuantActs, j0: usize, out: &mut [f32]);

/// The integer kernels of one weight type on one ISA.
#[derive(Copy, Clone)]
pub(crate) struct QKernel {
    pub(crate) act: ActKind,
    /// Tiles of (R, N) = (4, 4), (1, 4), (4, 1), (1, 1).
    pub(crate) tiles: [TileFn; 4],
}

/// The tile shapes of [`QKernel::tiles`], in order.
pub(crate) const TILE_SHAPES: [(usize, usize); 4] = [(4, 4), (1, 4), (4, 1), (1, 1)];

/// The activation format `ty` needs, if it has an integer kernel.
pub(crate) fn act_kind(ty: GgmlType) -> Option<ActKind> {
    use GgmlType::*;
    match ty {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL => Some(ActKind::Q8x32),
        Q4_K | Q5_K | Q6_K | IQ4_XS => Some(ActKind::Q8K),
        _ => None,
    }
}

/// How ggml rounds activations for `ty` (its `vec_dot_type`), including the
/// types cria has no integer kernel for yet (Q2_K, Q3_K).
pub(crate) fn ggml_act_kind(ty: GgmlType) -> Option<ActKind> {
    match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => Some(ActKind::Q8K),
        _ => act_kind(ty),
    }
}

/// `x` (rows of `cols`) rounded to 8 bits as ggml rounds it for `kind`, and
/// back to f32, into `out`.
pub(crate) fn round_trip(kind: ActKind, x: &[f32], cols: usize, out: &mut Vec<f32>) {
    let mut a = QuantActs::default();
    a.quantize(kind, x, cols);
    out.resize(x.len(), 0.0);
    for (j, row) in out.chunks_exact_mut(cols).enumerate() {
        a.dequantize(kind, j, row);
    }
}

/// The integer kernel for `ty` on `cpu`, if there is one. The scalar ISA
/// gets the reference kernel (slow; used by tests and non-SIMD machines).
pub(crate) fn kernel(cpu: Cpu, ty: GgmlType) -> Option<QKernel> {
    let act = act_kind(ty)?;
    match cpu.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => x86::kernel(cpu, ty).map(|tiles| QKernel { act, tiles }),
        Isa::Scalar => Some(QKernel {
            act,
            tiles: ref_tiles(ty)?,
        }),
        // NEON keeps the f32 path for now.
        _ => None,
    }
}

fn ref_tiles(ty: GgmlType) -> Option<[TileFn; 4]> {
    use GgmlType::*;
    macro_rules! t {
        ($f:ident) => {
            [
                ref_tile::<4, 4, $f> as TileFn,
                ref_tile::<1, 4, $f>,
                ref_tile::<4, 1, $f>,
                ref_tile::<1, 1, $f>,
            ]
        };
    }
    Some(match ty {
        Q4_0 => t!(RefQ4_0),
        Q4_1 => t!(RefQ4_1),
        Q5_0 => t!(RefQ5_0),
        Q5_1 => t!(RefQ5_1),
        Q8_0 => t!(RefQ8_0),
        Q4_K => t!(RefQ4K),
        Q5_K => t!(RefQ5K),
        Q6_K => t!(RefQ6K),
        IQ4_NL => t!(RefIQ4NL),
        IQ4_XS => t!(RefIQ4XS),
        _ => return None,
    })
}

/// A weight type's scalar row dot.
trait RefDot {
    fn dot(w: &[u8], a: &QuantActs, j: usize) -> f32;
}

/// # Safety
/// As [`TileFn`] (no ISA requirement).
unsafe fn ref_tile<const R: usize, const N: usize, D: RefDot>(
    w: *const u8,
    row_bytes: usize,
    a: &QuantActs,
    j0: usize,
    out: &mut [f32],
) {
    for r in 0..R {
        let row = std::slice::from_raw_parts(w.add(r * row_bytes), row_bytes);
        for jj in 0..N {
            out[r * N + jj] = D::dot(row, a, j0 + jj);
        }
    }
}

/// Reference dot of one weight row (`ty`, `a.cols` elements) with
/// activation row `j` of `a` (quantized with `act_kind(ty)`), or `None`
/// for a type without an integer kernel.
#[cfg(test)]
pub(crate) fn dot_ref(ty: GgmlType, w: &[u8], a: &QuantActs, j: usize) -> Option<f32> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 => RefQ4_0::dot(w, a, j),
        Q4_1 => RefQ4_1::dot(w, a, j),
        Q5_0 => RefQ5_0::dot(w, a, j),
        Q5_1 => RefQ5_1::dot(w, a, j),
        Q8_0 => RefQ8_0::dot(w, a, j),
        Q4_K => RefQ4K::dot(w, a, j),
        Q5_K => RefQ5K::dot(w, a, j),
        Q6_K => RefQ6K::dot(w, a, j),
        IQ4_NL => RefIQ4NL::dot(w, a, j),
        IQ4_XS => RefIQ4XS::dot(w, a, j),
        _ => return None,
    })
}

fn f16(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Integer quants of one 32-element block: (values, scale, min); the block
/// is `scale * q + min` (min 0 for the symmetric types).
fn block32(ty: GgmlType, b: &[u8]) -> ([i32; 32], f32, f32) {
    use GgmlType::*;
    let mut q = [0i32; 32];
    let nib = |qs: &[u8], q: &mut [i32; 32]| {
        for j in 0..16 {
            q[j] = (qs[j] & 0x0F) as i32;
            q[j + 16] = (qs[j] >> 4) as i32;
        }
    };
    let high = |qh: &[u8], q: &mut [i32; 32]| {
        let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, q) in q.iter_mut().enumerate() {
            *q |= (((h >> j) & 1) << 4) as i32;
        }
    };
    match ty {
        Q4_0 => {
            nib(&b[2..18], &mut q);
            q.iter_mut().for_each(|v| *v -= 8);
            (q, f16(b, 0), 0.0)
        }
        Q4_1 => {
            nib(&b[4..20], &mut q);
            (q, f16(b, 0), f16(b, 2))
        }
        Q5_0 => {
            nib(&b[6..22], &mut q);
            high(&b[2..6], &mut q);
            q.iter_mut().for_each(|v| *v -= 16);
            (q, f16(b, 0), 0.0)
        }
        Q5_1 => {
            nib(&b[8..24], &mut q);
            high(&b[4..8], &mut q);
            (q, f16(b, 0), f16(b, 2))
        }
        Q8_0 => {
            for (q, &v) in q.iter_mut().zip(&b[2..34]) {
                *q = v as i8 as i32;
            }
            (q, f16(b, 0), 0.0)
        }
        IQ4_NL => {
            nib(&b[2..18], &mut q);
            q.iter_mut()
                .for_each(|v| *v = KVALUES_IQ4NL[*v as usize] as i32);
            (q, f16(b, 0), 0.0)
        }
        _ => unreachable!("block32 of {ty}"),
    }
}

/// Per 32-block, in this order and with fused multiply-adds:
/// `acc = isum * (dw * dx) + acc`, then (types with a min) `acc = mw * sx + acc`,
/// where `isum = sum(q * x)` is exact in integers. Every SIMD path (mat-vec
/// tiles and the prompt GEMM) performs exactly these operations per output,
/// so an output does not depend on the path, the batch it is in, or the
/// thread count: a sequence's tokens are the same alone or batched.
fn dot32(ty: GgmlType, w: &[u8], a: &QuantActs, j: usize) -> f32 {
    let bb = ty.block_bytes() as usize;
    let nb = a.cols / 32;
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(bb).take(nb).enumerate() {
        let (q, dw, mw) = block32(ty, blk);
        let x = &a.qs[j * a.cols + 32 * b..][..32];
        let isum: i32 = q.iter().zip(x).map(|(&q, &x)| q * x as i32).sum();
        let (dx, sx) = (a.d[j * nb + b], a.s[j * nb + b]);
        sum = (isum as f32).mul_add(dw * dx, sum);
        if has_min(ty) {
            sum = mw.mul_add(sx, sum);
        }
    }
    sum
}

/// Whether a 32-element block type has a min term (`w = d * q + m`).
pub(crate) fn has_min(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1)
}

macro_rules! ref32 {
    ($name:ident, $ty:ident) => {
        struct $name;
        impl RefDot for $name {
            fn dot(w: &[u8], a: &QuantActs, j: usize) -> f32 {
                dot32(GgmlType::$ty, w, a, j)
            }
        }
    };
}
ref32!(RefQ4_0, Q4_0);
ref32!(RefQ4_1, Q4_1);
ref32!(RefQ5_0, Q5_0);
ref32!(RefQ5_1, Q5_1);
ref32!(RefQ8_0, Q8_0);
ref32!(RefIQ4NL, IQ4_NL);

/// The 8 (scale, min) pairs of Q4_K/Q5_K (ggml's `get_scale_min_k4`).
pub(crate) fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            (
                (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
                (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
            )
        };
    }
    (sc, m)
}

/// Q4_K/Q5_K: per super-block the exact integers
/// `isum = sum_s(sc_s * sum(q * x))` and `msum = sum_s(m_s * sum(x))`, then
/// `acc = isum * (d * dx) + acc` and `acc = msum * -(dmin * dx) + acc`, each
/// one fused multiply-add. Every SIMD path (unpacked tiles, packed panels)
/// performs exactly these steps per output, so K-quant results, like the
/// 32-element types', do not depend on batching or threads.
fn dot_q45k(w: &[u8], a: &QuantActs, j: usize, five: bool) -> f32 {
    let bb = if five { 176 } else { 144 };
    let nb = a.cols / QK_K;
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(bb).take(nb).enumerate() {
        let (d, dmin) = (f16(blk, 0), f16(blk, 2));
        let (sc, m) = scale_min_k4(&blk[4..16]);
        let (qh, qs) = if five {
            (&blk[16..48], &blk[48..176])
        } else {
            (&blk[0..0], &blk[16..144])
        };
        let x = &a.qs[j * a.cols + QK_K * b..][..QK_K];
        let bs = &a.bsums[j * a.cols / 16 + 16 * b..][..16];
        let (mut isum, mut msum) = (0i32, 0i32);
        for s in 0..8 {
            let (c, hf) = (s / 2, s % 2);
            let mut p = 0i32;
            for l in 0..32 {
                let mut q = ((qs[32 * c + l] >> (4 * hf)) & 0x0F) as i32;
                if five {
                    q |= (((qh[l] >> s) & 1) << 4) as i32;
                }
                p += q * x[32 * s + l] as i32;
            }
            isum += sc[s] as i32 * p;
            msum += m[s] as i32 * (bs[2 * s] as i32 + bs[2 * s + 1] as i32);
        }
        let dx = a.d[j * nb + b];
        sum = (isum as f32).mul_add(d * dx, sum);
        sum = (msum as f32).mul_add(-(dmin * dx), sum);
    }
    sum
}

struct RefQ4K;
impl RefDot for RefQ4K {
    fn dot(w: &[u8], a: &QuantActs, j: usize) -> f32 {
        dot_q45k(w, a, j, false)
    }
}
struct RefQ5K;
impl RefDot for RefQ5K {
    fn dot(w: &[u8], a: &QuantActs, j: usize) -> f32 {
        dot_q45k(w, a, j, true)
    }
}

/// Q6_K: per super-block the exact `isum = sum_s(sc_s * sum((q - 32) * x))`,
/// then `acc = isum * (d * dx) + acc` (one fused multiply-add).
struct RefQ6K;
// Element indices spell out the Q6_K layout.
#[allow(clippy::needless_range_loop)]
impl RefDot for RefQ6K {
    fn dot(w: &[u8], a: &QuantActs, j: usize) -> f32 {
        let nb = a.cols / QK_K;
        let mut sum = 0f32;
        for (b, blk) in w.chunks_exact(210).take(nb).enumerate() {
            let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
            let x = &a.qs[j * a.cols + QK_K * b..][..QK_K];
            let mut isum = 0i32;
            for s in 0..16 {
                let mut p = 0i32;
                for e in 16 * s..16 * s + 16 {
                    let (n, r) = (e / 128, e % 128);
                    let lo = (ql[64 * n + r % 64] >> (4 * (r / 64))) & 0x0F;
                    let hi = (qh[32 * n + r % 32] >> (2 * (r / 32))) & 0x03;
                    p += ((lo | hi << 4) as i32 - 32) * x[e] as i32;
                }
                isum += sc[s] as i8 as i32 * p;
            }
            sum = (isum as f32).mul_add(f16(blk, 208) * a.d[j * nb + b], sum);
        }
        sum
    }
}

/// IQ4_XS: per super-block the exact
/// `isum = sum_s((ls_s - 32) * sum(T[q] * x))`, then
/// `acc = isum * (d * dx) + acc` (one fused multiply-add), as Q6_K.
struct RefIQ4XS;
impl RefDot for RefIQ4XS {
    fn dot(w: &[u8], a: &QuantActs, j: usize) -> f32 {
        let nb = a.cols / QK_K;
        let mut sum = 0f32;
        for (b, blk) in w.chunks_exact(136).take(nb).enumerate() {
            let sh = u16::from_le_bytes([blk[2], blk[3]]);
            let x = &a.qs[j * a.cols + QK_K * b..][..QK_K];
            let mut isum = 0i32;
            for s in 0..8 {
                let ls = ((blk[4 + s / 2] >> (4 * (s % 2))) & 0xF) as i32
                    | ((((sh >> (2 * s)) & 3) as i32) << 4);
                let qs = &blk[8 + 16 * s..8 + 16 * s + 16];
                let mut p = 0i32;
                for l in 0..16 {
                    p += KVALUES_IQ4NL[(qs[l] & 0xF) as usize] as i32 * x[32 * s + l] as i32;
                    p += KVALUES_IQ4NL[(qs[l] >> 4) as usize] as i32 * x[32 * s + l + 16] as i32;
                }
                isum += (ls - 32) * p;
            }
            sum = (isum as f32).mul_add(f16(blk, 0) * a.d[j * nb + b], sum);
        }
        sum
    }
}

#[cfg(test)]
mod tests;
