//! The f32 matrix-matrix product training needs:
//! `C (m x n) = [C +] A (m x k) * B (k x n)`, with A and B given as strided
//! views ([`MatRef`]: any row and column stride, so a transpose or a head's
//! columns are a view, not a copy) and B optionally a quantized weight
//! matrix ([`Rhs::Quant`]) dequantized block by block as it is packed.
//!
//! This is the product of a backward pass: `dX = dY * W` runs through a
//! frozen quantized `W` (rows x cols) in its stored layout (W's rows are
//! B's rows), so nothing is transposed and each weight is dequantized once
//! per call, then used against all `m` rows of `dY` while it sits in L1.
//!
//! Shape of the work (the BLIS loop order, A left unpacked):
//! - K is cut in blocks of [`KC`]; one pool dispatch per block, so the
//!   block of A (m x KC) is shared through the caches by every task.
//! - Each task owns a chunk of C's columns (a multiple of the ISA's panel
//!   width `NR` and of B's quantization block) and a range of rows. It packs
//!   its columns of B's K block into `NR`-wide panels (KC x NR floats each,
//!   zero-padded past `n`), then runs the register tile over `MR` rows of A
//!   at a time: `MR x NR` accumulators, one broadcast of `A[i][k]` and one
//!   fused multiply-add per accumulator for each k.
//!
//! Every element of C is `c = C or 0; for k in 0..K { c = fma(A[i][k],
//! B[k][j], c) }`, in that order, on every ISA: fused multiply-adds are
//! exactly rounded, so the result is bit-identical to [`gemm_reference`],
//! on every ISA and thread count and however the work is split.
//!
//! Hand-written rather than taken from a BLAS crate (matrixmultiply, gemm)
//! because the B operand is a quantized GGUF matrix dequantized inside the
//! packing step (no f32 copy of the weights is ever made) and because the
//! bit-exact, split-independent summation order is part of the contract.

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::error::{Error, ErrorKind, Result};
use crate::matmul::QMatrix;
use crate::pool::ThreadPool;
use crate::simd::{Cpu, Isa};
use std::cell::RefCell;

/// Depth of one K block: one pool dispatch each; a packed panel of B is
/// `KC x NR` floats (32 KB at NR = 32), kept in L1 while A streams by.
pub const KC: usize = 256;

/// A read-only f32 matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Copy, Clone, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` view of `data` with row stride `rs` and column stride
    /// `cs`, checking that every element is inside `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(rs)
                .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
                .ok_or(ErrorKind::Overflow {
                    what: "matrix view extent",
                })?;
            if last >= data.len() {
                return Err(Error::length("matrix view data", last + 1, data.len()));
            }
        }
        Ok(MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// A row-major `rows x cols` view (`data` exactly that long).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        let len = rows.checked_mul(cols).ok_or(ErrorKind::Overflow {
            what: "matrix size",
        })?;
        if data.len() != len {
            return Err(Error::length("row-major matrix", len, data.len()));
        }
        MatRef::new(data, rows, cols, cols, 1)
    }

    /// The transpose, as a view of the same data.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)` (in bounds by construction when `i < rows`, `j < cols`).
    #[inline]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// The right-hand operand B (k x n).
#[derive(Copy, Clone)]
pub enum Rhs<'a> {
    F32(MatRef<'a>),
    /// A weight matrix as stored (`rows x cols`), used as B with `k = rows`
    /// and `n = cols`: `A * W`, the product of a backward pass.
    Quant(QMatrix<'a>),
}

impl Rhs<'_> {
    /// `(k, n)`.
    fn shape(&self) -> (usize, usize) {
        match self {
            Rhs::F32(b) => (b.rows, b.cols),
            Rhs::Quant(w) => (w.rows(), w.cols()),
        }
    }

    /// Columns that must be dequantized together (1 for f32).
    fn block(&self) -> usize {
        match self {
            Rhs::F32(_) => 1,
            Rhs::Quant(w) => w.ty().block_size() as usize,
        }
    }
}

/// The register tile of an ISA: `MR` rows of A by `NR` columns of B.
fn tile_shape(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 => (8, 32),
        Isa::Avx2 => (6, 16),
        Isa::Neon => (8, 8),
        Isa::Scalar => (4, 8),
    }
}

/// `C = [C +] A * B` on the best ISA of this machine; see [`gemm_with`].
pub fn gemm(
    a: MatRef,
    b: Rhs,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    pool: &ThreadPool,
) -> Result<()> {
    gemm_with(Cpu::get(), a, b, c, ldc, accumulate, pool)
}

