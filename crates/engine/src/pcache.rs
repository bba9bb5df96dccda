//! The persistent prefix cache, seen from the engine: which prompt
//! prefixes to restore when a request is admitted, and which to write
//! once its prompt has been evaluated (`cria-prefix-cache` has the
//! format, the keys and the directory).
//!
//! - [`PrefixStore::Dir`] (`cria serve --prefix-cache DIR`): a prompt's
//!   KV state is kept in blocks of [`BLOCK`] positions, block `j` under
//!   the key of the prompt's first `j` blocks, for the request's tenant.
//!   At admission, after the slot's own cached prefix, the blocks found
//!   on disk are read and imported in order, up to the last whole block
//!   before the prompt's last token (whose logits must be computed). Once
//!   the prompt has been evaluated, the blocks not on disk are exported
//!   and handed to a writer thread; every block of the prompt is touched
//!   (LRU), and the directory evicted down to its cap.
//! - [`PrefixStore::File`] (`cria run --prompt-cache FILE`, llama.cpp's
//!   prompt cache): one entry holding the whole prompt. The next run
//!   restores the longest common prefix with its prompt and evaluates only
//!   the rest; the file is rewritten after the prompt unless it already
//!   held exactly that prompt, or is read-only (`--prompt-cache-ro`).
//!
//! An entry that is damaged or made for something else (model, cache
//! types, tenant, prefix) is never imported: it is reported on stderr,
//! counted, deleted (not in a read-only file) and rewritten by the next
//! save. Importing copies only whole, checked entries, so the cache is
//! never half-restored. Reads happen on the engine thread at admission
//! (tens of milliseconds for thousands of tokens of a small model);
//! checksums, file writes, fsyncs and eviction on the writer thread.
//!
//! Restored KV state is bit-identical to what evaluating the prompt would
//! write: the key covers the model's fingerprint, cria's version and the
//! instruction set, and a sequence's rows do not depend on how it was
//! batched (tests/batch_consistency.rs), so a restored prompt generates
//! byte for byte what a cold one does.

use crate::engine::EngineStats;
use cria_model::{KvCache, KvTypes, Model};
use cria_prefix_cache::entry::{self, Limits, Meta};
use cria_prefix_cache::store::{self, Store};
use cria_prefix_cache::{chain_key, ident, ErrorKind, Key, ModelId, ANONYMOUS, BLOCK};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Where prompt prefixes persist.
#[derive(Clone, Debug)]
pub enum PrefixStore {
    /// A directory of blocks shared by processes, at most `max_bytes`.
    Dir { path: PathBuf, max_bytes: u64 },
    /// One file holding the last prompt (llama.cpp's `--prompt-cache`).
    File { path: PathBuf, read_only: bool },
}

/// The engine's persistent prefix cache.
#[derive(Clone, Debug)]
pub struct PrefixCacheConfig {
    pub store: PrefixStore,
    /// Per tenant id ([`crate::Request::tenant`]): the salt that keeps its
    /// entries apart (see [`cria_prefix_cache::tenant_salt`]). Requests of
    /// a tenant without one are not cached.
    pub tenants: Vec<Key>,
}

impl PrefixCacheConfig {
    /// A cache for tenant 0 only (the CLI; a server without API keys).
    pub fn anonymous(store: PrefixStore) -> PrefixCacheConfig {
        PrefixCacheConfig::for_keys(store, &[])
    }

    /// A server's cache: tenant 0 (no key) and tenant `i + 1` for API key
    /// `i`, salted by a hash of the key itself, so that reordering or
    /// removing keys never hands one tenant's entries to another.
    pub fn for_keys(store: PrefixStore, api_keys: &[String]) -> PrefixCacheConfig {
        let mut tenants = vec![ANONYMOUS];
        tenants.extend(api_keys.iter().map(|k| cria_prefix_cache::tenant_salt(k)));
        PrefixCacheConfig { store, tenants }
    }
}

