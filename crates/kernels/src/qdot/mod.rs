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

#[cfg(target_arch = "x86_64")]
pub(crate) mod packed;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::dequant::QK_K;
use crate::quant::KVALUES_IQ4NL;
use crate::simd::{Cpu, Isa};
use cria_gguf::GgmlType;

/// How activations are quantized for a weight type.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ActKind {
    /// Blocks of 32 int8 with an f32 scale and `d * sum(q)` per block.
    Q8x32,
    /// Blocks of 256 int8 with an f32 scale and int16 sums per 16.
    Q8K,
}

impl ActKind {
    pub(crate) fn block(self) -> usize {
        match self {
            ActKind::Q8x32 => 32,
            ActKind::Q8K => QK_K,
        }
    }
}

/// `n` activation rows of `cols` quantized to int8. Reused across calls (it
/// only grows), so the forward pass allocates nothing per token.
#[derive(Default)]
pub struct QuantActs {
    pub(crate) n: usize,
    pub(crate) cols: usize,
    /// (n, cols) int8.
    pub(crate) qs: Vec<i8>,
    /// (n, cols / block) scales: x ~= d * q.
    pub(crate) d: Vec<f32>,
    /// Q8x32: (n, cols / 32) `d * sum(q)` of each block.
    pub(crate) s: Vec<f32>,
    /// Q8x32: (n, cols / 32) `sum(q)` of each block, exact.
    pub(crate) qsum: Vec<i32>,
    /// Q8K: (n, cols / 16) sums of q over each 16.
    pub(crate) bsums: Vec<i16>,
    /// Q8K: (n, cols / 64) the sums of q over each 32, two by two: the low
    /// 16 bits hold sub-block `2t`'s sum, the high 16 bits `2t + 1`'s (the
    /// operand of `vpdpwssd` against the Q4_K/Q5_K mins).
    pub(crate) bpairs: Vec<i32>,
}

impl QuantActs {
    /// Quantize `x` (`n` rows of `cols`; `cols` a multiple of the block).
    pub(crate) fn quantize(&mut self, kind: ActKind, x: &[f32], cols: usize) {
        self.resize(kind, x.len(), cols);
        let nb = x.len() / kind.block();
        // SAFETY: `resize` sized every buffer for all `nb` blocks of `x`.
        unsafe { self.parts().blocks(kind, x, 0, nb) };
    }

    /// [`quantize`](Self::quantize) with the rows shared among `pool`'s
    /// threads (a prompt's activations are quantized once per matmul: on
    /// one thread this was about 1.5% of a 1B model's prompt time, serial
    /// while the other core waited). The same bits: every block is
    /// quantized by the same code, whichever thread takes it.
    pub(crate) fn quantize_par(
        &mut self,
        kind: ActKind,
        x: &[f32],
        cols: usize,
        pool: &crate::pool::ThreadPool,
    ) {
        let n = x.len() / cols.max(1);
        if pool.threads() < 2 || n < PAR_QUANT_ROWS {
            return self.quantize(kind, x, cols);
        }
        self.resize(kind, x.len(), cols);
        let per_row = cols / kind.block();
        // One task per thread below 32 rows (see llama's `for_rows`).
        let rows_per = n.div_ceil(pool.threads() * if n < 32 { 1 } else { 4 });
        let parts = self.parts();
        let parts = &parts;
        pool.run(n.div_ceil(rows_per), |task| {
            let r0 = task * rows_per;
            let r1 = (r0 + rows_per).min(n);
            // SAFETY: tasks take disjoint rows, so disjoint blocks of every
            // buffer; `resize` sized them for all of `x`.
            unsafe { parts.blocks(kind, x, r0 * per_row, r1 * per_row) };
        });
    }

    /// Grows the buffers for `len` elements in rows of `cols`.
    fn resize(&mut self, kind: ActKind, len: usize, cols: usize) {
        let bs = kind.block();
        debug_assert!(cols.is_multiple_of(bs) && len.is_multiple_of(cols));
        let nb = len / bs;
        self.n = len / cols;
        self.cols = cols;
        grow(&mut self.qs, len);
        grow(&mut self.d, nb);
        match kind {
            ActKind::Q8x32 => {
                grow(&mut self.s, nb);
                grow(&mut self.qsum, nb);
            }
            ActKind::Q8K => {
                grow(&mut self.bsums, len / 16);
                grow(&mut self.bpairs, len / 64);
            }
        }
    }

