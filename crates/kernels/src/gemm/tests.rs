//! Every ISA's GEMM against the reference, bit for bit, on awkward shapes,
//! strided and transposed views, quantized B, accumulation, every thread
//! count; the reference against f64.

use super::*;
use crate::{GgmlType, ThreadPool};
use rand::{Rng, SeedableRng};

fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

const SHAPES: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (1, 7, 3),
    (3, 5, 33),
    (8, 8, 8),
    (9, 17, 31),
    (13, 300, 40),
    (16, 64, 96),
    (37, 257, 70),
    (6, 520, 5),
    (70, 33, 130),
];

#[test]
fn reference_matches_f64() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (m, k, n) = (7, 300, 11);
    let a = random(&mut rng, m * k);
    let b = random(&mut rng, k * n);
    let mut c = vec![0f32; m * n];
    let av = MatRef::row_major(&a, m, k).unwrap();
    let bv = MatRef::row_major(&b, k, n).unwrap();
    gemm_reference(av, Rhs::F32(bv), &mut c, n, false).unwrap();
    for i in 0..m {
        for j in 0..n {
            let exact: f64 = (0..k)
                .map(|t| a[i * k + t] as f64 * b[t * n + j] as f64)
                .sum();
            let mag: f64 = (0..k)
                .map(|t| (a[i * k + t] as f64 * b[t * n + j] as f64).abs())
                .sum();
            let tol = (k as f64 + 2.0) * f32::EPSILON as f64 * mag;
            assert!((c[i * n + j] as f64 - exact).abs() <= tol, "{i} {j}");
        }
    }
}

#[test]
fn every_isa_and_thread_count_is_bit_identical_to_the_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let pools = [ThreadPool::new(1), ThreadPool::new(2), ThreadPool::new(3)];
    for (m, k, n) in SHAPES {
        let a = random(&mut rng, m * k);
        let b = random(&mut rng, k * n);
        let c0 = random(&mut rng, m * n);
        let av = MatRef::row_major(&a, m, k).unwrap();
        let bv = MatRef::row_major(&b, k, n).unwrap();
        for accumulate in [false, true] {
            let mut want = c0.clone();
            gemm_reference(av, Rhs::F32(bv), &mut want, n, accumulate).unwrap();
            for cpu in Cpu::all_available() {
                for pool in &pools {
                    let mut got = c0.clone();
                    gemm_with(cpu, av, Rhs::F32(bv), &mut got, n, accumulate, pool).unwrap();
                    let what = format!(
                        "{:?} {m}x{k}x{n} acc {accumulate} threads {}",
                        cpu.isa(),
                        pool.threads()
                    );
                    same_bits(&got, &want, &what);
                }
            }
        }
    }
}

#[test]
fn transposed_and_strided_views_and_a_strided_c() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let pool = ThreadPool::new(2);
    for (m, k, n) in SHAPES {
        // A stored transposed (k x m), B as every other column of a k x 2n
        // block, C inside a wider buffer (ldc = n + 5), the gaps untouched.
        let at = random(&mut rng, k * m);
        let bw = random(&mut rng, k * 2 * n);
        let a = MatRef::row_major(&at, k, m).unwrap().t();
        let b = MatRef::new(&bw, k, n, 2 * n, 2).unwrap();
        let ldc = n + 5;
        let c0 = random(&mut rng, m * ldc);
        let mut want = c0.clone();
        gemm_reference(a, Rhs::F32(b), &mut want, ldc, true).unwrap();
        for cpu in Cpu::all_available() {
            let mut got = c0.clone();
            gemm_with(cpu, a, Rhs::F32(b), &mut got, ldc, true, &pool).unwrap();
            same_bits(&got, &want, &format!("{:?} {m}x{k}x{n}", cpu.isa()));
        }
        // The reference itself, against a plain f64 sum on the views.
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = c0[i * ldc + j] as f64
                    + (0..k)
                        .map(|t| at[t * m + i] as f64 * bw[t * 2 * n + 2 * j] as f64)
                        .sum::<f64>();
                assert!((want[i * ldc + j] as f64 - exact).abs() < 1e-4 * (k as f64 + 1.0));
            }
            for j in n..ldc {
                assert_eq!(want[i * ldc + j].to_bits(), c0[i * ldc + j].to_bits());
            }
        }
    }
}

