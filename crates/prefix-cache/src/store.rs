//! A cache directory shared by processes: one file per entry, written
//! atomically, evicted least recently used first under a byte cap.
//!
//! - **Names.** `{index:06}-{hex key}.kv`: `index` is the block's number in
//!   its prefix (1 for the first block), so the name is known from the
//!   prefix alone and eviction can prefer deep blocks without opening
//!   files.
//! - **Writes** go to a temporary file in the same directory (a name of
//!   its own per process and write), which is fsynced, renamed over the
//!   entry's name, and the directory fsynced: a reader sees no entry or a
//!   whole one, after a crash too. A crash leaves at most a temporary
//!   file, removed by a later eviction once it is 15 minutes old.
//! - **Reads** open the file once and read what its header declares,
//!   bounded by the size an entry of this model may have; an entry
//!   renamed away or deleted meanwhile is still read whole (the open file
//!   keeps its bytes) or not found.
//! - **Recency** is the file's modification time. A prefix used or written
//!   touches all its blocks with one timestamp, and among equal times the
//!   deepest block goes first, so a prefix loses its tail before its head
//!   (a block is useless without those before it).
//! - **Eviction** lists the directory after each write and deletes until
//!   the `.kv` files fit the cap; a file that vanishes meanwhile (another
//!   process evicted it) is skipped.

use crate::entry::{declared_len, Limits, HEADER_BYTES};
use crate::error::{Error, ErrorKind, Result};
use crate::ident::{hex, Key};
use std::fs::File;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Temporary files older than this are leftovers of a crash.
const STALE_TMP: Duration = Duration::from_secs(15 * 60);

pub struct Store {
    dir: PathBuf,
    max_bytes: u64,
}

/// What an eviction pass found and did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Entry files and their bytes after the pass.
    pub files: usize,
    pub bytes: u64,
    pub evicted: usize,
}

