//! Matrix products of a weight matrix with a batch of activation rows.

use crate::threads::parallel_ranges;
use crate::weights::Matrix;
use cria_gguf::GgufFile;
use std::sync::Mutex;

/// out (n, m.rows) = x (n, m.cols) * m^T. Each weight row is dequantized
/// once and used against all `n` activation rows.
pub fn matmul(file: &GgufFile, m: &Matrix, x: &[f32], n: usize, out: &mut [f32], threads: usize) {
    let bytes = m.bytes(file);
    let rb = m.row_bytes();
    let results = Mutex::new(Vec::new());
    parallel_ranges(m.rows, threads, |rows| {
        let mut row = vec![0f32; m.cols];
        let mut local = vec![0f32; rows.len() * n];
        for (j, r) in rows.clone().enumerate() {
            // Types and lengths were checked at load.
            let _ = cria_kernels::dequantize_row(m.ty, &bytes[r * rb..(r + 1) * rb], &mut row);
            for i in 0..n {
                let xi = &x[i * m.cols..(i + 1) * m.cols];
                local[j * n + i] = row.iter().zip(xi).map(|(a, b)| a * b).sum();
            }
        }
        results.lock().unwrap_or_else(|e| e.into_inner()).push((rows, local));
    });
    for (rows, local) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        for (j, r) in rows.enumerate() {
            for i in 0..n {
                out[i * m.rows + r] = local[j * n + i];
            }
        }
    }
}
