//! Importance matrices in llama.cpp's two file formats.
//!
//! An importance matrix holds, for each weight matrix, the sum over many
//! tokens of the squared input activation of each column (`in_sum2`) and
//! how many tokens were summed (`counts`, one per expert). Quantizers weigh
//! each column's error by `in_sum2 / count`.
//!
//! - **GGUF** (what llama-imatrix writes by default, and what
//!   [`Imatrix::write_gguf`] writes): metadata `general.type = "imatrix"`,
//!   `imatrix.datasets` (strings), `imatrix.chunk_count`,
//!   `imatrix.chunk_size` (u32); per matrix `NAME.in_sum2`, F32
//!   `[cols, n_mat]`, and `NAME.counts`, F32 `[1, n_mat]`, sorted by name.
//! - **Legacy `.dat`**: i32 entry count; per entry i32 name length, name,
//!   i32 ncall, i32 nval, nval f32 (already divided by the token count and
//!   multiplied by ncall); then optionally i32 chunk count, i32 dataset
//!   name length and the name.

use crate::error::{Error, Result};
use cria_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// One weight matrix's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// (n_mat, cols) sums of squared activations.
    pub sums: Vec<f32>,
    /// (n_mat) tokens summed per matrix (legacy files: ncall, one value).
    pub counts: Vec<f32>,
}

/// A whole importance matrix file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    /// By weight tensor name (`blk.0.attn_q.weight`), sorted.
    pub entries: BTreeMap<String, Entry>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
    /// Read from a legacy `.dat` file.
    pub legacy: bool,
}

/// Legacy files: names longer than this are refused.
const MAX_NAME: usize = 4096;

