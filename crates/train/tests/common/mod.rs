//! A tiny random LLaMA with F32 weights, built in memory, and a float64
//! reference of its forward pass with LoRA, written independently of the
//! crate (naive loops, f64 throughout).
#![allow(dead_code)]

use cria_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use cria_model::Model;
use cria_train::{Lora, Target};
use rand::{Rng, SeedableRng};

pub struct Tiny {
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hd: usize,
    pub ffn: usize,
    pub layers: usize,
    pub vocab: usize,
}

pub const TINY: Tiny = Tiny {
    dim: 32,
    heads: 4,
    kv_heads: 2,
    hd: 8,
    ffn: 48,
    layers: 2,
    vocab: 40,
};

/// Named tensors (row-major (out, in) for matrices) and the GGUF model.
pub struct Built {
    pub model: Model,
    pub t: std::collections::HashMap<String, Vec<f32>>,
}

pub fn build(seed: u64) -> Built {
    let c = TINY;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = std::collections::HashMap::new();
    let mut names: Vec<(String, Vec<u64>)> = Vec::new();
    let mut add =
        |name: &str, dims: Vec<u64>, scale: f32, around: f32, rng: &mut rand::rngs::StdRng| {
            let n: u64 = dims.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| around + rng.gen_range(-scale..scale))
                .collect();
            t.insert(name.to_string(), v);
            names.push((name.to_string(), dims));
        };
    let (d, q, kv, f) = (
        c.dim as u64,
        (c.heads * c.hd) as u64,
        (c.kv_heads * c.hd) as u64,
        c.ffn as u64,
    );
    add(
        "token_embd.weight",
        vec![d, c.vocab as u64],
        1.0,
        0.0,
        &mut rng,
    );
    for l in 0..c.layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        add(&n("attn_norm"), vec![d], 0.2, 1.0, &mut rng);
        add(&n("attn_q"), vec![d, q], 0.3, 0.0, &mut rng);
        add(&n("attn_k"), vec![d, kv], 0.3, 0.0, &mut rng);
        add(&n("attn_v"), vec![d, kv], 0.3, 0.0, &mut rng);
        add(&n("attn_output"), vec![q, d], 0.3, 0.0, &mut rng);
        add(&n("ffn_norm"), vec![d], 0.2, 1.0, &mut rng);
        add(&n("ffn_gate"), vec![d, f], 0.3, 0.0, &mut rng);
        add(&n("ffn_up"), vec![d, f], 0.3, 0.0, &mut rng);
        add(&n("ffn_down"), vec![f, d], 0.3, 0.0, &mut rng);
    }
    add("output_norm.weight", vec![d], 0.2, 1.0, &mut rng);
    add("output.weight", vec![d, c.vocab as u64], 0.3, 0.0, &mut rng);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    for (k, v) in [
        ("llama.embedding_length", c.dim),
        ("llama.block_count", c.layers),
        ("llama.attention.head_count", c.heads),
        ("llama.attention.head_count_kv", c.kv_heads),
        ("llama.feed_forward_length", c.ffn),
        ("llama.context_length", 64),
    ] {
        w.add_metadata(k, Value::U32(v as u32));
    }
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.add_metadata("llama.rope.freq_base", Value::F32(10000.0));
    let bytes: Vec<Vec<u8>> = names
        .iter()
        .map(|(n, _)| t[n].iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    for ((n, dims), b) in names.iter().zip(&bytes) {
        w.add_tensor(n, GgmlType::F32, dims, b).unwrap();
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    let model = Model::from_file(GgufFile::from_bytes(out).unwrap()).unwrap();
    Built { model, t }
}

/// An adapter on every target with B random too (a fresh one has B = 0,
/// which makes A's gradient zero).
pub fn lora(model: &Model, rank: usize, seed: u64) -> Lora {
    let mut l = Lora::new(&model.config, &Target::ALL, rank, 2.0 * rank as f32, seed).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1);
    for p in l.params.iter_mut() {
        *p = rng.gen_range(-0.3..0.3);
    }
    l
}

fn mv(w: &[f64], x: &[f64], out_dim: usize) -> Vec<f64> {
    let n = x.len();
    (0..out_dim)
        .map(|o| (0..n).map(|i| w[o * n + i] * x[i]).sum())
        .collect()
}

