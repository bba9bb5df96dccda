//! The real default model, truncated and corrupted at seeded positions
//! throughout its header, through the library parser: always an error or a
//! valid file, never a panic.

mod common;
use cria_gguf::GgufFile;

#[test]
fn real_model_header_corruptions() {
    let bytes = std::fs::read(common::default_model()).unwrap();
    let header_end = GgufFile::from_bytes(bytes.clone()).unwrap().data_offset() as usize;
    // Truncations: 300 positions spread over the header, plus inside the data.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let len = (next() % header_end as u64) as usize;
        assert!(
            GgufFile::from_bytes(bytes[..len].to_vec()).is_err(),
            "cut at {len} accepted"
        );
    }
    assert!(GgufFile::from_bytes(bytes[..bytes.len() - 1000].to_vec()).is_err());
    // Flips: the header is ~1.7 MB of vocabulary; only its bytes are copied.
    let head = &bytes[..header_end];
    for _ in 0..300 {
        let mut h = head.to_vec();
        let pos = (next() % header_end as u64) as usize;
        h[pos] ^= 1 << (next() % 8);
        let _ = GgufFile::from_bytes(h);
    }
}
