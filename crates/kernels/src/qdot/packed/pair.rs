//! Two panels at a time ([`pair_dot`]): the two panels' 8-row vectors
//! joined into one 512-bit register, so each `vpdpbusd` feeds 16 weight
//! rows. For IQ4_XS and the 32-element types (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, IQ4_NL); the IQ4_XS nibble lookup is one `vpermb` on AVX-512
//! VBMI. Same exact integer sums and f32 steps as [`super::panel_dot`].

use super::*;

/// Whether [`pair_dot`] serves `ty` on this machine: IQ4_XS and the
/// 32-element types, with the packed kernels' ISA (AVX-512 F/BW/VL/VNNI).
pub(crate) fn pair_available(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, IQ4_XS | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL) && available(ty)
}

/// Whether the CPU has AVX-512 VBMI (`vpermb`), detected once.
fn vbmi() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx512vbmi"))
}

/// [`panel_dot`] for two panels at once, `pa` (rows `0..8` of `out`) and
/// `pz` (rows `8..16`), in 512-bit registers: each `vpdpbusd` then feeds 16
/// weight rows instead of 8, at the same instruction rate as the 256-bit
/// form on this project's machines. The types of [`pair_available`]; on
/// AVX-512 VBMI the IQ4_XS codebook lookup is one `vpermb` per source,
/// without masking the nibbles. Bit-identical to [`panel_dot`]: the same
/// exact integer sums per (row, block or super-block), then the same f32
/// operations per lane.
///
/// # Safety
/// [`pair_available`] must be true for `ty`; `pa` and `pz` must each hold
/// `nb` packed blocks; `j0 + N <= a.n`; `a` quantized as `act_kind(ty)`
/// with `a.cols = 256 * nb`; `out` valid for rows `0..N` with at most
/// `2 * PANEL` live lanes.
pub(crate) unsafe fn pair_dot<const N: usize>(
    ty: GgmlType,
    pa: *const u8,
    pz: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    out: OutRows,
) {
    match ty {
        GgmlType::IQ4_XS => pair_dot_with::<N>(vbmi(), pa, pz, nb, a, j0, out),
        GgmlType::Q4_0 => pair32::<N, Q4_0>(pa, pz, nb, a, j0, out),
        GgmlType::Q4_1 => pair32::<N, Q4_1>(pa, pz, nb, a, j0, out),
        GgmlType::Q5_0 => pair32::<N, Q5_0>(pa, pz, nb, a, j0, out),
        GgmlType::Q5_1 => pair32::<N, Q5_1>(pa, pz, nb, a, j0, out),
        GgmlType::IQ4_NL => pair32::<N, IQ4NL>(pa, pz, nb, a, j0, out),
        _ => pair32::<N, Q8_0>(pa, pz, nb, a, j0, out),
    }
}

/// [`pair_dot`] for any number of activation rows from `j0` on, 8 at a
/// time, the last 1 to 7 in one pass over the two panels (each row's
/// outputs are the same bits whatever the count, as for
/// [`super::panel_dot_rows`]). Nothing for 0.
///
/// # Safety
/// As [`pair_dot`], with `j0 + rows <= a.n` and `out` valid for rows
/// `0..rows`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pair_dot_rows(
    ty: GgmlType,
    pa: *const u8,
    pz: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    rows: usize,
    out: OutRows,
) {
    let mut j = 0;
    while j + 8 <= rows {
        pair_dot::<8>(ty, pa, pz, nb, a, j0 + j, out.skip_rows(j));
        j += 8;
    }
    let (j1, o) = (j0 + j, out.skip_rows(j));
    match rows - j {
        0 => {}
        1 => pair_dot::<1>(ty, pa, pz, nb, a, j1, o),
        2 => pair_dot::<2>(ty, pa, pz, nb, a, j1, o),
        3 => pair_dot::<3>(ty, pa, pz, nb, a, j1, o),
        4 => pair_dot::<4>(ty, pa, pz, nb, a, j1, o),
        5 => pair_dot::<5>(ty, pa, pz, nb, a, j1, o),
        6 => pair_dot::<6>(ty, pa, pz, nb, a, j1, o),
        _ => pair_dot::<7>(ty, pa, pz, nb, a, j1, o),
    }
}

