//! A prompt evaluated as one batch must give exactly the logits of the same
//! prompt evaluated token by token. The batched path (a GEMM over 8-row
//! weight panels) and the one-token path (mat-vec tiles) are different
//! kernels; they perform the same integer sums and the same fused float
//! steps per output, so a sequence's logits do not depend on how it was
//! batched. That is what lets the server reuse a cached prompt prefix, or
//! batch a request beside others, without changing a seeded answer; it also
//! catches tiling and tail bugs that whole-batch perplexity (on multiples of
//! 8 rows) would not reveal.

mod common;
use cria_model::{KvType, Logits, Model, Session};

#[test]
fn batched_prompt_matches_token_by_token() {
    // 2 threads (attention split by rows and heads) and 1 thread (groups of
    // 4 rows at 41 tokens), f16, f32, q8_0 and q4_0 caches (issue 14: the
    // quantized caches' kernels keep a query's bits whatever its group).
    for (threads, kv) in [
        (2, KvType::F16),
        (1, KvType::F16),
        (1, KvType::F32),
        (2, KvType::Q8_0),
        (1, KvType::Q4_0),
    ] {
        check(threads, kv);
    }
}

fn check(threads: usize, kv: KvType) {
    let model = Model::open(common::default_model()).unwrap();
    let nv = model.config.n_vocab;
    // A chat-shaped prompt: <|im_start|>user\n ... <|im_end|>\n, repeated.
    let ids: Vec<u32> = (0..41)
        .map(|i| [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198][i % 12])
        .collect();
    let mut one_by_one = Vec::new();
    let mut s = Session::new(&model, 64, kv, 64, threads);
    let mut l = Vec::new();
    for &t in &ids {
        model.forward(&mut s, &[t], Logits::Last, &mut l).unwrap();
        one_by_one.extend_from_slice(&l);
    }
    // Lengths around every multiple of the 8-row panels, odd tails included.
    for len in [1usize, 5, 7, 8, 9, 15, 16, 17, 31, 37, 41] {
        let mut batch = Vec::new();
        let mut s = Session::new(&model, 64, kv, 64, threads);
        model
            .forward(&mut s, &ids[..len], Logits::All, &mut batch)
            .unwrap();
        for i in 0..len {
            let (a, b) = (
                &batch[i * nv..(i + 1) * nv],
                &one_by_one[i * nv..(i + 1) * nv],
            );
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{threads} threads, {kv:?} cache, prompt of {len} tokens, position {i}: \
                 batched logits differ from one-by-one"
            );
        }
    }
}