/// Random rows of a quantized type with small finite f16 scales.
fn quant_rows(rng: &mut impl Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    use GgmlType::*;
    let offsets: &[usize] = match ty {
        Q4_0 | Q8_0 => &[0],
        Q4_1 | Q4_K => &[0, 2],
        Q6_K => &[208],
        _ => unreachable!(),
    };
    let bb = ty.block_bytes() as usize;
    let mut b: Vec<u8> = (0..rows * cols / ty.block_size() as usize * bb)
        .map(|_| rng.gen())
        .collect();
    for block in b.chunks_exact_mut(bb) {
        for &o in offsets {
            let d = half::f16::from_f32(rng.gen_range(-0.05..0.05));
            block[o..o + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    b
}

#[test]
fn quantized_b_is_bit_identical_to_the_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let cases = [
        (GgmlType::Q4_1, 96, 576),
        (GgmlType::Q4_1, 300, 64),
        (GgmlType::Q4_0, 33, 160),
        (GgmlType::Q8_0, 17, 32),
        (GgmlType::Q4_K, 40, 768),
        (GgmlType::Q6_K, 9, 256),
    ];
    for (ty, rows, cols) in cases {
        let bytes = quant_rows(&mut rng, ty, rows, cols);
        let w = QMatrix::new(ty, rows, cols, &bytes).unwrap();
        for m in [1, 8, 19] {
            let a = random(&mut rng, m * rows);
            let av = MatRef::row_major(&a, m, rows).unwrap();
            let mut want = vec![0f32; m * cols];
            gemm_reference(av, Rhs::Quant(w), &mut want, cols, false).unwrap();
            for cpu in Cpu::all_available() {
                for pool in &pools {
                    let mut got = vec![f32::NAN; m * cols];
                    gemm_with(cpu, av, Rhs::Quant(w), &mut got, cols, false, pool).unwrap();
                    let what = format!("{ty} {:?} m {m} threads {}", cpu.isa(), pool.threads());
                    same_bits(&got, &want, &what);
                }
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let a = vec![0f32; 6];
    let b = vec![0f32; 12];
    let av = MatRef::row_major(&a, 2, 3).unwrap();
    let pool = ThreadPool::new(1);
    // k mismatch: B is 4 x 3.
    let b43 = MatRef::row_major(&b, 4, 3).unwrap();
    let mut c = vec![0f32; 6];
    assert!(gemm(av, Rhs::F32(b43), &mut c, 3, false, &pool).is_err());
    // C too short, and a stride below n.
    let b34 = MatRef::row_major(&b, 3, 4).unwrap();
    let mut short = vec![0f32; 7];
    assert!(gemm(av, Rhs::F32(b34), &mut short, 4, false, &pool).is_err());
    assert!(gemm(av, Rhs::F32(b34), &mut c, 3, false, &pool).is_err());
    // Views that reach past their data.
    assert!(MatRef::new(&a, 2, 3, 4, 1).is_err());
    assert!(MatRef::row_major(&a, 2, 2).is_err());
    assert!(MatRef::new(&a, 3, 2, usize::MAX, 1).is_err());
}

#[test]
fn empty_k_zeroes_or_keeps_c() {
    let pool = ThreadPool::new(2);
    let a: Vec<f32> = Vec::new();
    let av = MatRef::new(&a, 3, 0, 0, 1).unwrap();
    let bv = MatRef::new(&a, 0, 2, 2, 1).unwrap();
    let mut c = vec![5f32; 6];
    gemm(av, Rhs::F32(bv), &mut c, 2, true, &pool).unwrap();
    assert_eq!(c, vec![5.0; 6]);
    gemm(av, Rhs::F32(bv), &mut c, 2, false, &pool).unwrap();
    assert_eq!(c, vec![0.0; 6]);
}
