//! A model file whose metadata lies about its tensors (issue 10): `cria
//! inspect` shows the lies without overflowing on them, and `cria run`
//! refuses the file with one line naming the key, quickly.

mod common;
use common::*;
use cria_gguf::{GgmlType, GgufWriter, Value};
use std::time::{Duration, Instant};

/// One block of 32 wide, a vocabulary of 4, and metadata claiming
/// 2^32 - 1 blocks and a context of 2^60 positions.
fn lying_file() -> tempfile::NamedTempFile {
    let zeros = vec![0u8; 32 * 64 * 4];
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("llama.block_count", Value::U32(u32::MAX));
    w.add_metadata("llama.context_length", Value::U64(1 << 60));
    w.add_metadata("llama.embedding_length", Value::U32(32));
    w.add_metadata("llama.feed_forward_length", Value::U32(64));
    w.add_metadata("llama.attention.head_count", Value::U32(4));
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    let f32s = |n: usize| &zeros[..4 * n];
    w.add_tensor("token_embd.weight", GgmlType::F32, &[32, 4], f32s(128))
        .unwrap();
    w.add_tensor("output_norm.weight", GgmlType::F32, &[32], f32s(32))
        .unwrap();
    for (name, dims) in [
        ("attn_norm", vec![32]),
        ("attn_q", vec![32, 32]),
        ("attn_k", vec![32, 32]),
        ("attn_v", vec![32, 32]),
        ("attn_output", vec![32, 32]),
        ("ffn_norm", vec![32]),
        ("ffn_gate", vec![32, 64]),
        ("ffn_up", vec![32, 64]),
        ("ffn_down", vec![64, 32]),
    ] {
        let n = dims.iter().product::<u64>() as usize;
        w.add_tensor(
            &format!("blk.0.{name}.weight"),
            GgmlType::F32,
            &dims,
            f32s(n),
        )
        .unwrap();
    }
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    f
}

#[test]
fn inspect_shows_the_lies() {
    let f = lying_file();
    let o = cria()
        .args(["inspect", "--json", "-m"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["hyperparameters"]["layers"], u32::MAX as u64);
    assert_eq!(j["hyperparameters"]["context_length"], 1u64 << 60);
    assert_eq!(j["totals"]["tensor_count"], 11);
    let o = cria()
        .args(["inspect", "-m"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("4294967295"), "{}", stdout(&o));
}

#[test]
fn run_refuses_the_file_naming_the_key() {
    let f = lying_file();
    let t = Instant::now();
    let o = cria()
        .args(["run", "--raw", "-n", "1", "-m"])
        .arg(f.path())
        .arg("Hello")
        .output()
        .unwrap();
    assert_clean_error(
        &o,
        "bad model configuration: llama.block_count = 4294967295: the tensors hold 1 block: blk.0",
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
