//! Bit-exact dequantization against the `gguf` Python package's output;
//! see tests/fixtures/README.md for how the fixtures were made.

use cria_kernels::{dequantize_row, Cpu, GgmlType};
use std::path::PathBuf;

fn load(name: &str) -> (Vec<u8>, Vec<f32>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("dequant_{name}.bin"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let nb = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 8 + nb + 4 * n, "{name}: truncated fixture");
    let raw = bytes[8..8 + nb].to_vec();
    let expected = bytes[8 + nb..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (raw, expected)
}

#[test]
fn dequantize_matches_gguf_python_bit_for_bit() {
    use GgmlType::*;
    let types = [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    ];
    for ty in types {
        let (raw, expected) = load(ty.name());
        let mut got = vec![f32::NAN; expected.len()];
        dequantize_row(ty, &raw, &mut got).unwrap();
        compare(ty, "scalar", &got, &expected);
        // The SIMD dequantizers (where a type has one) must agree too.
        for cpu in Cpu::all_available() {
            let mut got = vec![f32::NAN; expected.len()];
            cpu.dequantize_row(ty, &raw, &mut got).unwrap();
            compare(ty, &format!("{:?}", cpu.isa()), &got, &expected);
        }
    }
}

fn compare(ty: GgmlType, path: &str, got: &[f32], expected: &[f32]) {
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(
            g.to_bits(),
            e.to_bits(),
            "{ty} ({path}): element {i} (block {}): got {g:e}, expected {e:e}",
            i / ty.block_size() as usize
        );
    }
}
