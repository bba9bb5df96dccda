//! The model cache, the Ollama habit: `cria list` shows what is in it,
//! `cria rm NAME` removes an entry, `cria add FILE` references a file in
//! place (a symbolic link in the cache, never a copy), and `-m NAME`
//! finds a cached model by name as well as by path.
//!
//! The cache is the folder of [`default_model::models_dir`]; an entry is a
//! `*.gguf` file or a link to one, named by its file name without `.gguf`.

use crate::default_model;
use anyhow::{bail, Context, Result};
use cria_gguf::GgufFile;
use std::path::{Path, PathBuf};

/// One cached model.
pub struct Entry {
    pub name: String,
    /// The entry in the cache folder.
    pub path: PathBuf,
    /// Where a link points (the file is used in place); `None` for a file.
    pub target: Option<PathBuf>,
}

/// The cache's entries, sorted by name. Partial downloads (`.part`, the
/// fetcher's temporary folders) are not entries.
pub fn entries() -> Result<Vec<Entry>> {
    let dir = default_model::models_dir()?;
    let read = match std::fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in read.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".gguf"))
        else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let target = std::fs::read_link(&path).ok().map(|t| dir.join(t));
        out.push(Entry {
            name: name.to_string(),
            path,
            target,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The cached model called `name`: its exact name (with or without
/// `.gguf`), else the one name it starts (case-insensitive). `None` when
/// nothing matches; an error when several do.
pub fn find(name: &str) -> Result<Option<PathBuf>> {
    let name = name.strip_suffix(".gguf").unwrap_or(name);
    let all = entries()?;
    if let Some(e) = all.iter().find(|e| e.name == name) {
        return Ok(Some(e.path.clone()));
    }
    let lower = name.to_lowercase();
    let hits: Vec<&Entry> = all
        .iter()
        .filter(|e| e.name.to_lowercase().starts_with(&lower))
        .collect();
    match hits[..] {
        [] => Ok(None),
        [one] => Ok(Some(one.path.clone())),
        _ => bail!(
            "-m {name}: several cached models start so: {}; give more of the name",
            hits.iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The model's weight type as llama.cpp names its files (`Q4_1`,
/// `Q4_K`...): the type holding most of the tensor bytes.
fn weight_type(path: &Path) -> String {
    let Ok(f) = GgufFile::open(path) else {
        return "(not GGUF)".into();
    };
    let mut by_type: Vec<(String, u64)> = Vec::new();
    for t in f.tensors() {
        let ty = t.ty.name().to_string();
        let bytes = t.n_bytes;
        match by_type.iter_mut().find(|(k, _)| *k == ty) {
            Some((_, b)) => *b += bytes,
            None => by_type.push((ty, bytes)),
        }
    }
    by_type
        .into_iter()
        .max_by_key(|(_, b)| *b)
        .map_or_else(|| "(no tensors)".into(), |(t, _)| t)
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.0} MB", b as f64 / f64::from(1u32 << 20)),
        b => format!("{:.0} KB", b as f64 / 1024.0),
    }
}

/// `cria list`.
pub fn list(json: bool) -> Result<()> {
    let rows: Vec<(Entry, Option<u64>, String)> = entries()?
        .into_iter()
        .map(|e| {
            // A link's size and type are its target's.
            let size = std::fs::metadata(&e.path).ok().map(|m| m.len());
            let ty = if size.is_some() {
                weight_type(&e.path)
            } else {
                "(missing)".into()
            };
            (e, size, ty)
        })
        .collect();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(e, size, ty)| {
                serde_json::json!({
                    "name": e.name, "size": size, "type": ty,
                    "path": e.target.as_ref().unwrap_or(&e.path),
                    "linked": e.target.is_some(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!(
            "no cached models in {} (`cria pull` fetches the default one, `cria add FILE` references a file)",
            default_model::models_dir()?.display()
        );
        return Ok(());
    }
    let w = rows
        .iter()
        .map(|(e, ..)| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:w$}  {:>8}  {:8}  PATH", "NAME", "SIZE", "TYPE");
    for (e, size, ty) in &rows {
        let size = size.map_or("-".into(), human);
        let path = match &e.target {
            Some(t) => format!("{} -> {}", e.path.display(), t.display()),
            None => e.path.display().to_string(),
        };
        println!("{:w$}  {size:>8}  {ty:8}  {path}", e.name);
    }
    Ok(())
}

/// `cria rm NAME`: removes the cache entry; for a link, only the link
/// (the file it points to is the user's and stays).
pub fn rm(name: &str) -> Result<()> {
    let Some(path) = find_exact(name)? else {
        bail!("no cached model named {name:?}; `cria list` shows the names");
    };
    let linked = std::fs::symlink_metadata(&path)?.file_type().is_symlink();
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    if linked {
        println!("removed {name} (a link; the file it pointed to is untouched)");
    } else {
        println!("removed {name} ({})", path.display());
    }
    Ok(())
}

/// Removing takes the exact name only, never a prefix.
fn find_exact(name: &str) -> Result<Option<PathBuf>> {
    let name = name.strip_suffix(".gguf").unwrap_or(name);
    Ok(entries()?
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.path))
}

/// `cria add FILE [--name NAME]`: a link in the cache to a GGUF file
/// elsewhere, so `-m NAME` finds it; the file is not copied.
pub fn add(file: &Path, name: Option<&str>) -> Result<()> {
    let abs =
        std::fs::canonicalize(file).with_context(|| format!("cannot find {}", file.display()))?;
    GgufFile::open(&abs).with_context(|| format!("{} is not a GGUF model", abs.display()))?;
    let name = match name {
        Some(n) => n.strip_suffix(".gguf").unwrap_or(n).to_string(),
        None => abs
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("the file has no name")?,
    };
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
        bail!("--name {name:?}: give a plain name (no slashes, not starting with a dot)");
    }
    let dir = default_model::models_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let link = dir.join(format!("{name}.gguf"));
    if std::fs::symlink_metadata(&link).is_ok() {
        bail!("a cached model is already named {name:?}; `cria rm {name}` first or give --name");
    }
    symlink(&abs, &link)?;
    println!("{name} -> {}", abs.display());
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot create the link {}", link.display()))
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> Result<()> {
    bail!("cria add needs symbolic links (Unix); pass the file with -m FILE instead")
}
