//! Loading a model and its tokenizer for the commands that generate or score.

use crate::default_model;
use anyhow::{Context, Result};
use cria_model::Model;
use cria_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Loaded {
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub load_time: Duration,
}

/// Resolves `-m` (or the default model), maps it and checks every tensor.
pub fn load_model(given: Option<&Path>) -> Result<Loaded> {
    let path = default_model::resolve(given)?;
    let t0 = Instant::now();
    let model = Model::open(&path).with_context(|| format!("cannot load {}", path.display()))?;
    let tokenizer = Tokenizer::from_gguf(model.file().metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    if tokenizer.vocab_size() != model.config.n_vocab {
        anyhow::bail!(
            "{}: the vocabulary has {} tokens but the embedding has {} rows",
            path.display(),
            tokenizer.vocab_size(),
            model.config.n_vocab
        );
    }
    Ok(Loaded {
        path,
        model,
        tokenizer,
        load_time: t0.elapsed(),
    })
}

/// `-t N`, or every core this process may use.
pub fn threads_or_default(t: Option<usize>) -> usize {
    match t {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}
