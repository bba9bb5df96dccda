//! Requests in, token events out: the one generation loop of cria.
//!
//! `cria run`, `cria chat` and the server all drive an [`Engine`] (the CLI
//! with one slot), so sampling, stop strings, limits, and every feature
//! added later exist once. A [`Request`] goes in over [`Engine::submit`]
//! with its own event channel, and [`Event`]s ([`TokenEvent`] per token,
//! then [`Done`]) come back on it; [`Engine::generate`] is the blocking
//! form for a terminal. Up to [`EngineConfig::slots`] sequences decode
//! together, one forward pass per step (continuous batching); dropping the
//! event receiver, or raising the request's cancel flag, cancels it. A
//! slot keeps its cache between requests, so a chat's next turn evaluates
//! only its new messages. A panic inside the engine fails the requests it
//! touched, not the engine. [`EngineConfig::spec`] turns on speculative
//! decoding ([`Speculation`]: n-gram lookup or a draft model), whose output
//! is byte-identical to decoding without it.
//!
//! With [`EngineConfig::prefix_cache`], prompt prefixes also persist on
//! disk (`pcache.rs`, over `cria-prefix-cache`): a restarted server, or
//! the next `cria run --prompt-cache FILE`, restores them instead of
//! evaluating them again, with the same output bit for bit.
//!
//! [`Loaded::open`] is the one way a model file and its tokenizer are
//! opened and checked against each other.
//!
//! ```no_run
//! use cria_engine::{Engine, EngineConfig, Event, GenerateParams, Loaded, Request};
//! use std::sync::Arc;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let loaded = Loaded::open("model.gguf".as_ref())?;
//! let prompt = loaded.tokenizer.encode("Once upon a time", true, false)?;
//! let config = EngineConfig { slots: 4, max_queue: 64, step_tokens: 256,
//!     ..EngineConfig::single(2048, cria_model::KvType::F16, 2) };
//! let engine = Engine::start(Arc::new(loaded.model), Arc::new(loaded.tokenizer), config)?;
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let params = GenerateParams {
//!     max_tokens: Some(16), stop: vec![], ignore_eos: false,
//!     sampler: cria_sampler::SamplerConfig::greedy(), constraint: None,
//! };
//! engine.submit(Request::new(prompt, params, tx)).map_err(|e| format!("{e:?}"))?;
//! while let Some(event) = rx.blocking_recv() {
//!     match event {
//!         Event::Token(t) => print!("{}", t.text),
//!         Event::Done(d) => { println!("{}", d.text); break }
//!         Event::Error(e) => return Err(e.into()),
//!         Event::Embedding(_) => unreachable!("only embedding requests get one"),
//!         Event::Progress(_) => unreachable!("only requests that ask get it"),
//!     }
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod embed;
mod engine;
mod error;
mod fault;
mod load;
pub mod memory;
mod overflow;
mod params;
mod pcache;
mod request;
mod scheduler;
mod spec;

pub use embed::{cosine, l2_normalize, EmbedParams, Embedding, Pooling};
pub use engine::{Engine, EngineConfig, EngineStats, SubmitError};
pub use error::{Error, ErrorKind, Result};
pub use fault::{Fault, FaultSite};
pub use load::Loaded;
pub use overflow::{shift_discard, shift_keep, truncate_middle, ContextOverflow, OverflowReport};
pub use params::{default_ctx_size, FinishReason, GenerateParams};
pub use pcache::{PrefixCacheConfig, PrefixStore};
pub use request::{Done, Event, PromptProgress, Request, SpecReport, TokenEvent};
pub use spec::{
    check_vocab, ngram_draft, SpecKind, SpecParams, SpecType, Speculation, DRAFT_P_MIN, NGRAM_MAX,
    NGRAM_MIN, ROWS_PER_THREAD,
};