fn rms(x: &[f64], w: &[f64]) -> Vec<f64> {
    let ss = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ss + 1e-5).sqrt();
    x.iter().zip(w).map(|(x, w)| x * r * w).collect()
}

/// Float64 reference: summed NLL of `targets[i]` (next token) per sequence.
pub fn reference_loss(
    b: &Built,
    lora: &Lora,
    params: &[f64],
    seqs: &[(Vec<u32>, Vec<Option<u32>>)],
) -> f64 {
    let c = TINY;
    let g = |n: &str| -> Vec<f64> { b.t[n].iter().map(|&v| v as f64).collect() };
    let inv: Vec<f64> = cria_model::inverse_frequencies(&b.model.config, None)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let s = lora.scale() as f64;
    let r = lora.rank;
    let lin = |l: usize, t: Target, name: &str, x: &[f64], out: usize| -> Vec<f64> {
        let mut y = mv(&g(name), x, out);
        if let Some(sl) = lora.slot(l, t) {
            let a = &params[sl.a..sl.b];
            let bb = &params[sl.b..sl.b + sl.rows * r];
            let u = mv(a, x, r);
            let d = mv(bb, &u, out);
            y.iter_mut().zip(d).for_each(|(y, d)| *y += s * d);
        }
        y
    };
    let rope = |v: &mut [f64], pos: usize| {
        for head in v.chunks_exact_mut(c.hd) {
            for (i, f) in inv.iter().enumerate() {
                let (sn, cs) = (pos as f64 * f).sin_cos();
                let (a, bb) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * cs - bb * sn;
                head[2 * i + 1] = a * sn + bb * cs;
            }
        }
    };
    let (q_dim, kv_dim) = (c.heads * c.hd, c.kv_heads * c.hd);
    let mut total = 0.0;
    for (tokens, targets) in seqs {
        let emb = g("token_embd.weight");
        let mut xs: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| emb[t as usize * c.dim..(t as usize + 1) * c.dim].to_vec())
            .collect();
        for l in 0..c.layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let mut qs = Vec::new();
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for (pos, x) in xs.iter().enumerate() {
                let xn = rms(x, &g(&n("attn_norm")));
                let mut q = lin(l, Target::Q, &n("attn_q"), &xn, q_dim);
                let mut k = lin(l, Target::K, &n("attn_k"), &xn, kv_dim);
                rope(&mut q, pos);
                rope(&mut k, pos);
                qs.push(q);
                ks.push(k);
                vs.push(lin(l, Target::V, &n("attn_v"), &xn, kv_dim));
            }
            for i in 0..xs.len() {
                let mut att = vec![0.0; q_dim];
                for h in 0..c.heads {
                    let kh = h / (c.heads / c.kv_heads);
                    let sc: Vec<f64> = (0..=i)
                        .map(|j| {
                            (0..c.hd)
                                .map(|e| qs[i][h * c.hd + e] * ks[j][kh * c.hd + e])
                                .sum::<f64>()
                                / (c.hd as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|v| (v - m).exp()).sum();
                    for (j, v) in sc.iter().enumerate() {
                        let p = (v - m).exp() / z;
                        for e in 0..c.hd {
                            att[h * c.hd + e] += p * vs[j][kh * c.hd + e];
                        }
                    }
                }
                let o = lin(l, Target::O, &n("attn_output"), &att, c.dim);
                let mut h = xs[i].clone();
                h.iter_mut().zip(o).for_each(|(h, o)| *h += o);
                let xn = rms(&h, &g(&n("ffn_norm")));
                let gt = lin(l, Target::Gate, &n("ffn_gate"), &xn, c.ffn);
                let up = lin(l, Target::Up, &n("ffn_up"), &xn, c.ffn);
                let act: Vec<f64> = gt
                    .iter()
                    .zip(&up)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let d = lin(l, Target::Down, &n("ffn_down"), &act, c.dim);
                h.iter_mut().zip(d).for_each(|(h, d)| *h += d);
                qs[i].clear(); // row i's query is done; keep the buffer shape simple
                xs[i] = h;
            }
        }
        for (i, t) in targets.iter().enumerate() {
            let Some(t) = t else { continue };
            let xf = rms(&xs[i], &g("output_norm.weight"));
            let logits = mv(&g("output.weight"), &xf, c.vocab);
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + logits.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            total += lse - logits[*t as usize];
        }
    }
    total
}
