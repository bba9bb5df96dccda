//! The int8 backward through the frozen base (`cria_train::transposed`) on
//! a small random Q4_0 model, every dimension a multiple of 32 so every
//! matrix takes it:
//! - each product against the exact f32 one, within the bound the Q8_0
//!   rounding of `W^T` and of `dY` gives (the module doc's formula);
//! - the whole LoRA gradient against the exact-backward one;
//! - the same bits on 1, 2 and 3 threads.
//!
//! The finite-difference and torch checks (gradcheck.rs, layer_torch.rs)
//! run on F32 models, whose backward stays the exact f32 GEMM.

use cria_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use cria_kernels::{MatRef, QMatrix, Rhs, ThreadPool};
use cria_model::{Matrix, Model};
use cria_train::net::{self, Batch};
use cria_train::transposed::{transpose_q8_as, Transposed};
use cria_train::{Lora, Target};
use rand::{Rng, SeedableRng};

const DIM: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HD: usize = 16;
const FFN: usize = 96;
const VOCAB: usize = 64;
const LAYERS: usize = 2;

fn quantized(ty: GgmlType, v: &[f32], cols: usize) -> Vec<u8> {
    let rb = cria_kernels::row_bytes(ty, cols).unwrap();
    let mut out = vec![0u8; v.len() / cols * rb];
    for (x, d) in v.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        cria_kernels::quantize_row(ty, x, None, d).unwrap();
    }
    out
}

fn model(seed: u64) -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    for (k, v) in [
        ("llama.embedding_length", DIM),
        ("llama.block_count", LAYERS),
        ("llama.attention.head_count", HEADS),
        ("llama.attention.head_count_kv", KV_HEADS),
        ("llama.feed_forward_length", FFN),
        ("llama.context_length", 64),
    ] {
        w.add_metadata(k, Value::U32(v as u32));
    }
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.add_metadata("llama.rope.freq_base", Value::F32(10000.0));
    // (name, rows (out), cols (in), type)
    let mut ts: Vec<(String, usize, usize, GgmlType)> =
        vec![("token_embd.weight".into(), VOCAB, DIM, GgmlType::Q4_0)];
    let (q, kv) = (HEADS * HD, KV_HEADS * HD);
    for l in 0..LAYERS {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        ts.push((n("attn_norm"), 1, DIM, GgmlType::F32));
        ts.push((n("attn_q"), q, DIM, GgmlType::Q4_0));
        ts.push((n("attn_k"), kv, DIM, GgmlType::Q4_0));
        ts.push((n("attn_v"), kv, DIM, GgmlType::Q4_0));
        ts.push((n("attn_output"), DIM, q, GgmlType::Q4_0));
        ts.push((n("ffn_norm"), 1, DIM, GgmlType::F32));
        ts.push((n("ffn_gate"), FFN, DIM, GgmlType::Q4_0));
        ts.push((n("ffn_up"), FFN, DIM, GgmlType::Q4_0));
        ts.push((n("ffn_down"), DIM, FFN, GgmlType::Q4_0));
    }
    ts.push(("output_norm.weight".into(), 1, DIM, GgmlType::F32));
    ts.push(("output.weight".into(), VOCAB, DIM, GgmlType::Q4_0));
    let mut bytes = Vec::new();
    for (name, rows, cols, ty) in &ts {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                if name.contains("norm") {
                    1.0 + rng.gen_range(-0.2..0.2)
                } else {
                    rng.gen_range(-0.3..0.3)
                }
            })
            .collect();
        bytes.push(quantized(*ty, &v, *cols));
    }
    for ((name, rows, cols, ty), b) in ts.iter().zip(&bytes) {
        let dims: Vec<u64> = if *rows == 1 {
            vec![*cols as u64]
        } else {
            vec![*cols as u64, *rows as u64]
        };
        w.add_tensor(name, *ty, &dims, b).unwrap();
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    Model::from_file(GgufFile::from_bytes(out).unwrap()).unwrap()
}