    fn parts(&mut self) -> Parts {
        Parts {
            qs: self.qs.as_mut_ptr(),
            d: self.d.as_mut_ptr(),
            s: self.s.as_mut_ptr(),
            qsum: self.qsum.as_mut_ptr(),
            bsums: self.bsums.as_mut_ptr(),
            bpairs: self.bpairs.as_mut_ptr(),
        }
    }

    /// Activation row `j` dequantized (`cols` long): what the integer dots
    /// multiply by. For tests.
    pub(crate) fn dequantize(&self, kind: ActKind, j: usize, dst: &mut [f32]) {
        let bs = kind.block();
        let nb = self.cols / bs;
        for (k, y) in dst.iter_mut().enumerate().take(self.cols) {
            *y = self.d[j * nb + k / bs] * self.qs[j * self.cols + k] as f32;
        }
    }
}

/// Rows below which [`QuantActs::quantize_par`] quantizes on the caller
/// alone (a dispatch would cost more than it saves).
const PAR_QUANT_ROWS: usize = 8;

/// The buffers of a [`QuantActs`] as raw pointers, so that threads can fill
/// disjoint blocks of them at once.
struct Parts {
    qs: *mut i8,
    d: *mut f32,
    s: *mut f32,
    qsum: *mut i32,
    bsums: *mut i16,
    bpairs: *mut i32,
}

// SAFETY: only used through `blocks`, whose callers give each thread
// disjoint blocks.
unsafe impl Sync for Parts {}

impl Parts {
    /// Quantizes blocks `b0..b1` of `x` (blocks of `kind`) into their
    /// places. Rounded exactly as llama.cpp's x86 build rounds activations
    /// (quantize_row_q8_0/q8_1 and quantize_row_q8_K_ref), so that on the
    /// same weights the integer dot products are llama.cpp's own and the
    /// two engines differ only in how the block results are summed.
    ///
    /// # Safety
    /// The buffers hold every block of `x` (`kind`'s sizes); no other
    /// thread touches blocks `b0..b1` meanwhile.
    unsafe fn blocks(&self, kind: ActKind, x: &[f32], b0: usize, b1: usize) {
        use std::slice::from_raw_parts_mut as part;
        let bs = kind.block();
        let nb = b1 - b0;
        let x = &x[b0 * bs..b1 * bs];
        let qs = part(self.qs.add(b0 * bs), nb * bs);
        let d = part(self.d.add(b0), nb);
        match kind {
            ActKind::Q8x32 => {
                let (s, qsum) = (part(self.s.add(b0), nb), part(self.qsum.add(b0), nb));
                #[cfg(target_arch = "x86_64")]
                if quant_avx512() {
                    // SAFETY: AVX-512F/BW/DQ detected; the slices hold
                    // `nb` blocks each.
                    return quant_blocks32_avx512(x, qs, d, s, qsum);
                }
                quant_blocks32(x, qs, d, s, qsum);
            }
            ActKind::Q8K => {
                let bsums = part(self.bsums.add(16 * b0), 16 * nb);
                let bpairs = part(self.bpairs.add(4 * b0), 4 * nb);
                for b in 0..nb {
                    #[cfg(target_arch = "x86_64")]
                    if quant_avx512() {
                        // SAFETY: AVX-512F/BW/DQ detected; block b of 256
                        // lies in `x` and `qs`, its 16 sums in `bsums`.
                        // None: a NaN in the block; the scalar code decides.
                        let q = quant256_k_avx512(
                            x.as_ptr().add(256 * b),
                            qs.as_mut_ptr().add(256 * b),
                            bsums.as_mut_ptr().add(16 * b),
                        );
                        if let Some(dd) = q {
                            d[b] = dd;
                            fill_pairs(bsums, bpairs, b);
                            continue;
                        }
                    }
                    d[b] = quant256_k(
                        &x[256 * b..256 * (b + 1)],
                        &mut qs[256 * b..256 * (b + 1)],
                        &mut bsums[16 * b..16 * b + 16],
                    );
                    fill_pairs(bsums, bpairs, b);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn quant_avx512() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        Cpu::get().isa() == Isa::Avx512
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
    })
}

/// Blocks of 32 quantized to int8 (the reference of
/// [`quant_blocks32_avx512`]): per block `d = amax / 127` kept as f16,
/// `q = round-half-even(x * 127 / amax)`, the sum of `q`, and that sum
/// times `d` kept as f16 too (`s`). `x` holds `d.len()` blocks.
fn quant_blocks32(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], qsum: &mut [i32]) {
    for (b, (xb, qb)) in x.chunks_exact(32).zip(qs.chunks_exact_mut(32)).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let dd = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        let sum: i32 = qb.iter().map(|&q| q as i32).sum();
        d[b] = half::f16::from_f32(dd).to_f32();
        s[b] = half::f16::from_f32(dd * sum as f32).to_f32();
        qsum[b] = sum;
    }
}

