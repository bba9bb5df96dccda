//! Every row op against its scalar reference on every ISA this machine
//! has (the scalar path included), and the references against f64.

use super::*;
use rand::{Rng, SeedableRng};

/// Distance in units in the last place between two finite floats of
/// the same sign (0 and subnormals included).
fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn exp_is_within_one_ulp_of_std() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut xs: Vec<f32> = (0..200_000).map(|_| rng.gen_range(-110.0..90.0)).collect();
    xs.extend((0..100_000).map(|_| rng.gen_range(-1.0f32..1.0)));
    xs.extend((0..100_000).map(|_| rng.gen_range(-20.0f32..0.0)));
    // Every float in [-1, 1] near 0, the ends of the range and the
    // rounding boundaries of n.
    xs.extend((0..1000).map(|i| i as f32 * 1e-7));
    xs.extend([
        0.0, -0.0, 88.72, 88.73, 89.0, -87.3, -87.4, -103.9, -104.0, -200.0,
    ]);
    xs.extend((-300..300).map(|k| (k as f32 + 0.5) * std::f32::consts::LN_2));
    // Every ISA this machine has; the scalar path is `f32::exp` itself.
    let cpus = Cpu::all_available();
    println!(
        "exp checked on {:?}",
        cpus.iter().map(|c| c.isa()).collect::<Vec<_>>()
    );
    for cpu in cpus {
        let mut got = xs.clone();
        exp_with(cpu, &mut got);
        let mut worst = 0;
        for (&x, &g) in xs.iter().zip(&got) {
            let want = x.exp();
            let d = ulps(g, want);
            assert!(d <= 1, "{:?}: exp({x}) = {g}, std {want}", cpu.isa());
            worst = worst.max(d);
        }
        assert!(worst <= 1);
    }
}

#[test]
fn exp_special_values() {
    for cpu in Cpu::all_available() {
        let mut x = [
            f32::NEG_INFINITY,
            -1000.0,
            f32::INFINITY,
            1000.0,
            0.0,
            f32::NAN,
        ];
        exp_with(cpu, &mut x);
        assert_eq!(x[0], 0.0, "{:?}", cpu.isa());
        assert_eq!(x[1], 0.0);
        assert_eq!(x[2], f32::INFINITY);
        assert_eq!(x[3], f32::INFINITY);
        assert_eq!(x[4], 1.0);
        assert!(x[5].is_nan());
    }
}

#[test]
fn results_do_not_depend_on_position_in_the_slice() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let x: Vec<f32> = (0..100).map(|_| rng.gen_range(-12.0..12.0)).collect();
    let u: Vec<f32> = (0..100).map(|_| rng.gen_range(-2.0..2.0)).collect();
    for cpu in Cpu::all_available() {
        let mut whole = x.clone();
        exp_with(cpu, &mut whole);
        let mut gate = x.clone();
        silu_mul_with(cpu, &mut gate, &u);
        for start in 0..x.len() {
            for len in [1, 3, 8, 17] {
                let end = (start + len).min(x.len());
                let mut part = x[start..end].to_vec();
                exp_with(cpu, &mut part);
                assert_eq!(part, whole[start..end], "{:?}", cpu.isa());
                let mut g = x[start..end].to_vec();
                silu_mul_with(cpu, &mut g, &u[start..end]);
                assert_eq!(g, gate[start..end]);
            }
        }
    }
}

#[test]
fn silu_mul_matches_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for len in [0, 1, 7, 8, 9, 15, 16, 17, 33, 1536] {
        let g: Vec<f32> = (0..len).map(|_| rng.gen_range(-30.0..30.0)).collect();
        let u: Vec<f32> = (0..len).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let mut want = g.clone();
        silu_mul_scalar(&mut want, &u);
        for cpu in Cpu::all_available() {
            let mut got = g.clone();
            silu_mul_with(cpu, &mut got, &u);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-30),
                    "{:?} {len}: {a} vs {b}",
                    cpu.isa()
                );
            }
        }
    }
}

#[test]
fn rmsnorm_matches_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for len in [1, 7, 8, 9, 15, 16, 17, 64, 576, 1000] {
        let x: Vec<f32> = (0..len).map(|_| rng.gen_range(-4.0..4.0)).collect();
        let w: Vec<f32> = (0..len).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let mut want = vec![0f32; len];
        rmsnorm_scalar(&mut want, &x, &w, 1e-5);
        for cpu in Cpu::all_available() {
            let mut got = vec![0f32; len];
            rmsnorm_with(cpu, &mut got, &x, &w, 1e-5);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs() + 1e-30,
                    "{:?} {len}: {a} vs {b}",
                    cpu.isa()
                );
            }
        }
    }
}

