//! Quantized weight matrix times a batch of f32 activation rows.
//!
//! Types with an integer kernel (see [`crate::qdot`]: Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) quantize the activations once per call to
//! int8 and dot them with the weight blocks as stored; that is
//! [`matmul`]. The others (and [`matmul_f32_with`], the exact path) work
//! as follows. For each strip of [`STRIP_ROWS`] weight rows, the rows are
//! dequantized once into a per-thread f32 scratch (`STRIP_ROWS x cols`,
//! kept in L2) and dotted against every activation row with the ISA's
//! register tile, so a 512-token prompt dequantizes each weight once and a
//! single token is a plain mat-vec. Strips are the unit of work handed to
//! the [`ThreadPool`].
//!
//! Words: a *panel* is always the packed layout of the integer kernels,
//! 8 weight rows interleaved block by block ([`PackedMatrix`],
//! `qdot::packed`); a *strip* is the f32 path's 16 dequantized rows, stored
//! one row after another.

use crate::dequant::{row_bytes, RowDequantizer};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::ThreadPool;
use crate::qdot::{self, QuantActs};
use crate::simd::Cpu;
use cria_gguf::GgmlType;
use std::cell::RefCell;

/// Weight rows the f32 path dequantizes together and hands to one task
/// (a strip; not a packed 8-row panel).
pub const STRIP_ROWS: usize = 16;

/// A `rows x cols` weight matrix of type `ty` over borrowed bytes (e.g. a
/// tensor in a memory-mapped GGUF file). `cols` is the row length, ggml's
/// `ne[0]`; row `r` is bytes `r * row_bytes .. (r + 1) * row_bytes`.
#[derive(Copy, Clone)]
pub struct QMatrix<'a> {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
    dequant: RowDequantizer,
}

