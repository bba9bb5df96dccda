//! The quantizers against ggml's own bytes (tests/fixtures/quant, made by
//! calling libggml-base's `ggml_quantize_chunk` on the same inputs), and
//! round trips through the dequantizers.

use super::*;
use crate::dequantize_row;

/// The inputs of the fixture: a 32-bit LCG (Numerical Recipes constants)
/// mapped to floats of varied magnitude, with zero runs and outliers, so
/// every branch of the scale searches is taken. Mirrored in
/// tests/fixtures/quant/make.py.
pub(crate) fn fixture_input(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        s
    };
    (0..n)
        .map(|i| {
            let r = next();
            let u = (r >> 8) as f32 / (1u32 << 24) as f32; // [0, 1)
            let v = (u - 0.5) * 0.2;
            match (i / 256) % 4 {
                // A quiet super-block with a few outliers.
                1 => {
                    if r % 61 == 0 {
                        v * 40.0
                    } else {
                        v * 0.1
                    }
                }
                // An all-zero stretch in the middle of a super-block.
                2 if (i % 256) >= 64 && (i % 256) < 128 => 0.0,
                // Only positive values.
                3 => v.abs() + 0.01,
                _ => v,
            }
        })
        .collect()
}

/// Importance weights for the fixture: positive, varied.
pub(crate) fn fixture_weights(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.05 + ((i * 37) % 101) as f32 / 17.0)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// FNV-1a 64: a dependency-free digest of the output bytes.
fn fnv64(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const ROWS: usize = 4;
const COLS: usize = 1024;

fn quantize_fixture(ty: GgmlType, weighted: bool) -> Vec<u8> {
    let x = fixture_input(ROWS * COLS, 7);
    let w = fixture_weights(COLS);
    let rb = row_bytes(ty, COLS).unwrap();
    let mut out = vec![0u8; ROWS * rb];
    for (xr, yr) in x.chunks_exact(COLS).zip(out.chunks_exact_mut(rb)) {
        quantize_row(ty, xr, weighted.then_some(&w[..]), yr).unwrap();
    }
    out
}

#[test]
fn bytes_match_ggml() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/quant/ggml-quantize-chunk.txt"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut checked = 0;
    let mut bad = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ty = GgmlType::ALL
            .into_iter()
            .find(|t| t.name() == f[0])
            .unwrap();
        let weighted = f[1] == "imatrix";
        let want = u64::from_str_radix(f[2], 16).unwrap();
        let got_bytes = quantize_fixture(ty, weighted);
        let got = fnv64(&got_bytes);
        if got != want {
            bad.push(format!("{} {}: {got:016x} != {want:016x}", f[0], f[1]));
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixture lines");
    assert!(bad.is_empty(), "differs from ggml: {bad:#?}");
}

#[test]
fn round_trip_error_is_small() {
    let x = fixture_input(COLS, 3);
    for ty in GgmlType::ALL.into_iter().filter(|&t| can_quantize(t)) {
        for weighted in [false, true] {
            let w = fixture_weights(COLS);
            let mut q = vec![0u8; row_bytes(ty, COLS).unwrap()];
            quantize_row(ty, &x, weighted.then_some(&w[..]), &mut q).unwrap();
            let mut y = vec![0f32; COLS];
            dequantize_row(ty, &q, &mut y).unwrap();
            let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
            let mag: f32 = x.iter().map(|a| a * a).sum();
            // Q2_K is the coarsest: about 2.6 bits.
            let bound = if ty == GgmlType::Q2_K { 0.2 } else { 0.06 };
            assert!(
                err / mag < bound,
                "{ty} weighted={weighted}: relative error {} (bytes {})",
                err / mag,
                hex(&q[..8])
            );
        }
    }
}

#[test]
fn nearest_int_rounds_half_to_even() {
    assert_eq!(nearest_int(0.5), 0);
    assert_eq!(nearest_int(1.5), 2);
    assert_eq!(nearest_int(-2.5), -2);
    assert_eq!(nearest_int(-2.6), -3);
    assert_eq!(nearest_int(4_000_000.4), 4_000_000);
}

#[test]
fn bf16_rounds_like_ggml() {
    assert_eq!(bf16_bits(1.0), 0x3f80);
    // Halfway between two bf16 values: to even.
    assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
    assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(bf16_bits(f32::NAN) & 0x7fc0, 0x7fc0);
}

#[test]
fn bad_shapes_are_errors() {
    let x = vec![0f32; 64];
    let mut q = vec![0u8; 36];
    assert!(quantize_row(GgmlType::Q8_0, &x, None, &mut q[..35]).is_err());
    assert!(quantize_row(GgmlType::Q4_K, &x, None, &mut q).is_err());
    let mut q68 = [0u8; 68];
    assert!(quantize_row(GgmlType::Q8_0, &x, None, &mut q68).is_ok());
    let err = quantize_row(GgmlType::Q8_0, &x, Some(&[1.0; 3]), &mut q68).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::Length {
            what: "importance weights",
            ..
        }
    ));
    let err = quantize_row(GgmlType::IQ2_XXS, &vec![0f32; 256], None, &mut [0u8; 66]).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::UnsupportedType(GgmlType::IQ2_XXS));
}

