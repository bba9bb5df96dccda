//! A [`Lora`] in and out of llama.cpp's GGUF LoRA adapter format, the file
//! `llama-cli --lora`, `llama-perplexity --lora` and cria load. Writing is
//! cria-lora's one writer ([`cria_lora::encode`]): the trainer only turns
//! its flat parameters into a [`cria_lora::LoraFile`]. Reading back (for
//! `--resume` and the examples) fills the flat parameters by tensor name,
//! each checked for type F32 and its exact size.

use crate::error::{ErrorKind, Result};
use crate::lora::Lora;
use cria_gguf::{GgmlType, GgufWriter};
use cria_lora::{Encoded, LoraFile, LoraPair};
use std::path::Path;

/// The adapter with values `params` (laid out as `lora.params`) as the
/// format states it: one pair per adapted base tensor.
pub fn to_file(lora: &Lora, params: &[f32]) -> LoraFile {
    let pairs = lora
        .slots
        .iter()
        .map(|s| {
            let (a, b) = lora.ab(s, params);
            LoraPair {
                base: s.target.tensor_name(s.layer),
                rank: lora.rank,
                rows: s.rows,
                cols: s.cols,
                a: a.to_vec(),
                b: b.to_vec(),
            }
        })
        .collect();
    LoraFile {
        architecture: "llama".into(),
        alpha: lora.alpha,
        pairs,
    }
}

/// The adapter encoded (F32) for a GGUF the caller writes, e.g. a
/// checkpoint: add it with [`Encoded::add_to`].
pub fn encode(lora: &Lora, path: &Path) -> Result<Encoded> {
    Ok(cria_lora::encode(
        &to_file(lora, &lora.params),
        GgmlType::F32,
        path,
    )?)
}

/// Writes the adapter file at `path` (through a temporary file beside it,
/// renamed into place, so a crash never leaves half a file).
pub fn write(path: &Path, lora: &Lora, name: &str) -> Result<()> {
    let file = to_file(lora, &lora.params);
    Ok(cria_lora::write_gguf_file(
        &file,
        GgmlType::F32,
        name,
        path,
    )?)
}

pub(crate) fn write_file(path: &Path, w: &GgufWriter) -> Result<()> {
    Ok(cria_lora::write_file_atomic(w, path)?)
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
