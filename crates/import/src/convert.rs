//! `cria convert`: a plan written as a GGUF file, as a three-stage pipeline
//! so reading, converting and writing overlap:
//!
//! ```text
//!  reader thread         converter thread (+ pool)          writer (caller's thread)
//!  tensor i+k: O_DIRECT  tensor i+1: raw -> encode_into on  tensor i: write in order
//!  into pooled buffers   the pool's threads (a pooled       (O_DIRECT, 32 MB stages),
//!  (or MADV_WILLNEED)    output buffer), then hand over ->  buffers back to the pools
//! ```
//!
//! - The reader reads tensors ahead of the converter, at most
//!   [`READ_AHEAD`] bytes of source not yet written, so the disk reads
//!   while the converter and writer work. By default it reads them with
//!   `O_DIRECT` into buffers reused from tensor to tensor ([`crate::direct`],
//!   [`Io::Direct`]), which spares the page cache's CPU cost;
//!   where the file system refuses that, or with [`Io::PageCache`],
//!   it asks the kernel to read the mapped ranges ahead (`MADV_WILLNEED` +
//!   `MADV_SEQUENTIAL`) and the converter reads the map.
//! - The converter encodes one tensor at a time with every thread of the
//!   pool (`plan::encode_into`: independent tasks, so the bytes do not
//!   depend on the thread count), into an output buffer reused by length,
//!   and hands it to the writer over a rendezvous channel: at most two
//!   converted tensors exist at once (the one being written and the one
//!   waiting), whatever the model's size.
//! - The writer writes them in the declared order through
//!   [`cria_gguf::StreamWriter`], by default into a [`DirectWriter`]
//!   (`O_DIRECT` in aligned 32 MB stages, the partial last one buffered).
//!   Where that is refused, or with [`Io::PageCache`], into a
//!   [`Writeback`] file that starts the disk write of each 64 MB as soon
//!   as it is written (instead of when the kernel's dirty-page threshold is
//!   crossed, gigabytes later) and drops written pages from the page
//!   cache, so the final fsync has little left to wait for.
//!
//! Hand-written on std threads and channels plus the kernels' pool: the
//! stages are three fixed roles with back-pressure, which a data-parallel
//! crate (rayon) does not express, and the pool is the one the rest of
//! cria already uses for row-parallel loops.

use crate::direct::{BufPool, DirectReader, DirectWriter, Loaded};
use crate::error::{Error, Result};
use crate::plan::{encode_into, OutType, SrcTensor};
use cria_gguf::StreamWriter;
use cria_kernels::ThreadPool;
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Condvar, Mutex};

/// Source bytes the reader may have read (or asked for) ahead of the
/// writer: a 7B model's largest tensor (a 262 MB embedding) and the next,
/// or a layer and more (404 MB in bf16), small next to the machine's
/// memory. Free read buffers kept for reuse are bounded by the same
/// amount, free output buffers by half of it: peak memory stays near
/// 1.5 GB for a 7B model (BENCHMARKS.md).
const READ_AHEAD: u64 = 512 << 20;

/// Converts the folder `src` to the GGUF file `out` on every core; see
/// [`convert_with`].
pub fn convert(
    src: &Path,
    out: &Path,
    outtype: OutType,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    convert_with(src, out, outtype, threads, progress)
}

/// How `convert` reads its source and writes its output. The output
/// bytes are the same either way; only the cost differs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// With `O_DIRECT` where the file system allows it (the default):
    /// source read into reused buffers, output staged and written in
    /// aligned 32 MB steps. Elsewhere, as [`Io::PageCache`].
    Direct,
    /// Through the page cache: the source's memory map, read ahead with
    /// `MADV_WILLNEED`, and the output written with early writeback.
    PageCache,
}

/// The output file: [`DirectWriter`] or [`Writeback`].
enum Sink {
    Direct(DirectWriter),
    Buffered(Writeback),
}

