//! `convert`'s I/O with `O_DIRECT`: each tensor's pieces are read from
//! their files straight into buffers that are reused from tensor to
//! tensor ([`DirectReader`], [`BufPool`]), and the output is written in
//! aligned stages ([`DirectWriter`]), bypassing the page cache.
//!
//! Why: reading a 13.5 GB folder through the page cache (the map, or
//! `read`) costs about a second of kernel time per GB on the machines this
//! was measured on (fresh cache pages allocated, filled, mapped, touched
//! once, reclaimed), which is more than the disk's own time; the same read
//! with `O_DIRECT` costs almost no CPU (BENCHMARKS.md, "Convert time, 7B
//! shape", conv24). A buffer whose pages stay mapped across tensors is
//! written by the disk and read by the converter without page faults.
//!
//! `O_DIRECT` needs the file offset, length and buffer address aligned
//! (to the device's logical block, 4096 covers every common one), so a
//! piece is read as the aligned span around it and sliced. Where the file
//! system refuses `O_DIRECT` (at open or at the first read, `EINVAL`), or
//! off Linux, [`DirectReader::load`] answers `None` and the tensor is read
//! through the map as before: the bytes are the same either way.
//! Hand-written: a few lines of `pread` on an `O_DIRECT` descriptor, which
//! no crate wraps with a buffer pool shaped like this pipeline's.

use crate::error::{Error, Result};
use crate::plan::{Source, SrcTensor};
use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;

/// Alignment of `O_DIRECT` offsets, lengths and buffer addresses.
const ALIGN: usize = 4096;

/// One tensor's source bytes, piece by piece: each buffer and where in it
/// the piece's bytes are.
pub(crate) struct Loaded {
    pub(crate) pieces: Vec<(Vec<u8>, Range<usize>)>,
}

impl Loaded {
    /// Each piece's bytes, in order.
    pub(crate) fn slices(&self) -> Vec<&[u8]> {
        self.pieces.iter().map(|(b, r)| &b[r.clone()]).collect()
    }
}

/// Free buffers by length, shared by the reader (which takes) and the
/// writer (which gives back). A 7B model has a handful of distinct piece
/// sizes, so buffers are reused by exact length; at most `limit` bytes of
/// free buffers are kept.
pub(crate) struct BufPool {
    limit: usize,
    free: Mutex<Free>,
}

/// Free buffers by length, and their total bytes.
type Free = (HashMap<usize, Vec<Vec<u8>>>, usize);

impl BufPool {
    pub(crate) fn new(limit: usize) -> BufPool {
        BufPool {
            limit,
            free: Mutex::new((HashMap::new(), 0)),
        }
    }

    fn take(&self, len: usize) -> Vec<u8> {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        match g.0.get_mut(&len).and_then(Vec::pop) {
            Some(b) => {
                g.1 -= len;
                b
            }
            None => vec![0u8; len],
        }
    }

    pub(crate) fn give(&self, loaded: Loaded) {
        for (b, _) in loaded.pieces {
            self.give_buf(b);
        }
    }

    /// A buffer of `len` bytes: a free one of that length (its old bytes
    /// left in place), else a new zeroed one.
    pub(crate) fn take_buf(&self, len: usize) -> Vec<u8> {
        self.take(len)
    }

    /// Keeps `b` for a later [`BufPool::take_buf`] of its length, unless
    /// the pool is full.
    pub(crate) fn give_buf(&self, b: Vec<u8>) {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 + b.len() <= self.limit {
            g.1 += b.len();
            g.0.entry(b.len()).or_default().push(b);
        }
    }
}

/// The reader thread's open `O_DIRECT` descriptors (`None`: the file
/// system refused, read through the map).
#[derive(Default)]
pub(crate) struct DirectReader {
    files: HashMap<PathBuf, Option<std::fs::File>>,
}