/// What [`Persist::restore`] did.
pub(crate) struct Restored {
    /// Positions of the slot's cache now valid for the prompt.
    pub upto: usize,
    /// Whether to write the prompt once it is evaluated.
    pub save: bool,
}

enum Backend {
    Dir(Arc<Store>),
    File { path: PathBuf, read_only: bool },
}

/// An entry to write: what it is for, its tokens, its KV payload.
type NewEntry = (Meta, Vec<u32>, Vec<u8>);

enum WriteJob {
    /// Every block of a prompt, in order (number, key); those to write
    /// carry their entry.
    Blocks(Vec<(usize, Key, Option<NewEntry>)>),
    File(PathBuf, Meta, Vec<u32>, Vec<u8>),
}

pub(crate) struct Persist {
    model: ModelId,
    kv: KvTypes,
    n_layers: usize,
    kv_dim: usize,
    tenants: Vec<Key>,
    backend: Backend,
    limits: Limits,
    writer: Option<(SyncSender<WriteJob>, JoinHandle<()>)>,
    /// Bytes handed to the writer and not yet written, and the most it
    /// may hold: past it, a save is dropped (it is only a cache).
    inflight: Arc<AtomicU64>,
    max_inflight: u64,
    stats: Arc<EngineStats>,
}

fn note(what: &str, path: &Path, e: &dyn std::fmt::Display) {
    eprintln!("cria: prefix cache: {what} {}: {e}", path.display());
}

impl Persist {
    pub(crate) fn new(
        config: &PrefixCacheConfig,
        model: &Model,
        kv: KvTypes,
        n_ctx: usize,
        stats: Arc<EngineStats>,
    ) -> Result<Persist, crate::Error> {
        let fail = |e: cria_prefix_cache::Error| crate::ErrorKind::Config {
            detail: format!("cannot use the prefix cache: {e}"),
        };
        let backend = match &config.store {
            PrefixStore::Dir { path, max_bytes } => {
                Backend::Dir(Arc::new(Store::open(path, *max_bytes).map_err(fail)?))
            }
            PrefixStore::File { path, read_only } => Backend::File {
                path: path.clone(),
                read_only: *read_only,
            },
        };
        let c = &model.config;
        let inflight = Arc::new(AtomicU64::new(0));
        let whole = KvCache::bytes_for(c.n_layers, n_ctx, c.kv_dim(), kv);
        let (tx, rx) = sync_channel::<WriteJob>(16);
        let writer = {
            let (inflight, stats) = (inflight.clone(), stats.clone());
            let store = match &backend {
                Backend::Dir(s) => Some(s.clone()),
                Backend::File { .. } => None,
            };
            std::thread::Builder::new()
                .name("cria-prefix-cache".into())
                .spawn(move || {
                    for job in rx {
                        write(job, store.as_deref(), &inflight, &stats);
                    }
                })
                .map_err(|e| crate::ErrorKind::Config {
                    detail: format!("cannot start the prefix cache writer: {e}"),
                })?
        };
        Ok(Persist {
            model: ModelId::of(model),
            kv,
            n_layers: c.n_layers,
            kv_dim: c.kv_dim(),
            tenants: config.tenants.clone(),
            backend,
            limits: Limits::default(),
            writer: Some((tx, writer)),
            inflight,
            max_inflight: whole.saturating_mul(2).max(256 << 20),
            stats,
        })
    }

    fn meta(&self, ident: Key, parent: Key, start: usize) -> Meta {
        Meta {
            ident,
            parent,
            start,
            n_layers: self.n_layers,
            kv_dim: self.kv_dim,
            kv: self.kv,
        }
    }

    /// The ident of `tenant`'s entries; `None`: the tenant is not cached.
    fn ident(&self, tenant: u32, block: usize) -> Option<Key> {
        let salt = self.tenants.get(tenant as usize)?;
        Some(ident(&self.model, self.kv, block, salt))
    }

