//! LLaMA-family models: configuration, weights and the forward pass.
//!
//! [`Model`] owns a [`cria_gguf::GgufFile`] and a checked [`LlamaConfig`]
//! and [`Weights`] (tensors located in the memory map, never copied). A
//! [`Session`] holds what one sequence needs: its [`KvCache`], its position
//! and preallocated activations. [`Model::forward`] takes tokens and writes
//! logits. [`lora`] applies low-rank adapters beside the weight matrices,
//! per sequence ([`Session::lora`], [`Model::forward_rows_lora`]).
//!
//! ```no_run
//! use cria_model::{Model, Session, Logits, KvType};
//! let model = Model::open("model.gguf")?;
//! let mut session = Session::new(&model, 2048, KvType::F16, 512, 2);
//! let mut logits = Vec::new();
//! model.forward(&mut session, &[1, 450, 4996], Logits::Last, &mut logits)?;
//! # Ok::<(), cria_model::Error>(())
//! ```

mod config;
mod error;
mod kv_cache;
mod linear;
mod llama;
pub mod lora;
mod observe;
mod weights;

pub use config::{LlamaConfig, RopeScaling, MAX_CONTEXT_LENGTH};
pub use error::{Error, ErrorKind, Result};

pub use kv_cache::{KvCache, KvType, KvTypes};
pub use llama::{inverse_frequencies, rmsnorm, rope, BatchRow, Logits, Outputs, Scratch};
pub use lora::{Adapter, LoraDelta, LoraSet, Target};
pub use observe::{set_matmul_observer, MatmulObserver};
pub use weights::{Matrix, Weights, SUPPORTED};

use cria_gguf::GgufFile;
use std::path::Path;

pub struct Model {
    file: GgufFile,
    pub config: LlamaConfig,
    pub weights: Weights,
}

