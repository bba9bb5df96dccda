//! Every ISA's integer tiles against the scalar reference, and the
//! reference against an f64 dot of the dequantized operands.

use super::*;
use crate::dequantize_row;
use rand::{Rng, SeedableRng};

/// Random rows of `ty` with small finite f16 scales.
fn random_rows(rng: &mut impl Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    use GgmlType::*;
    let offsets: &[usize] = match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
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

const TYPES: [GgmlType; 10] = [
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// |a - b| within `k` ulps of the sum of |terms| (a reordered f32 sum).
fn close(a: f32, b: f64, mag: f64, terms: usize) -> bool {
    (a as f64 - b).abs() <= 4.0 * (terms as f64 + 4.0) * f32::EPSILON as f64 * mag + 1e-30
}

#[test]
fn reference_matches_f64_of_dequantized_operands() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for ty in TYPES {
        let bs = act_kind(ty).unwrap().block();
        for cols in [bs, 3 * bs, 7 * bs] {
            let w = random_rows(&mut rng, ty, 1, cols);
            let x: Vec<f32> = (0..2 * cols).map(|_| rng.gen_range(-3.0..3.0)).collect();
            let mut a = QuantActs::default();
            a.quantize(act_kind(ty).unwrap(), &x, cols);
            let mut wf = vec![0f32; cols];
            dequantize_row(ty, &w, &mut wf).unwrap();
            let mut xf = vec![0f32; cols];
            for j in 0..2 {
                a.dequantize(act_kind(ty).unwrap(), j, &mut xf);
                let mut exact: f64 = wf.iter().zip(&xf).map(|(a, b)| *a as f64 * *b as f64).sum();
                // Q4_1/Q5_1: the min term uses the stored block sum `s`
                // (kept as f16, as llama.cpp keeps it), not the sum of the
                // dequantized activations.
                if super::has_min(ty) {
                    let bb = ty.block_bytes() as usize;
                    for (b, blk) in w.chunks_exact(bb).enumerate() {
                        let m = super::block32(ty, blk).2 as f64;
                        let xsum: f64 = xf[32 * b..32 * (b + 1)].iter().map(|&v| v as f64).sum();
                        exact += m * (a.s[j * (cols / 32) + b] as f64 - xsum);
                    }
                }
                let mag: f64 = wf
                    .iter()
                    .zip(&xf)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                let got = dot_ref(ty, &w, &a, j).unwrap();
                assert!(
                    close(got, exact, mag, cols / 16),
                    "{ty} {cols}: {got} vs {exact}"
                );
                // The quantized activations stay within half a step of x,
                // plus the f16 rounding of the 32-block scale (relative
                // 2^-11, as llama.cpp stores it).
                for (q, v) in xf.iter().zip(&x[j * cols..]) {
                    assert!((q - v).abs() <= 3.0 / 127.0 * 0.5 + 3.0 / 2048.0 + 1e-6);
                }
            }
        }
    }
}

#[test]
fn every_isa_tile_matches_reference_and_shapes_agree() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    for cpu in Cpu::all_available() {
        for ty in TYPES {
            let Some(k) = kernel(cpu, ty) else { continue };
            let bs = k.act.block();
            for cols in [bs, 2 * bs, 5 * bs, 18 * bs] {
                let (rows, n) = (4, 4);
                let w = random_rows(&mut rng, ty, rows, cols);
                let rb = w.len() / rows;
                let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let mut a = QuantActs::default();
                a.quantize(k.act, &x, cols);
                let mut t44 = [0f32; 16];
                // SAFETY: `k` is for `cpu`; 4 rows and 4 activation rows.
                unsafe { (k.tiles[0])(w.as_ptr(), rb, &a, 0, &mut t44) };
                for r in 0..rows {
                    for j in 0..n {
                        let row = &w[r * rb..(r + 1) * rb];
                        let want = dot_ref(ty, row, &a, j).unwrap();
                        let mut xf = vec![0f32; cols];
                        a.dequantize(k.act, j, &mut xf);
                        let mut wf = vec![0f32; cols];
                        dequantize_row(ty, row, &mut wf).unwrap();
                        let mag: f64 = wf
                            .iter()
                            .zip(&xf)
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                            .sum();
                        let got = t44[r * 4 + j];
                        // The very bits of the reference (same integer
                        // sums, same fused steps), which is what makes
                        // batching invariant.
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{ty} {:?} ({r},{j})",
                            cpu.isa()
                        );
                        assert!(
                            close(got, want as f64, mag, cols / 8),
                            "{ty} {:?} cols {cols} ({r},{j}): {got} vs {want}",
                            cpu.isa()
                        );
                        // Every other tile shape gives the same bits.
                        let mut t = [0f32; 16];
                        for (s, &(rr, nn)) in TILE_SHAPES.iter().enumerate().skip(1) {
                            let (r0, j0) = (r / rr * rr, j / nn * nn);
                            // SAFETY: as above, a sub-tile of the 4 x 4.
                            unsafe { (k.tiles[s])(w[r0 * rb..].as_ptr(), rb, &a, j0, &mut t) };
                            let v = t[(r - r0) * nn + (j - j0)];
                            assert_eq!(
                                v.to_bits(),
                                got.to_bits(),
                                "{ty} {:?} shape {rr}x{nn}",
                                cpu.isa()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn zero_activations_quantize_to_zero() {
    let mut a = QuantActs::default();
    a.quantize(ActKind::Q8K, &[0.0; 256], 256);
    assert!(a.qs[..256].iter().all(|&q| q == 0) && a.d[0] == 0.0);
}

/// The AVX-512 activation quantizer gives exactly the scalar loop's bytes,
/// scale and sum, rounding ties (x.5) to even as llama.cpp's x86 build does.
#[cfg(target_arch = "x86_64")]
#[test]
fn quant32_simd_matches_scalar() {
    use rand::{Rng, SeedableRng};
    // The quantizer this machine dispatches to is checked always; the
    // AVX-512 one directly as well when the machine has it.
    let simd = super::quant_avx512();
    println!("Q8x32 quantizer: dispatch checked, AVX-512 direct: {simd}");
    let mut acts = QuantActs::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for case in 0..2000 {
        let mut x: Vec<f32> = (0..32).map(|_| rng.gen_range(-3.0..3.0)).collect();
        if case % 3 == 0 {
            // amax 127 makes the scale 1: exact ties at k + 0.5.
            for v in x.iter_mut() {
                *v = (rng.gen_range(-254i32..=254) as f32) * 0.5;
            }
            x[0] = 127.0;
        }
        if case == 1 {
            x.iter_mut().for_each(|v| *v = 0.0);
        }
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let want: Vec<i8> = x
            .iter()
            .map(|&v| (v * id).round_ties_even().clamp(-127.0, 127.0) as i8)
            .collect();
        let sum = want.iter().map(|&q| q as i32).sum::<i32>();
        acts.quantize(ActKind::Q8x32, &x, 32);
        assert_eq!(acts.qs[..32], want, "case {case}");
        assert_eq!(acts.d[0], half::f16::from_f32(d).to_f32(), "case {case}");
        assert_eq!(acts.qsum[0], sum, "case {case}");
        if simd {
            let mut got = [0i8; 32];
            let (mut gd, mut gs, mut gsum) = ([0f32], [0f32], [0i32]);
            // SAFETY: checked the ISA; one block each.
            unsafe { super::quant_blocks32_avx512(&x, &mut got, &mut gd, &mut gs, &mut gsum) };
            assert_eq!(got.to_vec(), want, "case {case}");
            assert_eq!(gd[0].to_bits(), half::f16::from_f32(d).to_f32().to_bits());
            assert_eq!(gsum[0], sum);
        }
    }
}

/// Rows of many blocks: the AVX-512 quantizer (16 blocks' scales at a
/// time) gives the scalar reference's bytes, scales, scaled sums and sums
/// for every row length from 1 to 40 blocks, with blocks of zeros, exact
/// ties, scales that overflow or underflow f16, NaN and infinity.
#[cfg(target_arch = "x86_64")]
#[test]
fn quant_blocks32_simd_matches_scalar() {
    use rand::{Rng, SeedableRng};
    if !super::quant_avx512() {
        println!("no AVX-512: the SIMD quantizer is not run here");
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for nb in 1..=40usize {
        for round in 0..20 {
            let mut x: Vec<f32> = (0..32 * nb).map(|_| rng.gen_range(-3.0..3.0)).collect();
            for (b, xb) in x.chunks_exact_mut(32).enumerate() {
                match (b + round) % 9 {
                    0 => xb.iter_mut().for_each(|v| *v = 0.0),
                    1 => {
                        for v in xb.iter_mut() {
                            *v = (rng.gen_range(-254i32..=254) as f32) * 0.5;
                        }
                        xb[0] = 127.0;
                    }
                    2 => xb.iter_mut().for_each(|v| *v *= 1e30),
                    3 => xb.iter_mut().for_each(|v| *v *= 1e-30),
                    4 => xb[7] = f32::NAN,
                    5 => xb.iter_mut().for_each(|v| *v *= 1e5),
                    6 => xb[3] = f32::NEG_INFINITY,
                    _ => {}
                }
            }
            let (mut wq, mut wd, mut ws, mut wsum) = (
                vec![0i8; 32 * nb],
                vec![0f32; nb],
                vec![0f32; nb],
                vec![0i32; nb],
            );
            super::quant_blocks32(&x, &mut wq, &mut wd, &mut ws, &mut wsum);
            let (mut gq, mut gd, mut gs, mut gsum) = (
                vec![0i8; 32 * nb],
                vec![0f32; nb],
                vec![0f32; nb],
                vec![0i32; nb],
            );
            // SAFETY: checked the ISA; every buffer holds nb blocks.
            unsafe { super::quant_blocks32_avx512(&x, &mut gq, &mut gd, &mut gs, &mut gsum) };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(gq, wq, "{nb} blocks, round {round}");
            assert_eq!(bits(&gd), bits(&wd), "{nb} blocks, round {round}");
            assert_eq!(bits(&gs), bits(&ws), "{nb} blocks, round {round}");
            assert_eq!(gsum, wsum, "{nb} blocks, round {round}");
        }
    }
}

/// The AVX-512 Q8_K quantizer gives exactly the scalar block's bytes, sums
/// and scale, including ties in magnitude (the first value's sign wins),
/// exact rounding ties and all-zero blocks.
#[cfg(target_arch = "x86_64")]
#[test]
fn quant256_k_simd_matches_scalar() {
    use rand::{Rng, SeedableRng};
    let simd = super::quant_avx512();
    println!("Q8K quantizer: dispatch checked, AVX-512 direct: {simd}");
    let mut acts = QuantActs::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for case in 0..1000 {
        let mut x: Vec<f32> = (0..256).map(|_| rng.gen_range(-3.0..3.0)).collect();
        match case % 4 {
            0 => {
                // -127 / max = +-1: exact ties at k + 0.5.
                for v in x.iter_mut() {
                    *v = (rng.gen_range(-254i32..=254) as f32) * 0.5;
                }
                x[rng.gen_range(0..256)] = -127.0;
            }
            1 => {
                // Two values of the largest magnitude, opposite signs.
                let (i, j) = (rng.gen_range(0..128), rng.gen_range(128..256));
                x[i] = 5.0;
                x[j] = -5.0;
                if case % 8 == 1 {
                    x.swap(i, j);
                }
            }
            2 if case < 10 => x.iter_mut().for_each(|v| *v = 0.0),
            _ => {}
        }
        let (mut want_q, mut want_s) = ([0i8; 256], [0i16; 16]);
        let want_d = super::quant256_k(&x, &mut want_q, &mut want_s);
        acts.quantize(ActKind::Q8K, &x, 256);
        assert_eq!(acts.d[0].to_bits(), want_d.to_bits(), "case {case}");
        assert_eq!(acts.qs[..256], want_q, "case {case}");
        assert_eq!(acts.bsums[..16], want_s, "case {case}");
        if simd {
            let (mut got_q, mut got_s) = ([0i8; 256], [0i16; 16]);
            // SAFETY: checked the ISA; 256 elements and 16 sums.
            let got_d = unsafe {
                super::quant256_k_avx512(x.as_ptr(), got_q.as_mut_ptr(), got_s.as_mut_ptr())
            };
            assert_eq!(
                got_d.map(f32::to_bits),
                Some(want_d.to_bits()),
                "case {case}"
            );
            assert_eq!(got_q, want_q, "case {case}");
            assert_eq!(got_s, want_s, "case {case}");
        }
    }
    // A NaN: the SIMD quantizer declines and the scalar loop decides.
    let mut x = [1.0f32; 256];
    x[7] = f32::NAN;
    let (mut want_q, mut want_s) = ([0i8; 256], [0i16; 16]);
    let want_d = super::quant256_k(&x, &mut want_q, &mut want_s);
    acts.quantize(ActKind::Q8K, &x, 256);
    assert_eq!(acts.qs[..256], want_q);
    assert_eq!(acts.d[0].to_bits(), want_d.to_bits());
    if simd {
        let (mut q, mut s) = ([0i8; 256], [0i16; 16]);
        // SAFETY: as above.
        assert!(
            unsafe { super::quant256_k_avx512(x.as_ptr(), q.as_mut_ptr(), s.as_mut_ptr()) }
                .is_none()
        );
    }
}