impl Store {
    /// Opens (creating it if needed) the cache directory `dir`, whose
    /// entries may take at most `max_bytes`; checks that it is writable.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let probe = dir.join(format!(".probe.{}.tmp", std::process::id()));
        File::create(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                Error::from(ErrorKind::Config {
                    detail: format!(
                        "the prefix cache directory {} is not writable ({e}): give a directory this user may write",
                        dir.display()
                    ),
                })
            })?;
        Ok(Store {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The file of block `index` of a prefix, whose key is `key`.
    pub fn path(&self, index: usize, key: &Key) -> PathBuf {
        self.dir.join(format!("{index:06}-{}.kv", hex(key)))
    }

    /// Writes an entry unless it alone is larger than the cap (then
    /// `false`).
    pub fn put(&self, index: usize, key: &Key, bytes: &[u8]) -> Result<bool> {
        if bytes.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        let path = self.path(index, key);
        write_atomic(&path, bytes).map_err(|e| Error::io(&path, e))?;
        Ok(true)
    }

    /// Marks blocks as used at `when` (best effort: a block evicted
    /// meanwhile is skipped).
    pub fn touch(&self, blocks: &[(usize, Key)], when: SystemTime) {
        for (i, k) in blocks {
            if let Ok(f) = File::open(self.path(*i, k)) {
                let _ = f.set_modified(when);
            }
        }
    }

    /// Deletes least recently used entries until the rest fit the cap, and
    /// temporary files left by crashes.
    pub fn evict(&self) -> Result<Usage> {
        let now = SystemTime::now();
        let mut files = Vec::new();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for de in rd.flatten() {
            let name = de.file_name();
            let Some(name) = name.to_str() else { continue };
            // Gone already (another process evicted it): skip.
            let Ok(md) = de.metadata() else { continue };
            let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.ends_with(".tmp") {
                if now.duration_since(mtime).unwrap_or_default() > STALE_TMP {
                    let _ = std::fs::remove_file(de.path());
                }
                continue;
            }
            let Some(index) = name
                .strip_suffix(".kv")
                .and_then(|n| n.split_once('-'))
                .and_then(|(i, _)| i.parse::<usize>().ok())
            else {
                continue;
            };
            files.push((mtime, std::cmp::Reverse(index), md.len(), de.path()));
        }
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        let mut usage = Usage {
            files: files.len(),
            bytes: total,
            evicted: 0,
        };
        if total <= self.max_bytes {
            return Ok(usage);
        }
        files.sort();
        for (_, _, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => usage.evicted += 1,
                Err(e) if e.kind() == IoKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
            total -= len;
            usage.files -= 1;
        }
        usage.bytes = total;
        Ok(usage)
    }
}

/// Reads the entry at `path`: `None` if there is none; an error of kind
/// [`ErrorKind::Corrupt`] if its header is damaged, declares more than
/// `max_len` bytes, or the file is not as long as the header declares.
/// Never allocates more than the header declares after checking it.
pub fn read_entry(path: &Path, limits: &Limits, max_len: u64) -> Result<Option<Vec<u8>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    (&mut f)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let want = declared_len(&bytes, limits)?;
    if want > max_len {
        return Err(Error::corrupt(format!(
            "it declares {want} bytes, more than the {max_len} an entry of this model may take"
        )));
    }
    if size != want {
        return Err(Error::corrupt(format!(
            "the file has {size} bytes but its header declares {want} (truncated?)"
        )));
    }
    bytes.reserve_exact((want as usize).saturating_sub(HEADER_BYTES));
    f.take(want - HEADER_BYTES as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 != want {
        return Err(Error::corrupt(format!(
            "read {} bytes of the {want} declared (the file shrank while read)",
            bytes.len()
        )));
    }
    Ok(Some(bytes))
}

static WRITES: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that readers, in this or another process,
/// and a crash at any point, leave either the old file or the whole new
/// one: a temporary file in the same directory, fsync, rename, fsync of
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("entry");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(
        ".{name}.{}.{nanos}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `--prefix-cache-size`: bytes, or a number with a K, M, G or T suffix
/// (powers of 1024; `KiB`, `MB` and the like are read the same way).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "{s:?}: give bytes, or a number with K, M, G or T (e.g. 2G)"
            ))
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: give bytes, or a number with K, M, G or T (e.g. 2G)"))?;
    let bytes = v * (1u64 << shift) as f64;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("{s:?}: give a size of at least 1 byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{encode, Meta};
    use cria_model::{KvCache, KvType};

    fn entry(tokens: &[u32]) -> Vec<u8> {
        let kv = KvType::F16.into();
        let meta = Meta {
            ident: [1; 32],
            parent: [1; 32],
            start: 0,
            n_layers: 1,
            kv_dim: 32,
            kv,
        };
        let n = KvCache::range_bytes(1, 32, kv, 0, tokens.len()).unwrap() as usize;
        encode(&meta, tokens, &vec![3u8; n]).1
    }

    #[test]
    fn reads_whole_entries_and_refuses_damaged_ones() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), 1 << 20).unwrap();
        let bytes = entry(&[1, 2, 3]);
        let lim = Limits::default();
        assert!(s.put(1, &[5; 32], &bytes).unwrap());
        let p = s.path(1, &[5; 32]);
        assert_eq!(read_entry(&p, &lim, 1 << 20).unwrap().unwrap(), bytes);
        assert!(read_entry(&s.path(1, &[6; 32]), &lim, 1 << 20)
            .unwrap()
            .is_none());
        // Bounded by what an entry here may take.
        assert!(read_entry(&p, &lim, 100).is_err());
        // Truncated, zero-length, garbage.
        for damaged in [&bytes[..bytes.len() - 1], &[][..], &[7u8; 500][..]] {
            std::fs::write(&p, damaged).unwrap();
            let e = read_entry(&p, &lim, 1 << 20).unwrap_err();
            assert!(matches!(e.kind(), ErrorKind::Corrupt { .. }), "{e}");
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn evicts_least_recent_and_deepest_first() {
        let d = tempfile::tempdir().unwrap();
        let one = entry(&[1; 16]).len() as u64;
        let s = Store::open(d.path(), 3 * one).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Prefix A: blocks 1..3 at t0; prefix B: blocks 1..2 at t0 + 10 s.
        let a: Vec<(usize, Key)> = (1..=3).map(|i| (i, [i as u8; 32])).collect();
        let b: Vec<(usize, Key)> = (1..=2).map(|i| (i, [10 + i as u8; 32])).collect();
        for (i, k) in a.iter().chain(&b) {
            s.put(*i, k, &entry(&[1; 16])).unwrap();
        }
        s.touch(&a, t0);
        s.touch(&b, t0 + Duration::from_secs(10));
        // A stale temporary file goes too; a fresh one stays.
        let stale = d.path().join(".x.tmp");
        std::fs::write(&stale, b"x").unwrap();
        File::open(&stale).unwrap().set_modified(t0).unwrap();
        let u = s.evict().unwrap();
        assert_eq!(
            u,
            Usage {
                files: 3,
                bytes: 3 * one,
                evicted: 2
            }
        );
        // A's deepest blocks went first; its head stays.
        assert!(s.path(1, &a[0].1).exists());
        assert!(!s.path(2, &a[1].1).exists() && !s.path(3, &a[2].1).exists());
        assert!(b.iter().all(|(i, k)| s.path(*i, k).exists()));
        assert!(!stale.exists());
        // An entry larger than the cap is not written.
        let small = Store::open(d.path(), 10).unwrap();
        assert!(!small.put(1, &[99; 32], &entry(&[1; 16])).unwrap());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1G").is_err());
    }
}
