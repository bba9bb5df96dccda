//! The products training needs, on the kernels' GEMM
//! ([`cria_kernels::gemm`]): strided views instead of transposed copies,
//! and a frozen quantized matrix used as stored, dequantized block by block
//! inside the GEMM, unless its int8 transpose is given
//! ([`crate::transposed`]: the backward through the base on the inference
//! kernels). Every output element is one fixed chain of operations
//! whatever the thread count, so the gradients are the same bits on 1
//! thread or 16 (the f32 GEMM's on every ISA as well).

use crate::error::{ErrorKind, Result};
use crate::transposed::TMatrix;
use cria_gguf::GgufFile;
use cria_kernels::{MatRef, QMatrix, Rhs, ThreadPool};
use cria_model::Matrix;

/// A kernel refusal on shapes the callers built: a bug, reported as an
/// error naming the product rather than a panic.
fn shape_err(what: &str) -> impl FnOnce(cria_kernels::Error) -> crate::error::Error + '_ {
    move |e| {
        ErrorKind::ModelDetail {
            detail: format!("{what}: {e}"),
        }
        .into()
    }
}

/// A row-major `rows x cols` view of `data` (exactly that long).
pub fn view(data: &[f32], rows: usize, cols: usize) -> Result<MatRef<'_>> {
    MatRef::row_major(data, rows, cols).map_err(shape_err("matrix view"))
}

/// A `rows x cols` view starting at `data[0]` with row stride `rs`
/// (columns contiguous).
pub fn strided(data: &[f32], rows: usize, cols: usize, rs: usize) -> Result<MatRef<'_>> {
    MatRef::new(data, rows, cols, rs, 1).map_err(shape_err("strided view"))
}

/// `c (m, n) [+]= a (m, k) * b (k, n)`, c with row stride `ldc`.
pub fn mm(
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    pool: &ThreadPool,
) -> Result<()> {
    cria_kernels::gemm(a, Rhs::F32(b), c, ldc, accumulate, pool).map_err(shape_err("product"))
}

/// dx (n, m.cols) [+]= dy (n, m.rows) * W: the gradient through a frozen
/// base matrix, W read from the file as stored.
///
/// With `t`, W's int8 transpose ([`crate::transposed`]), the product runs
/// on the int8 kernels instead (rounding as that module states); an
/// accumulating call adds a product made in `scratch`.
#[allow(clippy::too_many_arguments)]
pub fn base_backward(
    file: &GgufFile,
    m: &Matrix,
    t: Option<&TMatrix>,
    dy: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    scratch: &mut Vec<f32>,
    pool: &ThreadPool,
) -> Result<()> {
    if let Some(t) = t {
        if !accumulate {
            return t.backward(dy, dx, pool);
        }
        scratch.clear();
        scratch.resize(dx.len(), 0.0);
        t.backward(dy, scratch, pool)?;
        axpy(dx, 1.0, scratch);
        return Ok(());
    }
    let q =
        QMatrix::new(m.ty, m.rows, m.cols, m.bytes(file)).map_err(|e| ErrorKind::ModelDetail {
            detail: format!("tensor {:?}: {e}", m.name),
        })?;
    let n = dy.len() / m.rows.max(1);
    let a = view(dy, n, m.rows)?;
    cria_kernels::gemm(a, Rhs::Quant(q), dx, m.cols, accumulate, pool).map_err(shape_err(&m.name))
}

/// Rows handed to one task by [`par_rows`] and [`par_rows2`].
const ROWS_PER_TASK: usize = 16;

/// `f(i, row i of out)` for every `width`-long row of `out`, spread over the
/// pool. Each row is computed by one call whatever the thread count.
pub fn par_rows(
    pool: &ThreadPool,
    out: &mut [f32],
    width: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let width = width.max(1);
    pool.for_each_chunk_mut(out, width * ROWS_PER_TASK, |ci, chunk| {
        for (r, row) in chunk.chunks_exact_mut(width).enumerate() {
            f(ci * ROWS_PER_TASK + r, row);
        }
    });
}

/// [`par_rows`] over two buffers of the same shape at once.
pub fn par_rows2(
    pool: &ThreadPool,
    a: &mut [f32],
    b: &mut [f32],
    width: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) {
    let step = width.max(1) * ROWS_PER_TASK;
    let mut parts: Vec<(&mut [f32], &mut [f32])> =
        a.chunks_mut(step).zip(b.chunks_mut(step)).collect();
    pool.for_each_chunk_mut(&mut parts, 1, |ci, part| {
        let (a, b) = &mut part[0];
        let rows = a
            .chunks_exact_mut(width.max(1))
            .zip(b.chunks_exact_mut(width.max(1)));
        for (r, (ra, rb)) in rows.enumerate() {
            f(ci * ROWS_PER_TASK + r, ra, rb);
        }
    });
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
    fn mm_with_transposed_views_matches_naive() {
        let (n, m, k) = (5, 7, 33);
        let a: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        // b stored as (m, k): the product takes its transpose.
        let b: Vec<f32> = (0..m * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let mut out = vec![1.0; n * m];
        let (av, bv) = (view(&a, n, k).unwrap(), view(&b, m, k).unwrap().t());
        mm(av, bv, &mut out, m, true, &ThreadPool::new(2)).unwrap();
        for i in 0..n {
            for j in 0..m {
                let want: f32 = 1.0 + (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum::<f32>();
                assert!((out[i * m + j] - want).abs() < 1e-3, "{i} {j}");
            }
        }
    }

    #[test]
    fn rmsnorm_backward_matches_finite_differences() {
        let x: Vec<f32> = (0..9).map(|i| (i as f32 - 4.0) / 3.0 + 0.1).collect();
        let w: Vec<f32> = (0..9).map(|i| 1.0 + i as f32 / 10.0).collect();
        let dy: Vec<f32> = (0..9).map(|i| ((i * 5 % 7) as f32 - 3.0) / 4.0).collect();
        let eps = 1e-5f64;
        let f = |x: &[f64]| -> f64 {
            let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / 9.0 + eps).sqrt();
            (0..9).map(|i| x[i] * r * w[i] as f64 * dy[i] as f64).sum()
        };
        let mut dx = vec![0.0; 9];
        rmsnorm_backward(&x, &w, &dy, eps as f32, &mut dx);
        for i in 0..9 {
            let mut p: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            p[i] += 1e-6;
            let up = f(&p);
            p[i] -= 2e-6;
            let fd = (up - f(&p)) / 2e-6;
            assert!((dx[i] as f64 - fd).abs() < 1e-4, "{i}: {} vs {fd}", dx[i]);
        }
    }
}
