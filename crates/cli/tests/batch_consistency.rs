//! A prompt evaluated as one batch must give nearly the logits of the same
//! prompt evaluated token by token. The batched path (a GEMM over 8-row
//! weight panels) and the one-token path (mat-vec tiles) sum in different
//! orders; with 8-bit activations a last-bit difference can flip a rounding
//! in a later layer, so the two agree closely but not exactly (measured:
//! mean KL divergence ~0.002 between them, each ~0.002 from f32 math). A
//! tiling or tail bug gives divergences orders of magnitude larger, which
//! whole-batch perplexity on multiples of 8 rows would not reveal.

mod common;
use cria_model::{KvType, Logits, Model, Session};

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let s = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - m - s).collect()
}

fn kl(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

#[test]
fn batched_prompt_matches_token_by_token() {
    let model = Model::open(common::default_model()).unwrap();
    let nv = model.config.n_vocab;
    // A chat-shaped prompt: <|im_start|>user\n ... <|im_end|>\n, repeated.
    let ids: Vec<u32> = (0..41)
        .map(|i| [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198][i % 12])
        .collect();
    let mut one_by_one = Vec::new();
    let mut s = Session::new(&model, 64, KvType::F16, 64, 2);
    let mut l = Vec::new();
    for &t in &ids {
        model.forward(&mut s, &[t], Logits::Last, &mut l).unwrap();
        one_by_one.extend_from_slice(&l);
    }
    // Lengths around every multiple of the 8-row panels, odd tails included.
    for len in [1usize, 5, 7, 8, 9, 15, 16, 17, 31, 37, 41] {
        let mut batch = Vec::new();
        let mut s = Session::new(&model, 64, KvType::F16, 64, 2);
        model
            .forward(&mut s, &ids[..len], Logits::All, &mut batch)
            .unwrap();
        let mean: f64 = (0..len)
            .map(|i| {
                kl(
                    &one_by_one[i * nv..(i + 1) * nv],
                    &batch[i * nv..(i + 1) * nv],
                )
            })
            .sum::<f64>()
            / len as f64;
        assert!(
            mean < 0.01,
            "prompt of {len} tokens: mean KL divergence {mean} between batched and one-by-one"
        );
    }
}
