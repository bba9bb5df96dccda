//! A prefix cache entry on arbitrary bytes (the cache directory is input,
//! like a model file): the header check, the whole-entry parse and, for
//! an entry that parses, the import into a KV cache of its shape. None
//! may panic, hang or allocate more than the bytes given justify.
//!
//! The first byte picks the mode: even, the bytes as they are; odd, the
//! rest with both checksums recomputed first, so that mutations reach the
//! checks behind them (lengths, types, the key) instead of all dying at a
//! checksum.
#![no_main]

use cria_model::KvCache;
use cria_prefix_cache::entry::{declared_len, parse, Limits, HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

/// Small bounds, so an entry that parses is cheap to import.
const LIMITS: Limits = Limits {
    max_tokens: 4096,
    max_layers: 8,
    max_kv_dim: 512,
};

fn fix_checksums(b: &mut [u8]) {
    if b.len() < HEADER_BYTES {
        return;
    }
    let body = crc32fast::hash(&b[HEADER_BYTES..]);
    b[132..136].copy_from_slice(&body.to_le_bytes());
    let head = crc32fast::hash(&b[..144]);
    b[144..148].copy_from_slice(&head.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fix_checksums(&mut bytes);
    }
    let _ = declared_len(&bytes, &LIMITS);
    let Ok(e) = parse(&bytes, &LIMITS) else { return };
    let m = &e.meta;
    let _ = e.check(m);
    let end = m.start + e.tokens.len();
    let mut cache = KvCache::new(m.n_layers, end, m.kv_dim, m.kv);
    cache
        .import(m.start, end, end, e.payload)
        .expect("a parsed entry imports into a cache of its shape");
    let mut again = Vec::new();
    cache.export(m.start, end, &mut again).expect("export");
    assert_eq!(again, e.payload, "import then export changed the bytes");
});
