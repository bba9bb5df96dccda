//! LoRA gradients against finite differences of an independent float64
//! reference forward (tests/common), on a tiny random F32 model: two
//! blocks, GQA (4 query heads, 2 KV heads), every target adapted, two
//! sequences of different lengths in one batch, targets on some rows only;
//! the same bits with block activations kept or recomputed.

mod common;

use common::{build, lora, reference_loss};
use cria_kernels::ThreadPool;
use cria_train::net::{self, Batch};

/// Sequences as the reference takes them: tokens and each row's target.
type RefSeqs = Vec<(Vec<u32>, Vec<Option<u32>>)>;

fn batch() -> (Batch, RefSeqs) {
    let seqs: [(Vec<u32>, Vec<bool>); 2] = [
        (
            vec![1, 5, 9, 13, 2, 30, 7],
            vec![false, false, true, true, true, false, true],
        ),
        (vec![3, 17, 25, 8, 39], vec![false, true, true, true, true]),
    ];
    let mut b = Batch::default();
    let mut refs = Vec::new();
    for (t, m) in &seqs {
        b.push(t, m);
        let tg: Vec<Option<u32>> = (0..t.len())
            .map(|i| (i + 1 < t.len() && m[i + 1]).then(|| t[i + 1]))
            .collect();
        refs.push((t.clone(), tg));
    }
    (b, refs)
}

#[test]
fn loss_matches_the_f64_reference() {
    let built = build(7);
    let lo = lora(&built.model, 3, 11);
    let (b, refs) = batch();
    let pool = ThreadPool::new(2);
    let c = net::ctx(&built.model, &lo, &pool, None);
    let ours = net::loss(&c, &built.model, &b).unwrap();
    let p64: Vec<f64> = lo.params.iter().map(|&v| v as f64).collect();
    let want = reference_loss(&built, &lo, &p64, &refs);
    assert!(
        (ours - want).abs() < 1e-4 * want.abs().max(1.0),
        "ours {ours} reference {want}"
    );
}

#[test]
fn gradients_match_finite_differences() {
    let built = build(7);
    let lo = lora(&built.model, 3, 11);
    let (b, refs) = batch();
    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        let c = net::ctx(&built.model, &lo, &pool, None);
        let mut grad = vec![0.0f32; lo.params.len()];
        net::loss_and_grad(&c, &built.model, &b, 1.0, &mut grad).unwrap();
        let p64: Vec<f64> = lo.params.iter().map(|&v| v as f64).collect();
        // Every slot's A and B: a few entries each.
        let mut checked = 0;
        let mut worst = 0.0f64;
        for s in &lo.slots {
            for &at in &[
                s.a,
                s.a + 5,
                s.b - 1,
                s.b,
                s.b + 4,
                s.b + s.rows * lo.rank - 1,
            ] {
                let h = 1e-5;
                let mut p = p64.clone();
                p[at] += h;
                let up = reference_loss(&built, &lo, &p, &refs);
                p[at] -= 2.0 * h;
                let down = reference_loss(&built, &lo, &p, &refs);
                let fd = (up - down) / (2.0 * h);
                let g = grad[at] as f64;
                let err = (g - fd).abs() / fd.abs().max(1e-2);
                worst = worst.max(err);
                assert!(
                    err < 2e-3,
                    "{} layer {} param {at}: analytic {g} finite difference {fd}",
                    s.target.name(),
                    s.layer
                );
                checked += 1;
            }
        }
        assert!(checked >= 80, "{checked}");
        eprintln!("{threads} threads: {checked} gradients, worst relative error {worst:.2e}");
    }
}

#[test]
fn gradients_are_the_same_bits_on_any_thread_count() {
    let built = build(3);
    let lo = lora(&built.model, 2, 5);
    let (b, _) = batch();
    let grads: Vec<Vec<f32>> = [1, 2, 3]
        .iter()
        .map(|&t| {
            let pool = ThreadPool::new(t);
            let c = net::ctx(&built.model, &lo, &pool, Some((0.25, 99)));
            let mut g = vec![0.0f32; lo.params.len()];
            net::loss_and_grad(&c, &built.model, &b, 0.5, &mut g).unwrap();
            g
        })
        .collect();
    assert!(grads[0].iter().any(|&g| g != 0.0));
    assert_eq!(grads[0], grads[1]);
    assert_eq!(grads[0], grads[2]);
}

#[test]
fn kept_and_recomputed_activations_give_the_same_bits() {
    let built = build(5);
    let lo = lora(&built.model, 2, 9);
    let (b, _) = batch();
    let pool = ThreadPool::new(2);
    let c = net::ctx(&built.model, &lo, &pool, Some((0.25, 3)));
    // Every block run again; only the last block kept; every block kept.
    let one = one_block_bytes(&built, &lo, &b);
    let grads: Vec<(f64, Vec<f32>)> = [0, one, usize::MAX]
        .iter()
        .map(|&budget| {
            let mut g = vec![0.0f32; lo.params.len()];
            let loss =
                net::loss_and_grad_within(&c, &built.model, &b, 1.0, &mut g, budget).unwrap();
            (loss, g)
        })
        .collect();
    assert!(grads[0].1.iter().any(|&g| g != 0.0));
    for (loss, g) in &grads[1..] {
        assert_eq!(loss.to_bits(), grads[0].0.to_bits());
        assert_eq!(g, &grads[0].1);
    }
}

/// Bytes of block 0's saved activations on this batch.
fn one_block_bytes(built: &common::Built, lo: &cria_train::Lora, b: &Batch) -> usize {
    let pool = ThreadPool::new(1);
    let c = net::ctx(&built.model, lo, &pool, Some((0.25, 3)));
    let mut x = vec![0.0; b.tokens.len() * built.model.config.dim];
    let mut s = cria_train::layer::Saved::default();
    let lw = &built.model.weights.layers[0];
    cria_train::layer::forward(&c, lw, 0, &mut x, &b.seqs, Some(&mut s)).unwrap();
    s.bytes()
}
