//! Tests of the quantized-cache attention: llama.cpp's rounding, the key
//! tile layout against ggml's own dequantizer, every ISA bit-identical to
//! the scalar reference, and [`super::attend`] for mixed types.

use super::quant::*;
use super::{attend, AttScratch, Keys, Values};
use crate::GgmlType;
use half::f16;
use rand::{Rng, SeedableRng};

#[test]
fn q8_0_rounds_half_to_even_as_llama_cpp_x86() {
    // amax = 127: the multiplier is exactly 1.
    let mut x = [0f32; 32];
    x[..6].copy_from_slice(&[127.0, 0.5, 1.5, 2.5, -0.5, -3.5]);
    let mut q = [0i8; 32];
    let d = quantize_q8_0(&x, &mut q);
    assert_eq!(d.to_f32(), 1.0);
    assert_eq!(&q[..6], &[127, 0, 2, 2, 0, -4]);
    let mut q = [1i8; 32];
    assert_eq!(quantize_q8_0(&[0.0; 32], &mut q).to_f32(), 0.0);
    assert_eq!(q, [0; 32]);
}

#[test]
fn q4_0_follows_the_reference_quantizer() {
    // max by magnitude is -4 (first of the largest): d = 0.5, id = 2.
    let mut x = [0f32; 32];
    x[..6].copy_from_slice(&[1.0, -4.0, 4.0, 0.24, 0.26, -3.9]);
    let mut q = [0u8; 32];
    let d = quantize_q4_0(&x, &mut q);
    assert_eq!(d.to_f32(), 0.5);
    // trunc(x * 2 + 8.5), at most 15.
    assert_eq!(&q[..6], &[10, 0, 15, 8, 9, 0]);
    assert_eq!(q[6], 8);
}

fn random_rows(rng: &mut impl Rng, n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|i| rng.gen_range(-1.0..1.0) * if i % 7 == 0 { 4.0 } else { 1.0 })
        .collect()
}

/// `n` keys and values of a head of `blocks` blocks in a cache of
/// `heads` heads, packed as the cache packs them (`block_major`: each
/// block's positions together, else each position's blocks together).
struct Head {
    keys: Vec<u8>,
    vals: Vec<u8>,
    /// (tile, block) strides of the keys; (row, block) of the values.
    ks: (usize, usize),
    vs: (usize, usize),
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Head {
    fn keys(&self, ty: QType, blocks: usize) -> QKeys<'_> {
        QKeys {
            ty,
            bytes: &self.keys,
            tile_stride: self.ks.0,
            block_stride: self.ks.1,
            blocks,
        }
    }
    fn values(&self, ty: QType, blocks: usize) -> QValues<'_> {
        QValues {
            ty,
            bytes: &self.vals,
            row_stride: self.vs.0,
            block_stride: self.vs.1,
            blocks,
        }
    }
}

fn pack(
    ty: QType,
    k: Vec<f32>,
    v: Vec<f32>,
    blocks: usize,
    heads: usize,
    block_major: bool,
) -> Head {
    let d = blocks * QBLOCK;
    let n = v.len() / d;
    let (tb, bb, nb) = (ty.key_tile_bytes(), ty.block_bytes(), heads * blocks);
    let tiles = n.div_ceil(16);
    let (ks, vs) = if block_major {
        ((tb, tiles * tb), (bb, n * bb))
    } else {
        ((nb * tb, tb), (nb * bb, bb))
    };
    let mut keys = vec![0u8; tiles * nb * tb];
    let mut vals = vec![0u8; n * nb * bb];
    for t in 0..n {
        for b in 0..blocks {
            let at = (t / 16) * ks.0 + b * ks.1;
            pack_key(
                ty,
                &mut keys[at..at + tb],
                t,
                &k[t * d + b * QBLOCK..][..QBLOCK],
            );
            let at = t * vs.0 + b * vs.1;
            quantize_kv_row(
                ty,
                &v[t * d + b * QBLOCK..][..QBLOCK],
                &mut vals[at..at + bb],
            );
        }
    }
    Head {
        keys,
        vals,
        ks,
        vs,
        k,
        v,
    }
}

