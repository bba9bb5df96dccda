//! Sizes checked before they are allocated: a huge `--ctx-size`,
//! `--parallel` or prompt length must be a clear error, not an aborted
//! process.

use crate::error::{Error, ErrorKind};
use cria_model::{KvCache, KvTypes, Model};

/// Bytes of one KV cache of `n_ctx` positions (keys are stored in blocks
/// of 16 positions); saturates instead of wrapping.
pub fn kv_bytes(model: &Model, n_ctx: usize, kv: impl Into<KvTypes>) -> u64 {
    let c = &model.config;
    let n_ctx = n_ctx.checked_next_multiple_of(16).unwrap_or(usize::MAX);
    KvCache::bytes_for(c.n_layers, n_ctx, c.kv_dim(), kv)
}

/// Refuses `bytes` of `what` when they cannot be addressed or exceed the
/// machine's memory; `fix` says what to change.
pub fn fits(what: &str, bytes: u64, fix: &str) -> Result<(), Error> {
    let too_big = |limit: String| -> Error {
        ErrorKind::Config {
            detail: format!(
                "{what} needs {:.1} GiB, more than {limit}: {fix}",
                bytes as f64 / f64::from(1u32 << 30)
            ),
        }
        .into()
    };
    if bytes > isize::MAX as u64 {
        return Err(too_big("this machine can address".into()));
    }
    if let Some(mem) = physical_memory() {
        if bytes > mem {
            return Err(too_big(format!(
                "the {:.1} GiB of memory here",
                mem as f64 / f64::from(1u32 << 30)
            )));
        }
    }
    Ok(())
}

/// Total physical memory in bytes, where the system says (Linux).
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses_what_cannot_be_addressed() {
        let e = super::fits("a cache", u64::MAX, "lower -c")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a cache needs"), "{e}");
        assert!(
            e.ends_with("more than this machine can address: lower -c"),
            "{e}"
        );
        assert!(super::fits("a cache", 1 << 20, "lower -c").is_ok());
    }
}
