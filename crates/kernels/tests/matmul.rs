//! matmul against a naive reference (dequantize the whole matrix, triple
//! loop in f64), and bit-identity across thread counts and tilings.

use cria_kernels::{
    can_group, dequantize_row, matmul, matmul_f32_with, matmul_packed, matmul_packed_many,
    matmul_with, Cpu, ErrorKind, GgmlType, PackedMatrix, QMatrix, ThreadPool,
};
use rand::{Rng, SeedableRng};

/// Offsets of the f16 scale fields in one block, so random blocks get
/// finite, moderate scales (random bytes there could be inf or NaN).
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Random bytes for a `rows x cols` matrix of `ty` with sane scales.
fn random_matrix(rng: &mut impl Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| rng.gen_range(-1.0f32..1.0).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| half::f16::from_f32(rng.gen_range(-1.0..1.0)).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(rng.gen_range(-1.0..1.0)).to_le_bytes())
            .collect(),
        _ => {
            let bb = ty.block_bytes() as usize;
            let mut b: Vec<u8> = (0..n / ty.block_size() as usize * bb)
                .map(|_| rng.gen())
                .collect();
            for block in b.chunks_exact_mut(bb) {
                for &o in scale_offsets(ty) {
                    let d = half::f16::from_f32(rng.gen_range(-0.05..0.05));
                    block[o..o + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
            b
        }
    }
}

fn naive(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
    let mut w = vec![0f32; rows * cols];
    dequantize_row(ty, bytes, &mut w).unwrap();
    let n = x.len() / cols;
    let mut out = vec![0f64; n * rows];
    for i in 0..n {
        for r in 0..rows {
            out[i * rows + r] = (0..cols)
                .map(|k| w[r * cols + k] as f64 * x[i * cols + k] as f64)
                .sum();
        }
    }
    out
}

#[test]
fn matches_naive_and_is_identical_across_threads_and_isas() {
    use GgmlType::*;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // (type, rows, cols, n): awkward row counts (not multiples of the panel
    // or tile) and batch sizes (1, primes, not multiples of the tile).
    let cases = [
        (Q4_1, 37, 96, 5),
        (Q4_1, 1, 32, 1),
        (Q4_0, 17, 64, 7),
        (Q5_0, 33, 32, 3),
        (Q5_1, 5, 160, 2),
        (Q8_0, 50, 96, 9),
        (Q2_K, 19, 256, 3),
        (Q3_K, 6, 512, 4),
        (Q4_K, 21, 256, 6),
        (Q5_K, 3, 256, 1),
        (Q6_K, 18, 256, 5),
        (IQ4_NL, 13, 96, 5),
        (IQ4_XS, 7, 512, 6),
        (F32, 9, 7, 3),
        (F16, 20, 33, 4),
        (BF16, 4, 15, 11),
        (Q4_1, 0, 32, 3),
        (Q4_1, 4, 32, 0),
    ];
    for (ty, rows, cols, n) in cases {
        let bytes = random_matrix(&mut rng, ty, rows, cols);
        let w = QMatrix::new(ty, rows, cols, &bytes).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let want = naive(ty, &bytes, rows, cols, &x);

        let mut wrow = vec![0f32; cols];
        for cpu in Cpu::all_available() {
            // The integer path: the same bits for any thread count, within
            // activation-quantization error of the naive product.
            let mut first = vec![f32::NAN; n * rows];
            matmul_with(cpu, &w, &x, &mut first, &ThreadPool::new(1)).unwrap();
            for threads in [2, 3, 8] {
                let mut out = vec![f32::NAN; n * rows];
                matmul_with(cpu, &w, &x, &mut out, &ThreadPool::new(threads)).unwrap();
                let same = out
                    .iter()
                    .zip(&first)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty} {:?}: {threads} threads differ", cpu.isa());
            }
            for i in 0..n {
                let xi = &x[i * cols..(i + 1) * cols];
                let amax = xi.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                for r in 0..rows {
                    w.dequantize_row(r, &mut wrow).unwrap();
                    let l1: f64 = wrow.iter().map(|v| v.abs() as f64).sum();
                    let tol = l1 * amax / 127.0 + 1e-4;
                    let (got, e) = (first[i * rows + r] as f64, want[i * rows + r]);
                    assert!(
                        (got - e).abs() <= tol,
                        "{ty} {:?} ({i},{r}): {got} vs {e}",
                        cpu.isa()
                    );
                }
            }

            // The f32 path: exact to float rounding.
            let mut first = vec![f32::NAN; n * rows];
            matmul_f32_with(cpu, &w, &x, &mut first, &ThreadPool::new(1)).unwrap();
            for threads in [2, 3, 8] {
                let mut out = vec![f32::NAN; n * rows];
                matmul_f32_with(cpu, &w, &x, &mut out, &ThreadPool::new(threads)).unwrap();
                let same = out
                    .iter()
                    .zip(&first)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{ty} {:?}: {threads} threads differ from 1",
                    cpu.isa()
                );
            }
            for i in 0..n {
                for r in 0..rows {
                    let got = first[i * rows + r];
                    // Bit-identical to the ISA's own dot product of the row...
                    w.dequantize_row(r, &mut wrow).unwrap();
                    let d = cpu.dot(&wrow, &x[i * cols..(i + 1) * cols]);
                    assert_eq!(got.to_bits(), d.to_bits(), "{ty} {:?} ({i},{r})", cpu.isa());
                    // ...and within f32 rounding of the f64 naive product.
                    let mag: f64 = (0..cols)
                        .map(|k| (wrow[k] as f64 * x[i * cols + k] as f64).abs())
                        .sum();
                    let tol = 2.0 * (cols as f64 + 2.0) * f32::EPSILON as f64 * mag + 1e-30;
                    let e = want[i * rows + r];
                    assert!(
                        (got as f64 - e).abs() <= tol,
                        "{ty} {:?} ({i},{r}): {got} vs {e}",
                        cpu.isa()
                    );
                }
            }
        }
        let mut out = vec![0f32; n * rows];
        matmul(&w, &x, &mut out, &ThreadPool::new(2)).unwrap();
    }
}

