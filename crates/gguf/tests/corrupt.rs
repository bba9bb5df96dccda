//! The corrupt-file sweep: a small valid file truncated at every byte
//! offset, and with bytes flipped at seeded positions, must give an error
//! (or, for a flip that happens to stay valid, a file), never a panic, a
//! hang or a huge allocation.

use cria_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};
use rand::{Rng, SeedableRng};

fn sample_file() -> Vec<u8> {
    let f32s: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let q4: Vec<u8> = (0..18 * 2).map(|i| i as u8).collect();
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("llama.block_count", Value::U32(1));
    w.add_metadata("llama.rope.freq_base", Value::F32(10000.0));
    w.add_metadata("flag", Value::Bool(true));
    w.add_metadata("i64", Value::I64(-7));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["<s>".into(), "▁the".into(), "é".into()])),
    );
    w.add_metadata(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vec![0.0, -1.5, -2.0])),
    );
    w.add_metadata(
        "nested",
        Value::Array(Array::Array(vec![
            Array::U16(vec![1, 2, 3]),
            Array::Bool(vec![true]),
        ])),
    );
    w.add_tensor("token_embd.weight", GgmlType::F32, &[16, 4], &f32s)
        .unwrap();
    w.add_tensor("blk.0.attn_q.weight", GgmlType::Q4_0, &[32, 2], &q4)
        .unwrap();
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

#[test]
fn sample_file_is_valid() {
    let f = GgufFile::from_bytes(sample_file()).unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.metadata().len(), 8);
}

#[test]
fn every_truncation_is_an_error() {
    let full = sample_file();
    // Cutting only the final padding leaves a valid file, so the error
    // sweep runs up to the end of the last tensor's bytes.
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let end = f
        .tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    for len in 0..end {
        let r = GgufFile::from_bytes(full[..len].to_vec());
        let e = r
            .err()
            .unwrap_or_else(|| panic!("truncation to {len} bytes was accepted"));
        let msg = e.to_string();
        // A cut file is reported as cut, or as a count larger than what
        // is left (checked before anything is read or allocated).
        assert!(
            msg.ends_with("(the download may be incomplete)")
                || msg.starts_with("corrupt file at byte ")
                    && msg.contains(", but the file can hold at most ")
                || len < 4 && msg.starts_with("not a GGUF file"),
            "truncation to {len}: {msg}"
        );
    }
    for len in end..=full.len() {
        assert!(GgufFile::from_bytes(full[..len].to_vec()).is_ok());
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let full = sample_file();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6767_7566);
    let header_len = GgufFile::from_bytes(full.clone()).unwrap().data_offset() as usize;
    let mut errors = 0;
    for round in 0..400 {
        let mut bytes = full.clone();
        // Mostly single bit flips in the header, where they matter; every
        // fourth round a burst of 8 bytes set to 0xff, which turns lengths
        // and counts into huge values.
        let pos = rng.gen_range(0..header_len);
        if round % 4 == 0 {
            for b in bytes.iter_mut().skip(pos).take(8) {
                *b = 0xff;
            }
        } else {
            bytes[pos] ^= 1 << rng.gen_range(0..8);
        }
        if let Err(e) = GgufFile::from_bytes(bytes) {
            assert!(!e.to_string().contains('\n'), "error is not one line: {e}");
            errors += 1;
        }
    }
    // Most header corruptions must be caught; some (a bit of a float or of
    // a string's text) legitimately give another valid file.
    assert!(
        errors > 100,
        "only {errors} of 400 corruptions were detected"
    );
}
