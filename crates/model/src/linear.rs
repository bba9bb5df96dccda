//! Matrix products of a weight matrix with a batch of activation rows.

use crate::error::{ErrorKind, Result};
use crate::weights::Matrix;
use cria_gguf::GgufFile;
use cria_kernels::{PackedMatrix, QMatrix, ThreadPool, MAX_GROUP};

/// out (n, m.rows) = x (n, m.cols) * m^T, with the kernels' best ISA.
pub fn matmul(
    file: &GgufFile,
    m: &Matrix,
    x: &[f32],
    out: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    crate::observe::notify(&m.name, x, m.cols);
    product(file, m, x, out, pool)
}

fn product(
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

/// The products of several matrices with one input `x` (q/k/v, gate/up):
/// when all are packed alike, the activations are quantized once and the
/// cores synchronise once; otherwise one [`matmul`] each. The outputs are
/// the same bits either way.
pub fn matmul_many(
    file: &GgufFile,
    ms: &mut [(&Matrix, &mut [f32])],
    x: &[f32],
    pool: &ThreadPool,
) -> Result<()> {
    for (m, _) in ms.iter() {
        crate::observe::notify(&m.name, x, m.cols);
    }
    if ms.len() <= MAX_GROUP && ms.iter().all(|(m, _)| m.packed.is_some()) {
        let list: [&PackedMatrix; MAX_GROUP] = std::array::from_fn(|i| {
            ms.get(i)
                .unwrap_or(&ms[0])
                .0
                .packed
                .as_deref()
                .expect("checked above")
        });
        let list = &list[..ms.len()];
        if cria_kernels::can_group(list) {
            let mut outs: [&mut [f32]; MAX_GROUP] = Default::default();
            for (o, (_, out)) in outs.iter_mut().zip(ms.iter_mut()) {
                *o = std::mem::take(out);
            }
            return cria_kernels::matmul_packed_many(list, &mut outs[..ms.len()], x, pool).map_err(
                |e| {
                    ErrorKind::BadArgument {
                        detail: format!(
                            "tensor {:?} and the others of its group: {e}",
                            ms[0].0.name
                        ),
                    }
                    .into()
                },
            );
        }
    }
    for (m, out) in ms.iter_mut() {
        product(file, m, x, out, pool)?;
    }
    Ok(())
}
