//! What a request asks for and how it ended.

use cria_model::{KvCache, KvTypes, Model};
use cria_sampler::SamplerConfig;

/// Why generation ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    Length,
    /// A stop string appeared (it is not part of the output).
    StopString,
    /// The context is full: no room for another token.
    ContextFull,
    /// The client went away or raised the request's cancel flag.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// At most this many new tokens; `None` runs until another reason
    /// (at the latest, the end of the context).
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub sampler: SamplerConfig,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Output must match this grammar or schema: each token is sampled
    /// from those it allows, and generation ends where it is complete.
    pub constraint: Option<cria_grammar::Constraint>,
}

impl GenerateParams {
    /// What an embedding request carries: it generates nothing, but goes
    /// through the same admission checks as a generation request.
    pub fn for_embedding() -> GenerateParams {
        GenerateParams {
            max_tokens: Some(1),
            stop: Vec::new(),
            ignore_eos: false,
            constraint: None,
            sampler: SamplerConfig::greedy(),
        }
    }
}

/// Default context size: the model's training context, capped so the KV
/// cache stays within 1 GiB and at most 8192 positions.
pub fn default_ctx_size(model: &Model, kv: impl Into<KvTypes>) -> usize {
    let c = &model.config;
    let per_pos = KvCache::bytes_for(c.n_layers, 1, c.kv_dim(), kv).max(1);
    let by_memory = ((1u64 << 30) / per_pos) as usize;
    c.n_ctx_train.min(8192).min(by_memory).max(16)
}
