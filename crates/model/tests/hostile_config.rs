//! GGUF files whose `llama.*` metadata lies about the tensors (issue 10):
//! each must be refused with a one-line error naming the key, its value and
//! what the tensors say, before anything is allocated from the lie, and
//! quickly (a block count of 2^32 - 1 used to reach
//! `Vec::with_capacity(n_layers)`).

use cria_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use cria_model::{ErrorKind, KvCache, KvType, Model, MAX_CONTEXT_LENGTH};
use std::time::{Duration, Instant};

const DIM: usize = 32;
const FFN: usize = 48;
const VOCAB: usize = 8;
const HEADS: u32 = 4;
const KV_HEADS: u32 = 2;
const LAYERS: usize = 2;

/// A tiny honest LLaMA (2 blocks, 4 heads of 8 sharing 2 KV heads) with
/// `edit` applied to its metadata (`None` removes the key).
fn file_with(edit: &[(&str, Option<Value>)]) -> GgufFile {
    let kv_dim = KV_HEADS as usize * DIM / HEADS as usize;
    let f32s = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes())
            .collect()
    };
    let mut tensors: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![DIM as u64, VOCAB as u64]),
        ("output_norm.weight".into(), vec![DIM as u64]),
    ];
    for l in 0..LAYERS {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        let (d, k, f) = (DIM as u64, kv_dim as u64, FFN as u64);
        tensors.extend([
            (p("attn_norm"), vec![d]),
            (p("attn_q"), vec![d, d]),
            (p("attn_k"), vec![d, k]),
            (p("attn_v"), vec![d, k]),
            (p("attn_output"), vec![d, d]),
            (p("ffn_norm"), vec![d]),
            (p("ffn_gate"), vec![d, f]),
            (p("ffn_up"), vec![d, f]),
            (p("ffn_down"), vec![f, d]),
        ]);
    }
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, d)| f32s(d.iter().product::<u64>() as usize))
        .collect();
    let mut meta: Vec<(&str, Option<Value>)> = vec![
        ("general.architecture", Some(Value::String("llama".into()))),
        ("llama.block_count", Some(Value::U32(LAYERS as u32))),
        ("llama.embedding_length", Some(Value::U32(DIM as u32))),
        ("llama.feed_forward_length", Some(Value::U32(FFN as u32))),
        ("llama.attention.head_count", Some(Value::U32(HEADS))),
        ("llama.attention.head_count_kv", Some(Value::U32(KV_HEADS))),
        ("llama.context_length", Some(Value::U32(256))),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Some(Value::F32(1e-5)),
        ),
        ("llama.rope.freq_base", Some(Value::F32(10000.0))),
    ];
    for (k, v) in edit {
        match meta.iter_mut().find(|(mk, _)| mk == k) {
            Some(slot) => slot.1 = v.clone(),
            None => meta.push((k, v.clone())),
        }
    }
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        if let Some(v) = v {
            w.add_metadata(k, v);
        }
    }
    for ((name, dims), bytes) in tensors.iter().zip(&data) {
        w.add_tensor(name, GgmlType::F32, dims, bytes).unwrap();
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    GgufFile::from_bytes(out).unwrap()
}

/// Loads a file with one key set to `value`; expects the error to name
/// `key` (with the `llama.` prefix), `shown` (the value as printed) and
/// every fragment of `says`, on one line, within a second.
fn refused(key: &str, value: Value, shown: &str, says: &[&str]) {
    let file = file_with(&[(key, Some(value))]);
    let t = Instant::now();
    let err = match Model::from_file(file) {
        Ok(_) => panic!("{key} = {shown} was accepted"),
        Err(e) => e,
    };
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "{key}: refusing took {:?}",
        t.elapsed()
    );
    match err.kind() {
        ErrorKind::BadHyperparameter {
            key: k,
            value: v,
            reason,
        } => {
            assert_eq!((k.as_str(), v.as_str()), (key, shown), "{err}");
            for s in says {
                assert!(reason.contains(s), "{key}: {reason:?} lacks {s:?}");
            }
        }
        other => panic!("{key} = {shown}: wrong error kind {other:?}: {err}"),
    }
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(
        msg.starts_with(&format!("bad model configuration: {key} = {shown}: ")),
        "{msg}"
    );
}

#[test]
fn the_honest_file_loads() {
    let m = Model::from_file(file_with(&[])).unwrap();
    let c = &m.config;
    assert_eq!(
        (c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim),
        (2, 32, 4, 2, 8)
    );
    assert_eq!((c.ffn_dim, c.n_vocab, c.n_ctx_train), (48, 8, 256));
}

#[test]
fn block_count_must_match_the_blk_tensors() {
    let says = ["the tensors hold 2 blocks: blk.0 to blk.1"];
    refused(
        "llama.block_count",
        Value::U32(u32::MAX),
        "4294967295",
        &says,
    );
    refused(
        "llama.block_count",
        Value::U64(u64::MAX),
        &u64::MAX.to_string(),
        &says,
    );
    refused("llama.block_count", Value::U32(3), "3", &says);
    refused("llama.block_count", Value::U32(1), "1", &says);
    refused("llama.block_count", Value::U32(0), "0", &says);
}