impl<'a> QMatrix<'a> {
    /// A view of `data` as a matrix, checking that the type is supported,
    /// `cols` is a non-zero whole number of blocks and `data` is exactly
    /// `rows` rows long.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<QMatrix<'a>> {
        let dequant = RowDequantizer::for_cpu(Cpu::get(), ty)?;
        if cols == 0 {
            return Err(ErrorKind::NotWholeBlocks {
                ty,
                elements: 0,
                block_size: ty.block_size() as usize,
            }
            .into());
        }
        let row_bytes = row_bytes(ty, cols)?;
        let total = rows.checked_mul(row_bytes).ok_or(ErrorKind::Overflow {
            what: "matrix byte size",
        })?;
        if data.len() != total {
            return Err(Error::length("matrix data", total, data.len()));
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            data,
            dequant,
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The raw bytes of row `r` (panics if `r >= rows`).
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantize whole blocks `src` (a block-aligned piece of one row)
    /// into `dst`, which holds exactly their elements.
    pub(crate) fn dequant_blocks(&self, src: &[u8], dst: &mut [f32]) {
        self.dequant.run(src, dst);
    }

    /// Dequantize row `r` into `dst` (`cols` long).
    pub fn dequantize_row(&self, r: usize, dst: &mut [f32]) -> Result<()> {
        if r >= self.rows {
            return Err(Error::length("row index (as count)", self.rows, r + 1));
        }
        if dst.len() != self.cols {
            return Err(Error::length("row destination", self.cols, dst.len()));
        }
        self.dequant.run(self.row(r), dst);
        Ok(())
    }
}

/// `out[i * rows + r] = dot(w row r, x row i)` for the `n = x.len() / cols`
/// activation rows of `x` (shape `(n, cols)`; `out` is `(n, rows)`), on the
/// best ISA of this machine. See [`matmul_with`].
pub fn matmul(w: &QMatrix, x: &[f32], out: &mut [f32], pool: &ThreadPool) -> Result<()> {
    matmul_with(Cpu::get(), w, x, out, pool)
}

/// [`matmul`] on a given [`Cpu`]: the integer path where `cpu` has a
/// kernel for the type, else [`matmul_f32_with`]. Each output element is
/// computed by the same instructions whatever the thread count and batch
/// grouping, so results are identical across them.
pub fn matmul_with(
    cpu: Cpu,
    w: &QMatrix,
    x: &[f32],
    out: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let n = check_shapes(w, x, out)?;
    let Some(k) = qdot::kernel(cpu, w.ty) else {
        // No integer kernel for this type here. ggml still rounds the
        // activations of quantized types to 8 bits before its dot products
        // (Q8_K for Q2_K/Q3_K), so round them the same way and take the f32
        // product: results then follow llama.cpp's on every machine.
        return match qdot::ggml_act_kind(w.ty) {
            Some(kind) if w.cols.is_multiple_of(kind.block()) => ROUNDED.with(|buf| {
                let mut buf = buf.borrow_mut();
                qdot::round_trip(kind, x, w.cols, &mut buf);
                matmul_f32_with(cpu, w, &buf, out, pool)
            }),
            _ => matmul_f32_with(cpu, w, x, out, pool),
        };
    };
    if n == 0 || w.rows == 0 {
        return Ok(());
    }
    ACTS.with(|acts| {
        let mut acts = acts.borrow_mut();
        acts.quantize_par(k.act, x, w.cols, pool);
        let acts = &*acts;
        let rows = w.rows;
        let per = rows_per_task(rows, n, pool.threads());
        let shared = SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        };
        let shared = &shared;
        // Prompts on VNNI: each task packs its rows 8 at a time into the
        // panel layout and runs the panel kernel (the same bits as the tiles).
        #[cfg(target_arch = "x86_64")]
        let panels =
            n >= 8 && cpu.isa() == crate::simd::Isa::Avx512 && qdot::packed::available(w.ty);
        pool.run(rows.div_ceil(per), |task| {
            #[allow(unused_mut)]
            let mut r0 = task * per;
            let r1 = (r0 + per).min(rows);
            #[cfg(target_arch = "x86_64")]
            if panels {
                use qdot::packed::{block_bytes, block_len, pack_into, panel_dot_rows, PANEL};
                let nb = w.cols / block_len(w.ty);
                PANEL_BUF.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    buf.resize(nb * block_bytes(w.ty), 0);
                    while r0 + PANEL <= r1 {
                        let rows8 = &w.data[r0 * w.row_bytes..(r0 + PANEL) * w.row_bytes];
                        pack_into(w.ty, rows8, PANEL, w.row_bytes, nb, &mut buf);
                        // SAFETY: `available` checked the ISA and type; the
                        // buffer holds one panel of `nb` blocks; acts rows
                        // 0..n exist, quantized as `k.act`; the output's
                        // columns r0..r0 + PANEL belong to this task alone.
                        unsafe {
                            let o = shared.out_rows(r0, rows, n, PANEL);
                            panel_dot_rows(w.ty, buf.as_ptr(), nb, acts, 0, n, o);
                        }
                        r0 += PANEL;
                    }
                });
            }
            let mut tile = [0f32; 16];
            let mut i = 0;
            while i < n {
                let (nn, small) = if i + 4 <= n { (4, 0) } else { (1, 1) };
                let mut r = r0;
                while r < r1 {
                    let rr = if r + 4 <= r1 { 4 } else { 1 };
                    let f = k.tiles[small * 2 + usize::from(rr == 1)];
                    debug_assert_eq!(
                        qdot::TILE_SHAPES[small * 2 + usize::from(rr == 1)],
                        (rr, nn)
                    );
                    // SAFETY: `k` was made for `cpu`, which names a detected
                    // ISA; rows r..r + rr exist and acts holds rows i..i + nn
                    // quantized with `k.act`.
                    unsafe {
                        f(
                            w.data.as_ptr().add(r * w.row_bytes),
                            w.row_bytes,
                            acts,
                            i,
                            &mut tile,
                        )
                    };
                    for dr in 0..rr {
                        for di in 0..nn {
                            // SAFETY: tasks own disjoint row ranges, so
                            // (i + di, r + dr) is written by this task alone.
                            unsafe { shared.write((i + di) * rows + r + dr, tile[dr * nn + di]) };
                        }
                    }
                    r += rr;
                }
                i += nn;
            }
        });
    });
    Ok(())
}

