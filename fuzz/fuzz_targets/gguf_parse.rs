//! Any bytes through the GGUF parser: an error or a file, never a panic,
//! and for a file every typed getter and tensor view must hold up.
#![no_main]

use cria_gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::from_bytes(data.to_vec()) {
        let m = f.metadata();
        for (k, v) in m.iter() {
            let _ = (m.get_u32(k), m.get_f32(k), m.get_str(k), m.get_str_array(k), v.to_string());
        }
        for t in f.tensors() {
            assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        }
    }
});