/// [`quant_blocks32`] on AVX-512, 16 blocks at a time: each block's
/// maximum magnitude ([`amax32_avx512`]), then the 16 scales'
/// divisions and f16 roundings as one vector each (the same IEEE
/// operations lane by lane), then the blocks quantized with their scales.
/// The same bytes, scales and sums.
///
/// # Safety
/// AVX-512F/BW/DQ; `x` and `qs` hold `d.len()` blocks, as do `s` and `qsum`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
unsafe fn quant_blocks32_avx512(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    qsum: &mut [i32],
) {
    use std::arch::x86_64::*;
    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let nb = d.len();
    assert!(x.len() >= 32 * nb && qs.len() >= 32 * nb && s.len() >= nb && qsum.len() >= nb);
    let (xp, qp) = (x.as_ptr(), qs.as_mut_ptr());
    let mut b0 = 0;
    while b0 < nb {
        let m = (nb - b0).min(16);
        let keep: __mmask16 = if m == 16 { 0xFFFF } else { (1u16 << m) - 1 };
        let mut amax = [0f32; 16];
        // Blocks holding a NaN or an infinity are left to the reference.
        let mut odd = 0u16;
        for (k, a) in amax.iter_mut().enumerate().take(m) {
            match amax32_avx512(xp.add(32 * (b0 + k))) {
                Some(v) => *a = v,
                None => odd |= 1 << k,
            }
        }
        let av = _mm512_loadu_ps(amax.as_ptr());
        let dv = _mm512_div_ps(av, _mm512_set1_ps(127.0));
        let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(av, _mm512_setzero_ps());
        let idv = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(127.0), av);
        let mut id = [0f32; 16];
        _mm512_storeu_ps(id.as_mut_ptr(), idv);
        let mut sums = [0i32; 16];
        for (k, sum) in sums.iter_mut().enumerate().take(m) {
            let b = b0 + k;
            *sum = quant32_with_avx512(xp.add(32 * b), qp.add(32 * b), id[k]);
        }
        let sv = _mm512_loadu_si512(sums.as_ptr() as *const _);
        let f16_trip = |v: __m512| _mm512_cvtph_ps(_mm512_cvtps_ph::<RNE>(v));
        let dh = f16_trip(dv);
        let sh = f16_trip(_mm512_mul_ps(dv, _mm512_cvtepi32_ps(sv)));
        _mm512_mask_storeu_ps(d.as_mut_ptr().add(b0), keep, dh);
        _mm512_mask_storeu_ps(s.as_mut_ptr().add(b0), keep, sh);
        _mm512_mask_storeu_epi32(qsum.as_mut_ptr().add(b0), keep, sv);
        while odd != 0 {
            let b = b0 + odd.trailing_zeros() as usize;
            odd &= odd - 1;
            let (q, r) = (32 * b, b..b + 1);
            quant_blocks32(
                &x[q..q + 32],
                &mut qs[q..q + 32],
                &mut d[r.clone()],
                &mut s[r.clone()],
                &mut qsum[r],
            );
        }
        b0 += m;
    }
}

/// The largest magnitude of a block of 32, as the scalar fold of
/// [`quant_blocks32`]; `None` if the block holds a NaN or an infinity
/// (where the vector steps would round differently from the reference).
///
/// # Safety
/// AVX-512F/DQ; `x` points at 32 elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
unsafe fn amax32_avx512(x: *const f32) -> Option<f32> {
    use std::arch::x86_64::*;
    let v = [_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16))];
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    // Any NaN lane makes the max NaN or loses it, so test the lanes.
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[0], v[1]);
    (nan == 0 && amax.is_finite()).then_some(amax.max(0.0))
}

