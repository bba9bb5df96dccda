//! LoRA gradients against finite differences of an independent float64
//! reference forward (tests/common), on a tiny random F32 model: two
//! blocks, GQA (4 query heads, 2 KV heads), every target adapted, two
//! sequences of different lengths in one batch, targets on some rows only.

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
