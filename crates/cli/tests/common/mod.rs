//! Helpers shared by the CLI integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `cria` binary under test.
pub fn cria() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cria"))
}

/// The default model, fetched into the cache by `cria pull` if needed.
pub fn default_model() -> PathBuf {
    let out = cria().arg("pull").output().expect("cannot run cria pull");
    assert!(
        out.status.success(),
        "cria pull failed (the default model is needed for this test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A file by its path from the repository root.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run: non-zero exit, a one-line `error:` message
/// containing `needle`, and no panic.
pub fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(
        err.starts_with("error: ") && err.trim_end().lines().count() == 1,
        "not a one-line error: {err:?}"
    );
    assert!(err.contains(needle), "error {err:?} lacks {needle:?}");
}
pub mod chat;
pub mod kld;
pub mod server;
