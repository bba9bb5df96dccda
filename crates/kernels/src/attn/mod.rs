//! Attention over an f16 or f32 KV cache: [`attend_f16`] for a group of
//! queries that read one KV head ([`KvHead`]), and the row ops `q . k_t`
//! and `out += p * v_t`, with the f16 -> f32 conversion done in registers
//! (F16C / AVX-512) instead of one call per element.

use crate::simd::{Cpu, Isa};
use half::f16;

/// Sum of `a[i] * b[i]` (lengths must match; panics otherwise).
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16 of vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { x86::dot_f16(a, b) };
    }
    dot_f16_scalar(a, b)
}

/// `y[i] += alpha * x[i]` (lengths must match; panics otherwise).
pub fn axpy_f16(y: &mut [f32], alpha: f32, x: &[f16]) {
    assert_eq!(y.len(), x.len(), "axpy_f16 of vectors of different lengths");
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { x86::axpy_f16(y, alpha, x) };
    }
    axpy_f16_scalar(y, alpha, x)
}

/// `out[t] = dot_f16(q, k[t * stride..][..q.len()]) * scale` for every
/// `t < out.len()`: the same bits as the one-key calls, dispatched once.
pub fn dot_f16_rows(q: &[f32], k: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    assert!(
        (n - 1) * stride + q.len() <= k.len(),
        "dot_f16_rows: keys too short"
    );
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        if q.len().is_multiple_of(16) && Cpu::get().isa() == Isa::Avx512 {
            // SAFETY: AVX-512F detected (Cpu names only detected ISAs);
            // bounds asserted.
            return unsafe { x86::dot_rows_512(q, k, stride, scale, out) };
        }
        // SAFETY: AVX2, FMA and F16C were detected; bounds asserted.
        return unsafe { x86::dot_rows(q, k, stride, scale, out) };
    }
    for (t, o) in out.iter_mut().enumerate() {
        *o = dot_f16_scalar(q, &k[t * stride..t * stride + q.len()]) * scale;
    }
}

/// `y += p[t] * v[t * stride..][..y.len()]` for every `t < p.len()`, in
/// order: the same bits as one [`axpy_f16`] per `t`, dispatched once and
/// with `y` kept in registers for head sizes 64 and 128.
pub fn axpy_f16_rows(y: &mut [f32], p: &[f32], v: &[f16], stride: usize) {
    let n = p.len();
    if n == 0 {
        return;
    }
    assert!(
        (n - 1) * stride + y.len() <= v.len(),
        "axpy_f16_rows: values too short"
    );
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        // SAFETY: AVX2, FMA and F16C were detected; bounds asserted.
        return unsafe { x86::axpy_rows(y, p, v, stride) };
    }
    for (t, &pt) in p.iter().enumerate() {
        axpy_f16_scalar(y, pt, &v[t * stride..t * stride + y.len()]);
    }
}

/// The keys and values of one KV head in a cache.
///
/// Keys are stored in blocks of 16 positions, dimension-major: dimension
/// `i` of key `t` is `k[(t / 16) * k_block + 16 * i + t % 16]`, so one
/// 16-lane load reads dimension `i` of 16 keys and a score needs no
/// horizontal sum. Blocks are whole: `k` holds every block that a
/// position in use falls in. Value `t` is the row `v[t * v_row..][..d]`.
#[derive(Copy, Clone, Debug)]
pub struct KvHead<'a, T> {
    pub k: &'a [T],
    pub k_block: usize,
    pub v: &'a [T],
    pub v_row: usize,
}

impl<T> KvHead<'_, T> {
    /// Where dimension `i` of key `t` is in `k`.
    pub fn key_index(&self, t: usize, i: usize) -> usize {
        (t / 16) * self.k_block + 16 * i + t % 16
    }
}