/// Whether this machine runs the packed kernels (the condition of
/// `PackedMatrix::pack`): where it does, a test that cannot pack fails
/// instead of skipping.
fn packs() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cria_kernels::Cpu::get().isa() == cria_kernels::Isa::Avx512
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Packed panels (alone and grouped with other matrices of the same input)
/// give the very bits of the unpacked product, for every thread count.
#[test]
fn packed_and_grouped_products_match_unpacked_bits() {
    use GgmlType::*;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (ty, cols) in [
        (Q4_0, 96),
        (Q4_1, 64),
        (Q8_0, 160),
        (Q4_K, 512),
        (Q5_K, 256),
        (Q6_K, 768),
    ] {
        // Row counts: not multiples of the 8-row panel; one matrix of 1 row.
        let shapes = [29, 8, 1];
        let bytes: Vec<Vec<u8>> = shapes
            .iter()
            .map(|&rows| random_matrix(&mut rng, ty, rows, cols))
            .collect();
        let qs: Vec<QMatrix> = shapes
            .iter()
            .zip(&bytes)
            .map(|(&rows, b)| QMatrix::new(ty, rows, cols, b).unwrap())
            .collect();
        let Some(packed) = qs
            .iter()
            .map(PackedMatrix::pack)
            .collect::<Option<Vec<_>>>()
        else {
            assert!(
                !packs(),
                "{ty}: the machine has the packed kernel but packing failed"
            );
            println!("{ty}: no packed kernel on this machine (needs AVX-512 VNNI); skipped");
            continue;
        };
        let refs: Vec<&PackedMatrix> = packed.iter().collect();
        assert!(can_group(&refs));
        for n in [1, 2, 3, 4, 5, 6, 7, 8, 13, 15] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for threads in [1, 2, 3] {
                let pool = ThreadPool::new(threads);
                let mut grouped: Vec<Vec<f32>> =
                    shapes.iter().map(|&r| vec![f32::NAN; n * r]).collect();
                let mut outs: Vec<&mut [f32]> =
                    grouped.iter_mut().map(|v| v.as_mut_slice()).collect();
                matmul_packed_many(&refs, &mut outs, &x, &pool).unwrap();
                for (m, q) in qs.iter().enumerate() {
                    let mut want = vec![f32::NAN; n * shapes[m]];
                    matmul(q, &x, &mut want, &pool).unwrap();
                    let mut alone = vec![f32::NAN; n * shapes[m]];
                    matmul_packed(&packed[m], &x, &mut alone, &pool).unwrap();
                    for (i, w) in want.iter().enumerate() {
                        assert_eq!(
                            alone[i].to_bits(),
                            w.to_bits(),
                            "{ty} n{n} t{threads} m{m} {i}"
                        );
                        assert_eq!(
                            grouped[m][i].to_bits(),
                            w.to_bits(),
                            "{ty} grouped n{n} m{m} {i}"
                        );
                    }
                }
            }
        }
    }
    // Matrices of different widths cannot share one input.
    let a = random_matrix(&mut rng, Q4_0, 8, 64);
    let b = random_matrix(&mut rng, Q4_0, 8, 32);
    let (Some(pa), Some(pb)) = (
        PackedMatrix::pack(&QMatrix::new(Q4_0, 8, 64, &a).unwrap()),
        PackedMatrix::pack(&QMatrix::new(Q4_0, 8, 32, &b).unwrap()),
    ) else {
        assert!(
            !packs(),
            "the machine has the packed kernel but packing failed"
        );
        println!("grouping check skipped: no packed kernel on this machine");
        return;
    };
    assert!(!can_group(&[&pa, &pb]));
    let (mut o1, mut o2) = (vec![0f32; 8], vec![0f32; 8]);
    let err = matmul_packed_many(
        &[&pa, &pb],
        &mut [&mut o1, &mut o2],
        &[0.0; 64],
        &ThreadPool::new(1),
    )
    .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::BadGroup { .. }), "{err}");
}