impl Sink {
    /// The file, everything written (not yet synced).
    fn into_file(self) -> std::io::Result<std::fs::File> {
        match self {
            Sink::Direct(d) => d.finish(),
            Sink::Buffered(w) => Ok(w.into_file()),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Direct(d) => d.write(buf),
            Sink::Buffered(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Direct(d) => d.flush(),
            Sink::Buffered(w) => w.flush(),
        }
    }
}

/// Converts the folder `src` to the GGUF file `out`, converting each
/// tensor on `threads` threads (0 is an error) while the next tensors are
/// read and the previous one is written. Memory holds at most two
/// converted tensors and the source of the tensors in flight. The
/// output is written to `out.part`, fsynced, and renamed when complete, so
/// a failed run leaves no file that looks finished. The file's bytes are
/// the same for every thread count. `progress(done, total)` is called, on
/// the caller's thread, after each tensor is written.
pub fn convert_with(
    src: &Path,
    out: &Path,
    outtype: OutType,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    convert_with_io(src, out, outtype, threads, Io::Direct, progress)
}

/// [`convert_with`], reading and writing as `io` says.
pub fn convert_with_io(
    src: &Path,
    out: &Path,
    outtype: OutType,
    threads: usize,
    io: Io,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    if threads == 0 {
        return Err(Error::bad(
            out,
            "convert needs at least 1 thread (-t 0 given)",
        ));
    }
    let plan = crate::plan(src, outtype)?;
    let infos: Vec<_> = plan
        .tensors
        .iter()
        .map(|t| (t.name.clone(), outtype.for_tensor(t), t.dims()))
        .collect();
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let file = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
    let result = (|| {
        let sink = match io {
            Io::Direct => DirectWriter::open(&part, &file).map(Sink::Direct),
            Io::PageCache => None,
        };
        let sink = sink.unwrap_or_else(|| Sink::Buffered(Writeback::new(file)));
        let w = StreamWriter::begin(
            std::io::BufWriter::with_capacity(1 << 20, sink),
            &plan.metadata,
            &infos,
        )?;
        let buf = pipeline(&plan.tensors, &infos, threads, io, w, progress)?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io(&part, e.into_error()))?
            .into_file()
            .map_err(|e| Error::io(&part, e))?;
        file.sync_all().map_err(|e| Error::io(&part, e))?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, out).map_err(|e| Error::io(out, e))
}

type Infos = [(String, cria_gguf::GgmlType, Vec<u64>)];

/// One tensor as the converter hands it to the writer.
enum Converted<'t> {
    /// The map's bytes, as they are or assembled.
    Bytes(Cow<'t, [u8]>),
    /// Converted bytes, in a buffer that goes back to the output pool once
    /// written.
    Owned(Vec<u8>),
    /// The source as read, unchanged (one piece, already in the output
    /// type); its buffers go back to the pool once written.
    AsRead(Loaded),
}

impl Converted<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Converted::Bytes(b) => b,
            Converted::Owned(v) => v,
            Converted::AsRead(l) => l.slices().first().copied().unwrap_or(&[]),
        }
    }
}

/// Converts `t` to `ty` from the buffers the reader filled, or from the
/// map when it did not (`loaded` is `None`), into a buffer from `outs`.
fn convert_one<'t>(
    t: &'t SrcTensor,
    ty: cria_gguf::GgmlType,
    loaded: Option<Loaded>,
    pool: &ThreadPool,
    bufs: &BufPool,
    outs: &BufPool,
) -> Result<Converted<'t>> {
    let same = ty == t.dtype().ggml();
    let encode = |raw: &[u8]| -> Vec<u8> {
        let len = ty.bytes_for(t.n_elements() as u64).unwrap_or(0) as usize;
        let mut out = outs.take_buf(len);
        encode_into(t.dtype(), raw, ty, pool, &mut out);
        out
    };
    let Some(l) = loaded else {
        let raw = t.raw()?;
        if same {
            return Ok(Converted::Bytes(raw));
        }
        let out = encode(&raw);
        drop(raw);
        // The source is no longer needed: keep the resident set to the
        // tensors in flight.
        t.release_source();
        return Ok(Converted::Owned(out));
    };
    let out = {
        let slices = l.slices();
        match t.assemble(&slices)? {
            // Unchanged: the buffer is written as read.
            Cow::Borrowed(_) if same => None,
            Cow::Borrowed(raw) => Some(encode(raw)),
            // Assembled (permuted, joined), type unchanged.
            Cow::Owned(v) if same => Some(v),
            Cow::Owned(v) => Some(encode(&v)),
        }
    };
    Ok(match out {
        None => Converted::AsRead(l),
        Some(v) => {
            bufs.give(l);
            Converted::Owned(v)
        }
    })
}

