//! An adapter file checked against a base model, as the forward pass
//! applies it.

use crate::error::{Error, Result};
use crate::LoraFile;
use cria_gguf::GgufFile;
use cria_model::{Adapter, LlamaConfig, LoraDelta, Model, Target};
use std::path::Path;

/// Reads an adapter: a PEFT folder when `path` is a directory, llama.cpp's
/// GGUF format otherwise. `cfg` gives the head counts PEFT's q/k
/// permutation needs.
pub fn read(path: &Path, cfg: &LlamaConfig) -> Result<LoraFile> {
    if path.is_dir() {
        crate::read_peft(path, cfg.n_heads, cfg.n_kv_heads)
    } else {
        crate::read_gguf(path)
    }
}

/// [`read`] then [`bind`] against a loaded model.
pub fn load(path: &Path, model: &Model) -> Result<Adapter> {
    load_for(path, model.file(), &model.config)
}

/// [`load`] against a model file that is only parsed, not loaded (merge).
pub fn load_for(path: &Path, file: &GgufFile, cfg: &LlamaConfig) -> Result<Adapter> {
    bind(read(path, cfg)?, file, cfg, path)
}

/// Checks `lora` against the model in `file`: the same architecture,
/// every tensor a matrix the forward pass multiplies (the seven of each
/// layer, and `output.weight` when the model has its own), shapes equal to
/// the base tensor's, each tensor once.
pub fn bind(lora: LoraFile, file: &GgufFile, cfg: &LlamaConfig, origin: &Path) -> Result<Adapter> {
    let arch = file
        .metadata()
        .try_str("general.architecture")
        .ok()
        .flatten()
        .unwrap_or("llama");
    if lora.architecture != arch {
        return Err(Error::mismatch(
            origin,
            format!(
                "the adapter is for architecture {:?} but the model is {arch:?}",
                lora.architecture
            ),
        ));
    }
    let n_layers = cfg.n_layers;
    let mut adapter = Adapter {
        name: origin.display().to_string(),
        alpha: lora.alpha,
        layers: vec![Default::default(); n_layers],
        output: None,
    };
    for p in lora.pairs {
        let slot = match locate(&p.base, n_layers) {
            Some(Some((l, t))) => &mut adapter.layers[l][t as usize],
            Some(None) => {
                if file.tensor("output.weight").is_none() {
                    return Err(Error::mismatch(
                        origin,
                        "the adapter changes output.weight but the model ties its output \
                         to the token embedding (llama.cpp refuses this too)",
                    ));
                }
                &mut adapter.output
            }
            None => {
                if p.base == "token_embd.weight" {
                    return Err(Error::unsupported(
                        origin,
                        "the adapter changes token_embd.weight; cria applies adapters to \
                         matrix products only",
                    ));
                }
                if file.tensor(&p.base).is_some() {
                    return Err(Error::unsupported(
                        origin,
                        format!("the adapter changes {:?}, which is not a matrix product", p.base),
                    ));
                }
                return Err(Error::mismatch(
                    origin,
                    format!("tensor {:?} does not exist in the base model", p.base),
                ));
            }
        };
        let Some(t) = file.tensor(&p.base) else {
            return Err(Error::mismatch(
                origin,
                format!("tensor {:?} does not exist in the base model", p.base),
            ));
        };
        if t.dims.len() < 2 || t.dims[0] != p.cols as u64 || t.dims[1] != p.rows as u64 {
            return Err(Error::mismatch(
                origin,
                format!(
                    "{}: the adapter's pair is for a matrix of dims [{}, {}] but the model's \
                     has {:?}",
                    p.base, p.cols, p.rows, t.dims
                ),
            ));
        }
        if slot.is_some() {
            return Err(Error::format(origin, format!("{} appears twice", p.base)));
        }
        *slot = Some(LoraDelta {
            rank: p.rank,
            rows: p.rows,
            cols: p.cols,
            a: p.a,
            b: p.b,
        });
    }
    Ok(adapter)
}

/// `Some(Some((layer, target)))` for a layer matrix, `Some(None)` for
/// `output.weight`, `None` otherwise.
pub(crate) fn locate(name: &str, n_layers: usize) -> Option<Option<(usize, Target)>> {
    if name == "output.weight" {
        return Some(None);
    }
    let rest = name.strip_prefix("blk.")?;
    let (l, _) = rest.split_once('.')?;
    let l: usize = l.parse().ok()?;
    if l >= n_layers {
        return None;
    }
    Target::ALL
        .iter()
        .find(|t| t.tensor_name(l) == name)
        .map(|&t| Some((l, t)))
}