/// `C (m x n) = A (m x k) * B (k x n)`, or `C + A * B` with `accumulate`.
/// C is row-major with row stride `ldc` (`c[i * ldc + j]`); elements of `c`
/// between rows are left alone. Bit-identical to [`gemm_reference`] (see
/// the module doc). Errors on mismatched shapes or a `c` too short.
pub fn gemm_with(
    cpu: Cpu,
    a: MatRef,
    b: Rhs,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    pool: &ThreadPool,
) -> Result<()> {
    let (m, k, n) = check(&a, &b, c, ldc)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc.max(1))
                .take(m)
                .for_each(|r| r[..n].fill(0.0));
        }
        return Ok(());
    }
    let (mr, nr) = tile_shape(cpu.isa());
    let threads = pool.threads();
    // Column chunks: whole panels and whole quantization blocks.
    let mut nc = lcm(nr, b.block());
    if n.div_ceil(nc) >= 8 * threads {
        nc *= 2;
    }
    let n_chunks = n.div_ceil(nc);
    // Few column chunks (a thin B): split the rows too, so every thread works.
    let m_chunks = if threads > 1 && n_chunks < 2 * threads {
        (2 * threads).div_ceil(n_chunks).min(m.div_ceil(mr))
    } else {
        1
    };
    let mc = m.div_ceil(m_chunks).div_ceil(mr) * mr;
    let m_chunks = m.div_ceil(mc);
    let out = SharedC {
        ptr: c.as_mut_ptr(),
        len: c.len(),
    };
    let out = &out;
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let load = accumulate || k0 > 0;
        pool.run(n_chunks * m_chunks, |task| {
            let (jc, ic) = (task % n_chunks, task / n_chunks);
            let (j0, i0) = (jc * nc, ic * mc);
            let (nw, mh) = (nc.min(n - j0), mc.min(m - i0));
            PACK.with(|p| {
                let mut p = p.borrow_mut();
                let Pack { panels, row } = &mut *p;
                pack_b(&b, k0, kc, j0, nw, nr, panels, row);
                for (pi, panel) in panels.chunks_exact(kc * nr).enumerate() {
                    let jp = j0 + pi * nr;
                    let live = nr.min(n - jp);
                    let mut i = i0;
                    while i < i0 + mh {
                        let rows = if i + mr <= i0 + mh { mr } else { 1 };
                        let at = i * ldc + jp;
                        // The tile writes rows i..i + rows, columns
                        // jp..jp + live of C: inside `c` (checked), and
                        // this task's alone.
                        debug_assert!(at + (rows - 1) * ldc + live <= out.len);
                        // SAFETY: A rows i..i + rows, columns k0..k0 + kc
                        // are inside the view (checked by `check`), the
                        // panel holds kc x nr floats, and the C tile is in
                        // bounds and owned by this task (above); `cpu`
                        // names an ISA this machine has.
                        unsafe {
                            tile(
                                cpu,
                                rows,
                                kc,
                                a.data.as_ptr().add(i * a.rs + k0 * a.cs),
                                a.rs,
                                a.cs,
                                panel.as_ptr(),
                                out.ptr.add(at),
                                ldc,
                                live,
                                load,
                            )
                        };
                        i += rows;
                    }
                }
            });
        });
    }
    Ok(())
}