/// Runs the reader, converter and writer over `tensors` (typed as
/// `infos`), returning the writer's output once every tensor is written.
fn pipeline<W: Write>(
    tensors: &[SrcTensor],
    infos: &Infos,
    threads: usize,
    io: Io,
    mut w: StreamWriter<W>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<W> {
    let budget = Budget::new(READ_AHEAD);
    let bufs = BufPool::new(READ_AHEAD as usize);
    // Converted tensors' buffers, reused by length (one of each layer's
    // shapes; the few largest tensors are not kept).
    let outs = BufPool::new(READ_AHEAD as usize / 2);
    std::thread::scope(|s| {
        // Closes the budget however the writer leaves (error or panic), so
        // a reader waiting for room wakes up and stops.
        struct Close<'a>(&'a Budget);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _close = Close(&budget);
        let (budget, bufs, outs) = (&budget, &bufs, &outs);

        // Unbounded: the budget bounds what the reader reads ahead.
        let (load_tx, load_rx) = channel::<Result<Option<Loaded>>>();
        s.spawn(move || {
            let mut direct = DirectReader::default();
            for t in tensors {
                if !budget.acquire(t.source_bytes()) {
                    return;
                }
                let loaded = match io {
                    Io::Direct => direct.load(t, bufs),
                    Io::PageCache => Ok(None),
                };
                if let Ok(None) = loaded {
                    t.prefetch_source();
                }
                let failed = loaded.is_err();
                // A send fails only when the converter has stopped.
                if load_tx.send(loaded).is_err() || failed {
                    return;
                }
            }
        });

        // Capacity 0: the converter waits, holding one converted tensor,
        // until the writer takes it.
        let (tx, rx) = sync_channel::<Result<Converted<'_>>>(0);
        s.spawn(move || {
            let pool = ThreadPool::new(threads);
            for (t, (_, ty, _)) in tensors.iter().zip(infos) {
                // The reader stops early only after sending an error, or
                // once the writer has stopped.
                let Ok(loaded) = load_rx.recv() else {
                    return;
                };
                let conv = loaded.and_then(|l| convert_one(t, *ty, l, &pool, bufs, outs));
                let failed = conv.is_err();
                // A send fails only when the writer has stopped.
                if tx.send(conv).is_err() || failed {
                    return;
                }
            }
        });

        let total = tensors.len();
        for (i, t) in tensors.iter().enumerate() {
            // The converter sends one message per tensor until it fails,
            // and a failure is sent: a closed channel here cannot happen
            // before an error has been received, but is reported anyway.
            let conv = rx.recv().map_err(|_| {
                Error::bad(
                    &t.origin,
                    format!("tensor {}: the converter stopped", t.name),
                )
            })??;
            w.write_tensor(&t.name, conv.bytes())?;
            match conv {
                Converted::AsRead(l) => bufs.give(l),
                Converted::Owned(v) => outs.give_buf(v),
                Converted::Bytes(b) => drop(b),
            }
            t.release_source();
            budget.release(t.source_bytes());
            progress(i + 1, total);
        }
        Ok(w.finish()?)
    })
}

/// Bytes of source the reader has advised and the writer not yet
/// finished with; the reader waits while adding a tensor would pass the
/// limit (a tensor larger than the limit goes alone).
struct Budget {
    limit: u64,
    /// (bytes in flight, closed)
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Budget {
    fn new(limit: u64) -> Budget {
        Budget {
            limit,
            state: Mutex::new((0, false)),
            changed: Condvar::new(),
        }
    }

    /// Waits for room for `n` bytes and takes it; false once closed.
    fn acquire(&self, n: u64) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (used, closed) = *g;
            if closed {
                return false;
            }
            if used == 0 || used + n <= self.limit {
                g.0 = used + n;
                return true;
            }
            g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn release(&self, n: u64) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(n);
        self.changed.notify_all();
    }

