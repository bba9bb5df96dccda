//! Scoring cria against a KL-divergence base file in llama-perplexity's
//! format: the committed gzipped fixtures, or one cria wrote itself.

use super::{cria, fixture, stderr, stdout};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What `cria perplexity --kl-divergence` printed.
#[derive(Debug)]
pub struct KldScore {
    pub mean_kld: f64,
    /// Share of positions with the same top token, in percent.
    pub same_top: f64,
    pub ppl_base: f64,
}

/// Unpacks a gzipped base file from tests/fixtures into `dir`.
pub fn unpack_base(gz_fixture: &str, dir: &Path) -> PathBuf {
    let file = std::fs::File::open(fixture(gz_fixture)).unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap();
    let base = dir.join("base.kld");
    std::fs::write(&base, bytes).unwrap();
    base
}

/// Scores `model` against `base` (`extra`: more perplexity flags, such as
/// cache types); the command must succeed.
pub fn score(model: &Path, base: &Path, extra: &[&str]) -> KldScore {
    let o = cria()
        .args(["perplexity", "--kl-divergence", "--kl-divergence-base"])
        .arg(base)
        .arg("-m")
        .arg(model)
        .args(extra)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{}\n{out}", stderr(&o));
    KldScore {
        mean_kld: value_after(&out, "Mean    KLD"),
        same_top: value_after(&out, "Same top p"),
        ppl_base: value_after(&out, "Mean PPL(base)"),
    }
}

/// The number after `label` on the line starting with it.
fn value_after(out: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"));
    let rest = line[label.len()..].trim_start_matches([' ', ':']);
    rest.split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap()
}
