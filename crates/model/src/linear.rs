//! Matrix products of a weight matrix with a batch of activation rows.

use crate::error::{ErrorKind, Result};
use crate::weights::Matrix;
use cria_gguf::GgufFile;
use cria_kernels::{QMatrix, ThreadPool};

/// out (n, m.rows) = x (n, m.cols) * m^T, with the kernels' best ISA.
pub fn matmul(
    file: &GgufFile,
    m: &Matrix,
    x: &[f32],
    out: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let kernel_err = |e: cria_kernels::Error| ErrorKind::BadArgument {
        detail: format!("tensor {:?}: {e}", m.name),
    };
    if let Some(p) = &m.packed {
        cria_kernels::matmul_packed(p, x, out, pool).map_err(kernel_err)?;
        return Ok(());
    }
    let q = QMatrix::new(m.ty, m.rows, m.cols, m.bytes(file)).map_err(kernel_err)?;
    cria_kernels::matmul(&q, x, out, pool).map_err(kernel_err)?;
    Ok(())
}