impl Imatrix {
    /// Reads either format (GGUF if the file starts with `GGUF`).
    pub fn read(path: &Path) -> Result<Imatrix> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.starts_with(b"GGUF") {
            let f = GgufFile::from_bytes(bytes)
                .map_err(|e| Error::imatrix(&p, format!("not a readable GGUF: {e}")))?;
            Self::from_gguf(&f, &p)
        } else {
            Self::from_legacy(&bytes, &p)
        }
    }

    fn from_gguf(f: &GgufFile, p: &str) -> Result<Imatrix> {
        let md = f.metadata();
        let mut m = Imatrix::default();
        let has_meta = md.get("imatrix.datasets").is_some()
            && md.get("imatrix.chunk_count").is_some()
            && md.get("imatrix.chunk_size").is_some();
        if !has_meta {
            return Err(Error::imatrix(
                p,
                "missing imatrix.datasets / chunk_count / chunk_size metadata",
            ));
        }
        if let Some(Value::Array(Array::String(d))) = md.get("imatrix.datasets") {
            m.datasets = d.clone();
        }
        let bad = |e: cria_gguf::Error| Error::imatrix(p, e.to_string());
        m.chunk_count = md.get_u32("imatrix.chunk_count").map_err(bad)?;
        m.chunk_size = md.get_u32("imatrix.chunk_size").map_err(bad)?;
        let mut sums = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for t in f.tensors() {
            let (name, is_sum) = if let Some(n) = t.name.strip_suffix(".in_sum2") {
                (n, true)
            } else if let Some(n) = t.name.strip_suffix(".counts") {
                (n, false)
            } else {
                continue;
            };
            if t.ty != GgmlType::F32 {
                return Err(Error::imatrix(
                    p,
                    format!("{} is {}, not F32", t.name, t.ty),
                ));
            }
            let v: Vec<f32> = f
                .tensor_data(t)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if is_sum {
                sums.insert(name.to_string(), v);
            } else {
                counts.insert(name.to_string(), v);
            }
        }
        for (name, s) in sums {
            let Some(c) = counts.remove(&name) else {
                return Err(Error::imatrix(p, format!("{name}: in_sum2 without counts")));
            };
            if c.is_empty() || !s.len().is_multiple_of(c.len()) {
                return Err(Error::imatrix(
                    p,
                    format!(
                        "{name}: {} sums do not split into {} matrices",
                        s.len(),
                        c.len()
                    ),
                ));
            }
            m.entries.insert(name, Entry { sums: s, counts: c });
        }
        if let Some(name) = counts.keys().next() {
            return Err(Error::imatrix(p, format!("{name}: counts without in_sum2")));
        }
        if m.entries.is_empty() {
            return Err(Error::imatrix(p, "no entries"));
        }
        Ok(m)
    }

    fn from_legacy(b: &[u8], p: &str) -> Result<Imatrix> {
        let mut r = Cursor { b, at: 0, p };
        let n = r.i32("entry count")?;
        if n < 1 {
            return Err(Error::imatrix(
                p,
                format!("entry count {n}: not an imatrix file"),
            ));
        }
        let mut m = Imatrix {
            legacy: true,
            ..Default::default()
        };
        for i in 0..n {
            let len = r.len("name length", MAX_NAME)?;
            let name = String::from_utf8(r.take(len, "name")?.to_vec())
                .map_err(|_| Error::imatrix(p, format!("entry {i}: name is not UTF-8")))?;
            let ncall = r.i32("ncall")?;
            let nval = r.i32("value count")?;
            if nval < 1 || nval as usize > (b.len() - r.at) / 4 {
                return Err(Error::imatrix(
                    p,
                    format!(
                        "{name}: {nval} values, but {} bytes are left",
                        b.len() - r.at
                    ),
                ));
            }
            let sums = r
                .take(4 * nval as usize, "values")?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            m.entries.insert(
                name,
                Entry {
                    sums,
                    counts: vec![ncall as f32],
                },
            );
        }
        if r.at < b.len() {
            m.chunk_count = r.i32("chunk count")?.max(0) as u32;
            if r.at < b.len() {
                let len = r.len("dataset name length", MAX_NAME)?;
                if len > 0 {
                    let d = r.take(len, "dataset name")?;
                    m.datasets.push(String::from_utf8_lossy(d).into_owned());
                }
            }
        }
        Ok(m)
    }

    /// The per-column importance llama-quantize uses: sums divided by the
    /// token count of each matrix (a matrix with no tokens gets all 1s).
    pub fn weights(&self) -> BTreeMap<String, Vec<f32>> {
        let mut out = BTreeMap::new();
        for (name, e) in &self.entries {
            let mut w = vec![0f32; e.sums.len()];
            if self.legacy {
                let ncall = e.counts.first().copied().unwrap_or(0.0) as i64;
                for (o, s) in w.iter_mut().zip(&e.sums) {
                    *o = if ncall > 0 { s / ncall as f32 } else { *s };
                }
            } else {
                let ne0 = e.sums.len() / e.counts.len();
                for (j, c) in e.counts.iter().enumerate() {
                    // llama.cpp rounds the stored float count to an integer.
                    let c = c.round() as i64 as f32;
                    for i in 0..ne0 {
                        w[j * ne0 + i] = if c > 0.0 {
                            e.sums[j * ne0 + i] / c
                        } else {
                            1.0
                        };
                    }
                }
            }
            out.insert(name.clone(), w);
        }
        out
    }

    /// Writes the GGUF format, as llama-imatrix does.
    pub fn write_gguf(&self, path: &Path) -> Result<()> {
        let mut w = GgufWriter::new();
        w.add_metadata("general.type", Value::String("imatrix".into()));
        w.add_metadata(
            "imatrix.datasets",
            Value::Array(Array::String(self.datasets.clone())),
        );
        w.add_metadata("imatrix.chunk_count", Value::U32(self.chunk_count));
        w.add_metadata("imatrix.chunk_size", Value::U32(self.chunk_size));
        let bytes: Vec<(Vec<u8>, Vec<u8>)> = self
            .entries
            .values()
            .map(|e| (le_bytes(&e.sums), le_bytes(&e.counts)))
            .collect();
        for ((name, e), (s, c)) in self.entries.iter().zip(&bytes) {
            let nmat = e.counts.len() as u64;
            let cols = e.sums.len() as u64 / nmat.max(1);
            w.add_tensor(&format!("{name}.in_sum2"), GgmlType::F32, &[cols, nmat], s)?;
            w.add_tensor(&format!("{name}.counts"), GgmlType::F32, &[1, nmat], c)?;
        }
        let mut out = Vec::new();
        w.write_to(&mut out)?;
        std::fs::write(path, out).map_err(|e| Error::io(path, e))
    }
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A bounded reader over a legacy file.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    p: &'a str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.b.len() - self.at < n {
            return Err(Error::imatrix(
                self.p,
                format!("truncated at byte {} reading {what}", self.at),
            ));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let s = self.take(4, what)?;
        Ok(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn len(&mut self, what: &str, max: usize) -> Result<usize> {
        let v = self.i32(what)?;
        if v < 0 || v as usize > max {
            return Err(Error::imatrix(
                self.p,
                format!("{what} {v} at byte {} is out of range", self.at - 4),
            ));
        }
        Ok(v as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Imatrix {
        let mut m = Imatrix {
            datasets: vec!["wiki.txt".into()],
            chunk_count: 3,
            chunk_size: 512,
            ..Default::default()
        };
        m.entries.insert(
            "blk.0.attn_q.weight".into(),
            Entry {
                sums: vec![4.0, 8.0, 0.5, 2.0],
                counts: vec![4.0],
            },
        );
        m
    }

    #[test]
    fn gguf_round_trip_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        let m = sample();
        m.write_gguf(&p).unwrap();
        let back = Imatrix::read(&p).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.weights()["blk.0.attn_q.weight"],
            vec![1.0, 2.0, 0.125, 0.5]
        );
    }

    #[test]
    fn legacy_file_reads() {
        let mut b = Vec::new();
        b.extend(1i32.to_le_bytes());
        let name = b"blk.0.ffn_down.weight";
        b.extend((name.len() as i32).to_le_bytes());
        b.extend(name);
        b.extend(10i32.to_le_bytes()); // ncall
        b.extend(2i32.to_le_bytes());
        b.extend(20f32.to_le_bytes());
        b.extend(5f32.to_le_bytes());
        b.extend(7i32.to_le_bytes()); // chunks
        b.extend(4i32.to_le_bytes());
        b.extend(b"data");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.dat");
        std::fs::write(&p, &b).unwrap();
        let m = Imatrix::read(&p).unwrap();
        assert!(m.legacy);
        assert_eq!(m.chunk_count, 7);
        assert_eq!(m.datasets, vec!["data".to_string()]);
        assert_eq!(m.weights()["blk.0.ffn_down.weight"], vec![2.0, 0.5]);
        // Every truncation is an error, never a panic.
        for cut in 0..b.len() - 8 {
            std::fs::write(&p, &b[..cut]).unwrap();
            if cut < 37 {
                assert!(Imatrix::read(&p).is_err(), "cut at {cut}");
            }
        }
        // A lying value count.
        let mut lie = b.clone();
        lie[4 + 4 + name.len() + 4..][..4].copy_from_slice(&i32::MAX.to_le_bytes());
        std::fs::write(&p, &lie).unwrap();
        assert!(Imatrix::read(&p)
            .unwrap_err()
            .to_string()
            .contains("values"));
    }
}