    /// Reads, checks and imports the entry at `path`, made for `want`
    /// with `tokens` (or, with `tokens` `None`, any tokens: the prompt
    /// file), into `cache` up to position `upto` (`None`: as far as the
    /// tokens agree with `prompt`, before its last token). Returns the
    /// positions now valid and whether the entry's tokens are exactly
    /// `prompt`; `Ok(None)`: no entry.
    fn load(
        &self,
        path: &Path,
        cache: &mut KvCache,
        want: &Meta,
        prompt: &[u32],
        block: Option<usize>,
    ) -> Result<Option<(usize, bool)>, cria_prefix_cache::Error> {
        let max_tokens = block.unwrap_or(self.limits.max_tokens);
        let max_len =
            entry::file_bytes(self.n_layers, self.kv_dim, self.kv, want.start, max_tokens)
                .unwrap_or(u64::MAX);
        let Some(bytes) = store::read_entry(path, &self.limits, max_len)? else {
            return Ok(None);
        };
        let e = entry::parse(&bytes, &self.limits)?;
        e.check(want)?;
        let (a, n) = (want.start, e.tokens.len());
        let upto = match block {
            Some(b) => {
                if e.tokens[..] != prompt[a..a + b] {
                    return Err(cria_prefix_cache::Error::mismatch("other tokens"));
                }
                a + b
            }
            None => {
                let common = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(x, y)| x == y)
                    .count();
                common.min(prompt.len().saturating_sub(1)).min(cache.n_ctx)
            }
        };
        let same = e.tokens == prompt;
        if upto > a {
            cache
                .import(a, a + n, upto, e.payload)
                .map_err(|e| cria_prefix_cache::Error::mismatch(e.to_string()))?;
        }
        Ok(Some((upto, same)))
    }

    /// Deals with an entry that failed to load: reported, counted, and
    /// deleted unless `keep`.
    fn reject(&self, path: &Path, e: &cria_prefix_cache::Error, keep: bool) {
        if matches!(e.kind(), ErrorKind::Io { .. }) {
            note("cannot read", path, e);
            return;
        }
        self.stats.prefix_rejected.fetch_add(1, Ordering::Relaxed);
        if keep {
            note("ignored", path, e);
        } else {
            note("ignored and deleted", path, e);
            let _ = std::fs::remove_file(path);
        }
    }

    /// Restores what the store holds of `prompt` beyond the `have`
    /// positions the slot already holds, into `cache`.
    pub(crate) fn restore(
        &self,
        cache: &mut KvCache,
        tenant: u32,
        prompt: &[u32],
        have: usize,
    ) -> Restored {
        let mut upto = have;
        match &self.backend {
            Backend::Dir(store) => {
                let Some(id) = self.ident(tenant, BLOCK) else {
                    return Restored { upto, save: false };
                };
                // Keep the prompt's last token to evaluate.
                let blocks = prompt.len().saturating_sub(1) / BLOCK;
                let mut parent = id;
                for j in 1..=blocks {
                    let a = (j - 1) * BLOCK;
                    let key = chain_key(&parent, &prompt[a..a + BLOCK]);
                    if a + BLOCK > have {
                        let path = store.path(j, &key);
                        let want = self.meta(id, parent, a);
                        match self.load(&path, cache, &want, prompt, Some(BLOCK)) {
                            Ok(Some((n, _))) => upto = upto.max(n),
                            Ok(None) => break,
                            Err(e) => {
                                self.reject(&path, &e, false);
                                break;
                            }
                        }
                    }
                    parent = key;
                }
                Restored { upto, save: true }
            }
            Backend::File { path, read_only } => {
                let Some(id) = self.ident(tenant, 0) else {
                    return Restored { upto, save: false };
                };
                let want = self.meta(id, id, 0);
                let mut save = !read_only;
                match self.load(path, cache, &want, prompt, None) {
                    Ok(Some((n, same))) => {
                        upto = upto.max(n);
                        // Already holds exactly this prompt: nothing new.
                        save &= !same;
                    }
                    Ok(None) => {}
                    Err(e) => self.reject(path, &e, *read_only),
                }
                Restored { upto, save }
            }
        }
    }

    /// Writes what the store lacks of `prompt`, now evaluated into
    /// positions `0..prompt.len()` of `cache`, and marks all of it used.
    pub(crate) fn save(&self, cache: &KvCache, tenant: u32, prompt: &[u32]) {
        let Some((tx, _)) = &self.writer else { return };
        let budget = |n: u64| {
            let before = self.inflight.fetch_add(n, Ordering::SeqCst);
            if before + n > self.max_inflight {
                self.inflight.fetch_sub(n, Ordering::SeqCst);
                self.stats.prefix_dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            true
        };
        let job = match &self.backend {
            Backend::Dir(store) => {
                let Some(id) = self.ident(tenant, BLOCK) else {
                    return;
                };
                let mut blocks = Vec::new();
                let mut parent = id;
                for j in 1..=prompt.len() / BLOCK {
                    let a = (j - 1) * BLOCK;
                    let tokens = &prompt[a..a + BLOCK];
                    let key = chain_key(&parent, tokens);
                    let mut new = None;
                    if !store.path(j, &key).exists() {
                        let mut payload = Vec::new();
                        if cache.export(a, a + BLOCK, &mut payload).is_ok()
                            && budget(payload.len() as u64)
                        {
                            new = Some((self.meta(id, parent, a), tokens.to_vec(), payload));
                        }
                    }
                    blocks.push((j, key, new));
                    parent = key;
                }
                if blocks.is_empty() {
                    return;
                }
                WriteJob::Blocks(blocks)
            }
            Backend::File { path, read_only } => {
                let Some(id) = self.ident(tenant, 0) else {
                    return;
                };
                let mut payload = Vec::new();
                if *read_only
                    || cache.export(0, prompt.len(), &mut payload).is_err()
                    || !budget(payload.len() as u64)
                {
                    return;
                }
                WriteJob::File(path.clone(), self.meta(id, id, 0), prompt.to_vec(), payload)
            }
        };
        let bytes = job_bytes(&job);
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.inflight.fetch_sub(bytes, Ordering::SeqCst);
                self.stats.prefix_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn job_bytes(job: &WriteJob) -> u64 {
    match job {
        WriteJob::Blocks(b) => b
            .iter()
            .filter_map(|(_, _, n)| n.as_ref())
            .map(|(_, _, p)| p.len() as u64)
            .sum(),
        WriteJob::File(_, _, _, p) => p.len() as u64,
    }
}

/// The writer thread's work: entries encoded (checksums), written
/// atomically, blocks touched, the directory evicted to its cap.
fn write(job: WriteJob, store: Option<&Store>, inflight: &AtomicU64, stats: &EngineStats) {
    let bytes = job_bytes(&job);
    match job {
        WriteJob::Blocks(blocks) => {
            let Some(store) = store else { return };
            let mut used = Vec::with_capacity(blocks.len());
            for (j, key, new) in blocks {
                if let Some((meta, tokens, payload)) = new {
                    let (k, bytes) = entry::encode(&meta, &tokens, &payload);
                    debug_assert_eq!(k, key);
                    match store.put(j, &key, &bytes) {
                        Ok(true) => {
                            stats.prefix_written.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => note("cannot write", &store.path(j, &key), &e),
                    }
                }
                used.push((j, key));
            }
            store.touch(&used, SystemTime::now());
            if let Err(e) = store.evict() {
                note("cannot evict in", store.dir(), &e);
            }
        }
        WriteJob::File(path, meta, tokens, payload) => {
            let (_, bytes) = entry::encode(&meta, &tokens, &payload);
            match store::write_atomic(&path, &bytes) {
                Ok(()) => {
                    stats.prefix_written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => note("cannot write", &path, &e),
            }
        }
    }
    inflight.fetch_sub(bytes, Ordering::SeqCst);
}

impl Drop for Persist {
    /// Finishes the writes handed to the writer (a server's shutdown, the
    /// end of `cria run`).
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}