/// A weight matrix repacked once (at load) into 8-row interleaved panels
/// for the integer kernels: Q4_0, Q4_1, Q8_0, Q4_K, Q5_K and Q6_K on
/// AVX-512 VNNI, about the size of the original. Mat-vec and the prompt GEMM both read the panels;
/// each output is bit-identical to [`matmul`] on the original matrix.
pub struct PackedMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    data: crate::buf::WeightBuf,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("ty", &self.ty)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl PackedMatrix {
    /// `w` repacked, or `None` if this machine or `w`'s type has no packed
    /// kernel.
    pub fn pack(w: &QMatrix) -> Option<PackedMatrix> {
        #[cfg(target_arch = "x86_64")]
        {
            if Cpu::get().isa() != crate::simd::Isa::Avx512 || !qdot::packed::available(w.ty) {
                return None;
            }
            let nb = w.cols / qdot::packed::block_len(w.ty);
            let data = qdot::packed::pack(w.ty, w.data, w.rows, w.row_bytes, nb);
            Some(PackedMatrix {
                ty: w.ty,
                rows: w.rows,
                cols: w.cols,
                data,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = w;
            None
        }
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// [`matmul`] with a [`PackedMatrix`]: `out (n, rows) = x (n, cols) w^T`.
pub fn matmul_packed(
    w: &PackedMatrix,
    x: &[f32],
    out: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    matmul_packed_many(&[w], &mut [out], x, pool)
}

/// Most matrices [`matmul_packed_many`] takes at once.
pub const MAX_GROUP: usize = 4;

/// Whether [`matmul_packed_many`] can take these matrices together: at
/// most [`MAX_GROUP`], the same `cols`, and one activation format.
pub fn can_group(ws: &[&PackedMatrix]) -> bool {
    !ws.is_empty()
        && ws.len() <= MAX_GROUP
        && ws
            .iter()
            .all(|w| w.cols == ws[0].cols && qdot::act_kind(w.ty) == qdot::act_kind(ws[0].ty))
}

/// Several [`matmul_packed`] products of one input (e.g. the q, k and v
/// projections, or gate and up): the activations are quantized once and
/// all panels are handed out in one pool dispatch, so the cores
/// synchronise once instead of once per matrix. Each output is
/// bit-identical to its own [`matmul_packed`].
/// `outs[m]` receives matrix `ws[m]`'s product.
pub fn matmul_packed_many(
    ws: &[&PackedMatrix],
    outs: &mut [&mut [f32]],
    x: &[f32],
    pool: &ThreadPool,
) -> Result<()> {
    if ws.is_empty() || ws.len() > MAX_GROUP || outs.len() != ws.len() {
        return Err(ErrorKind::BadGroup {
            detail: format!(
                "{} matrices and {} outputs (1 to {MAX_GROUP} of each)",
                ws.len(),
                outs.len()
            ),
        }
        .into());
    }
    let (cols, ty0) = (ws[0].cols, ws[0].ty);
    let mut n = 0;
    for (w, out) in ws.iter().zip(outs.iter()) {
        if w.cols != cols || qdot::act_kind(w.ty) != qdot::act_kind(ty0) {
            return Err(ErrorKind::BadGroup {
                detail: format!(
                    "they differ: {} x {} {} and {} x {} {}",
                    ws[0].rows, cols, ty0, w.rows, w.cols, w.ty
                ),
            }
            .into());
        }
        n = check_dims(w.rows, w.cols, x, out)?;
    }
    if n == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    ACTS.with(|acts| {
        use qdot::packed::{block_bytes, block_len, pair_dot_rows, panel_dot_rows, PANEL};
        let mut acts = acts.borrow_mut();
        let kind = qdot::act_kind(ty0).expect("packed types have an integer kernel");
        acts.quantize_par(kind, x, cols, pool);
        let acts = &*acts;
        let nb = cols / block_len(ty0);
        // The panels of all matrices, end to end: matrix m owns global
        // panels start[m]..start[m + 1].
        let mut start = [0usize; MAX_GROUP + 1];
        let mut shared: [Option<SharedOut>; MAX_GROUP] = Default::default();
        let mut total_rows = 0;
        for (m, (w, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
            start[m + 1] = start[m] + w.rows.div_ceil(PANEL);
            total_rows += w.rows;
            shared[m] = Some(SharedOut {
                ptr: out.as_mut_ptr(),
                len: out.len(),
            });
        }
        let count = ws.len();
        let panels = start[count];
        // Panels are handed out in units of 2 where a batch pairs them
        // (pairs never straddle two tasks).
        let pairs = n >= PAIR_ROWS;
        let unit = if pairs { 2 } else { 1 };
        let mats: [Option<&PackedMatrix>; MAX_GROUP] = std::array::from_fn(|i| ws.get(i).copied());
        let (mats, shared, start) = (&mats, &shared, &start);
        // Panels g0..g1, each written by this call alone.
        let run_panels = |g0: usize, g1: usize| {
            let mut g = g0;
            while g < g1 {
                let m = (0..count).rfind(|&m| start[m] <= g).unwrap_or(0);
                let (Some(w), Some(shared)) = (mats[m], shared[m].as_ref()) else {
                    unreachable!("matrices 0..count are set")
                };
                let p = g - start[m];
                let rows = w.rows;
                let panel_bytes = nb * block_bytes(w.ty);
                let panel = w.data[p * panel_bytes..(p + 1) * panel_bytes].as_ptr();
                let r0 = p * PANEL;
                // A batch of PAIR_ROWS or more takes two panels of one
                // matrix at once where the type has a two-panel kernel.
                // SAFETY (both): `pair_available` / `pack` checked the ISA
                // and type; the panels hold `nb` blocks; acts rows 0..n
                // exist, quantized as the type's kind; tasks own disjoint
                // panels, so the output's columns r0..r0 + live are
                // written by this task alone.
                if pairs && qdot::packed::pair_available(w.ty) && g + 1 < g1.min(start[m + 1]) {
                    let second = w.data[(p + 1) * panel_bytes..(p + 2) * panel_bytes].as_ptr();
                    let live = (2 * PANEL).min(rows - r0);
                    unsafe {
                        let o = shared.out_rows(r0, rows, n, live);
                        pair_dot_rows(w.ty, panel, second, nb, acts, 0, n, o);
                    }
                    g += 2;
                    continue;
                }
                let live = PANEL.min(rows - r0);
                unsafe {
                    let o = shared.out_rows(r0, rows, n, live);
                    panel_dot_rows(w.ty, panel, nb, acts, 0, n, o);
                }
                g += 1;
            }
        };
        if n < SPLIT_ROWS {
            // Small batches: each thread streams its own share of the
            // panels and helps with the others' at the end (see
            // `ThreadPool::run_split`), in chunks of about SPLIT_ROWS
            // weight-row x activation-row panels' work.
            let chunk = (SPLIT_ROWS / n).div_ceil(unit);
            pool.run_split(panels.div_ceil(unit), chunk, |r| {
                run_panels(r.start * unit, (r.end * unit).min(panels))
            });
        } else {
            let per = rows_per_task(total_rows, n, pool.threads())
                .div_ceil(PANEL)
                .next_multiple_of(unit);
            pool.run(panels.div_ceil(per), |task| {
                run_panels(task * per, ((task + 1) * per).min(panels))
            });
        }
    });
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pool, ty0);
        unreachable!("PackedMatrix is only built on x86_64");
    }
    #[cfg(target_arch = "x86_64")]
    Ok(())
}

/// Activation rows from which [`matmul_packed_many`] runs a two-panel
/// kernel where the type has one: a speculative verification, sequences
/// decoding together, a prompt. One row keeps the one-panel mat-vec,
/// which is bound by memory, not arithmetic. From 8 rows before session
/// 24; with 2 (`examples/stream_probe`, 2 threads, weights in cache) the
/// 4-row products went from 177 to 202-211 GMAC/s and the 2-row ones from
/// 122 to 129-131, as each `vpdpbusd` and broadcast serves 16 weight rows
/// instead of 8.
#[cfg(target_arch = "x86_64")]
const PAIR_ROWS: usize = 2;

/// Activation rows below which [`matmul_packed_many`] hands out the panels
/// with [`ThreadPool::run_split`] (own shares, help at the end) rather
/// than one counter for all tasks; also the chunk's panels x rows.
#[cfg(target_arch = "x86_64")]
const SPLIT_ROWS: usize = 16;

/// Weight rows per task: enough tasks that both cores finish together
/// (several per thread, handed out dynamically), big enough that the
/// atomic hand-out is negligible. Multiples of 8 (the GEMM panel).
fn rows_per_task(rows: usize, n: usize, threads: usize) -> usize {
    if threads <= 1 {
        return rows.max(1);
    }
    // Work per row grows with n; small n wants bigger chunks. A prompt's
    // tasks are long enough (each weight row meets every activation row)
    // that 32 per thread cost nothing to hand out, and the last one to
    // finish then holds the other thread up by 1/64 of the product at most
    // instead of 1/16.
    let (min, per_thread) = if n >= 16 { (16, 32) } else { (64, 8) };
    let per = rows.div_ceil(threads * per_thread).max(min);
    per.div_ceil(8) * 8
}

fn check_shapes(w: &QMatrix, x: &[f32], out: &[f32]) -> Result<usize> {
    check_dims(w.rows, w.cols, x, out)
}

fn check_dims(rows: usize, cols: usize, x: &[f32], out: &[f32]) -> Result<usize> {
    if !x.len().is_multiple_of(cols) {
        return Err(Error::length(
            "activations (a multiple of cols)",
            x.len() / cols * cols,
            x.len(),
        ));
    }
    let n = x.len() / cols;
    let expected = n.checked_mul(rows).ok_or(ErrorKind::Overflow {
        what: "output size",
    })?;
    if out.len() != expected {
        return Err(Error::length("matmul output", expected, out.len()));
    }
    Ok(n)
}

thread_local! {
    /// One panel of weights packed on the fly for a prompt product.
    static PANEL_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Activations rounded through 8 bits for types without an integer
    /// kernel (grown on first use, then reused).
    static ROUNDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// The calling thread's quantized activations, reused across calls.
    static ACTS: RefCell<QuantActs> = RefCell::new(QuantActs::default());
}

/// The f32 path: weights dequantized to f32 strips, f32 register tiles.
/// Each output element is bit-identical to `cpu.dot(dequantized row r,
/// x row i)`, whatever the thread count.
///
/// Scratch: each worker thread keeps a thread-local `STRIP_ROWS x cols` f32
/// buffer, grown on first use; with today's scoped-thread pool that is one
/// allocation per call per spawned thread (the calling thread keeps its own).
pub fn matmul_f32_with(
    cpu: Cpu,
    w: &QMatrix,
    x: &[f32],
    out: &mut [f32],
    pool: &ThreadPool,
) -> Result<()> {
    let (rows, cols) = (w.rows, w.cols);
    check_shapes(w, x, out)?;
    let shared = SharedOut {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    let shared = &shared;
    pool.run(rows.div_ceil(STRIP_ROWS), |task| {
        let r0 = task * STRIP_ROWS;
        let np = STRIP_ROWS.min(rows - r0);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < np * cols {
                s.resize(np * cols, 0.0);
            }
            let strip = &mut s[..np * cols];
            for (p, dst) in strip.chunks_exact_mut(cols).enumerate() {
                w.dequant.run(w.row(r0 + p), dst);
            }
            // Each task writes only columns r0..r0 + np of `out`.
            let put = |i: usize, r: usize, v: f32| {
                // SAFETY: tasks own disjoint row ranges, so (i, r0 + r) is
                // written by this task alone; nothing reads `out` meanwhile.
                unsafe { shared.write(i * rows + r0 + r, v) }
            };
            match cpu.tile_shape() {
                (4, 4) => strip_tiles::<4, 4>(cpu, strip, x, cols, put),
                (4, 2) => strip_tiles::<4, 2>(cpu, strip, x, cols, put),
                _ => strip_tiles::<1, 1>(cpu, strip, x, cols, put),
            }
        });
    });
    Ok(())
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Dot every row of `strip` with every row of `x` (both `cols` long) in
/// `R x N` tiles, falling back to `1 x N`, `R x 1` and `1 x 1` at the edges;
/// `put(i, r, v)` receives activation row i, strip row r.
fn strip_tiles<const R: usize, const N: usize>(
    cpu: Cpu,
    strip: &[f32],
    x: &[f32],
    cols: usize,
    mut put: impl FnMut(usize, usize, f32),
) {
    let np = strip.len() / cols;
    let n = x.len() / cols;
    let mut i = 0;
    while i < n {
        if i + N <= n {
            let xt = &x[i * cols..(i + N) * cols];
            let mut r = 0;
            while r < np {
                if r + R <= np {
                    let mut t = [[0f32; N]; R];
                    cpu.dot_tile::<R, N>(&strip[r * cols..], xt, cols, &mut t);
                    for (dr, row) in t.iter().enumerate() {
                        for (di, &v) in row.iter().enumerate() {
                            put(i + di, r + dr, v);
                        }
                    }
                    r += R;
                } else {
                    let mut t = [[0f32; N]; 1];
                    cpu.dot_tile::<1, N>(&strip[r * cols..], xt, cols, &mut t);
                    for (di, &v) in t[0].iter().enumerate() {
                        put(i + di, r, v);
                    }
                    r += 1;
                }
            }
            i += N;
        } else {
            let xt = &x[i * cols..(i + 1) * cols];
            let mut r = 0;
            while r < np {
                if r + R <= np {
                    let mut t = [[0f32; 1]; R];
                    cpu.dot_tile::<R, 1>(&strip[r * cols..], xt, cols, &mut t);
                    for (dr, row) in t.iter().enumerate() {
                        put(i, r + dr, row[0]);
                    }
                    r += R;
                } else {
                    let mut t = [[0f32; 1]; 1];
                    cpu.dot_tile::<1, 1>(&strip[r * cols..], xt, cols, &mut t);
                    put(i, r, t[0][0]);
                    r += 1;
                }
            }
            i += 1;
        }
    }
}

/// The output buffer shared by tasks that write disjoint elements.
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: only used through `write`, whose callers guarantee disjoint
// indices across threads for the lifetime of one `matmul_with` call.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// No other thread may access index `i` during the call.
    unsafe fn write(&self, i: usize, v: f32) {
        assert!(i < self.len, "matmul output index out of bounds");
        *self.ptr.add(i) = v;
    }

    /// Where a panel kernel stores `count` activation rows' outputs:
    /// row `jj`'s `live` lanes at `i + jj * stride`.
    ///
    /// # Safety
    /// No other thread may access those elements during the kernel's call.
    #[cfg(target_arch = "x86_64")]
    unsafe fn out_rows(
        &self,
        i: usize,
        stride: usize,
        count: usize,
        live: usize,
    ) -> qdot::packed::OutRows {
        assert!(
            count == 0 || i + (count - 1) * stride + live <= self.len,
            "matmul output index out of bounds"
        );
        qdot::packed::OutRows::new(self.ptr.add(i), stride, live)
    }
}
