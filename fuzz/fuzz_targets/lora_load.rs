//! Any bytes as a LoRA adapter file: reading gives an adapter or an error,
//! never a panic or an allocation sized by a lie; an adapter that reads
//! writes back and reads again as the same adapter.
#![no_main]

use cria_gguf::{GgmlType, GgufFile};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let Ok(lora) = cria_lora::from_gguf(&file, Path::new("fuzz")) else {
        return;
    };
    let mut out = Vec::new();
    cria_lora::write_gguf(&lora, GgmlType::F32, &mut out, Path::new("out"))
        .expect("an adapter that was read can be written");
    let again = GgufFile::from_bytes(out).expect("written adapters parse");
    let back = cria_lora::from_gguf(&again, Path::new("out")).expect("and read");
    assert_eq!(back, lora);
});