/// The reference: every element a plain loop of fused multiply-adds in
/// k order, on B dequantized row by row.
pub fn gemm_reference(
    a: MatRef,
    b: Rhs,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<()> {
    let (m, k, n) = check(&a, &b, c, ldc)?;
    let mut bd = vec![0f32; k * n];
    match b {
        Rhs::F32(b) => {
            for kk in 0..k {
                for j in 0..n {
                    bd[kk * n + j] = b.at(kk, j);
                }
            }
        }
        Rhs::Quant(w) => {
            for (r, dst) in bd.chunks_exact_mut(n.max(1)).enumerate().take(k) {
                w.dequantize_row(r, dst)?;
            }
        }
    }
    for i in 0..m {
        for j in 0..n {
            let mut s = if accumulate { c[i * ldc + j] } else { 0.0 };
            for kk in 0..k {
                s = a.at(i, kk).mul_add(bd[kk * n + j], s);
            }
            c[i * ldc + j] = s;
        }
    }
    Ok(())
}

/// `(m, k, n)` after checking that the shapes agree and C fits in `c`.
fn check(a: &MatRef, b: &Rhs, c: &[f32], ldc: usize) -> Result<(usize, usize, usize)> {
    let (m, k) = (a.rows, a.cols);
    let (kb, n) = b.shape();
    if kb != k {
        return Err(Error::length("rows of B (columns of A)", k, kb));
    }
    if m > 0 && n > 0 {
        if ldc < n {
            return Err(Error::length("row stride of C (at least n)", n, ldc));
        }
        let need = (m - 1)
            .checked_mul(ldc)
            .and_then(|v| v.checked_add(n))
            .ok_or(ErrorKind::Overflow { what: "C extent" })?;
        if c.len() < need {
            return Err(Error::length("C", need, c.len()));
        }
    }
    Ok((m, k, n))
}

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// A task's packed B and one dequantized row segment, reused across calls.
#[derive(Default)]
struct Pack {
    /// `ceil(nw / nr)` panels of `kc x nr` floats.
    panels: Vec<f32>,
    row: Vec<f32>,
}

thread_local! {
    static PACK: RefCell<Pack> = RefCell::new(Pack::default());
}

/// Packs B rows `k0..k0 + kc`, columns `j0..j0 + nw` into `nr`-wide panels:
/// panel p holds, for each k, columns `j0 + p * nr ..` (zeros past `nw`).
#[allow(clippy::too_many_arguments)]
fn pack_b(
    b: &Rhs,
    k0: usize,
    kc: usize,
    j0: usize,
    nw: usize,
    nr: usize,
    panels: &mut Vec<f32>,
    row: &mut Vec<f32>,
) {
    let np = nw.div_ceil(nr);
    panels.clear();
    panels.resize(np * kc * nr, 0.0);
    let mut put = |kk: usize, src: &[f32]| {
        for (p, s) in src.chunks(nr).enumerate() {
            let at = p * kc * nr + kk * nr;
            panels[at..at + s.len()].copy_from_slice(s);
        }
    };
    match b {
        Rhs::F32(b) if b.cs == 1 => {
            for kk in 0..kc {
                let s = (k0 + kk) * b.rs + j0;
                put(kk, &b.data[s..s + nw]);
            }
        }
        Rhs::F32(b) => {
            row.resize(nw, 0.0);
            for kk in 0..kc {
                for (jj, v) in row.iter_mut().enumerate() {
                    *v = b.at(k0 + kk, j0 + jj);
                }
                put(kk, row);
            }
        }
        Rhs::Quant(w) => {
            // j0 and nw are whole blocks (chunks are multiples of the block).
            let bs = w.ty().block_size() as usize;
            let bb = w.ty().block_bytes() as usize;
            let (b0, b1) = (j0 / bs * bb, (j0 + nw) / bs * bb);
            row.resize(nw, 0.0);
            for kk in 0..kc {
                w.dequant_blocks(&w.row(k0 + kk)[b0..b1], row);
                put(kk, row);
            }
        }
    }
}

/// C shared by tasks that write disjoint tiles.
struct SharedC {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks write disjoint tiles of C (see `gemm_with`).
unsafe impl Sync for SharedC {}

/// One register tile: `rows` (the ISA's MR, or 1) rows of A times one
/// packed panel, into C.
///
/// # Safety
/// `cpu` names an ISA this machine has; `a + i * rs + kk * cs` is readable
/// for `i < rows`, `kk < kc`; `b` holds `kc * NR` floats; `c + i * ldc + j`
/// is writable for `i < rows`, `j < live` and no other thread touches it.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    cpu: Cpu,
    rows: usize,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    live: usize,
    load: bool,
) {
    let (mr, _) = tile_shape(cpu.isa());
    let full = rows == mr;
    debug_assert!(full || rows == 1);
    match cpu.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if full => x86::tile_avx512::<8>(kc, a, rs, cs, b, c, ldc, live, load),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::tile_avx512::<1>(kc, a, rs, cs, b, c, ldc, live, load),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if full => x86::tile_avx2::<6>(kc, a, rs, cs, b, c, ldc, live, load),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::tile_avx2::<1>(kc, a, rs, cs, b, c, ldc, live, load),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if full => neon::tile_neon::<8>(kc, a, rs, cs, b, c, ldc, live, load),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::tile_neon::<1>(kc, a, rs, cs, b, c, ldc, live, load),
        _ if full => tile_scalar::<4>(kc, a, rs, cs, b, c, ldc, live, load),
        _ => tile_scalar::<1>(kc, a, rs, cs, b, c, ldc, live, load),
    }
}

/// The portable tile (NR = 8), the same fused multiply-adds in the same
/// order as the SIMD ones.
///
/// # Safety
/// As [`tile`].
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile_scalar<const MR: usize>(
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    live: usize,
    load: bool,
) {
    const NR: usize = 8;
    let mut acc = [[0f32; NR]; MR];
    if load {
        for i in 0..MR {
            for j in 0..live {
                acc[i][j] = *c.add(i * ldc + j);
            }
        }
    }
    for kk in 0..kc {
        let bk = std::slice::from_raw_parts(b.add(kk * NR), NR);
        for i in 0..MR {
            let av = *a.add(i * rs + kk * cs);
            for j in 0..NR {
                acc[i][j] = av.mul_add(bk[j], acc[i][j]);
            }
        }
    }
    for i in 0..MR {
        for j in 0..live {
            *c.add(i * ldc + j) = acc[i][j];
        }
    }
}
