//! One entry: the keys and values of a run of positions, the tokens they
//! belong to, and what they were made for, in one file.
//!
//! ```text
//! offset size  field
//!      0    8  magic "CRIAPKV\0"
//!      8    4  format version (1)
//!     12    4  zero
//!     16   32  ident: model, KV types, block size, tenant (ident.rs)
//!     48   32  parent: the key of the tokens before `start` (the ident at 0)
//!     80   32  key: chain_key(parent, tokens)
//!    112    4  start: first position (a multiple of 16)
//!    116    4  n_tokens
//!    120    4  n_layers
//!    124    4  kv_dim
//!    128    1  K type, 1 V type (ggml's numbers), 2 zero
//!    132    4  CRC-32 of the body
//!    136    8  body length: 4 n_tokens + KvCache::range_bytes(start, start + n_tokens)
//!    144    4  CRC-32 of bytes 0..144
//!    148   12  zero
//!    160       body: n_tokens token ids (u32), then KvCache::export's bytes
//! ```
//!
//! Everything is little-endian. [`parse`] is the cache's input boundary
//! (the directory is input, like a model file): every length is checked
//! against [`Limits`] and against the bytes present before anything is
//! allocated, both checksums are verified, and the key is recomputed from
//! the tokens; whatever fails is [`ErrorKind::Corrupt`](crate::ErrorKind).

use crate::error::{Error, Result};
use crate::ident::{chain_key, type_code, type_from_code, Key};
use cria_model::{KvCache, KvTypes};

pub const MAGIC: &[u8; 8] = b"CRIAPKV\0";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 160;

/// Upper bounds on what an entry may declare.
#[derive(Copy, Clone, Debug)]
pub struct Limits {
    pub max_tokens: usize,
    pub max_layers: usize,
    pub max_kv_dim: usize,
}

impl Default for Limits {
    /// Generous bounds no real model reaches.
    fn default() -> Limits {
        Limits {
            max_tokens: 1 << 20,
            max_layers: 1024,
            max_kv_dim: 1 << 16,
        }
    }
}

/// What an entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub ident: Key,
    pub parent: Key,
    pub start: usize,
    pub n_layers: usize,
    pub kv_dim: usize,
    pub kv: KvTypes,
}

/// A parsed entry, borrowing the payload from the file's bytes.
#[derive(Debug)]
pub struct Entry<'a> {
    pub meta: Meta,
    pub key: Key,
    pub tokens: Vec<u32>,
    /// [`KvCache::export`] of `start..start + tokens.len()`.
    pub payload: &'a [u8],
}

/// The size of an entry's file, `None` past `u64`.
pub fn file_bytes(
    n_layers: usize,
    kv_dim: usize,
    kv: KvTypes,
    start: usize,
    n: usize,
) -> Option<u64> {
    let payload = KvCache::range_bytes(n_layers, kv_dim, kv, start, start.checked_add(n)?)?;
    (HEADER_BYTES as u64)
        .checked_add((n as u64).checked_mul(4)?)?
        .checked_add(payload)
}

