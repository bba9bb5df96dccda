//! The KV state of token prefixes, on disk: what `cria serve
//! --prefix-cache DIR` and `cria run --prompt-cache FILE` keep between
//! runs so that a prompt starting like an earlier one evaluates only what
//! is new.
//!
//! - [`ident`]: what an entry is for, as SHA-256 keys: [`ModelId`] (a
//!   cheap fingerprint of the model), [`ident()`] (model, KV cache types,
//!   block size, tenant) and [`chain_key`] (a prefix's key grows block by
//!   block, so the key of any block-aligned prefix is known from its
//!   tokens alone).
//! - [`entry`]: one entry's bytes (a header with magic, version, lengths
//!   and checksums; the tokens; [`cria_model::KvCache::export`]'s payload)
//!   and their bounded parser, the input boundary of the cache.
//! - [`store`]: a directory of entries shared by processes: atomic writes,
//!   reads bounded by the model's sizes, an LRU under a byte cap.
//!
//! The engine (`cria-engine`) decides what to look up and when to write.
//! SHA-256 (sha2) and CRC-32 (crc32fast) come from crates; the format,
//! the store and the parser are our own, since no crate stores KV blocks.
//!
//! ```no_run
//! use cria_prefix_cache::{chain_key, entry, ident, store, ModelId, BLOCK};
//! # fn f(model: &cria_model::Model, cache: &cria_model::KvCache, prompt: &[u32]) -> Result<(), Box<dyn std::error::Error>> {
//! let id = ident(&ModelId::of(model), cache.ty(), BLOCK, &cria_prefix_cache::ANONYMOUS);
//! let meta = entry::Meta { ident: id, parent: id, start: 0, n_layers: cache.n_layers,
//!     kv_dim: cache.kv_dim, kv: cache.ty() };
//! let mut payload = Vec::new();
//! cache.export(0, BLOCK, &mut payload)?;
//! let (key, bytes) = entry::encode(&meta, &prompt[..BLOCK], &payload);
//! assert_eq!(key, chain_key(&id, &prompt[..BLOCK]));
//! store::Store::open("cache".as_ref(), 1 << 30)?.put(1, &key, &bytes)?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod entry;
mod error;
pub mod ident;
pub mod store;

pub use error::{Error, ErrorKind, Result};
pub use ident::{chain_key, ident, tenant_salt, Key, ModelId, ANONYMOUS};

/// Positions per block of a cache directory: prefixes are stored and
/// found in whole blocks (a multiple of the KV cache's key tiles of 16).
pub const BLOCK: usize = 256;