/// Causal attention of `g = last.len()` queries that read one KV head:
/// query `j` (`q[j * d..][..d]`) attends to positions `0..=last[j]` of
/// `kv`, and `out[j * d..][..d] = softmax(scale * q_j . K) . V`. `scores`
/// is scratch, grown as needed (keep one per thread to allocate nothing per
/// call).
///
/// Each query's output has the same bits as a call with that query alone,
/// so rows batched together, split across threads, or fed one at a time
/// agree exactly. A score is `scale * sum_i q[i] k[i]`, one fused
/// multiply-add chain from 0 in `i` order in every lane (AVX2 and AVX-512
/// give the same bits); each row of 16 keys is converted once for a tile of
/// up to 8 queries. The softmax is [`crate::softmax`]; the values are
/// summed as [`axpy_f16_rows`] sums them from zero, each value row
/// converted once per 6 queries on AVX-512. [`attend_scalar`] is the
/// reference.
///
/// Panics if `q` and `out` are not `g` rows of the same length or the
/// keys and values are too short.
pub fn attend_f16(
    q: &[f32],
    last: &[usize],
    kv: KvHead<f16>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_f16_window(q, last, usize::MAX, kv, scale, scores, out)
}

/// [`attend_f16`] with a sliding window: query `j` sees only the last
/// `window` positions up to `last[j]` ([`window_start`]).
pub fn attend_f16_window(
    q: &[f32],
    last: &[usize],
    window: usize,
    kv: KvHead<f16>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let Some((d, np)) = check_attend(q, last, &kv, out) else {
        return;
    };
    scores.clear();
    scores.resize(last.len() * np, 0.0);
    scores_with(Cpu::get(), q, last, &kv, scale, np, scores);
    for (j, &lj) in last.iter().enumerate() {
        softmax_window(&mut scores[j * np..j * np + lj + 1], window);
    }
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16) && has_f16_simd() && Cpu::get().isa() == Isa::Avx512 {
        // SAFETY: AVX-512F and F16C detected (Cpu names only detected
        // ISAs); shapes and bounds checked above.
        return unsafe { x86::pv_512(scores, np, last, kv.v, kv.v_row, out) };
    }
    for ((oj, &lj), p) in out.chunks_exact_mut(d).zip(last).zip(scores.chunks(np)) {
        oj.fill(0.0);
        axpy_f16_rows(oj, &p[..lj + 1], kv.v, kv.v_row);
    }
}

/// The scores of [`attend_f16`] on `cpu`: `scores[j * np + t]` for every
/// query `j` and `t < 16 (last[j] / 16 + 1)` (whole blocks; those past
/// `last[j]` are not used).
pub(crate) fn scores_with(
    cpu: Cpu,
    q: &[f32],
    last: &[usize],
    kv: &KvHead<f16>,
    scale: f32,
    np: usize,
    scores: &mut [f32],
) {
    assert!(scores.len() >= last.len() * np && !last.is_empty());
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        // SAFETY (both): the ISA was detected (a Cpu names only detected
        // ISAs, F16C checked); the caller checked shapes and bounds.
        match cpu.isa() {
            Isa::Avx512 => return unsafe { x86::scores_512(q, last, kv, scale, np, scores) },
            Isa::Avx2 => return unsafe { x86::scores_avx2(q, last, kv, scale, np, scores) },
            _ => {}
        }
    }
    let _ = cpu;
    let d = q.len() / last.len();
    for ((qj, &lj), sj) in q.chunks_exact(d).zip(last).zip(scores.chunks_mut(np)) {
        for (t, s) in sj[..lj + 1].iter_mut().enumerate() {
            let dot = qj.iter().enumerate().fold(0f32, |acc, (i, x)| {
                acc + x * kv.k[kv.key_index(t, i)].to_f32()
            });
            *s = dot * scale;
        }
    }
}

/// Reference for [`attend_f16`], and the attention of an f32 cache: per
/// query, scalar left-to-right dot products, [`crate::softmax`], and
/// scalar sums of the values.
pub fn attend_scalar<T: Copy + Into<f32>>(
    q: &[f32],
    last: &[usize],
    kv: KvHead<T>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_scalar_window(q, last, usize::MAX, kv, scale, scores, out)
}

