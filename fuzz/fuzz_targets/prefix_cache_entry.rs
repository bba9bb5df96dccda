//! A prefix cache entry on arbitrary bytes (the cache directory is input,
//! like a model file): the header check, the whole-entry parse and, for
//! an entry that parses, the import into a KV cache of its shape. None
//! may panic, hang or allocate more than the bytes given justify.
#![no_main]

use cria_model::KvCache;
use cria_prefix_cache::entry::{declared_len, parse, Limits};
use libfuzzer_sys::fuzz_target;

/// Small bounds, so an entry that parses is cheap to import.
const LIMITS: Limits = Limits {
    max_tokens: 4096,
    max_layers: 8,
    max_kv_dim: 512,
};

fuzz_target!(|data: &[u8]| {
    let _ = declared_len(data, &LIMITS);
    let Ok(e) = parse(data, &LIMITS) else { return };
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
