//! Opening a model file: the weights and the tokenizer, checked against
//! each other. Every command and the server load through here.

use crate::error::{ErrorKind, Result};
use cria_model::Model;
use cria_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A model and its tokenizer, ready to generate or score.
pub struct Loaded {
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub load_time: Duration,
}

impl Loaded {
    /// Maps the file, checks every tensor, builds the tokenizer from the
    /// file's vocabulary and checks that it has one entry per embedding row.
    pub fn open(path: &Path) -> Result<Loaded> {
        let t0 = Instant::now();
        let fail = |detail: String| ErrorKind::Load {
            path: path.to_path_buf(),
            detail,
        };
        // A GGUF file, or a Hugging Face / Meta folder read in place.
        let file = cria_import::open(path).map_err(|e| fail(e.to_string()))?;
        let model = Model::from_file(file).map_err(|e| fail(e.to_string()))?;
        let tokenizer = Tokenizer::from_gguf(model.file().metadata())
            .map_err(|e| fail(format!("cannot build the tokenizer: {e}")))?;
        if tokenizer.vocab_size() != model.config.n_vocab {
            return Err(fail(format!(
                "the vocabulary has {} tokens but the embedding has {} rows",
                tokenizer.vocab_size(),
                model.config.n_vocab
            ))
            .into());
        }
        Ok(Loaded {
            path: path.to_path_buf(),
            model,
            tokenizer,
            load_time: t0.elapsed(),
        })
    }
}