#[test]
fn bad_shapes_are_errors() {
    let bytes = vec![0u8; 2 * 20];
    assert!(QMatrix::new(GgmlType::Q4_1, 2, 32, &bytes[..39]).is_err());
    assert!(QMatrix::new(GgmlType::Q4_1, 1, 33, &bytes[..20]).is_err());
    assert!(QMatrix::new(GgmlType::Q4_1, 1, 0, &[]).is_err());
    let err = QMatrix::new(GgmlType::IQ2_XXS, 1, 256, &[0u8; 66])
        .err()
        .unwrap();
    assert_eq!(err.kind(), &ErrorKind::UnsupportedType(GgmlType::IQ2_XXS));

    let w = QMatrix::new(GgmlType::Q4_1, 2, 32, &bytes).unwrap();
    let pool = ThreadPool::new(2);
    assert!(matmul(&w, &[0.0; 33], &mut [0.0; 2], &pool).is_err());
    assert!(matmul(&w, &[0.0; 64], &mut [0.0; 2], &pool).is_err());
    assert!(matmul(&w, &[0.0; 64], &mut [0.0; 4], &pool).is_ok());
    assert!(w.dequantize_row(2, &mut [0.0; 32]).is_err());
}

#[test]
fn simd_dequantizers_match_scalar_on_random_blocks() {
    use GgmlType::*;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for ty in [Q4_0, Q4_1, Q8_0, Q4_K, F16] {
        let cols = 1024;
        let bytes = random_matrix(&mut rng, ty, 3, cols);
        let mut want = vec![0f32; 3 * cols];
        dequantize_row(ty, &bytes, &mut want).unwrap();
        for cpu in Cpu::all_available() {
            let mut got = vec![f32::NAN; 3 * cols];
            cpu.dequantize_row(ty, &bytes, &mut got).unwrap();
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{ty} on {:?}", cpu.isa());
        }
    }
}