#[test]
fn embedding_length_must_match_token_embd() {
    let says = ["token_embd.weight is [32, 8]", "embedding length is 32"];
    refused("llama.embedding_length", Value::U32(4096), "4096", &says);
    refused("llama.embedding_length", Value::U32(0), "0", &says);
    refused(
        "llama.embedding_length",
        Value::U64(1 << 40),
        "1099511627776",
        &says,
    );
}

#[test]
fn head_counts_must_divide_and_match_wq_wk() {
    refused(
        "llama.attention.head_count",
        Value::U32(6),
        "6",
        &["does not divide the embedding length 32"],
    );
    refused(
        "llama.attention.head_count",
        Value::U32(0),
        "0",
        &["between 1 and the embedding length 32"],
    );
    refused(
        "llama.attention.head_count",
        Value::U32(u32::MAX),
        "4294967295",
        &["between 1 and the embedding length 32"],
    );
    refused(
        "llama.attention.head_count_kv",
        Value::U32(3),
        "3",
        &["divide head_count 4"],
    );
    refused(
        "llama.attention.head_count_kv",
        Value::U32(0),
        "0",
        &["non-zero"],
    );
    // Divides, but wk has 2 heads' worth of rows.
    refused(
        "llama.attention.head_count_kv",
        Value::U32(4),
        "4",
        &[
            "4 heads of 8",
            "16 key rows of blk.0.attn_k.weight [32, 16]",
        ],
    );
    // 4 heads of 16 would need 64 query rows.
    refused(
        "llama.attention.key_length",
        Value::U32(16),
        "16",
        &[
            "4 heads of 16",
            "32 query rows of blk.0.attn_q.weight [32, 32]",
        ],
    );
    refused(
        "llama.attention.key_length",
        Value::U32(u32::MAX),
        "4294967295",
        &["even, non-zero and at most the embedding length 32"],
    );
    refused(
        "llama.attention.value_length",
        Value::U32(4),
        "4",
        &["differs from the key length 8"],
    );
}

#[test]
fn feed_forward_length_must_match_ffn_up() {
    let says = ["blk.0.ffn_up.weight is [32, 48]", "hidden width is 48"];
    refused(
        "llama.feed_forward_length",
        Value::U32(u32::MAX),
        "4294967295",
        &says,
    );
    refused("llama.feed_forward_length", Value::U32(0), "0", &says);
}

#[test]
fn vocab_size_must_match_token_embd() {
    refused(
        "llama.vocab_size",
        Value::U32(32000),
        "32000",
        &["token_embd.weight is [32, 8]", "8 tokens"],
    );
}

#[test]
fn context_length_is_bounded() {
    let says = [format!("between 1 and {MAX_CONTEXT_LENGTH}")];
    let says: Vec<&str> = says.iter().map(String::as_str).collect();
    refused(
        "llama.context_length",
        Value::U64(1 << 60),
        "1152921504606846976",
        &says,
    );
    refused("llama.context_length", Value::U32(0), "0", &says);
}

#[test]
fn rope_dimensions_are_checked() {
    let says = ["even, non-zero and at most the head dimension 8"];
    refused("llama.rope.dimension_count", Value::U32(3), "3", &says);
    refused("llama.rope.dimension_count", Value::U32(16), "16", &says);
    refused("llama.rope.dimension_count", Value::U32(0), "0", &says);
}

#[test]
fn floats_must_be_finite_and_positive() {
    let says = ["must be finite and positive"];
    let eps = "llama.attention.layer_norm_rms_epsilon";
    refused(eps, Value::F32(f32::NAN), "NaN", &says);
    refused(eps, Value::F32(0.0), "0", &says);
    refused(eps, Value::F32(-1e-5), "-0.00001", &says);
    refused(
        "llama.rope.freq_base",
        Value::F32(f32::INFINITY),
        "inf",
        &says,
    );
    refused("llama.rope.freq_base", Value::F32(-1.0), "-1", &says);
    let linear = file_with(&[
        (
            "llama.rope.scaling.type",
            Some(Value::String("linear".into())),
        ),
        ("llama.rope.scaling.factor", Some(Value::F32(0.0))),
    ]);
    let e = Model::from_file(linear).err().expect("factor 0 accepted");
    assert_eq!(
        e.to_string(),
        "bad model configuration: llama.rope.scaling.factor = 0: must be finite and positive"
    );
}

#[test]
fn kv_cache_size_saturates_instead_of_wrapping() {
    let max = usize::MAX;
    assert_eq!(KvCache::bytes_for(max, max, max, KvType::F32), u64::MAX);
    assert_eq!(
        KvCache::bytes_for(1 << 20, 1 << 26, 1 << 20, KvType::F16),
        u64::MAX
    );
    assert_eq!(
        KvCache::bytes_for(30, 2048, 192, KvType::F16),
        2 * 30 * 2048 * 192 * 2
    );
}

#[test]
#[should_panic(expected = "overflows memory")]
fn kv_cache_that_overflows_usize_panics_with_a_message() {
    // Before: the product wrapped to a small allocation in release builds.
    KvCache::new(1 << 20, usize::MAX / 4, 1 << 20, KvType::F16);
}