/// The two-panel kernel of the 32-element types: [`super::kernel`]'s steps
/// on 16 rows at once (panel `pa`'s 8 in the low half of each register).
///
/// # Safety
/// As [`pair_dot`], with `T` the type's code and `a` quantized in blocks
/// of 32 (`a.cols = 32 * nb`).
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pair32<const N: usize, const T: u8>(
    pa: *const u8,
    pz: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    out: OutRows,
) {
    let cols = a.cols;
    let (xq, xd, xs, xsum) = (a.qs.as_ptr(), a.d.as_ptr(), a.s.as_ptr(), a.qsum.as_ptr());
    let (pb, sc, off) = layout32(T);
    let min = matches!(T, Q4_1 | Q5_1);
    let lut = _mm512_loadu_si512(IQ4_LUT64.as_ptr() as *const _);
    let m4 = _mm512_set1_epi8(0x0F);
    let b10 = _mm512_set1_epi8(0x10);
    // Eight f16 per panel, as 16 f32.
    let halves = |p: *const u8, z: *const u8| {
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(p as *const __m128i)),
            _mm_loadu_si128(z as *const __m128i),
        ))
    };
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        let (p, z) = (pa.add(b * pb), pz.add(b * pb));
        fetch_ahead(p, pb);
        fetch_ahead(z, pb);
        let mut wv = [_mm512_setzero_si512(); 8];
        if T == Q8_0 {
            for t in 0..8 {
                wv[t] = join(p.add(32 * t), z.add(32 * t));
            }
        } else {
            for s in 0..4 {
                let v = join(p.add(32 * s), z.add(32 * s));
                wv[s] = _mm512_and_si512(v, m4);
                wv[4 + s] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
            }
            if matches!(T, Q5_0 | Q5_1) {
                // Bit f of each high-bit byte is source f's fifth bit.
                let h = join(p.add(128), z.add(128));
                let bit = [
                    _mm512_slli_epi16::<4>(h),
                    _mm512_slli_epi16::<3>(h),
                    _mm512_slli_epi16::<2>(h),
                    _mm512_slli_epi16::<1>(h),
                    h,
                    _mm512_srli_epi16::<1>(h),
                    _mm512_srli_epi16::<2>(h),
                    _mm512_srli_epi16::<3>(h),
                ];
                for (w, bit) in wv.iter_mut().zip(bit) {
                    *w = _mm512_or_si512(*w, _mm512_and_si512(bit, b10));
                }
            }
            if T == IQ4NL {
                for w in wv.iter_mut() {
                    *w = _mm512_shuffle_epi8(lut, *w);
                }
            }
        }
        let dv = halves(p.add(sc), z.add(sc));
        let mv = if min {
            halves(p.add(sc + 16), z.add(sc + 16))
        } else {
            _mm512_setzero_ps()
        };
        // Each row's chain starts at `-off * sum(x)` (exact integers, so
        // the same sum as subtracting it at the end, one operation less).
        let mut is = [_mm512_setzero_si512(); N];
        if off != 0 {
            for (j, is) in is.iter_mut().enumerate() {
                let at = (j0 + j) * (cols / 32) + b;
                *is = _mm512_set1_epi32(-(off * *xsum.add(at)));
            }
        }
        for t in 0..8 {
            for j in 0..N {
                let x = xq.add((j0 + j) * cols + 32 * b + 4 * t);
                let xv = _mm512_set1_epi32((x as *const i32).read_unaligned());
                is[j] = _mm512_dpbusd_epi32(is[j], wv[t], xv);
            }
        }
        for j in 0..N {
            let at = (j0 + j) * (cols / 32) + b;
            let isum = is[j];
            let scale = _mm512_mul_ps(dv, _mm512_set1_ps(*xd.add(at)));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[j]);
            if min {
                acc[j] = _mm512_fmadd_ps(mv, _mm512_set1_ps(*xs.add(at)), acc[j]);
            }
        }
    }
    let mask = out.mask(2 * PANEL) as __mmask16;
    for j in 0..N {
        _mm512_mask_storeu_ps(out.row(j), mask, acc[j]);
    }
}

/// [`pair_dot`] with the `vpermb` form chosen by the caller (`vbmi` true
/// only where the CPU has AVX-512 VBMI), so that tests run both.
///
/// # Safety
/// As [`pair_dot`]; `vbmi` only if the CPU has AVX-512 VBMI.
unsafe fn pair_dot_with<const N: usize>(
    vbmi: bool,
    pa: *const u8,
    pz: *const u8,
    nb: usize,
    a: &QuantActs,
    j0: usize,
    out: OutRows,
) {
    if vbmi {
        xs_pair_vbmi::<N>(pa, pz, nb, a, j0, out)
    } else {
        xs_pair::<N>(pa, pz, nb, a, j0, out)
    }
}

