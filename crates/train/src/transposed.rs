//! The backward through a frozen quantized matrix on the int8 kernels of
//! inference: `dX (n, cols) = dY (n, rows) * W` is the forward product of
//! `W^T`, so a Q8_0 copy of `W^T` (cols x rows, blocks of 32 along W's
//! rows) is made once at the start of a run and handed to the same
//! kernels the prompt uses (8-row VNNI panels where the machine has them,
//! the portable int8 dot otherwise).
//!
//! What it rounds, on top of the forward's own int8 rounding:
//! - `W^T` to Q8_0: each element moves by at most about half its block's
//!   step, `max|block| / 254` (plus the f16 rounding of the step, at most
//!   127 * 2^-11 steps), where the block is 32 consecutive values of one
//!   column of W;
//! - `dY` to Q8_0 per call, the same way (blocks of 32 along its row), as
//!   the forward quantizes its activations.
//!
//! So element `(i, j)` of dX differs from the exact product by at most
//! `sum_k |dY_ik| e(W_kj) + |W_kj| e(dY_ik)` with `e` those per-block
//! bounds (tested in `tests/int8_backward.rs` against that bound, and the
//! whole gradient against the exact f32 GEMM). Matrices stored as F32, F16
//! or BF16 (whose forward is exact f32) keep the exact f32 GEMM backward,
//! as does any matrix whose row count is not a multiple of 32; so do all
//! matrices when no [`Transposed`] is given (`Ctx::transposed` = None).
//!
//! The int8 products give the same bits on every thread count (each output
//! is one dot in a fixed order), so determinism across thread counts holds.
//!
//! Memory: about 1.06 bytes per base weight (the default model: ~140 MB);
//! the file pages of each matrix are released once its copy is made, since
//! the backward no longer reads them.

use crate::error::{ErrorKind, Result};
use cria_gguf::{GgmlType, GgufFile};
use cria_kernels::{PackedMatrix, QMatrix, ThreadPool};
use cria_model::{Matrix, Model};

/// Elements of a Q8_0 block, and its bytes.
const QB: usize = 32;
const QB_BYTES: usize = 34;

/// One `W^T` in Q8_0: packed for the VNNI panels when the machine has
/// them, else the plain rows.
enum Store {
    Packed(PackedMatrix),
    Plain(Vec<u8>),
}

/// The Q8_0 transpose of one base matrix (`cols x rows` of the original).
pub struct TMatrix {
    /// Rows of the transpose (the original's columns).
    rows: usize,
    /// Columns of the transpose (the original's rows).
    cols: usize,
    store: Store,
}

impl TMatrix {
    /// `out (n, self.rows) = dy (n, self.cols) * W`: the original's
    /// backward, on the int8 kernels.
    pub fn backward(&self, dy: &[f32], out: &mut [f32], pool: &ThreadPool) -> Result<()> {
        let err = |e: cria_kernels::Error| ErrorKind::ModelDetail {
            detail: format!(
                "int8 backward ({} x {} transpose): {e}",
                self.rows, self.cols
            ),
        };
        match &self.store {
            Store::Packed(p) => cria_kernels::matmul_packed(p, dy, out, pool).map_err(err)?,
            Store::Plain(b) => {
                let q = QMatrix::new(GgmlType::Q8_0, self.rows, self.cols, b).map_err(err)?;
                cria_kernels::matmul(&q, dy, out, pool).map_err(err)?
            }
        }
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.rows * (self.cols / QB) * QB_BYTES
    }
}