fn lora(model: &Model, seed: u64) -> Lora {
    let mut l = Lora::new(&model.config, &Target::ALL, 4, 8.0, seed).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1);
    l.params
        .iter_mut()
        .for_each(|p| *p = rng.gen_range(-0.3..0.3));
    l
}

fn batch() -> Batch {
    let mut b = Batch::default();
    let t1: Vec<u32> = (0..37).map(|i| (i * 7 + 3) % VOCAB as u32).collect();
    let t2: Vec<u32> = (0..21).map(|i| (i * 11 + 5) % VOCAB as u32).collect();
    b.push(&t1, &vec![true; t1.len()]);
    b.push(&t2, &(0..t2.len()).map(|i| i % 3 != 0).collect::<Vec<_>>());
    b
}

fn dequantized(model: &Model, m: &Matrix) -> Vec<f32> {
    let q = QMatrix::new(m.ty, m.rows, m.cols, m.bytes(model.file())).unwrap();
    let mut w = vec![0f32; m.rows * m.cols];
    for (r, row) in w.chunks_exact_mut(m.cols).enumerate() {
        q.dequantize_row(r, row).unwrap();
    }
    w
}

/// Q8_0 rounding bound of each element of `v` (blocks of 32 consecutive
/// elements in steps of `stride`, starting at each of `starts`): 0.6 of
/// the block's step `max|block| / 127` (half a step, plus the f16 rounding
/// of the step times up to 127).
fn q8_bounds(v: &[f32], len: usize, stride: usize, starts: usize) -> Vec<f32> {
    let mut e = vec![0f32; v.len()];
    for s in 0..starts {
        for b0 in (0..len).step_by(32) {
            let at = |k: usize| s + (b0 + k) * stride;
            let max = (0..32).map(|k| v[at(k)].abs()).fold(0f32, f32::max);
            (0..32).for_each(|k| e[at(k)] = 0.6 * max / 127.0);
        }
    }
    e
}

#[test]
fn each_product_is_within_the_q8_rounding_bound() {
    let model = model(5);
    let pool = ThreadPool::new(2);
    let lw = &model.weights.layers[0];
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for m in [&lw.wq, &lw.wk, &lw.wo, &lw.w_down, &model.weights.output] {
        let n = 13;
        let (rows, cols) = (m.rows, m.cols);
        let dy: Vec<f32> = (0..n * rows).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let w = dequantized(&model, m);
        let mut exact = vec![0f32; n * cols];
        let (a, b) = (
            MatRef::row_major(&dy, n, rows).unwrap(),
            MatRef::row_major(&w, rows, cols).unwrap(),
        );
        cria_kernels::gemm_reference(a, Rhs::F32(b), &mut exact, cols, false).unwrap();
        // Packed (VNNI panels, where the machine has them) and plain
        // rows: the same bits.
        let t = transpose_q8_as(model.file(), m, &pool, true).unwrap();
        let mut got = vec![0f32; n * cols];
        t.backward(&dy, &mut got, &pool).unwrap();
        let plain = transpose_q8_as(model.file(), m, &pool, false).unwrap();
        let mut got_plain = vec![0f32; n * cols];
        plain.backward(&dy, &mut got_plain, &pool).unwrap();
        assert_eq!(got, got_plain, "{}: packed and plain", m.name);
        // W^T's blocks run down W's columns (stride cols); dY's along its
        // rows.
        let ew = q8_bounds(&w, rows, cols, cols);
        let ed: Vec<f32> = (0..n)
            .flat_map(|i| q8_bounds(&dy[i * rows..(i + 1) * rows], rows, 1, 1))
            .collect();
        let mut worst = 0f32;
        for i in 0..n {
            for j in 0..cols {
                let mut bound = 0f32;
                let mut mag = 0f32;
                for k in 0..rows {
                    let (d, wk) = (dy[i * rows + k], w[k * cols + j]);
                    let (e1, e2) = (ew[k * cols + j], ed[i * rows + k]);
                    bound += d.abs() * e1 + wk.abs() * e2 + e1 * e2;
                    mag += (d * wk).abs();
                }
                // f32 sums in another order: a few ulps of the magnitude.
                let bound = bound + 1e-5 * mag;
                let err = (got[i * cols + j] - exact[i * cols + j]).abs();
                assert!(
                    err <= bound,
                    "{}: ({i}, {j}) int8 {} exact {} err {err} bound {bound}",
                    m.name,
                    got[i * cols + j],
                    exact[i * cols + j]
                );
                worst = worst.max(err / bound);
            }
        }
        eprintln!("{}: worst err / bound {worst:.3}", m.name);
        // The bound is not vacuous: the rounding is seen.
        assert!(worst > 0.01, "{}: worst err/bound {worst}", m.name);
    }
}