/// The IQ4_XS two-panel kernel ([`pair_dot`]), once per ISA: `$vbmi`
/// selects the `vpermb` lookup (and `$feat` must then enable VBMI).
macro_rules! xs_pair_kernel {
    ($name:ident, $feat:literal, $vbmi:literal) => {
        #[allow(clippy::needless_range_loop)]
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn $name<const N: usize>(
            pa: *const u8,
            pz: *const u8,
            nb: usize,
            a: &QuantActs,
            j0: usize,
            out: OutRows,
        ) {
            let cols = a.cols;
            let (xq, xd, xbp) = (a.qs.as_ptr(), a.d.as_ptr(), a.bpairs.as_ptr());
            let (us, sci, _, dof, pb) = k_layout(IQ4XS);
            let lut = _mm512_loadu_si512(IQ4_LUT64.as_ptr() as *const _);
            let m4 = _mm512_set1_epi8(0x0F);
            let mut acc = [_mm512_setzero_ps(); N];
            for b in 0..nb {
                let (p, z) = (pa.add(b * pb), pz.add(b * pb));
                fetch_ahead(p, pb);
                fetch_ahead(z, pb);
                let mut isum = [_mm512_setzero_si512(); N];
                for u in 0..8 {
                    let (qp, qz) = (p.add(us * u), z.add(us * u));
                    let mut wv = [_mm512_setzero_si512(); 8];
                    for s in 0..4 {
                        let v = join(qp.add(32 * s), qz.add(32 * s));
                        let h = _mm512_srli_epi16::<4>(v);
                        if $vbmi {
                            // vpermb reads 6 bits: the table repeats every 16.
                            wv[s] = _mm512_permutexvar_epi8(v, lut);
                            wv[4 + s] = _mm512_permutexvar_epi8(h, lut);
                        } else {
                            wv[s] = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, m4));
                            wv[4 + s] = _mm512_shuffle_epi8(lut, _mm512_and_si512(h, m4));
                        }
                    }
                    let sc = _mm_unpacklo_epi64(
                        _mm_loadl_epi64(qp.add(sci) as *const __m128i),
                        _mm_loadl_epi64(qz.add(sci) as *const __m128i),
                    );
                    let sa = _mm512_cvtepi8_epi32(sc);
                    // Two chains per row over sources 2t and 2t + 1, rows
                    // inner (exact integer sums: order is free).
                    let mut s0 = [_mm512_setzero_si512(); N];
                    let mut s1 = [_mm512_setzero_si512(); N];
                    for t in (0..8).step_by(2) {
                        for j in 0..N {
                            let x = xq.add((j0 + j) * cols + 256 * b + 32 * u);
                            let bx = |src: usize| {
                                _mm512_set1_epi32((x.add(4 * src) as *const i32).read_unaligned())
                            };
                            s0[j] = _mm512_dpbusd_epi32(s0[j], wv[t], bx(t));
                            s1[j] = _mm512_dpbusd_epi32(s1[j], wv[t + 1], bx(t + 1));
                        }
                    }
                    for j in 0..N {
                        let s = _mm512_mullo_epi32(_mm512_add_epi32(s0[j], s1[j]), sa);
                        isum[j] = _mm512_add_epi32(isum[j], s);
                    }
                }
                let dv = _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(
                    _mm256_castsi128_si256(_mm_loadu_si128(p.add(dof) as *const __m128i)),
                    _mm_loadu_si128(z.add(dof) as *const __m128i),
                ));
                // The sub-block scales in Q4_K's mins layout (see kernel_k),
                // panel `pa`'s rows in the low half.
                let mut mn = [_mm512_setzero_si512(); 4];
                for t in 0..4 {
                    let gather = |q: *const u8| {
                        let lo = _mm_loadl_epi64(q.add(us * 2 * t + sci) as *const __m128i);
                        let hi = _mm_loadl_epi64(q.add(us * (2 * t + 1) + sci) as *const __m128i);
                        _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(lo, hi))
                    };
                    mn[t] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(gather(p)), gather(z));
                }
                for j in 0..N {
                    let row = j0 + j;
                    let dx = _mm512_set1_ps(*xd.add(row * nb + b));
                    // The codebook's + 128 taken back, exactly (kernel_k).
                    let bp = xbp.add(row * cols / 64 + 4 * b);
                    let mut m = _mm512_setzero_si512();
                    for t in 0..4 {
                        m = _mm512_dpwssd_epi32(m, mn[t], _mm512_set1_epi32(*bp.add(t)));
                    }
                    isum[j] = _mm512_sub_epi32(isum[j], _mm512_slli_epi32::<7>(m));
                    acc[j] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), _mm512_mul_ps(dv, dx), acc[j]);
                }
            }
            let mask = out.mask(2 * PANEL) as __mmask16;
            for j in 0..N {
                _mm512_mask_storeu_ps(out.row(j), mask, acc[j]);
            }
        }
    };
}