/// Whether `m` takes the int8 backward: a quantized type (its forward is
/// int8 already) and whole Q8_0 blocks along its rows.
pub fn eligible(m: &Matrix) -> bool {
    !matches!(m.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
        && m.rows.is_multiple_of(QB)
        && m.rows > 0
        && m.cols > 0
}

/// Builds the Q8_0 transpose of `m` (see the module doc), `pool` spread
/// over column ranges of `m` (rows of the transpose); packed for the VNNI
/// panels where the machine has them.
pub fn transpose_q8(file: &GgufFile, m: &Matrix, pool: &ThreadPool) -> Result<TMatrix> {
    transpose_q8_as(file, m, pool, true)
}

/// [`transpose_q8`], with `pack` false keeping the plain Q8_0 rows (the
/// path of machines without the packed kernels; tests run both).
pub fn transpose_q8_as(
    file: &GgufFile,
    m: &Matrix,
    pool: &ThreadPool,
    pack: bool,
) -> Result<TMatrix> {
    let detail = |e: &dyn std::fmt::Display| ErrorKind::ModelDetail {
        detail: format!("int8 transpose of {:?}: {e}", m.name),
    };
    if !eligible(m) {
        return Err(detail(&format!(
            "{} x {} {} has no int8 backward (a quantized type with rows a multiple of {QB} is needed)",
            m.rows, m.cols, m.ty
        ))
        .into());
    }
    let (rows, cols) = (m.rows, m.cols);
    let q = QMatrix::new(m.ty, rows, cols, m.bytes(file)).map_err(|e| detail(&e))?;
    let (bs, bb) = (m.ty.block_size() as usize, m.ty.block_bytes() as usize);
    if bs == 0 || !cols.is_multiple_of(bs) {
        return Err(detail(&format!("{cols} columns are not whole {bs}-blocks")).into());
    }
    // The transpose's row bytes; one task per `bs` of its rows.
    let trb = rows / QB * QB_BYTES;
    let mut out = vec![0u8; cols * trb];
    let mut results: Vec<Result<()>> = (0..cols / bs).map(|_| Ok(())).collect();
    let mut parts: Vec<(&mut [u8], &mut Result<()>)> =
        out.chunks_mut(bs * trb).zip(results.iter_mut()).collect();
    pool.for_each_chunk_mut(&mut parts, 1, |ci, part| {
        let (dst, res) = &mut part[0];
        **res = (|| -> Result<()> {
            let j0 = ci * bs;
            let src = j0 / bs * bb..(j0 + bs) / bs * bb;
            // (QB, bs): the 32 original rows of one block of the transpose.
            let mut strip = vec![0f32; QB * bs];
            let mut col = [0f32; QB];
            for r0 in (0..rows).step_by(QB) {
                for (rr, seg) in strip.chunks_exact_mut(bs).enumerate() {
                    cria_kernels::dequantize_row(m.ty, &q.row(r0 + rr)[src.clone()], seg)
                        .map_err(|e| detail(&e))?;
                }
                for jj in 0..bs {
                    for (rr, c) in col.iter_mut().enumerate() {
                        *c = strip[rr * bs + jj];
                    }
                    let at = jj * trb + r0 / QB * QB_BYTES;
                    cria_kernels::quantize_row(
                        GgmlType::Q8_0,
                        &col,
                        None,
                        &mut dst[at..at + QB_BYTES],
                    )
                    .map_err(|e| detail(&e))?;
                }
            }
            Ok(())
        })();
    });
    drop(parts);
    results.into_iter().collect::<Result<()>>()?;
    let t = QMatrix::new(GgmlType::Q8_0, cols, rows, &out).map_err(|e| detail(&e))?;
    let store = match PackedMatrix::pack(&t).filter(|_| pack) {
        Some(p) => Store::Packed(p),
        None => Store::Plain(out),
    };
    Ok(TMatrix {
        rows: cols,
        cols: rows,
        store,
    })
}

/// The int8 transposes of a model's eligible base matrices: per block the
/// seven matrices (q, k, v, o, gate, up, down, in [`cria_model::lora::Target`]
/// order), and the output head.
pub struct Transposed {
    layers: Vec<[Option<TMatrix>; 7]>,
    output: Option<TMatrix>,
}

impl Transposed {
    /// Makes every eligible matrix's transpose once; releases the file
    /// pages each one read (the forward reads the packed copies, the
    /// backward these).
    pub fn build(model: &Model, pool: &ThreadPool) -> Result<Transposed> {
        let file = model.file();
        let one = |m: &Matrix| -> Result<Option<TMatrix>> {
            if !eligible(m) {
                return Ok(None);
            }
            let t = transpose_q8(file, m, pool)?;
            if m.packed.is_some() {
                m.release_pages(file);
            }
            Ok(Some(t))
        };
        let mut layers = Vec::with_capacity(model.weights.layers.len());
        for lw in &model.weights.layers {
            layers.push([
                one(&lw.wq)?,
                one(&lw.wk)?,
                one(&lw.wv)?,
                one(&lw.wo)?,
                one(&lw.w_gate)?,
                one(&lw.w_up)?,
                one(&lw.w_down)?,
            ]);
        }
        let output = one(&model.weights.output)?;
        Ok(Transposed { layers, output })
    }

    /// The transpose of block `layer`'s matrix `t`, if it has one.
    pub fn get(&self, layer: usize, t: cria_model::lora::Target) -> Option<&TMatrix> {
        self.layers.get(layer)?[t as usize].as_ref()
    }

    /// The output head's transpose, if it has one.
    pub fn output(&self) -> Option<&TMatrix> {
        self.output.as_ref()
    }

    /// Bytes held by all transposes.
    pub fn bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .flat_map(|l| l.iter().flatten())
            .map(TMatrix::bytes)
            .sum();
        l + self.output.as_ref().map_or(0, TMatrix::bytes)
    }
}
