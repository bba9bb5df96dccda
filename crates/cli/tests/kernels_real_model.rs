//! The kernels on a real file: every tensor of the default model must be
//! viewable as a QMatrix and its matmul must agree with the scalar
//! dequantizer. It lives with the CLI's tests because they fetch the
//! default model (`cria pull`) when it is not cached, so it can never pass
//! by finding nothing to check.

mod common;

use cria_gguf::GgufFile;
use cria_kernels::{dequantize_row, dot_scalar, matmul, QMatrix, ThreadPool};

#[test]
fn every_tensor_of_the_default_model_multiplies() {
    let path = common::default_model();
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let pool = ThreadPool::new(2);
    for info in file.tensors() {
        let cols = info.dims[0] as usize;
        let rows = (info.n_elements / info.dims[0]) as usize;
        let data = file.tensor_data(info);
        // The whole tensor must be a valid view...
        QMatrix::new(info.ty, rows, cols, data).unwrap_or_else(|e| panic!("{}: {e}", info.name));
        // Check the first rows only: the whole model would be slow at opt-level 1.
        let check_rows = rows.min(64);
        let w = QMatrix::new(
            info.ty,
            check_rows,
            cols,
            &data[..data.len() / rows * check_rows],
        )
        .unwrap();
        let x: Vec<f32> = (0..2 * cols)
            .map(|k| ((k * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut out = vec![0f32; 2 * check_rows];
        matmul(&w, &x, &mut out, &pool).unwrap();
        let mut row = vec![0f32; cols];
        for r in 0..check_rows {
            dequantize_row(info.ty, w.row(r), &mut row).unwrap();
            for i in 0..2 {
                let want = dot_scalar(&row, &x[i * cols..(i + 1) * cols]);
                let mag: f32 = row
                    .iter()
                    .zip(&x[i * cols..])
                    .map(|(a, b)| (a * b).abs())
                    .sum();
                let got = out[i * check_rows + r];
                // Types with integer kernels quantize x to int8 (|x| <= 1
                // here, so each element moves by at most 1/254).
                let l1: f32 = row.iter().map(|v| v.abs()).sum();
                assert!(
                    (got - want).abs() <= 1e-5 * mag + l1 / 254.0 + 1e-30,
                    "{} row {r}: {got} vs {want}",
                    info.name
                );
            }
        }
    }
}