fn head(rng: &mut impl Rng, ty: QType, blocks: usize, heads: usize, n: usize) -> Head {
    let d = blocks * QBLOCK;
    let (k, v) = (random_rows(rng, n, d), random_rows(rng, n, d));
    pack(ty, k, v, blocks, heads, blocks.is_multiple_of(2))
}

fn ggml(ty: QType) -> GgmlType {
    match ty {
        QType::Q8_0 => GgmlType::Q8_0,
        QType::Q4_0 => GgmlType::Q4_0,
    }
}

/// The row as ggml dequantizes its blocks after quantize_row.
fn through_ggml(ty: QType, x: &[f32]) -> Vec<f32> {
    let mut bytes = vec![0u8; x.len() / QBLOCK * ty.block_bytes()];
    quantize_kv_row(ty, x, &mut bytes);
    let mut out = vec![0f32; x.len()];
    crate::dequantize_row(ggml(ty), &bytes, &mut out).unwrap();
    out
}

#[test]
fn scores_and_values_match_ggml_dequantized_math_on_every_isa() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for ty in [QType::Q8_0, QType::Q4_0] {
        for blocks in [1, 2, 3, 4] {
            let (d, n, heads) = (blocks * QBLOCK, 53, 2);
            let h = head(&mut rng, ty, blocks, heads, n);
            let keys = h.keys(ty, blocks);
            let vals = h.values(ty, blocks);
            for g in [1, 2, 3, 4, 5, 9] {
                let q = random_rows(&mut rng, g, d);
                let last: Vec<usize> = (0..g).map(|j| [n - 1, 0, 15, 16, 31, 40][j % 6]).collect();
                let np = 64;
                let mut qq = QQueries::default();
                qq.quantize(&q, blocks);
                let p: Vec<f32> = (0..g * np).map(|_| rng.gen_range(0.0..1.0)).collect();
                let mut want_s = vec![0f32; g * np];
                scores_q_scalar(&qq, &last, &keys, 0.25, np, &mut want_s);
                let mut want_o = vec![0f32; g * d];
                pv_q_scalar(&p, np, &last, &vals, &mut want_o);
                // The reference against ggml's dequantized keys, values and query.
                for (j, &lj) in last.iter().enumerate() {
                    let qj = through_ggml(QType::Q8_0, &q[j * d..(j + 1) * d]);
                    for t in 0..=lj {
                        let kt = through_ggml(ty, &h.k[t * d..(t + 1) * d]);
                        let dot: f64 = qj.iter().zip(&kt).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let got = want_s[j * np + t] as f64;
                        assert!(
                            (got - 0.25 * dot).abs() < 1e-4 * (1.0 + dot.abs()),
                            "{ty:?} score"
                        );
                    }
                    let mut o = vec![0f64; d];
                    for t in 0..=lj {
                        let vt = through_ggml(ty, &h.v[t * d..(t + 1) * d]);
                        for (o, x) in o.iter_mut().zip(vt) {
                            *o += p[j * np + t] as f64 * x as f64;
                        }
                    }
                    for (a, b) in o.iter().zip(&want_o[j * d..(j + 1) * d]) {
                        assert!(
                            (a - *b as f64).abs() < 1e-4 * (1.0 + a.abs()),
                            "{ty:?} value"
                        );
                    }
                }
                for isa in QIsa::available() {
                    let ctx = format!("{isa:?} {ty:?} blocks {blocks} g {g}");
                    let mut s = vec![f32::NAN; g * np];
                    scores_q(isa, &qq, &last, &keys, 0.25, np, &mut s);
                    let mut o = vec![f32::NAN; g * d];
                    pv_q(isa, &p, np, &last, &vals, &mut o);
                    for (j, &lj) in last.iter().enumerate() {
                        for t in 0..=lj {
                            let (a, b) = (s[j * np + t], want_s[j * np + t]);
                            assert_eq!(a.to_bits(), b.to_bits(), "{ctx} score {j} {t}");
                        }
                    }
                    for (i, (a, b)) in o.iter().zip(&want_o).enumerate() {
                        assert_eq!(a.to_bits(), b.to_bits(), "{ctx} out {i}");
                    }
                }
            }
        }
    }
}

