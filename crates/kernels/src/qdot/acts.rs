//! The activations of a matmul quantized to int8 ([`QuantActs`]): blocks
//! of 32 with an f32 scale, or of 256 with int16 sums per 16 (the
//! K-quants' `Q8_K`), rounded exactly as llama.cpp's x86 build rounds
//! them; the scalar references and their AVX-512 versions side by side.

use crate::dequant::QK_K;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Cpu, Isa};

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
        let rows_per = pool.rows_per_task(n);
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
pub(super) fn quant_avx512() -> bool {
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
pub(super) fn quant_blocks32(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    qsum: &mut [i32],
) {
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
pub(super) unsafe fn quant_blocks32_avx512(
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
pub(super) unsafe fn quant256_k_avx512(x: *const f32, q: *mut i8, bsums: *mut i16) -> Option<f32> {
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
