//! Requests in, text out: the generation loop shared by `cria run`, `cria
//! chat` and the server.
//!
//! A [`Sequence`] is one conversation's state on a model: its KV cache and
//! the tokens that fill it. [`Sequence::generate`] evaluates a prompt (only
//! the part not already in the cache, so a chat does not re-read its
//! history), then samples token after token, streaming complete UTF-8 text
//! through a callback until an end-of-generation token, a stop string, the
//! token limit, the end of the context or a cancel flag ([`FinishReason`]).

mod error;
mod generate;

pub use error::{Error, ErrorKind, Result};
pub use generate::{default_ctx_size, FinishReason, GenerateParams, GenerationStats, Sequence};
