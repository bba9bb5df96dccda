//! What an entry is for: the model, the KV cache types, the tenant and
//! the tokens, reduced to SHA-256 keys.
//!
//! - [`ModelId::of`] fingerprints a model without reading all of it: every
//!   metadata key and value, every tensor's name, type, shape, offset and
//!   size, and three 4 KiB windows of each tensor's data (its start, middle
//!   and end), plus what makes cria compute different bits from the same
//!   file (this crate's version and the SIMD instruction set in use). That
//!   costs a few milliseconds at load, where hashing a 5 GB file would
//!   cost seconds; two files that differ only in bytes no window samples
//!   (no metadata, no shape, no sampled weight changed) would share
//!   entries. Fine-tunes, requantizations and merges change every sampled
//!   window.
//! - [`ident`] adds the KV cache types, the block size and the tenant.
//! - [`chain_key`] extends a key by a run of tokens: the key of block `j`
//!   is `chain_key(key of block j - 1, tokens of block j)`, starting from
//!   the ident, so the key of a prefix is found from the prefix alone
//!   and any prefix of a prefix is found too.

use cria_model::{KvType, KvTypes, Model};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Key = [u8; 32];

/// A model's fingerprint (see the module docs).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ModelId(pub Key);

/// Bytes of tensor data hashed per window.
const WINDOW: usize = 4096;

impl ModelId {
    pub fn of(model: &Model) -> ModelId {
        let mut h = Sha256::new();
        h.update(b"cria prefix cache: model\0");
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(format!("{:?}\0", cria_kernels::Cpu::get().isa()).as_bytes());
        let file = model.file();
        for (k, v) in file.metadata().iter() {
            h.update(k.as_bytes());
            h.update(format!("\0{v:?}\0").as_bytes());
        }
        for t in file.tensors() {
            h.update(
                format!(
                    "{}\0{:?}{:?}{}:{}\0",
                    t.name, t.ty, t.dims, t.offset, t.n_bytes
                )
                .as_bytes(),
            );
            let data = file.tensor_data(t);
            let n = data.len();
            for at in [0, n / 2, n.saturating_sub(WINDOW)] {
                let at = at.min(n);
                h.update(&data[at..n.min(at + WINDOW)]);
            }
        }
        let c = &model.config;
        h.update(format!("{c:?}").as_bytes());
        ModelId(h.finalize().into())
    }
}

/// The identity every key of one (model, cache types, tenant) descends
/// from: entries of another model, type or tenant never share a key.
pub fn ident(model: &ModelId, kv: KvTypes, block: usize, tenant: &Key) -> Key {
    let mut h = Sha256::new();
    h.update(b"cria prefix cache: ident\0");
    h.update(model.0);
    h.update([type_code(kv.k), type_code(kv.v)]);
    h.update((block as u64).to_le_bytes());
    h.update(tenant);
    h.finalize().into()
}

/// The salt of a tenant named by an API key: a hash of the key, so it
/// stays the same whatever the order of the keys, and reveals nothing of
/// the key. Requests without keys use [`ANONYMOUS`].
pub fn tenant_salt(api_key: &str) -> Key {
    let mut h = Sha256::new();
    h.update(b"cria prefix cache: tenant\0");
    h.update(api_key.as_bytes());
    h.finalize().into()
}

/// The tenant of a server without API keys and of `cria run`.
pub const ANONYMOUS: Key = [0; 32];

/// The key of `tokens` following the prefix whose key is `parent`.
pub fn chain_key(parent: &Key, tokens: &[u32]) -> Key {
    let mut h = Sha256::new();
    h.update(b"cria prefix cache: tokens\0");
    h.update(parent);
    h.update((tokens.len() as u64).to_le_bytes());
    let mut buf = Vec::with_capacity(tokens.len() * 4);
    for t in tokens {
        buf.extend_from_slice(&t.to_le_bytes());
    }
    h.update(&buf);
    h.finalize().into()
}

/// The byte an entry header stores for a KV type (ggml's type numbers).
pub fn type_code(t: KvType) -> u8 {
    match t {
        KvType::F32 => 0,
        KvType::F16 => 1,
        KvType::Q4_0 => 2,
        KvType::Q8_0 => 8,
    }
}

pub fn type_from_code(c: u8) -> Option<KvType> {
    KvType::ALL.into_iter().find(|&t| type_code(t) == c)
}

/// Lower-case hex of a key (file names).
pub fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_what_they_should() {
        let m = ModelId([7; 32]);
        let f16 = KvTypes::from(KvType::F16);
        let a = ident(&m, f16, 256, &ANONYMOUS);
        assert_ne!(a, ident(&m, KvType::Q8_0.into(), 256, &ANONYMOUS));
        assert_ne!(a, ident(&m, f16, 128, &ANONYMOUS));
        assert_ne!(a, ident(&ModelId([8; 32]), f16, 256, &ANONYMOUS));
        assert_ne!(a, ident(&m, f16, 256, &tenant_salt("key-1")));
        assert_ne!(tenant_salt("key-1"), tenant_salt("key-2"));
        // The chain: the key of [1, 2] then [3] is not that of [1] then [2, 3].
        let k = chain_key(&chain_key(&a, &[1, 2]), &[3]);
        assert_ne!(k, chain_key(&chain_key(&a, &[1]), &[2, 3]));
        assert_eq!(k, chain_key(&chain_key(&a, &[1, 2]), &[3]));
        for t in KvType::ALL {
            assert_eq!(type_from_code(type_code(t)), Some(t));
        }
        assert_eq!(type_from_code(3), None);
        assert_eq!(hex(&[0xab; 32]).len(), 64);
    }
}
