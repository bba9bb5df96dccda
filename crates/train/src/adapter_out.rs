//! Writes a [`Lora`] as llama.cpp's GGUF LoRA adapter, the file
//! `llama-cli --lora`, `llama-perplexity --lora` and cria load:
//! `general.type = "adapter"`, `general.architecture = "llama"`,
//! `adapter.type = "lora"`, `adapter.lora.alpha`, and for each adapted base
//! tensor `<name>.lora_a` (ggml dims `[in, rank]`, i.e. A as (rank, in)
//! rows) and `<name>.lora_b` (`[rank, out]`, B as (out, rank) rows), F32.
//! Layout and checks as in llama.cpp's src/llama-adapter.cpp.
//!
//! Kept to this one module so it can move into the adapter crate.

use crate::error::{io, ErrorKind, Result};
use crate::lora::Lora;
use cria_gguf::{GgmlType, GgufWriter, Value};
use std::path::Path;

/// Adds the adapter's metadata and tensors (values from `params`, laid out
/// as `lora.params`) to `w`.
pub fn add_to<'a>(w: &mut GgufWriter<'a>, lora: &Lora, params: &'a [f32]) -> Result<()> {
    w.add_metadata("general.type", Value::String("adapter".into()));
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("adapter.type", Value::String("lora".into()));
    w.add_metadata("adapter.lora.alpha", Value::F32(lora.alpha));
    for s in &lora.slots {
        let (a, b) = lora.ab(s, params);
        let name = s.target.tensor(s.layer);
        let r = lora.rank as u64;
        w.add_tensor(
            &format!("{name}.lora_a"),
            GgmlType::F32,
            &[s.cols as u64, r],
            bytemuck::cast_slice(a),
        )?;
        w.add_tensor(
            &format!("{name}.lora_b"),
            GgmlType::F32,
            &[r, s.rows as u64],
            bytemuck::cast_slice(b),
        )?;
    }
    Ok(())
}

/// Writes the adapter file at `path` (through a temporary file beside it,
/// renamed into place, so a crash never leaves half a file).
pub fn write(path: &Path, lora: &Lora, name: &str) -> Result<()> {
    let mut w = GgufWriter::new();
    add_to(&mut w, lora, &lora.params)?;
    w.add_metadata("general.name", Value::String(name.into()));
    write_file(path, &w)
}

pub(crate) fn write_file(path: &Path, w: &GgufWriter) -> Result<()> {
    let tmp = path.with_extension("gguf.part");
    let f = std::fs::File::create(&tmp).map_err(io("cannot create", &tmp))?;
    let mut out = std::io::BufWriter::new(f);
    w.write_to(&mut out).map_err(|e| ErrorKind::Gguf(e))?;
    use std::io::Write;
    out.flush().map_err(io("cannot write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("cannot rename into place", path))?;
    Ok(())
}