impl DirectReader {
    /// Reads `t`'s pieces into buffers from `pool`; `None` when some piece's
    /// file cannot be read with `O_DIRECT` (the caller reads the map).
    pub(crate) fn load(&mut self, t: &SrcTensor, pool: &BufPool) -> Result<Option<Loaded>> {
        let Source::Pieces { dtype, pieces, .. } = &t.source else {
            return Ok(None);
        };
        let mut out = Loaded {
            pieces: Vec::with_capacity(pieces.len()),
        };
        for p in pieces {
            let len = p.len(*dtype);
            let Some(file) = self.file(&p.path) else {
                pool.give(out);
                return Ok(None);
            };
            match read_span(file, p.start, len, pool) {
                Ok(Some(piece)) => out.pieces.push(piece),
                Ok(None) => {
                    // Refused at the first read: not for this file.
                    self.files.insert(p.path.to_path_buf(), None);
                    pool.give(out);
                    return Ok(None);
                }
                Err(e) => {
                    pool.give(out);
                    return Err(Error::io(p.path.as_path(), e));
                }
            }
        }
        Ok(Some(out))
    }

    fn file(&mut self, path: &PathBuf) -> Option<&std::fs::File> {
        self.files
            .entry(path.clone())
            .or_insert_with(|| open_direct(path))
            .as_ref()
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &PathBuf) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &PathBuf) -> Option<std::fs::File> {
    None
}

/// Reads bytes `start..start + len` of `file` (opened with `O_DIRECT`)
/// as the aligned span around them; `None` if the kernel refuses the
/// direct read (`EINVAL`). A file shorter than the range is an error.
#[cfg(target_os = "linux")]
fn read_span(
    file: &std::fs::File,
    start: usize,
    len: usize,
    pool: &BufPool,
) -> std::io::Result<Option<(Vec<u8>, Range<usize>)>> {
    use std::os::unix::fs::FileExt;
    let first = start / ALIGN * ALIGN;
    let span = (start + len).div_ceil(ALIGN) * ALIGN - first;
    let mut buf = pool.take(span + ALIGN);
    let a = buf.as_ptr().align_offset(ALIGN);
    let want = start + len - first;
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[a + got..a + span], (first + got) as u64) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file ends before byte {} of a tensor stored at {start}..{}",
                        first + want,
                        start + len
                    ),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && got == 0 => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let at = a + start - first;
    Ok(Some((buf, at..at + len)))
}

#[cfg(not(target_os = "linux"))]
fn read_span(
    _: &std::fs::File,
    _: usize,
    _: usize,
    _: &BufPool,
) -> std::io::Result<Option<(Vec<u8>, Range<usize>)>> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DType, Layout, Piece};
    use std::sync::Arc;

    /// A tensor of `shape` bf16 elements at byte `start` of `path`.
    fn tensor(path: &std::path::Path, start: usize, shape: Vec<usize>) -> SrcTensor {
        let f = std::fs::File::open(path).unwrap();
        // SAFETY: a test file nobody else writes.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&f) }.unwrap());
        SrcTensor {
            name: "t".into(),
            shape: shape.clone(),
            source: Source::Pieces {
                dtype: DType::BF16,
                pieces: vec![Piece {
                    map,
                    path: Arc::new(path.to_path_buf()),
                    start,
                    shape,
                }],
                layout: Layout::Plain,
            },
            origin: path.to_path_buf(),
        }
    }

    /// Unaligned ranges (start, end, both) come back as the file's bytes,
    /// buffers are reused by length, and a range past the end of the file
    /// is an error that says so. Skipped where the file system refuses
    /// `O_DIRECT` (then `load` answers `None`, checked too).
    #[test]
    fn direct_reads_give_the_file_bytes_and_reuse_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..3 * ALIGN + 999).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let pool = BufPool::new(1 << 20);
        let mut r = DirectReader::default();
        for (start, n) in [
            (0, 10),
            (6, 2048),
            (4096, 2048),
            (4094, 1),
            (10, 6637),
            (0, 0),
        ] {
            let t = tensor(&path, start, vec![n]);
            let Some(l) = r.load(&t, &pool).unwrap() else {
                assert!(!cfg!(target_os = "linux") || open_direct(&path.clone()).is_none());
                return;
            };
            assert_eq!(l.slices(), vec![&data[start..start + 2 * n]], "{start} {n}");
            assert_eq!(t.assemble(&l.slices()).unwrap(), t.raw().unwrap());
            pool.give(l);
        }
        // The same span again: the pooled buffer, not a new one.
        let t = tensor(&path, 6, vec![2048]);
        let l = r.load(&t, &pool).unwrap().unwrap();
        let p = l.pieces[0].0.as_ptr();
        pool.give(l);
        let l = r.load(&t, &pool).unwrap().unwrap();
        assert_eq!(l.pieces[0].0.as_ptr(), p);
        // Past the end of the file.
        let t = tensor(&path, 3 * ALIGN, vec![1000]);
        let err = r.load(&t, &pool).err().unwrap().to_string();
        assert!(err.contains("the file ends before byte"), "{err}");
    }
}