xs_pair_kernel!(
    xs_pair,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    false
);
xs_pair_kernel!(
    xs_pair_vbmi,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi",
    true
);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every two-panel kernel (IQ4_XS in both lookup forms this CPU runs)
    /// gives [`panel_dot`]'s bits (which `packed_matches_reference` ties to
    /// the scalar reference) for every row of both panels, the pad rows of
    /// a partial second panel included.
    #[test]
    fn pair_matches_panels() {
        use GgmlType::*;
        for ty in [IQ4_XS, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL] {
            check_pair(ty);
        }
    }

    fn check_pair(ty: GgmlType) {
        if !pair_available(ty) {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(41);
        let nb = if ty == GgmlType::IQ4_XS { 3 } else { 7 };
        let bb = ty.block_bytes() as usize;
        let (cols, rb, rows) = (block_len(ty) * nb, nb * bb, 13);
        let mut w: Vec<u8> = (0..rows * rb).map(|_| rng.gen()).collect();
        // d first in every block; Q4_1 / Q5_1 also m.
        let scales: &[usize] = if ty == GgmlType::IQ4_XS {
            &[0]
        } else {
            &[0, 2]
        };
        for blk in w.chunks_exact_mut(bb) {
            for &o in scales {
                let d = half::f16::from_f32(rng.gen_range(-0.05..0.05));
                blk[o..o + 2].copy_from_slice(&d.to_le_bytes());
            }
        }
        let packed = pack(ty, &w, rows, rb, nb);
        let pb = nb * block_bytes(ty);
        let (pa, pz) = (packed.as_ptr(), packed[pb..].as_ptr());
        let forms: &[bool] = match (ty, vbmi()) {
            (GgmlType::IQ4_XS, true) => &[false, true],
            _ => &[false],
        };
        let n = 11;
        let x: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let mut a = QuantActs::default();
        a.quantize(crate::qdot::act_kind(ty).unwrap(), &x, cols);
        // The IQ4_XS kernel in the form chosen for 1, 4 and 8 rows; every
        // other case as dispatched (all row counts 1..=11, past one pass of
        // 8).
        let run = |form: bool, j: usize, out: &mut [[f32; 2 * PANEL]]| {
            let (m, o) = (out.len(), OutRows::of(out));
            match m {
                // SAFETY (all): checked `pair_available`; both panels
                // exist; rows j..j + m exist and `out` has m rows; the
                // VBMI form only where detected.
                1 if ty == GgmlType::IQ4_XS => unsafe {
                    pair_dot_with::<1>(form, pa, pz, nb, &a, j, o)
                },
                4 if ty == GgmlType::IQ4_XS => unsafe {
                    pair_dot_with::<4>(form, pa, pz, nb, &a, j, o)
                },
                8 if ty == GgmlType::IQ4_XS => unsafe {
                    pair_dot_with::<8>(form, pa, pz, nb, &a, j, o)
                },
                _ => unsafe { pair_dot_rows(ty, pa, pz, nb, &a, j, m, o) },
            }
        };
        let bits = |o: &[f32; 2 * PANEL]| o.map(f32::to_bits);
        let want: Vec<[u32; 2 * PANEL]> = (0..n)
            .map(|j| {
                let mut o = [[f32::NAN; PANEL]; 1];
                let mut row = [f32::NAN; 2 * PANEL];
                for p in 0..2 {
                    // SAFETY: checked `available`; panel p exists.
                    unsafe {
                        let o = OutRows::of(&mut o);
                        panel_dot::<1>(ty, packed[p * pb..].as_ptr(), nb, &a, j, o)
                    };
                    row[PANEL * p..PANEL * (p + 1)].copy_from_slice(&o[0]);
                }
                bits(&row)
            })
            .collect();
        for &form in forms {
            for j in 0..n {
                for m in 1..=n - j {
                    let mut o = [[f32::NAN; 2 * PANEL]; 11];
                    run(form, j, &mut o[..m]);
                    for (jj, o) in o[..m].iter().enumerate() {
                        assert_eq!(
                            bits(o),
                            want[j + jj],
                            "{ty} vbmi {form} x{m} row {}",
                            j + jj
                        );
                    }
                }
            }
        }
        // Straight into a wider output, as the products store: rows
        // `stride` apart, only the live lanes written.
        let stride = 2 * PANEL + 5;
        for live in [1, 7, 9, 2 * PANEL] {
            let mut flat = vec![f32::NAN; 3 * stride];
            // SAFETY: checked `pair_available`; rows 2..5 exist; `flat`
            // holds 3 rows of `stride` >= `live` lanes.
            unsafe {
                let o = OutRows::new(flat.as_mut_ptr(), stride, live);
                pair_dot_rows(ty, pa, pz, nb, &a, 2, 3, o);
            }
            for (jj, row) in flat.chunks_exact(stride).enumerate() {
                let got: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got[..live], want[2 + jj][..live], "{ty} live {live}");
                assert!(row[live..].iter().all(|v| v.is_nan()), "{ty} live {live}");
            }
        }
    }
}
