//! Requests in, text out: the generation loop shared by `cria run`, `cria
//! chat` and the server.
//!
//! A [`Sequence`] is one conversation's state on a model: its KV cache and
//! the tokens that fill it. [`Sequence::generate`] evaluates a prompt (only
//! the part not already in the cache, so a chat does not re-read its
//! history), then samples token after token, streaming complete UTF-8 text
//! through a callback until an end-of-generation token, a stop string, the
//! token limit, the end of the context or a cancel flag ([`FinishReason`]).
//!
//! An [`Engine`] serves many requests at once (continuous batching): a
//! [`Request`] goes in over [`Engine::submit`] with its own event channel,
//! and [`Event`]s ([`TokenEvent`] per token, then [`Done`]) come back on it.
//! Up to [`EngineConfig::slots`] sequences decode together, one forward
//! pass per step; dropping the event receiver cancels a request.
//!
//! ```no_run
//! use cria_engine::{Engine, EngineConfig, Event, GenerateParams, Request};
//! use std::sync::Arc;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Arc::new(cria_model::Model::open("model.gguf")?);
//! let tok = Arc::new(cria_tokenizer::Tokenizer::from_gguf(model.file().metadata())?);
//! let prompt = tok.encode("Once upon a time", true, false)?;
//! let config = EngineConfig {
//!     slots: 4, n_ctx: 2048, kv: cria_model::KvType::F16, threads: 2,
//!     max_queue: 64, step_tokens: 256,
//! };
//! let engine = Engine::start(model, tok, config);
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let params = GenerateParams {
//!     max_tokens: Some(16), stop: vec![], ignore_eos: false,
//!     sampler: cria_sampler::SamplerConfig::greedy(),
//! };
//! engine.submit(Request { prompt, params, logprobs: None, events: tx, tenant: 0 })
//!     .map_err(|e| format!("{e:?}"))?;
//! while let Some(event) = rx.blocking_recv() {
//!     match event {
//!         Event::Token(t) => print!("{}", t.text),
//!         Event::Done(d) => { println!("{}", d.text); break }
//!         Event::Error(e) => return Err(e.into()),
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod error;
mod generate;
mod scheduler;

pub use error::{Error, ErrorKind, Result};
pub use generate::{default_ctx_size, FinishReason, GenerateParams, GenerationStats, Sequence};
pub use scheduler::{
    Done, Engine, EngineConfig, EngineStats, Event, Request, SubmitError, TokenEvent,
};
