//! cria's matmul against llama.cpp's own: for every quantized type cria
//! multiplies, ggml's CPU matmul output on a small matrix (see
//! tests/fixtures/ggml_matmul/make.py) must be reproduced to float
//! summation error. Both engines round the activations to 8 bits the same
//! way (Q8_0 blocks of 32 with an f16 scale, or Q8_K blocks of 256 with an
//! f32 scale; Q2_K and Q3_K included, where cria takes the f32 product of
//! the rounded activations): a single activation rounded differently moves
//! an output by about 1e-4 to 1e-3 of the bound used here, so this test
//! tells "the same arithmetic, summed in another order" from "different
//! rounding".

use cria_kernels::{dequantize_row, matmul_with, Cpu, GgmlType, QMatrix, ThreadPool};
use std::path::PathBuf;

struct Fixture {
    rows: usize,
    cols: usize,
    n: usize,
    raw: Vec<u8>,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn load(ty: GgmlType) -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ggml_matmul")
        .join(format!("{}.bin", ty.name()));
    let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    let (rows, cols, n, nb) = (u(0), u(1), u(2), u(3));
    assert_eq!(
        b.len(),
        16 + nb + 4 * (n * cols + n * rows),
        "{ty}: truncated fixture"
    );
    let f32s = |s: &[u8]| -> Vec<f32> {
        s.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    Fixture {
        rows,
        cols,
        n,
        raw: b[16..16 + nb].to_vec(),
        x: f32s(&b[16 + nb..16 + nb + 4 * n * cols]),
        y: f32s(&b[16 + nb + 4 * n * cols..]),
    }
}

#[test]
fn matmul_matches_ggml_to_summation_error() {
    use GgmlType::*;
    let types = [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS,
    ];
    for ty in types {
        let f = load(ty);
        let w = QMatrix::new(ty, f.rows, f.cols, &f.raw).unwrap();
        let mut wf = vec![0f32; f.rows * f.cols];
        dequantize_row(ty, &f.raw, &mut wf).unwrap();
        for cpu in Cpu::all_available() {
            let mut got = vec![f32::NAN; f.n * f.rows];
            matmul_with(cpu, &w, &f.x, &mut got, &ThreadPool::new(2)).unwrap();
            for i in 0..f.n {
                let xi = &f.x[i * f.cols..(i + 1) * f.cols];
                for r in 0..f.rows {
                    // The bound: 1e-5 of sum |w x|, ~100x the f32 summation
                    // error of either engine, 1/100 of one activation step.
                    let l1: f64 = wf[r * f.cols..(r + 1) * f.cols]
                        .iter()
                        .zip(xi)
                        .map(|(a, b)| (*a as f64 * *b as f64).abs())
                        .sum();
                    let (g, e) = (got[i * f.rows + r] as f64, f.y[i * f.rows + r] as f64);
                    assert!(
                        (g - e).abs() <= 1e-5 * l1 + 1e-30,
                        "{ty} {:?} row {i}, output {r}: cria {g:e}, ggml {e:e}, |diff| / sum|wx| = {:e}",
                        cpu.isa(),
                        (g - e).abs() / l1
                    );
                }
            }
        }
    }
}
