//! PyTorch checkpoint files (`torch.save`'s zip format): `PREFIX/data.pkl`
//! is the state dict's pickle (read by [`crate::pickle`]), and each
//! storage is an entry `PREFIX/data/KEY` that torch writes uncompressed,
//! so tensors are ranges of the mapped file.
//!
//! Bounded: data.pkl is decompressed up to [`MAX_PICKLE`] bytes whatever
//! the zip header claims (a zip bomb stops there), and every storage entry
//! must hold exactly the bytes its pickle says and be stored uncompressed
//! inside the file.

use crate::error::{Error, Result};
use crate::hf::map_file;
use crate::pickle;
use crate::plan::{DType, Piece};
use std::io::Read;
use std::path::Path;

/// Largest data.pkl read (a 405B model's is a few MB).
pub const MAX_PICKLE: u64 = 64 << 20;

/// A tensor of a .pth file: torch name, type and its bytes in the map.
pub struct PthTensor {
    pub name: String,
    pub dtype: DType,
    pub piece: Piece,
}

/// Reads the tensors of one .pth file.
pub fn read(path: &Path) -> Result<Vec<PthTensor>> {
    let map = map_file(path)?;
    read_mapped(path, map)
}

pub fn read_mapped(path: &Path, map: std::sync::Arc<memmap2::Mmap>) -> Result<Vec<PthTensor>> {
    let bad = |d: String| Error::bad(path, d);
    if map.starts_with(&[0x80]) {
        return Err(Error::unsupported(
            path,
            "a legacy (pre-1.6) torch.save file; re-save it with a current torch",
        ));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&map[..]))
        .map_err(|e| bad(format!("not a PyTorch zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| bad("no PREFIX/data.pkl entry: not a torch.save archive".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pickle_bytes = {
        let entry = zip
            .by_name(&pkl_name)
            .map_err(|e| bad(format!("{pkl_name}: {e}")))?;
        let mut v = Vec::new();
        entry
            .take(MAX_PICKLE + 1)
            .read_to_end(&mut v)
            .map_err(|e| bad(format!("{pkl_name}: {e}")))?;
        if v.len() as u64 > MAX_PICKLE {
            return Err(bad(format!(
                "{pkl_name} decompresses past {MAX_PICKLE} bytes (a zip bomb?); refused"
            )));
        }
        v
    };
    let dict =
        pickle::read_state_dict(&pickle_bytes).map_err(|e| bad(format!("{pkl_name}: {e}")))?;
    let file = std::sync::Arc::new(path.to_path_buf());
    let mut out = Vec::with_capacity(dict.len());
    for (name, t) in dict {
        let entry_name = format!("{prefix}data/{}", t.storage.key);
        let entry = zip
            .by_name(&entry_name)
            .map_err(|e| bad(format!("tensor {name:?}: storage {entry_name}: {e}")))?;
        let es = t.storage.dtype.size() as u64;
        let want = t.storage.numel.checked_mul(es);
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(bad(format!(
                "storage {entry_name} is compressed ({:?}); torch.save stores them uncompressed",
                entry.compression()
            )));
        }
        if want != Some(entry.size()) || entry.compressed_size() != entry.size() {
            return Err(bad(format!(
                "storage {entry_name} holds {} bytes but the pickle says {} elements of {} bytes",
                entry.size(),
                t.storage.numel,
                es
            )));
        }
        let start = entry.data_start();
        if start
            .checked_add(entry.size())
            .is_none_or(|e| e > map.len() as u64)
        {
            return Err(bad(format!(
                "storage {entry_name} runs past the end of the file"
            )));
        }
        out.push(PthTensor {
            name,
            dtype: t.storage.dtype,
            piece: Piece {
                map: map.clone(),
                path: file.clone(),
                start: (start + t.offset * es) as usize,
                shape: t.shape,
            },
        });
    }
    Ok(out)
}
