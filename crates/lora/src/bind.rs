//! An adapter file checked against a base model, as the forward pass
//! applies it.

use crate::error::{Error, Result};
use crate::LoraFile;
use cria_model::{Adapter, LoraDelta, Model, Target};
use std::path::Path;

/// Reads an adapter: a PEFT folder when `path` is a directory, llama.cpp's
/// GGUF format otherwise. `model` gives the head counts PEFT's q/k
/// permutation needs.
pub fn read(path: &Path, model: &Model) -> Result<LoraFile> {
    if path.is_dir() {
        crate::read_peft(path, model.config.n_heads, model.config.n_kv_heads)
    } else {
        crate::read_gguf(path)
    }
}

/// [`read`] then [`bind`].
pub fn load(path: &Path, model: &Model) -> Result<Adapter> {
    bind(read(path, model)?, model, path)
}

/// Checks `lora` against `model`: the same architecture, every tensor a
/// matrix of the model that the forward pass multiplies (the seven of each
/// layer, and `output.weight` when the model has its own), shapes equal to
/// the base tensor's, each tensor once.
pub fn bind(lora: LoraFile, model: &Model, origin: &Path) -> Result<Adapter> {
    let arch = model
        .file()
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
    let w = &model.weights;
    let n_layers = w.layers.len();
    let mut adapter = Adapter {
        name: origin.display().to_string(),
        alpha: lora.alpha,
        layers: vec![Default::default(); n_layers],
        output: None,
    };
    for p in lora.pairs {
        let (slot, m) = match locate(&p.base, n_layers) {
            Some(Some((l, t))) => {
                let lw = &w.layers[l];
                let m = match t {
                    Target::Q => &lw.wq,
                    Target::K => &lw.wk,
                    Target::V => &lw.wv,
                    Target::O => &lw.wo,
                    Target::Gate => &lw.w_gate,
                    Target::Up => &lw.w_up,
                    Target::Down => &lw.w_down,
                };
                (&mut adapter.layers[l][t as usize], m)
            }
            Some(None) => {
                if model.file().tensor("output.weight").is_none() {
                    return Err(Error::mismatch(
                        origin,
                        "the adapter changes output.weight but the model ties its output \
                         to the token embedding (llama.cpp refuses this too)",
                    ));
                }
                (&mut adapter.output, &w.output)
            }
            None => {
                let detail = if p.base == "token_embd.weight" {
                    return Err(Error::unsupported(
                        origin,
                        "the adapter changes token_embd.weight; cria applies adapters to \
                         matrix products only",
                    ));
                } else if model.file().tensor(&p.base).is_some() {
                    return Err(Error::unsupported(
                        origin,
                        format!("the adapter changes {:?}, which is not a matrix product", p.base),
                    ));
                } else {
                    format!("tensor {:?} does not exist in the base model", p.base)
                };
                return Err(Error::mismatch(origin, detail));
            }
        };
        if p.rows != m.rows || p.cols != m.cols {
            return Err(Error::mismatch(
                origin,
                format!(
                    "{}: the adapter's pair is for a {}x{} matrix but the model's is {}x{}",
                    p.base, p.rows, p.cols, m.rows, m.cols
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
fn locate(name: &str, n_layers: usize) -> Option<Option<(usize, Target)>> {
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