#[test]
fn iq4_dequantizers_by_hand() {
    // IQ4_NL: d = 1.0, every nibble pair (i, 15 - i).
    let mut b = vec![0x00, 0x3C];
    b.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
    let mut y = [0f32; 32];
    dequantize_row(GgmlType::IQ4_NL, &b, &mut y).unwrap();
    assert_eq!(y[0], -127.0);
    assert_eq!(y[16], 113.0);
    assert_eq!(y[8], 1.0);
    // IQ4_XS: d = 0.5, sub-block 1 has ls = 33 (scale 1 * 0.5), others 32 (0).
    let mut b = vec![0x00, 0x38];
    let sh: u16 = 0b10_10_10_10_10_10_10_10; // high bits 2 for all: ls = 32 + low
    b.extend(sh.to_le_bytes());
    b.extend([0x10, 0x00, 0x00, 0x00]); // ls_l: sub-block 1 low nibble 1
    b.extend(std::iter::repeat_n(0xF0u8, 128));
    let mut y = [0f32; 256];
    dequantize_row(GgmlType::IQ4_XS, &b, &mut y).unwrap();
    assert_eq!(y[0], 0.0);
    assert_eq!(y[32], 0.5 * -127.0);
    assert_eq!(y[48], 0.5 * 113.0);
}

#[test]
fn iq4_best_index_counts_like_the_search() {
    let mut xs: Vec<f32> = (-14000..=14000).map(|i| i as f32 / 100.0).collect();
    // Exact table values and midpoints (ties) both ways.
    for w in KVALUES_IQ4NL.windows(2) {
        let (a, b) = (w[0] as f32, w[1] as f32);
        let m = (a + b) / 2.0;
        xs.extend([
            a,
            b,
            m,
            m.next_up(),
            m.next_down(),
            a.next_up(),
            b.next_down(),
        ]);
    }
    xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-30]);
    for x in xs {
        assert_eq!(iq4::best_index_pub(x), iq4::best_index_search(x), "x = {x}");
    }
}

/// The F16 row (slice conversion, 8 lanes at a time) gives the bytes of the
/// element-by-element conversion for every kind of f32: a stride through
/// all bit patterns (NaNs, infinities, subnormals, values that overflow or
/// underflow f16), exact ties of f16 rounding, and a length that is no
/// multiple of the SIMD width or of the stack block.
#[test]
fn f16_row_matches_element_conversion() {
    let mut x: Vec<f32> = (0..(1u64 << 32))
        .step_by(4099)
        .map(|b| f32::from_bits(b as u32))
        .collect();
    // Halfway between two f16 values at several exponents: ties to even.
    for e in [-24i32, -14, -1, 0, 5, 15] {
        for m in 0..64u32 {
            let half_ulp = 2f32.powi(e - 11);
            let base = 2f32.powi(e) + (m as f32) * 2.0 * half_ulp;
            x.extend([base + half_ulp, -(base + half_ulp)]);
        }
    }
    x.extend([
        0.0,
        -0.0,
        65504.0,
        65520.0,
        65519.99,
        f32::MAX,
        f32::MIN_POSITIVE,
    ]);
    if x.len().is_multiple_of(2) {
        x.push(1.0 / 3.0); // odd length
    }
    let mut got = vec![0u8; 2 * x.len()];
    quantize_row(GgmlType::F16, &x, None, &mut got).unwrap();
    for (i, v) in x.iter().enumerate() {
        // `half`'s element conversion: the F16 row keeps a NaN's payload
        // bits as F16C does (block scales go through `fp16`, ggml's 0x7e00).
        assert_eq!(
            got[2 * i..2 * i + 2],
            half::f16::from_f32(*v).to_bits().to_le_bytes(),
            "element {i}: {v:e} ({:#010x})",
            v.to_bits()
        );
    }
}
