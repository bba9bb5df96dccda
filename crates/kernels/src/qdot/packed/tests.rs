//! The packed kernels against the scalar reference, for every type.
use super::*;
use rand::{Rng, SeedableRng};

#[test]
fn packed_matches_reference() {
    use GgmlType::*;
    let mut rng = rand::rngs::StdRng::seed_from_u64(37);
    for ty in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ] {
        if !available(ty) {
            return;
        }
        let nb = if k_code(ty).is_some() { 3 } else { 7 };
        let cols = block_len(ty) * nb;
        let rows = 13;
        let bb = ty.block_bytes() as usize;
        let rb = nb * bb;
        let mut w: Vec<u8> = (0..rows * rb).map(|_| rng.gen()).collect();
        let scales: &[usize] = if ty == Q6_K { &[208] } else { &[0, 2] };
        for blk in w.chunks_exact_mut(bb) {
            for &o in scales {
                let d = half::f16::from_f32(rng.gen_range(-0.05..0.05));
                blk[o..o + 2].copy_from_slice(&d.to_le_bytes());
            }
        }
        let packed = pack(ty, &w, rows, rb, nb);
        let pb = block_bytes(ty);
        for n in [1, 4, 8, 11] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let mut a = QuantActs::default();
            a.quantize(super::super::act_kind(ty).unwrap(), &x, cols);
            for p in 0..rows.div_ceil(PANEL) {
                for j in 0..n {
                    let mut o = [[f32::NAN; PANEL]; 1];
                    // SAFETY: checked `available`; panel p exists.
                    unsafe {
                        panel_dot::<1>(
                            ty,
                            packed[p * nb * pb..].as_ptr(),
                            nb,
                            &a,
                            j,
                            OutRows::of(&mut o),
                        )
                    };
                    let mut o4 = [[f32::NAN; PANEL]; 4];
                    if j + 4 <= n {
                        // SAFETY: as above, rows j..j + 4 exist.
                        unsafe {
                            let o4 = OutRows::of(&mut o4);
                            panel_dot::<4>(ty, packed[p * nb * pb..].as_ptr(), nb, &a, j, o4)
                        };
                    }
                    let mut o8 = [[f32::NAN; PANEL]; 8];
                    if j + 8 <= n {
                        // SAFETY: as above, rows j..j + 8 exist.
                        unsafe {
                            let o8 = OutRows::of(&mut o8);
                            panel_dot::<8>(ty, packed[p * nb * pb..].as_ptr(), nb, &a, j, o8)
                        };
                    }
                    for k in 0..PANEL.min(rows - p * PANEL) {
                        let r = p * PANEL + k;
                        let want =
                            super::super::dot_ref(ty, &w[r * rb..(r + 1) * rb], &a, j).unwrap();
                        assert_eq!(o[0][k].to_bits(), want.to_bits(), "{ty} n{n} ({j},{r})");
                        if j + 4 <= n {
                            assert_eq!(o4[0][k].to_bits(), want.to_bits(), "{ty} x4 ({j},{r})");
                        }
                        if j + 8 <= n {
                            assert_eq!(o8[0][k].to_bits(), want.to_bits(), "{ty} x8 ({j},{r})");
                        }
                    }
                }
                // Rows j0..n in one call (every count 1..=11, past one
                // pass of 8), stored straight into rows `stride` apart:
                // the panel's live lanes only.
                let (stride, live) = (PANEL + 3, PANEL.min(rows - p * PANEL));
                for j0 in 0..n {
                    let mut flat = vec![f32::NAN; (n - j0) * stride];
                    // SAFETY: checked `available`; panel p exists; rows
                    // j0..n exist and `flat` holds them, `stride` >= live.
                    unsafe {
                        let o = OutRows::new(flat.as_mut_ptr(), stride, live);
                        let panel = packed[p * nb * pb..].as_ptr();
                        panel_dot_rows(ty, panel, nb, &a, j0, n - j0, o)
                    };
                    for (jj, row) in flat.chunks_exact(stride).enumerate() {
                        let j = j0 + jj;
                        for (k, v) in row.iter().enumerate() {
                            if k >= live {
                                assert!(v.is_nan(), "{ty} rows {j0}.. lane {k} stored");
                                continue;
                            }
                            let r = p * PANEL + k;
                            let want =
                                super::super::dot_ref(ty, &w[r * rb..(r + 1) * rb], &a, j).unwrap();
                            assert_eq!(v.to_bits(), want.to_bits(), "{ty} rows {j0}.. ({j},{r})");
                        }
                    }
                }
            }
        }
    }
}