#[test]
fn softmax_matches_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    for len in [1, 2, 7, 8, 9, 15, 16, 17, 31, 64, 65, 257, 1000] {
        let x: Vec<f32> = (0..len).map(|_| rng.gen_range(-20.0..20.0)).collect();
        let mut want = x.clone();
        softmax_scalar(&mut want);
        for cpu in Cpu::all_available() {
            let mut got = x.clone();
            softmax_with(cpu, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs() + 1e-30 + (len as f32) * 1e-9 * b,
                    "{:?} {len}: {a} vs {b}",
                    cpu.isa()
                );
            }
        }
    }
    for cpu in Cpu::all_available() {
        let mut masked = [0.0, f32::NEG_INFINITY, 0.0];
        softmax_with(cpu, &mut masked);
        assert_eq!(masked, [0.5, 0.0, 0.5]);
        let mut all = [f32::NEG_INFINITY; 3];
        softmax_with(cpu, &mut all);
        assert!(all.iter().all(|v| *v == f32::NEG_INFINITY));
        softmax_with(cpu, &mut []);
    }
}

/// The argmax on every ISA (and the portable lanes) is the one-at-a-time
/// reference's: few distinct values so ties within and across lanes and
/// chains are common, with NaN, -inf, +inf and both zeros; every tail
/// length around the vector and chain widths.
#[test]
fn argmax_matches_reference() {
    let values = [
        f32::NEG_INFINITY,
        f32::NAN,
        -1.5,
        -0.0,
        0.0,
        2.0,
        f32::MAX,
        f32::INFINITY,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let lens = (0..=130).chain([255, 256, 257, 1000, 4099, 49152]);
    for len in lens {
        for trial in 0..24 {
            let k = 1 + trial % values.len();
            let x: Vec<f32> = (0..len).map(|_| values[rng.gen_range(0..k)]).collect();
            let want = argmax_scalar(&x);
            assert_eq!(scalar::argmax_lanes(&x), want, "lanes {len} {trial}");
            for cpu in Cpu::all_available() {
                assert_eq!(argmax_with(cpu, &x), want, "{:?} {len} {trial}", cpu.isa());
            }
        }
    }
    let mut x = vec![1.0f32; 100];
    x[70] = 3.0;
    x[21] = 3.0;
    assert_eq!(argmax_scalar(&x), Some(21));
    assert_eq!(argmax_scalar(&[f32::NAN, f32::NEG_INFINITY]), None);
    assert_eq!(argmax_scalar(&[f32::NAN, -1.0, f32::NAN]), Some(1));
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-4.0f32..4.0)).collect()
}

fn assert_close(got: &[f32], want: &[f64], rel: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= rel * w.abs().max(1e-6),
            "element {i}: {g} vs {w}"
        );
    }
}

#[test]
fn rmsnorm_reference_matches_f64() {
    for n in [1, 7, 33, 576, 1000] {
        let x = random(n, n as u64);
        let g = random(n, 99);
        let mut out = vec![0f32; n];
        rmsnorm_scalar(&mut out, &x, &g, 1e-5);
        let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
        let s = 1.0 / (ms + 1e-5).sqrt();
        let want: Vec<f64> = x
            .iter()
            .zip(&g)
            .map(|(&v, &g)| v as f64 * s * g as f64)
            .collect();
        assert_close(&out, &want, 1e-5);
    }
}

#[test]
#[should_panic(expected = "rmsnorm of different lengths")]
fn rmsnorm_of_different_lengths_panics() {
    rmsnorm_scalar(&mut [0.0], &[1.0], &[1.0, 2.0], 1e-5);
}

#[test]
fn softmax_reference_matches_f64() {
    for n in [1, 7, 33, 1000] {
        let mut x = random(n, n as u64);
        let max = x.iter().copied().fold(f64::MIN, |a, b| a.max(b as f64));
        let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let want: Vec<f64> = e.iter().map(|v| v / sum).collect();
        softmax_scalar(&mut x);
        assert_close(&x, &want, 1e-5);
    }
    let mut masked = [0.0, f32::NEG_INFINITY, 0.0];
    softmax_scalar(&mut masked);
    assert_eq!(masked, [0.5, 0.0, 0.5]);
}

#[test]
fn silu_mul_reference_matches_f64() {
    let mut x = random(1000, 5);
    let up = random(1000, 6);
    let want: Vec<f64> = x
        .iter()
        .zip(&up)
        .map(|(&v, &u)| v as f64 / (1.0 + (-v as f64).exp()) * u as f64)
        .collect();
    silu_mul_scalar(&mut x, &up);
    assert_close(&x, &want, 1e-6);
}

#[test]
fn f16_round_trip() {
    let x = random(37, 6);
    let mut h = vec![f16::ZERO; 37];
    f32_to_f16(&x, &mut h).unwrap();
    let mut back = vec![0f32; 37];
    f16_to_f32(&h, &mut back).unwrap();
    for ((a, b), h) in x.iter().zip(&back).zip(&h) {
        assert_eq!(*h, f16::from_f32(*a));
        assert_eq!(*b, h.to_f32());
        assert!((a - b).abs() <= a.abs() * 1e-3);
    }
    let e = f16_to_f32(&h, &mut back[..3]).unwrap_err();
    assert_eq!(
        e.to_string(),
        crate::Error::length("f32 destination", 37, 3).to_string()
    );
}
