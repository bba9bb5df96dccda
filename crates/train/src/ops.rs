//! The products training needs, all on the kernels' f32 GEMM
//! ([`cria_kernels::matmul_f32_with`]), whose every output element is one
//! dot product computed the same way whatever the thread count: so the
//! gradients are the same bits on 1 thread or 16.

use crate::error::{ErrorKind, Result};
use cria_gguf::{GgmlType, GgufFile};
use cria_kernels::{Cpu, QMatrix, ThreadPool};
use cria_model::Matrix;

/// out (n, m) = a (n, k) * b^T, b being (m, k): every `out[i][j]` is
/// `dot(a row i, b row j)`.
pub fn gemm_nt(a: &[f32], b: &[f32], k: usize, out: &mut [f32], pool: &ThreadPool) {
    let m = b.len() / k;
    debug_assert_eq!(out.len(), (a.len() / k) * m);
    if m == 0 || a.is_empty() {
        return;
    }
    let w = QMatrix::new(GgmlType::F32, m, k, bytemuck::cast_slice(b))
        .expect("an f32 matrix of whole rows is always valid");
    cria_kernels::matmul_f32_with(Cpu::get(), &w, a, out, pool)
        .expect("shapes checked by the callers");
}

/// (cols, rows) transpose of a (rows, cols) row-major `src` into `dst`.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut Vec<f32>) {
    dst.clear();
    dst.resize(rows * cols, 0.0);
    // Tiles of 16 x 16 keep both sides in cache.
    const T: usize = 16;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// Rows `r0..r1` of a frozen base matrix, dequantized from the file to f32
/// and transposed: `(cols, r1 - r0)`. Quantized weights are expanded only
/// here, a matrix (or a strip of one) at a time, and dropped after use.
/// Both passes are split over the pool; each element is written once, so
/// the result does not depend on the thread count.
pub fn dequant_t(
    file: &GgufFile,
    m: &Matrix,
    r0: usize,
    r1: usize,
    rows_buf: &mut Vec<f32>,
    out: &mut Vec<f32>,
    pool: &ThreadPool,
) -> Result<()> {
    let q =
        QMatrix::new(m.ty, m.rows, m.cols, m.bytes(file)).map_err(|e| ErrorKind::ModelDetail {
            detail: format!("tensor {:?}: {e}", m.name),
        })?;
    let (rows, cols) = (r1 - r0, m.cols);
    rows_buf.clear();
    rows_buf.resize(rows * cols, 0.0);
    const STRIP: usize = 64;
    pool.for_each_chunk_mut(rows_buf, STRIP * cols, |i, chunk| {
        for (j, dst) in chunk.chunks_exact_mut(cols).enumerate() {
            // In range and of the right length by construction.
            let _ = q.dequantize_row(r0 + i * STRIP + j, dst);
        }
    });
    out.clear();
    out.resize(rows * cols, 0.0);
    let src = &rows_buf[..];
    // out row c (length `rows`) = column c of src; 16 output rows a task.
    pool.for_each_chunk_mut(out, 16 * rows, |i, chunk| {
        let c0 = i * 16;
        let nc = chunk.len() / rows;
        for r in 0..rows {
            let s = &src[r * cols + c0..r * cols + c0 + nc];
            for (k, &v) in s.iter().enumerate() {
                chunk[k * rows + r] = v;
            }
        }
    });
    Ok(())
}

/// dx (n, m.cols) = dy (n, m.rows) * W: the gradient through a frozen
/// base matrix, its f32 transpose built once per call.
pub fn base_backward(
    file: &GgufFile,
    m: &Matrix,
    dy: &[f32],
    dx: &mut [f32],
    pool: &ThreadPool,
    tmp: &mut Scratch2,
) -> Result<()> {
    dequant_t(file, m, 0, m.rows, &mut tmp.a, &mut tmp.b, pool)?;
    gemm_nt(dy, &tmp.b, m.rows, dx, pool);
    Ok(())
}

/// Two reusable buffers for [`base_backward`].
#[derive(Default)]
pub struct Scratch2 {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// y += alpha * x
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

/// Gradient of `y = rmsnorm(x) * w` for one row: with `r = 1/sqrt(mean(x^2)
/// + eps)` and `g = w * dy`, `dx = r * g - x * r^3 * mean(g * x)`. Adds to `dx`.
pub fn rmsnorm_backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32, dx: &mut [f32]) {
    let n = x.len() as f64;
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n;
    let r = 1.0 / (ss + eps as f64).sqrt();
    let gx: f64 = x
        .iter()
        .zip(w.iter().zip(dy))
        .map(|(&x, (&w, &dy))| (w * dy) as f64 * x as f64)
        .sum::<f64>()
        / n;
    let c = (r * r * r * gx) as f32;
    let r = r as f32;
    for i in 0..x.len() {
        dx[i] += r * w[i] * dy[i] - x[i] * c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_nt_matches_naive() {
        let (n, m, k) = (5, 7, 33);
        let a: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..m * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let mut out = vec![0.0; n * m];
        gemm_nt(&a, &b, k, &mut out, &ThreadPool::new(2));
        for i in 0..n {
            for j in 0..m {
                let want: f32 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
                assert!((out[i * m + j] - want).abs() < 1e-3, "{i} {j}");
            }
        }
    }

    #[test]
    fn transpose_round_trips() {
        let src: Vec<f32> = (0..37 * 19).map(|i| i as f32).collect();
        let (mut t, mut back) = (Vec::new(), Vec::new());
        transpose(&src, 37, 19, &mut t);
        assert_eq!(t[3 * 37 + 5], src[5 * 19 + 3]);
        transpose(&t, 19, 37, &mut back);
        assert_eq!(back, src);
    }
}