/// Writes the entry for `tokens` at `meta.start` with `payload` (the
/// cache's export of those positions). Its key is returned with it.
pub fn encode(meta: &Meta, tokens: &[u32], payload: &[u8]) -> (Key, Vec<u8>) {
    let key = chain_key(&meta.parent, tokens);
    let body_len = tokens.len() * 4 + payload.len();
    let mut out = Vec::with_capacity(HEADER_BYTES + body_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&meta.ident);
    out.extend_from_slice(&meta.parent);
    out.extend_from_slice(&key);
    for v in [meta.start, tokens.len(), meta.n_layers, meta.kv_dim] {
        out.extend_from_slice(&(v as u32).to_le_bytes());
    }
    out.extend_from_slice(&[type_code(meta.kv.k), type_code(meta.kv.v), 0, 0]);
    let mut body = crc32fast::Hasher::new();
    let mut ids = Vec::with_capacity(tokens.len() * 4);
    for t in tokens {
        ids.extend_from_slice(&t.to_le_bytes());
    }
    body.update(&ids);
    body.update(payload);
    out.extend_from_slice(&body.finalize().to_le_bytes());
    out.extend_from_slice(&(body_len as u64).to_le_bytes());
    let head = crc32fast::hash(&out);
    out.extend_from_slice(&head.to_le_bytes());
    out.resize(HEADER_BYTES, 0);
    out.extend_from_slice(&ids);
    out.extend_from_slice(payload);
    (key, out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn key_at(b: &[u8], at: usize) -> Key {
    let mut k = [0; 32];
    k.copy_from_slice(&b[at..at + 32]);
    k
}

/// Reads the declared file size from a header (the first
/// [`HEADER_BYTES`]), after checking the header alone (magic, version,
/// checksum, bounds): how many bytes the whole entry must have.
pub fn declared_len(header: &[u8], limits: &Limits) -> Result<u64> {
    if header.len() < HEADER_BYTES {
        return Err(Error::corrupt(format!(
            "{} bytes, shorter than the {HEADER_BYTES}-byte header (a truncated file)",
            header.len()
        )));
    }
    if &header[..8] != MAGIC {
        return Err(Error::corrupt(
            "no CRIAPKV magic: not a cria prefix cache entry",
        ));
    }
    let version = u32_at(header, 8);
    if version != VERSION {
        return Err(Error::corrupt(format!(
            "format version {version}, this cria reads {VERSION}"
        )));
    }
    let head = u32_at(header, 144);
    if crc32fast::hash(&header[..144]) != head {
        return Err(Error::corrupt("the header's checksum does not match"));
    }
    if header[12..16] != [0; 4] || header[130..132] != [0; 2] || header[148..160] != [0; 12] {
        return Err(Error::corrupt("reserved header bytes are not zero"));
    }
    let [start, n, layers, kvd] = [112, 116, 120, 124].map(|at| u32_at(header, at) as usize);
    if n == 0 || n > limits.max_tokens {
        return Err(Error::corrupt(format!(
            "{n} tokens (an entry holds 1 to {})",
            limits.max_tokens
        )));
    }
    if start % 16 != 0 || start > limits.max_tokens {
        return Err(Error::corrupt(format!(
            "start position {start} (a multiple of 16 up to {})",
            limits.max_tokens
        )));
    }
    if layers == 0 || layers > limits.max_layers || kvd == 0 || kvd > limits.max_kv_dim {
        return Err(Error::corrupt(format!(
            "{layers} layers of width {kvd} (limits: {} layers, width {})",
            limits.max_layers, limits.max_kv_dim
        )));
    }
    let kv = match (type_from_code(header[128]), type_from_code(header[129])) {
        (Some(k), Some(v)) => KvTypes { k, v },
        _ => {
            return Err(Error::corrupt(format!(
                "unknown KV types {} / {}",
                header[128], header[129]
            )))
        }
    };
    let quant = |t| matches!(t, cria_model::KvType::Q8_0 | cria_model::KvType::Q4_0);
    if (quant(kv.k) || quant(kv.v)) && kvd % 32 != 0 {
        // Quantized types come in blocks of 32 dimensions.
        return Err(Error::corrupt(format!(
            "KV types {kv} need a width divisible by 32, not {kvd}"
        )));
    }
    let want = file_bytes(layers, kvd, kv, start, n)
        .ok_or_else(|| Error::corrupt("the declared sizes overflow"))?;
    let body_len = u64::from_le_bytes(header[136..144].try_into().unwrap_or([0; 8]));
    if Some(body_len) != want.checked_sub(HEADER_BYTES as u64) {
        return Err(Error::corrupt(format!(
            "body length {body_len}, but {n} tokens of {layers} layers x {kvd} in {kv} take {}",
            want - HEADER_BYTES as u64
        )));
    }
    Ok(want)
}

/// Checks `bytes` as a whole entry (see the module docs).
pub fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Entry<'a>> {
    let want = declared_len(bytes, limits)?;
    if bytes.len() as u64 != want {
        return Err(Error::corrupt(format!(
            "{} bytes, but the header declares {want} (a truncated or extended file)",
            bytes.len()
        )));
    }
    let body = &bytes[HEADER_BYTES..];
    if crc32fast::hash(body) != u32_at(bytes, 132) {
        return Err(Error::corrupt("the body's checksum does not match"));
    }
    let [start, n, n_layers, kv_dim] = [112, 116, 120, 124].map(|at| u32_at(bytes, at) as usize);
    let kv = match (type_from_code(bytes[128]), type_from_code(bytes[129])) {
        (Some(k), Some(v)) => KvTypes { k, v },
        _ => return Err(Error::corrupt("unknown KV types")),
    };
    let tokens: Vec<u32> = body[..4 * n]
        .chunks_exact(4)
        .map(|c| u32_at(c, 0))
        .collect();
    let meta = Meta {
        ident: key_at(bytes, 16),
        parent: key_at(bytes, 48),
        start,
        n_layers,
        kv_dim,
        kv,
    };
    let key = key_at(bytes, 80);
    if chain_key(&meta.parent, &tokens) != key {
        return Err(Error::corrupt(
            "the key is not the hash of the entry's tokens",
        ));
    }
    Ok(Entry {
        meta,
        key,
        tokens,
        payload: &body[4 * n..],
    })
}

impl Entry<'_> {
    /// Checks that the entry was made for `want` (model, types, tenant,
    /// position, shape).
    pub fn check(&self, want: &Meta) -> Result<()> {
        let m = &self.meta;
        if m.ident != want.ident {
            return Err(Error::mismatch(
                "another model, KV cache type or tenant (its ident differs)",
            ));
        }
        if (m.n_layers, m.kv_dim, m.kv) != (want.n_layers, want.kv_dim, want.kv) {
            return Err(Error::mismatch(format!(
                "{} layers x {} in {}, not {} x {} in {}",
                m.n_layers, m.kv_dim, m.kv, want.n_layers, want.kv_dim, want.kv
            )));
        }
        if (m.parent, m.start) != (want.parent, want.start) {
            return Err(Error::mismatch("another prefix before its tokens"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cria_model::KvType;

    fn sample(kv: KvTypes) -> (Meta, Vec<u32>, Vec<u8>) {
        let meta = Meta {
            ident: [1; 32],
            parent: [2; 32],
            start: 32,
            n_layers: 2,
            kv_dim: 64,
            kv,
        };
        let tokens: Vec<u32> = (0..20).map(|i| i * 7).collect();
        let n = KvCache::range_bytes(2, 64, kv, 32, 52).unwrap() as usize;
        let payload = (0..n).map(|i| (i * 31 % 251) as u8).collect();
        (meta, tokens, payload)
    }

    #[test]
    fn round_trip() {
        for t in KvType::ALL {
            let (meta, tokens, payload) = sample(t.into());
            let (key, bytes) = encode(&meta, &tokens, &payload);
            let e = parse(&bytes, &Limits::default()).unwrap();
            assert_eq!((e.meta.clone(), e.key), (meta.clone(), key));
            assert_eq!((&e.tokens, e.payload), (&tokens, &payload[..]));
            e.check(&meta).unwrap();
            let other = Meta {
                ident: [9; 32],
                ..meta.clone()
            };
            assert!(matches!(
                e.check(&other).unwrap_err().kind(),
                crate::ErrorKind::Mismatch { .. }
            ));
        }
    }

    #[test]
    fn every_damage_is_detected() {
        let (meta, tokens, payload) = sample(KvType::Q8_0.into());
        let (_, good) = encode(&meta, &tokens, &payload);
        let lim = Limits::default();
        let corrupt = |b: &[u8]| {
            matches!(
                parse(b, &lim).map(|_| ()).unwrap_err().kind(),
                crate::ErrorKind::Corrupt { .. }
            )
        };
        // Every single flipped byte, truncation and extension.
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x10;
            assert!(corrupt(&b), "flip at {i}");
        }
        for n in [0, 1, 8, 100, HEADER_BYTES, HEADER_BYTES + 3, good.len() - 1] {
            assert!(corrupt(&good[..n]), "truncated to {n}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(corrupt(&longer));
        assert!(corrupt(&vec![0u8; good.len()]));
        // A header declaring a huge entry is refused before any allocation.
        let mut huge = good[..HEADER_BYTES].to_vec();
        huge[116..120].copy_from_slice(&u32::MAX.to_le_bytes());
        let c = crc32fast::hash(&huge[..144]);
        huge[144..148].copy_from_slice(&c.to_le_bytes());
        assert!(declared_len(&huge, &lim).is_err());
    }
}
