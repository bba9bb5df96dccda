//! [`attend`]: attention over one KV head whose keys and values may each
//! be f16, f32, Q8_0 or Q4_0 ([`Keys`], [`Values`]). f16 keys with f16
//! values run [`super::attend_f16`] unchanged; f32 with f32 run
//! [`super::attend_scalar`]; every other pair is scores (by the key type),
//! [`crate::softmax`], then the values' sum (by the value type).

use super::quant::{pv_q, scores_q, QIsa, QKeys, QQueries, QValues, QBLOCK};
use super::{
    attend_f16_window, attend_scalar_window, axpy_f16_rows, scores_with, softmax_window, KvHead,
};
use crate::simd::{Cpu, Isa};
use half::f16;
use std::sync::OnceLock;

/// The keys of one KV head. f16 and f32 keys are in blocks of 16 positions
/// as [`KvHead`] describes; quantized keys as [`QKeys`] describes.
#[derive(Copy, Clone, Debug)]
pub enum Keys<'a> {
    F16 { k: &'a [f16], k_block: usize },
    F32 { k: &'a [f32], k_block: usize },
    Quant(QKeys<'a>),
}

/// The values of one KV head: value `t` is the row `v[t * v_row..][..d]`,
/// or for quantized values as [`QValues`] describes.
#[derive(Copy, Clone, Debug)]
pub enum Values<'a> {
    F16 { v: &'a [f16], v_row: usize },
    F32 { v: &'a [f32], v_row: usize },
    Quant(QValues<'a>),
}

/// Scratch of [`attend`], grown as needed (keep one per thread).
#[derive(Default, Debug)]
pub struct AttScratch {
    scores: Vec<f32>,
    qq: QQueries,
}

/// The quantized kernels' ISA, detected once.
fn qisa() -> QIsa {
    static ISA: OnceLock<QIsa> = OnceLock::new();
    *ISA.get_or_init(QIsa::best)
}

/// Causal attention of `g = last.len()` queries that read one KV head,
/// with [`super::attend_f16`]'s contract: query `j` (`q[j * d..][..d]`)
/// sees positions `0..=last[j]`, `out[j * d..][..d] = softmax(scale * q_j .
/// K) . V`, and each query's output has the bits it has alone. Quantized
/// keys need `d = 32 * blocks`; the queries are then rounded to Q8_0 (as
/// llama.cpp does for a quantized K) and scored with integer dot products.
///
/// Panics if the shapes disagree or the keys or values are too short.
pub fn attend(
    q: &[f32],
    last: &[usize],
    keys: Keys,
    values: Values,
    scale: f32,
    s: &mut AttScratch,
    out: &mut [f32],
) {
    attend_window(q, last, usize::MAX, keys, values, scale, s, out)
}

/// [`attend`] with a sliding window: query `j` sees positions
/// `window_start(last[j], window)..=last[j]` ([`super::window_start`];
/// `usize::MAX` is no window).
#[allow(clippy::too_many_arguments)]
pub fn attend_window(
    q: &[f32],
    last: &[usize],
    window: usize,
    keys: Keys,
    values: Values,
    scale: f32,
    s: &mut AttScratch,
    out: &mut [f32],
) {
    match (keys, values) {
        (Keys::F16 { k, k_block }, Values::F16 { v, v_row }) => {
            let kv = KvHead {
                k,
                k_block,
                v,
                v_row,
            };
            return attend_f16_window(q, last, window, kv, scale, &mut s.scores, out);
        }
        (Keys::F32 { k, k_block }, Values::F32 { v, v_row }) => {
            let kv = KvHead {
                k,
                k_block,
                v,
                v_row,
            };
            return attend_scalar_window(q, last, window, kv, scale, &mut s.scores, out);
        }
        _ => {}
    }
    let g = last.len();
    assert_eq!(q.len(), out.len(), "attend: queries and outputs differ");
    let Some(&max) = last.iter().max() else {
        assert!(q.is_empty(), "attend: queries without positions");
        return;
    };
    assert!(q.len().is_multiple_of(g), "attend: queries not {g} rows");
    let d = q.len() / g;
    let np = (max + 1).next_multiple_of(16);
    s.scores.clear();
    s.scores.resize(g * np, 0.0);
    let sc = &mut s.scores;
    match keys {
        Keys::F16 { k, k_block } => {
            check_keys(k.len(), k_block, d, max);
            let kv = KvHead {
                k,
                k_block,
                v: &[],
                v_row: 0,
            };
            scores_with(Cpu::get(), q, last, &kv, scale, np, sc);
        }
        Keys::F32 { k, k_block } => {
            check_keys(k.len(), k_block, d, max);
            let kv = KvHead {
                k,
                k_block,
                v: &[] as &[f32],
                v_row: 0,
            };
            for ((qj, &lj), sj) in q.chunks_exact(d).zip(last).zip(sc.chunks_mut(np)) {
                for (t, s) in sj[..=lj].iter_mut().enumerate() {
                    let dot = qj
                        .iter()
                        .enumerate()
                        .fold(0f32, |acc, (i, x)| acc + x * kv.k[kv.key_index(t, i)]);
                    *s = dot * scale;
                }
            }
        }
        Keys::Quant(qk) => {
            assert_eq!(d, qk.blocks * QBLOCK, "attend: head size vs key blocks");
            s.qq.quantize(q, qk.blocks);
            scores_q(qisa(), &s.qq, last, &qk, scale, np, sc);
        }
    }
    for (j, &lj) in last.iter().enumerate() {
        softmax_window(&mut sc[j * np..j * np + lj + 1], window);
    }
    match values {
        Values::F16 { v, v_row } => {
            check_values(v.len(), v_row, d, max);
            #[cfg(target_arch = "x86_64")]
            if d.is_multiple_of(16)
                && Cpu::get().isa() == Isa::Avx512
                && is_x86_feature_detected!("f16c")
            {
                // SAFETY: AVX-512F and F16C detected; shapes and bounds
                // checked above.
                return unsafe { super::x86::pv_512(sc, np, last, v, v_row, out) };
            }
            let _ = Isa::Scalar;
            for ((oj, &lj), p) in out.chunks_exact_mut(d).zip(last).zip(sc.chunks(np)) {
                oj.fill(0.0);
                axpy_f16_rows(oj, &p[..=lj], v, v_row);
            }
        }
        Values::F32 { v, v_row } => {
            check_values(v.len(), v_row, d, max);
            for ((oj, &lj), p) in out.chunks_exact_mut(d).zip(last).zip(sc.chunks(np)) {
                oj.fill(0.0);
                for (t, &pt) in p[..=lj].iter().enumerate() {
                    for (o, &x) in oj.iter_mut().zip(&v[t * v_row..t * v_row + d]) {
                        *o += pt * x;
                    }
                }
            }
        }
        Values::Quant(qv) => {
            assert_eq!(d, qv.blocks * QBLOCK, "attend: head size vs value blocks");
            pv_q(qisa(), sc, np, last, &qv, out);
        }
    }
}

fn check_keys(len: usize, k_block: usize, d: usize, max: usize) {
    assert!(
        k_block >= 16 * d && (max / 16) * k_block + 16 * d <= len,
        "attend: keys too short"
    );
}

fn check_values(len: usize, v_row: usize, d: usize, max: usize) {
    assert!(
        v_row >= d && max * v_row + d <= len,
        "attend: values too short"
    );
}