/// [`attend_scalar`] with a sliding window ([`window_start`]).
pub fn attend_scalar_window<T: Copy + Into<f32>>(
    q: &[f32],
    last: &[usize],
    window: usize,
    kv: KvHead<T>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let Some((d, _)) = check_attend(q, last, &kv, out) else {
        return;
    };
    for ((qj, oj), &lj) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)).zip(last) {
        scores.clear();
        scores.extend((0..=lj).map(|t| {
            let dot = qj.iter().enumerate().fold(0f32, |acc, (i, x)| {
                acc + x * kv.k[kv.key_index(t, i)].into()
            });
            dot * scale
        }));
        softmax_window(scores, window);
        oj.fill(0.0);
        for (t, &p) in scores.iter().enumerate() {
            let vt = &kv.v[t * kv.v_row..t * kv.v_row + d];
            for (o, &x) in oj.iter_mut().zip(vt) {
                *o += p * x.into();
            }
        }
    }
}

/// The first position a query at `last` sees with a sliding window of
/// `window` positions: `last + 1 - window`, or 0. A key at `t` is seen when
/// `last - t < window` (Mistral's window, as transformers applies it).
pub fn window_start(last: usize, window: usize) -> usize {
    (last + 1).saturating_sub(window)
}

/// Softmax of one query's scores over positions `0..=last` (`row`), with
/// the positions before the window given weight 0. The values' sums then
/// add `0 * v` for them, which leaves every partial sum's bits unchanged,
/// so without a window (or inside it) the output is bit-identical.
pub(crate) fn softmax_window(row: &mut [f32], window: usize) {
    let first = window_start(row.len().saturating_sub(1), window);
    let (before, seen) = row.split_at_mut(first);
    before.fill(0.0);
    crate::softmax(seen);
}

/// The head size of an attention call and its score rows' stride (`None`:
/// no queries), after checking its shapes and bounds.
fn check_attend<T>(
    q: &[f32],
    last: &[usize],
    kv: &KvHead<T>,
    out: &[f32],
) -> Option<(usize, usize)> {
    let g = last.len();
    assert_eq!(
        q.len(),
        out.len(),
        "attend: queries and outputs differ in size"
    );
    if g == 0 {
        assert!(q.is_empty(), "attend: queries without positions");
        return None;
    }
    assert!(q.len().is_multiple_of(g), "attend: queries not {g} rows");
    let d = q.len() / g;
    let max = *last.iter().max()?;
    assert!(
        kv.k_block >= 16 * d && (max / 16) * kv.k_block + 16 * d <= kv.k.len(),
        "attend: keys too short"
    );
    assert!(
        kv.v_row >= d && max * kv.v_row + d <= kv.v.len(),
        "attend: values too short"
    );
    Some((d, (max + 1).next_multiple_of(16)))
}

