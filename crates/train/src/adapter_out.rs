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
        let name = s.target.tensor_name(s.layer);
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
    w.write_to(&mut out).map_err(ErrorKind::Gguf)?;
    use std::io::Write;
    out.flush().map_err(io("cannot write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("cannot rename into place", path))?;
    Ok(())
}

/// Reads an adapter this module wrote (or any llama.cpp LoRA GGUF for a
/// LLaMA model whose pairs all have one rank) back into a [`Lora`] for
/// `cfg`: the targets are the ones present in every block.
pub fn read(cfg: &cria_model::LlamaConfig, f: &cria_gguf::GgufFile) -> Result<Lora> {
    use crate::lora::Target;
    let m = f.metadata();
    let bad = |d: String| ErrorKind::BadOption { detail: d };
    if m.get_str("general.type")? != "adapter" || m.get_str("adapter.type")? != "lora" {
        return Err(bad("not a LoRA adapter (general.type / adapter.type)".into()).into());
    }
    let alpha = m.get_f32("adapter.lora.alpha")?;
    let targets: Vec<Target> = Target::ALL
        .iter()
        .copied()
        .filter(|t| f.tensor(&format!("{}.lora_a", t.tensor_name(0))).is_some())
        .collect();
    let Some(first) = targets.first() else {
        return Err(bad("the adapter has no blk.0 pair this trainer knows".into()).into());
    };
    let a0 = f.require_tensor(&format!("{}.lora_a", first.tensor_name(0)))?;
    let rank = *a0.dims.get(1).unwrap_or(&0) as usize;
    let mut lora = Lora::new(cfg, &targets, rank, alpha, 0)?;
    read_params(f, &mut lora)?;
    Ok(lora)
}

/// Fills `lora.params` from the `.lora_a` / `.lora_b` tensors of `f`,
/// each checked for type F32 and the exact size.
pub fn read_params(f: &cria_gguf::GgufFile, lora: &mut Lora) -> Result<()> {
    let mut params = std::mem::take(&mut lora.params);
    let slots = lora.slots.clone();
    let mut result = Ok(());
    for s in &slots {
        let name = s.target.tensor_name(s.layer);
        let (a, b) = lora.ab_mut(s, &mut params);
        result = read_f32(f, &format!("{name}.lora_a"), a)
            .and_then(|_| read_f32(f, &format!("{name}.lora_b"), b));
        if result.is_err() {
            break;
        }
    }
    lora.params = params;
    result
}

/// Copies F32 tensor `name` of `f` into `dst`, which must be its size.
pub(crate) fn read_f32(f: &cria_gguf::GgufFile, name: &str, dst: &mut [f32]) -> Result<()> {
    let t = f.require_tensor(name)?;
    if t.ty != GgmlType::F32 || t.n_elements != dst.len() as u64 {
        return Err(ErrorKind::BadOption {
            detail: format!(
                "tensor {name} is {} with {} elements; expected F32 with {} (another model or rank?)",
                t.ty,
                t.n_elements,
                dst.len()
            ),
        }
        .into());
    }
    for (d, b) in dst.iter_mut().zip(f.tensor_data(t).chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}