/// Bytes staged before each `O_DIRECT` write of the output.
const STAGE: usize = 32 << 20;

/// `convert`'s output written with `O_DIRECT`: bytes are staged in an
/// aligned buffer and written [`STAGE`] bytes at a time at aligned offsets,
/// so a 13.5 GB output does not pass through the page cache (whose kernel
/// cost, like the read's, exceeds the disk's own time); the last, partial
/// stage is written through an ordinary descriptor by
/// [`DirectWriter::finish`]. Where the file system refuses `O_DIRECT`
/// writes (`EINVAL` on the first), every stage goes through the ordinary
/// descriptor instead: the same bytes.
pub(crate) struct DirectWriter {
    /// The ordinary descriptor: the tail, and everything after a refusal.
    file: std::fs::File,
    /// The `O_DIRECT` descriptor, `None` once refused.
    direct: Option<std::fs::File>,
    buf: Vec<u8>,
    /// Aligned start of the stage in `buf`.
    at: usize,
    /// Bytes staged.
    len: usize,
    /// Bytes written to the file (a multiple of [`STAGE`]).
    written: u64,
}

impl DirectWriter {
    /// A writer at the start of `file` (just created at `path`), or `None`
    /// where `O_DIRECT` cannot be opened.
    pub(crate) fn open(path: &std::path::Path, file: &std::fs::File) -> Option<DirectWriter> {
        let direct = open_direct_write(path)?;
        let file = file.try_clone().ok()?;
        let buf = vec![0u8; STAGE + ALIGN];
        let at = buf.as_ptr().align_offset(ALIGN);
        Some(DirectWriter {
            file,
            direct: Some(direct),
            buf,
            at,
            len: 0,
            written: 0,
        })
    }

    fn write_stage(&mut self) -> std::io::Result<()> {
        let stage = &self.buf[self.at..self.at + self.len];
        if let Some(d) = &self.direct {
            match write_all_at(d, stage, self.written) {
                Ok(()) => {
                    self.written += self.len as u64;
                    self.len = 0;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.written == 0 => {
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        write_all_at(&self.file, stage, self.written)?;
        self.written += self.len as u64;
        self.len = 0;
        Ok(())
    }

    /// Writes what is staged (through the ordinary descriptor) and returns
    /// that descriptor, for the caller's fsync.
    pub(crate) fn finish(self) -> std::io::Result<std::fs::File> {
        write_all_at(
            &self.file,
            &self.buf[self.at..self.at + self.len],
            self.written,
        )?;
        Ok(self.file)
    }
}

impl std::io::Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(STAGE - self.len);
        let to = self.at + self.len;
        self.buf[to..to + n].copy_from_slice(&data[..n]);
        self.len += n;
        if self.len == STAGE {
            self.write_stage()?;
        }
        Ok(n)
    }

    /// Staged bytes wait for a full stage or [`DirectWriter::finish`].
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(unix)]
fn write_all_at(f: &std::fs::File, data: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, data, at)
}

#[cfg(not(unix))]
fn write_all_at(f: &std::fs::File, data: &[u8], at: u64) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut f = f;
    f.seek(std::io::SeekFrom::Start(at))?;
    f.write_all(data)
}

#[cfg(target_os = "linux")]
fn open_direct_write(path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct_write(_: &std::path::Path) -> Option<std::fs::File> {
    None
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use std::io::Write;

    /// Bytes through the direct writer arrive whole and in order, across
    /// several stages, writes that straddle them, and a partial last one.
    #[test]
    fn direct_writer_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        let file = std::fs::File::create(&path).unwrap();
        let Some(mut w) = DirectWriter::open(&path, &file) else {
            // This file system refuses O_DIRECT: convert writes through
            // the page cache there (covered by convert_threads).
            eprintln!("O_DIRECT refused in {path:?}: nothing to check");
            return;
        };
        let data: Vec<u8> = (0..2 * STAGE + 12_345).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(7 << 20).flat_map(|c| c.chunks(3 << 20)) {
            w.write_all(c).unwrap();
        }
        w.flush().unwrap();
        let f = w.finish().unwrap();
        f.sync_all().unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }
}