/// Reference for [`dot_f16`].
pub fn dot_f16_scalar(a: &[f32], b: &[f16]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

/// Reference for [`axpy_f16`].
pub fn axpy_f16_scalar(y: &mut [f32], alpha: f32, x: &[f16]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
fn has_f16_simd() -> bool {
    matches!(Cpu::get().isa(), Isa::Avx2 | Isa::Avx512) && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(dead_code)]
fn has_f16_simd() -> bool {
    let _ = (Cpu::get(), Isa::Scalar);
    false
}

mod kv;
pub mod lsq;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod quant_x86;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use kv::{attend, attend_window, AttScratch, Keys, Values};

#[cfg(test)]
mod quant_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn f16_ops_match_reference_on_awkward_lengths() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 128, 200] {
            let a: Vec<f32> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f16> = (0..len)
                .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
                .collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * y.to_f64()).sum();
            let got = dot_f16(&a, &b) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * (len as f64 + 1.0),
                "{len}: {got} vs {want}"
            );
            for (n, stride) in [
                (1, len),
                (5, len + 3),
                (16, len),
                (17, len + 1),
                (40, len + 5),
            ] {
                let kv: Vec<f16> = (0..n * stride)
                    .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
                    .collect();
                let mut s1 = vec![0f32; n];
                dot_f16_rows(&a, &kv, stride, 0.3, &mut s1);
                let mut y1 = a.clone();
                let mut y2 = a.clone();
                let p: Vec<f32> = (0..n).map(|_| rng.gen_range(0.0..1.0)).collect();
                axpy_f16_rows(&mut y1, &p, &kv, stride);
                for t in 0..n {
                    let kt = &kv[t * stride..t * stride + len];
                    assert_eq!(s1[t].to_bits(), (dot_f16(&a, kt) * 0.3).to_bits());
                    axpy_f16(&mut y2, p[t], kt);
                }
                for (p, q) in y1.iter().zip(&y2) {
                    assert_eq!(p.to_bits(), q.to_bits(), "{len}");
                }
            }
            let mut y1 = a.clone();
            let mut y2 = a.clone();
            axpy_f16(&mut y1, 0.37, &b);
            axpy_f16_scalar(&mut y2, 0.37, &b);
            for (p, q) in y1.iter().zip(&y2) {
                assert!((p - q).abs() <= 1e-6, "{len}: {p} vs {q}");
            }
        }
    }

    fn random_f16(rng: &mut impl Rng, n: usize) -> Vec<f16> {
        (0..n)
            .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect()
    }

    /// A head of `d` in a cache of `n_keys` positions, keys `extra` floats
    /// apart beyond the head (other heads), blocks and value rows alike.
    fn head(rng: &mut impl Rng, d: usize, n_keys: usize, extra: usize) -> (Vec<f16>, Vec<f16>) {
        let k = random_f16(rng, n_keys.next_multiple_of(16) * (d + extra));
        let v = random_f16(rng, n_keys * (d + extra));
        (k, v)
    }

    /// Softmax over positions `first..=last` only, in f64: the reference
    /// for sliding-window attention.
    fn window_reference(q: &[f32], last: usize, first: usize, kv: &KvHead<f16>) -> Vec<f64> {
        let d = q.len();
        let s: Vec<f64> = (first..=last)
            .map(|t| {
                let dot: f64 = (0..d)
                    .map(|i| q[i] as f64 * kv.k[kv.key_index(t, i)].to_f64())
                    .sum();
                dot * 0.125
            })
            .collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        let mut out = vec![0f64; d];
        for (k, t) in (first..=last).enumerate() {
            let p = (s[k] - m).exp() / z;
            for (i, o) in out.iter_mut().enumerate() {
                *o += p * kv.v[t * kv.v_row + i].to_f64();
            }
        }
        out
    }

    #[test]
    fn sliding_window_attends_to_the_last_positions_only() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut sc = Vec::new();
        let mut att = super::kv::AttScratch::default();
        let (d, n_keys) = (32, 70);
        let (k, v) = head(&mut rng, d, n_keys, 0);
        let kv = KvHead {
            k: &k,
            k_block: 16 * d,
            v: &v,
            v_row: d,
        };
        let last = [0, 5, 15, 16, 17, 40, 69];
        let q: Vec<f32> = (0..last.len() * d)
            .map(|_| rng.gen_range(-2.0..2.0))
            .collect();
        for window in [1, 2, 16, 17, 50, 70, 71, usize::MAX] {
            let n = q.len();
            let (mut f16_out, mut scalar_out, mut any_out) =
                (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
            attend_f16_window(&q, &last, window, kv, 0.125, &mut sc, &mut f16_out);
            attend_scalar_window(&q, &last, window, kv, 0.125, &mut sc, &mut scalar_out);
            // f32 keys with f16 values: the mixed path of `attend_window`.
            let k32: Vec<f32> = k.iter().map(|x| x.to_f32()).collect();
            let keys = super::Keys::F32 {
                k: &k32,
                k_block: 16 * d,
            };
            let values = super::Values::F16 { v: &v, v_row: d };
            super::attend_window(
                &q,
                &last,
                window,
                keys,
                values,
                0.125,
                &mut att,
                &mut any_out,
            );
            for (j, &lj) in last.iter().enumerate() {
                let first = window_start(lj, window);
                assert_eq!(first, (lj + 1).saturating_sub(window));
                let want = window_reference(&q[j * d..(j + 1) * d], lj, first, &kv);
                for (name, out) in [
                    ("f16", &f16_out),
                    ("scalar", &scalar_out),
                    ("mixed", &any_out),
                ] {
                    for i in 0..d {
                        let got = out[j * d + i] as f64;
                        assert!(
                            (got - want[i]).abs() < 1e-5,
                            "{name}: window {window}, last {lj}, lane {i}: {got} vs {}",
                            want[i]
                        );
                    }
                }
            }
            if window > n_keys {
                // No window in reach: the bits of plain attention.
                let mut plain = vec![0f32; n];
                attend_f16(&q, &last, kv, 0.125, &mut sc, &mut plain);
                assert!(plain
                    .iter()
                    .zip(&f16_out)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn attend_groups_are_bit_identical_to_single_queries() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut sc = Vec::new();
        for d in [1, 7, 8, 16, 48, 64, 80, 128, 144] {
            let n_keys = 70;
            let (k, v) = head(&mut rng, d, n_keys, 2 * d + 5);
            let kv = KvHead {
                k: &k,
                k_block: 16 * (3 * d + 5),
                v: &v,
                v_row: 3 * d + 5,
            };
            for g in [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17] {
                let q: Vec<f32> = (0..g * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let last: Vec<usize> = (0..g)
                    .map(|j| match j % 4 {
                        0 => rng.gen_range(0..n_keys),
                        1 => 15 + j,
                        2 => 16 * (j % 3),
                        _ => n_keys - 1 - j,
                    })
                    .collect();
                let mut out = vec![f32::NAN; g * d];
                attend_f16(&q, &last, kv, 0.125, &mut sc, &mut out);
                let mut want = vec![0f32; g * d];
                attend_scalar(&q, &last, kv, 0.125, &mut sc, &mut want);
                for j in 0..g {
                    let (qj, lj) = (&q[j * d..(j + 1) * d], last[j]);
                    let mut alone = vec![0f32; d];
                    attend_f16(qj, &[lj], kv, 0.125, &mut sc, &mut alone);
                    let oj = &out[j * d..(j + 1) * d];
                    for i in 0..d {
                        let ctx = format!("d {d} g {g} query {j} last {lj} lane {i}");
                        assert_eq!(oj[i].to_bits(), alone[i].to_bits(), "{ctx}");
                        let w = want[j * d + i];
                        assert!((oj[i] - w).abs() <= 1e-5, "{ctx}: {} vs {w}", oj[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn scores_match_reference_and_agree_across_simd() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cpus = Cpu::all_available();
        for d in [1, 5, 16, 64] {
            let (k, v) = head(&mut rng, d, 50, 0);
            let kv = KvHead {
                k: &k,
                k_block: 16 * d,
                v: &v,
                v_row: d,
            };
            let g = 11;
            let q: Vec<f32> = (0..g * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let last: Vec<usize> = (0..g).map(|j| 49 - 3 * j).collect();
            let np = 64;
            let mut all = Vec::new();
            for &cpu in &cpus {
                let mut sc = vec![0f32; g * np];
                scores_with(cpu, &q, &last, &kv, 0.5, np, &mut sc);
                for (j, &lj) in last.iter().enumerate() {
                    for t in 0..=lj {
                        let want: f64 = (0..d)
                            .map(|i| q[j * d + i] as f64 * k[kv.key_index(t, i)].to_f64())
                            .sum();
                        let got = sc[j * np + t] as f64;
                        assert!((got - 0.5 * want).abs() < 1e-5, "{:?} d {d}", cpu.isa());
                    }
                }
                all.push((cpu, sc));
            }
            // The SIMD paths agree bit for bit (the scalar one is a plain sum).
            all.retain(|(c, _)| matches!(c.isa(), Isa::Avx2 | Isa::Avx512));
            for w in all.windows(2) {
                for (j, &lj) in last.iter().enumerate() {
                    let (a, b) = (&w[0].1[j * np..][..=lj], &w[1].1[j * np..][..=lj]);
                    assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
                }
            }
        }
    }
}