    fn close(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = true;
        self.changed.notify_all();
    }
}

/// The output file, with its writeback started as it is written: every
/// [`WINDOW`] bytes, the new window is sent to the disk
/// (`sync_file_range(WRITE)`), and the window before it is waited for and
/// dropped from the page cache (`POSIX_FADV_DONTNEED`). Dirty memory stays
/// near two windows, and the disk writes from the first window on rather
/// than once the kernel's dirty threshold (10-20 % of RAM) is reached.
/// Durability still comes from the fsync in [`convert_with`]; on systems
/// without these calls (or file systems that refuse them) it is a plain
/// file.
struct Writeback {
    file: std::fs::File,
    /// Bytes written so far.
    written: u64,
    /// Writeback started for `..started`.
    started: u64,
    /// Written to disk and dropped from the cache for `..settled`.
    settled: u64,
    /// False once the file system refused `sync_file_range`.
    enabled: bool,
}

/// Bytes between two writeback steps.
const WINDOW: u64 = 64 << 20;

impl Writeback {
    fn new(file: std::fs::File) -> Writeback {
        Writeback {
            file,
            written: 0,
            started: 0,
            settled: 0,
            enabled: cfg!(target_os = "linux"),
        }
    }

    fn into_file(self) -> std::fs::File {
        self.file
    }

    #[cfg(target_os = "linux")]
    fn step(&mut self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let range = |a: u64, b: u64| (a as i64, (b - a) as i64);
        let (off, len) = range(self.started, self.written);
        // SAFETY: plain system calls on an open descriptor we own.
        let rc =
            unsafe { libc::sync_file_range(fd, off as _, len as _, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                // The file system does not support it: write as a plain
                // file (the final fsync still makes the file durable).
                Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ESPIPE) => {
                    self.enabled = false;
                    Ok(())
                }
                _ => Err(e),
            };
        }
        if self.started > self.settled {
            let (off, len) = range(self.settled, self.started);
            let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: as above.
            if unsafe { libc::sync_file_range(fd, off as _, len as _, wait) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Advice only: the pages are clean now, dropping them spares
            // everyone else's page cache.
            // SAFETY: as above.
            let _ =
                unsafe { libc::posix_fadvise(fd, off as _, len as _, libc::POSIX_FADV_DONTNEED) };
            self.settled = self.started;
        }
        self.started = self.written;
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn step(&mut self) -> std::io::Result<()> {
        self.enabled = false;
        Ok(())
    }
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.enabled && self.written - self.started >= WINDOW {
            self.step()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget lets a tensor larger than the limit through alone, makes
    /// the reader wait for room, and wakes it with `false` when closed.
    #[test]
    fn budget_waits_for_room_and_stops_when_closed() {
        let b = Budget::new(100);
        assert!(b.acquire(250), "alone, a tensor over the limit passes");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| b.acquire(10));
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(!waiter.is_finished(), "no room: the reader waits");
            b.release(250);
            assert!(waiter.join().unwrap(), "room made: the reader goes on");
        });
        assert!(b.acquire(90));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| b.acquire(50));
            b.close();
            assert!(!waiter.join().unwrap(), "closed: the reader stops");
        });
    }

    /// Bytes through the writeback file arrive whole and in order, across
    /// several windows and writes that straddle them.
    #[test]
    fn writeback_file_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        let mut w = Writeback::new(std::fs::File::create(&path).unwrap());
        let data: Vec<u8> = (0..(2 * WINDOW + 12_345) as usize)
            .map(|i| (i % 251) as u8)
            .collect();
        for c in data.chunks(7 << 20) {
            w.write_all(c).unwrap();
        }
        w.flush().unwrap();
        let f = w.into_file();
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