impl Model {
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        Model::from_file(GgufFile::open(path)?)
    }

    pub fn from_file(file: GgufFile) -> Result<Model> {
        let config = LlamaConfig::from_file(&file)?;
        let weights = Weights::load(&file, &config)?;
        Ok(Model {
            file,
            config,
            weights,
        })
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Evaluates `tokens` after what `session` has seen; see [`Logits`].
    pub fn forward(
        &self,
        session: &mut Session,
        tokens: &[u32],
        which: Logits,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let start = session.n_past;
        if start + tokens.len() > session.cache.n_ctx {
            return Err(ErrorKind::ContextFull {
                needed: start + tokens.len(),
                n_ctx: session.cache.n_ctx,
            }
            .into());
        }
        session.rows.clear();
        session
            .rows
            .extend(tokens.iter().enumerate().map(|(i, &token)| BatchRow {
                seq: 0,
                token,
                pos: start + i,
                logits: which == Logits::All || i + 1 == tokens.len(),
            }));
        let Session {
            cache,
            scratch,
            pool,
            rows,
            lora,
            ..
        } = session;
        let outputs = Outputs {
            logits: out,
            hidden_seqs: &[],
            hidden: &mut Vec::new(),
        };
        let lora: &[LoraSet] = if lora.is_empty() {
            &[]
        } else {
            std::slice::from_ref(lora)
        };
        self.forward_rows_lora(scratch, pool, &mut [cache], rows, outputs, lora)?;
        session.n_past += tokens.len();
        Ok(())
    }

    /// Evaluates rows from several sequences at once (see [`BatchRow`]);
    /// `caches[row.seq]` is each row's cache. This is what continuous
    /// batching uses: one pass over the weights for every active sequence.
    pub fn forward_rows(
        &self,
        scratch: &mut Scratch,
        pool: &cria_kernels::ThreadPool,
        caches: &mut [&mut KvCache],
        rows: &[BatchRow],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let outputs = Outputs {
            logits: out,
            hidden_seqs: &[],
            hidden: &mut Vec::new(),
        };
        self.forward_rows_to(scratch, pool, caches, rows, outputs)
    }

    /// [`Model::forward_rows`] where the rows of some sequences give their
    /// final hidden state instead of logits (embeddings; see [`Outputs`]).
    pub fn forward_rows_to(
        &self,
        scratch: &mut Scratch,
        pool: &cria_kernels::ThreadPool,
        caches: &mut [&mut KvCache],
        rows: &[BatchRow],
        out: Outputs<'_>,
    ) -> Result<()> {
        self.forward_rows_lora(scratch, pool, caches, rows, out, &[])
    }

    /// [`Model::forward_rows_to`] with adapters: `lora[seq]` are the
    /// adapters of sequence `seq`'s rows (a sequence past the end of
    /// `lora`, or with an empty set, uses the base model). The base
    /// products are shared by all rows; see [`lora`].
    pub fn forward_rows_lora(
        &self,
        scratch: &mut Scratch,
        pool: &cria_kernels::ThreadPool,
        caches: &mut [&mut KvCache],
        rows: &[BatchRow],
        out: Outputs<'_>,
        lora: &[LoraSet],
    ) -> Result<()> {
        llama::forward_rows(
            &self.file,
            &self.config,
            &self.weights,
            scratch,
            pool,
            caches,
            rows,
            out,
            lora,
        )
    }

    /// llama.cpp's context shift: in `cache` (holding `n_past` positions),
    /// positions `n_keep..n_keep + n_discard` are discarded and the rest
    /// move down by `n_discard`, their keys rotated by `-n_discard`
    /// positions (rope is a rotation by an angle proportional to the
    /// position, so this puts them where they now are). The caller then
    /// continues at position `n_past - n_discard`.
    pub fn shift_cache(&self, cache: &mut KvCache, n_keep: usize, n_discard: usize, n_past: usize) {
        let inv = inverse_frequencies(&self.config, self.weights.rope_freqs.as_deref());
        let delta = -(n_discard as f32);
        let sc: Vec<(f32, f32)> = inv.iter().map(|f| (delta * f).sin_cos()).collect();
        let hd = self.config.head_dim;
        // Keys of a quantized cache are stored rotated (KvTypes::rotation):
        // back to rope's basis, shifted, rotated again.
        let (rot, _) = cache.ty().rotation(hd);
        cache.shift(n_keep + n_discard, n_discard, n_past, |row| {
            if let Some(n) = rot {
                kv_cache::hadamard(row, n);
            }
            llama::rope_rotate(row, hd, &sc);
            if let Some(n) = rot {
                kv_cache::hadamard(row, n);
            }
        });
    }

    /// Scratch activations for batches of up to `n_batch` rows.
    pub fn scratch(&self, n_batch: usize) -> Scratch {
        Scratch::new(&self.config, &self.weights, n_batch.max(1))
    }
}

/// One sequence's state: its KV cache, how many positions are filled, and
/// scratch activations.
pub struct Session {
    pub cache: KvCache,
    pub n_past: usize,
    pub pool: cria_kernels::ThreadPool,
    scratch: Scratch,
    rows: Vec<BatchRow>,
    /// Adapters applied to this session's tokens (empty: none).
    pub lora: LoraSet,
}

impl Session {
    /// A session of `n_ctx` positions. Panics on a quantized cache type
    /// for a head size that is not a multiple of 32: check
    /// [`KvTypes::check`] first (the engine and CLI do).
    pub fn new(
        model: &Model,
        n_ctx: usize,
        kv: impl Into<KvTypes>,
        n_batch: usize,
        threads: usize,
    ) -> Session {
        let (c, kv) = (&model.config, kv.into());
        if let Err(e) = kv.check(c.head_dim) {
            panic!("{e}");
        }
        Session {
            cache: KvCache::new(c.n_layers, n_ctx, c.kv_dim(), kv),
            n_past: 0,
            pool: cria_kernels::ThreadPool::new(threads),
            scratch: Scratch::new(c, &model.weights, n_batch.clamp(1, n_ctx.max(1))),
            rows: Vec::new(),
            lora: Vec::new(),
        }
    }

    /// Forgets positions from `n` on, so they can be evaluated again (chat
    /// history reuse, perplexity chunks).
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
    }
}