fn grads(model: &Model, lo: &Lora, tr: Option<&Transposed>, threads: usize) -> (f64, Vec<f32>) {
    let pool = ThreadPool::new(threads);
    let mut c = net::ctx(model, lo, &pool, Some((0.1, 17)));
    c.transposed = tr;
    let mut g = vec![0f32; lo.params.len()];
    let loss = net::loss_and_grad(&c, model, &batch(), 1.0, &mut g).unwrap();
    (loss, g)
}

#[test]
fn the_gradient_stays_close_to_the_exact_backward() {
    let model = model(5);
    let lo = lora(&model, 3);
    let tr = Transposed::build(&model, &ThreadPool::new(2)).unwrap();
    // Every base matrix has its transpose.
    for l in 0..LAYERS {
        for t in Target::ALL {
            assert!(tr.get(l, t).is_some(), "{l} {t:?}");
        }
    }
    assert!(tr.output().is_some());
    let (l8, g8) = grads(&model, &lo, Some(&tr), 2);
    let (lx, gx) = grads(&model, &lo, None, 2);
    assert_eq!(l8.to_bits(), lx.to_bits(), "the forward is the same");
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let diff: Vec<f32> = g8.iter().zip(&gx).map(|(a, b)| a - b).collect();
    let rel = norm(&diff) / norm(&gx);
    // Expected size: a Q8_0 rounding is uniform within half a step, so
    // its rms is step / sqrt(12), step = max|block| / 127; relative to a
    // product's typical size that is (crest(W) + crest(dY)) / (127 *
    // sqrt(12)), about 3.2 / 440 = 0.73 % for these uniform values (crest
    // = max / rms of a block, ~1.6). The gradient of a block-0 adapter
    // passes through up to about 4 int8 products (head, block 1, block
    // 0), independent roundings adding in quadrature: ~1.5 %. The bound
    // is twice that; a sign or layout bug gives ~100 %.
    eprintln!("relative gradient error {rel:.5}");
    assert!(rel < 0.03, "relative gradient error {rel}");
    assert!(rel > 0.0, "the int8 path was taken");
}

#[test]
fn int8_gradients_are_the_same_bits_on_any_thread_count() {
    let model = model(6);
    let lo = lora(&model, 4);
    let tr = Transposed::build(&model, &ThreadPool::new(1)).unwrap();
    let tr3 = Transposed::build(&model, &ThreadPool::new(3)).unwrap();
    let (l1, g1) = grads(&model, &lo, Some(&tr), 1);
    let (l2, g2) = grads(&model, &lo, Some(&tr), 2);
    let (l3, g3) = grads(&model, &lo, Some(&tr3), 3);
    assert!(g1.iter().any(|&g| g != 0.0));
    assert_eq!((l1.to_bits(), &g1), (l2.to_bits(), &g2));
    assert_eq!((l1.to_bits(), &g1), (l3.to_bits(), &g3));
}