/// An f16 or f32 head in the [`super::KvHead`] layout, from the same rows.
fn plain<T: Copy>(k: &[f32], v: &[f32], d: usize, conv: impl Fn(f32) -> T) -> (Vec<T>, Vec<T>) {
    let n = v.len() / d;
    let mut kk = vec![conv(0.0); n.div_ceil(16) * 16 * d];
    for t in 0..n {
        for i in 0..d {
            kk[(t / 16) * 16 * d + 16 * i + t % 16] = conv(k[t * d + i]);
        }
    }
    (kk, v.iter().map(|&x| conv(x)).collect())
}

#[test]
fn attend_mixed_types_is_close_and_groups_are_bit_identical() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut s = AttScratch::default();
    for blocks in [1, 2, 4] {
        let (d, n) = (blocks * QBLOCK, 70);
        let h8 = head(&mut rng, QType::Q8_0, blocks, 1, n);
        // The same rows in every other type.
        let h4 = pack(QType::Q4_0, h8.k.clone(), h8.v.clone(), blocks, 1, true);
        let (k16, v16) = plain(&h8.k, &h8.v, d, f16::from_f32);
        let (k32, v32) = plain(&h8.k, &h8.v, d, |x| x);
        fn qk(h: &Head, ty: QType, blocks: usize) -> Keys<'_> {
            Keys::Quant(h.keys(ty, blocks))
        }
        fn qv(h: &Head, ty: QType, blocks: usize) -> Values<'_> {
            Values::Quant(h.values(ty, blocks))
        }
        let all_k = [
            (
                "f16",
                Keys::F16 {
                    k: &k16,
                    k_block: 16 * d,
                },
                2e-3,
            ),
            (
                "f32",
                Keys::F32 {
                    k: &k32,
                    k_block: 16 * d,
                },
                1e-5,
            ),
            ("q8_0", qk(&h8, QType::Q8_0, blocks), 3e-2),
            ("q4_0", qk(&h4, QType::Q4_0, blocks), 0.5),
        ];
        let all_v = [
            ("f16", Values::F16 { v: &v16, v_row: d }, 2e-3),
            ("f32", Values::F32 { v: &v32, v_row: d }, 1e-5),
            ("q8_0", qv(&h8, QType::Q8_0, blocks), 2e-2),
            ("q4_0", qv(&h4, QType::Q4_0, blocks), 0.2),
        ];
        let g = 6;
        let sc = 1.0 / (d as f32).sqrt();
        let q = random_rows(&mut rng, g, d);
        let last: Vec<usize> = vec![69, 3, 16, 47, 15, 0];
        let mut want = vec![0f32; g * d];
        attend(&q, &last, all_k[1].1, all_v[1].1, sc, &mut s, &mut want);
        for &(kn, keys, ek) in &all_k {
            for &(vn, values, ev) in &all_v {
                let ctx = format!("d {d} k {kn} v {vn}");
                let mut out = vec![f32::NAN; g * d];
                attend(&q, &last, keys, values, sc, &mut s, &mut out);
                for j in 0..g {
                    let mut alone = vec![0f32; d];
                    let qj = &q[j * d..(j + 1) * d];
                    attend(qj, &last[j..j + 1], keys, values, sc, &mut s, &mut alone);
                    for i in 0..d {
                        let (o, w) = (out[j * d + i], want[j * d + i]);
                        assert_eq!(o.to_bits(), alone[i].to_bits(), "{ctx} query {j} lane {i}");
                        assert!(
                            (o - w).abs() <= (ek + ev) * (1.0 + w.abs()),
                            "{ctx}: {o} vs {w}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn round_half_even_matches_std() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut xs: Vec<f32> = (0..100_000).map(|_| rng.gen_range(-200.0..200.0)).collect();
    xs.extend((-300..300).map(|i| i as f32 * 0.5));
    xs.extend([0.0, -0.0, 4_194_304.5, 1e9, -1e9, 8_388_607.5]);
    for x in xs {
        assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
    }
}