/// Quantizes a block of 32 with the inverse scale `id` as the scalar loop
/// of [`quant_blocks32`] does (same products, rounding half to even and
/// clamp); returns sum(q).
///
/// # Safety
/// AVX-512F/BW/DQ; `x` and `q` point at 32 elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
unsafe fn quant32_with_avx512(x: *const f32, q: *mut i8, id: f32) -> i32 {
    use std::arch::x86_64::*;
    let v = [_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16))];
    let idv = _mm512_set1_ps(id);
    let mut sum = _mm512_setzero_si512();
    for (h, &v) in v.iter().enumerate() {
        let y = _mm512_mul_ps(v, idv);
        // Round half to even, as llama.cpp's x86 quantize_row_q8_0/q8_1.
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        let r = _mm512_min_ps(
            _mm512_max_ps(r, _mm512_set1_ps(-127.0)),
            _mm512_set1_ps(127.0),
        );
        let i = _mm512_cvttps_epi32(r);
        sum = _mm512_add_epi32(sum, i);
        _mm_storeu_si128(q.add(16 * h) as *mut __m128i, _mm512_cvtepi32_epi8(i));
    }
    _mm512_reduce_add_epi32(sum)
}

/// One Q8_K block of 256 quantized exactly as the scalar loop of
/// [`QuantActs::quantize`] does (the first value of largest magnitude sets
/// `iscale = -127 / max`; round half to even): writes the quants and the
/// 16 sums of 16, returns d = 1 / iscale (0 for an all-zero block), or
/// `None` (nothing decided) if the block holds a NaN.
///
/// # Safety
/// AVX-512F/BW/DQ; `x` and `q` point at 256 elements, `bsums` at 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
unsafe fn quant256_k_avx512(x: *const f32, q: *mut i8, bsums: *mut i16) -> Option<f32> {
    use std::arch::x86_64::*;
    let mut amv = _mm512_setzero_ps();
    let mut nan = 0u16;
    for i in 0..16 {
        let v = _mm512_loadu_ps(x.add(16 * i));
        nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        amv = _mm512_max_ps(amv, _mm512_abs_ps(v));
    }
    if nan != 0 {
        return None;
    }
    let amax = _mm512_reduce_max_ps(amv);
    if amax == 0.0 {
        std::ptr::write_bytes(q, 0, 256);
        std::ptr::write_bytes(bsums, 0, 16);
        return Some(0.0);
    }
    // The first element whose magnitude is the maximum gives the sign.
    let target = _mm512_set1_ps(amax);
    let mut max = amax;
    for i in 0..16 {
        let v = _mm512_abs_ps(_mm512_loadu_ps(x.add(16 * i)));
        let m = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, target);
        if m != 0 {
            max = *x.add(16 * i + m.trailing_zeros() as usize);
            break;
        }
    }
    let iscale = -127.0 / max;
    let sv = _mm512_set1_ps(iscale);
    for i in 0..16 {
        let y = _mm512_mul_ps(sv, _mm512_loadu_ps(x.add(16 * i)));
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        let r = _mm512_min_ps(
            _mm512_max_ps(r, _mm512_set1_ps(-128.0)),
            _mm512_set1_ps(127.0),
        );
        let iv = _mm512_cvttps_epi32(r);
        _mm_storeu_si128(q.add(16 * i) as *mut __m128i, _mm512_cvtepi32_epi8(iv));
        *bsums.add(i) = _mm512_reduce_add_epi32(iv) as i16;
    }
    Some(1.0 / iscale)
}

/// One Q8_K block of 256 as ggml's `quantize_row_q8_K_ref`: the signed
/// value of largest magnitude (the first one) sets `iscale = -127 / max`;
/// quants round half to even; returns d = 1 / iscale (f32), 0 for zeros.
/// Writes the 16 sums of 16 to `bsums`.
pub(crate) fn quant256_k(xb: &[f32], qb: &mut [i8], bsums: &mut [i16]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in xb {
        if v.abs() > amax {
            (amax, max) = (v.abs(), v);
        }
    }
    let d = if amax == 0.0 {
        qb.fill(0);
        0.0
    } else {
        let iscale = -127.0 / max;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = (iscale * v).round_ties_even().clamp(-128.0, 127.0) as i8;
        }
        1.0 / iscale
    };
    for (s, c) in bsums.iter_mut().zip(qb.chunks_exact(16)) {
        *s = c.iter().map(|&q| q as i16).sum();
    }
    d
}

/// Q8K block `b`'s 32-sums two by two, from its 16-sums.
fn fill_pairs(bsums: &[i16], bpairs: &mut [i32], b: usize) {
    for t in 0..4 {
        let s = &bsums[b * 16 + 4 * t..][..4];
        // |sum of 32| <= 4096: fits 16 bits.
        let (lo, hi) = (s[0] + s[1], s[2] + s[3]);
        bpairs[b * 4 + t] = (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32;
    }
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

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
