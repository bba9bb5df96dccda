//! PEFT folders: `adapter_config.json` and `adapter_model.safetensors`.
//!
//! Tensors are named `base_model.model.<HF name without .weight>.lora_A.weight`
//! (A, torch shape (r, in)) and `...lora_B.weight` (B, (out, r)): already
//! the row-major layouts of [`crate::LoraPair`]. The base name goes through
//! cria-import's Hugging Face renaming; for q and k, whose output rows
//! Hugging Face keeps in rotate-half order, B's rows go through
//! cria-import's q/k permutation (A, on the input side, is unchanged).
//! The scale: PEFT's `lora_alpha / r`, or `lora_alpha / sqrt(r)` with
//! `use_rslora`, written as llama.cpp's `alpha / rank` with `alpha =
//! lora_alpha * sqrt(r)`.

use crate::error::{Error, Result};
use crate::{LoraFile, LoraPair, MAX_RANK};
use cria_import::{Layout, Source, SrcTensor};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

/// A base tensor's A and B as read so far, and its (rows, cols).
type Halves = (Option<Vec<f32>>, Option<Vec<f32>>, [usize; 2]);

/// Largest `adapter_config.json` read.
const MAX_CONFIG: u64 = 1 << 20;

/// Reads a PEFT LoRA folder for a LLaMA base with `n_head` query heads and
/// `n_head_kv` key/value heads (the q/k permutation needs them).
pub fn read_peft(dir: &Path, n_head: usize, n_head_kv: usize) -> Result<LoraFile> {
    let cfg_path = dir.join("adapter_config.json");
    let cfg = read_config(&cfg_path)?;
    let bad = |d: String| Error::format(&cfg_path, d);
    let unsupported = |d: String| Error::unsupported(&cfg_path, d);
    if let Some(t) = cfg.get("peft_type").and_then(Json::as_str) {
        if t != "LORA" {
            return Err(unsupported(format!("peft_type {t:?}; cria applies LORA")));
        }
    }
    let r = cfg
        .get("r")
        .and_then(Json::as_u64)
        .filter(|&r| r > 0 && r as usize <= MAX_RANK)
        .ok_or_else(|| bad(format!("\"r\" must be an integer in 1..={MAX_RANK}")))?
        as usize;
    let lora_alpha = cfg
        .get("lora_alpha")
        .and_then(Json::as_f64)
        .filter(|a| a.is_finite())
        .ok_or_else(|| bad("\"lora_alpha\" must be a number".into()))?;
    let flag = |k: &str| cfg.get(k).and_then(Json::as_bool).unwrap_or(false);
    for (key, what) in [
        ("use_dora", "DoRA"),
        ("fan_in_fan_out", "fan_in_fan_out (transposed) weights"),
    ] {
        if flag(key) {
            return Err(unsupported(format!(
                "{key} is set: {what} is not supported"
            )));
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if cfg
            .get(key)
            .and_then(Json::as_object)
            .is_some_and(|o| !o.is_empty())
        {
            return Err(unsupported(format!(
                "{key} gives some modules their own rank or alpha; cria reads one r and \
                 one lora_alpha"
            )));
        }
    }
    let alpha = if flag("use_rslora") {
        lora_alpha * (r as f64).sqrt()
    } else {
        lora_alpha
    } as f32;

    let st_path = dir.join("adapter_model.safetensors");
    if !st_path.exists() {
        let bin = dir.join("adapter_model.bin");
        return Err(if bin.exists() {
            Error::unsupported(
                &bin,
                "PyTorch .bin adapter weights; save the adapter with safetensors \
                 (save_pretrained(..., safe_serialization=True))",
            )
        } else {
            Error::format(dir, "a PEFT folder needs adapter_model.safetensors")
        });
    }
    let tensors =
        cria_import::hf::read_safetensors(&st_path).map_err(|source| Error::Import { source })?;
    let bad = |d: String| Error::format(&st_path, d);
    let mut halves: BTreeMap<String, Halves> = BTreeMap::new();
    for t in tensors {
        let (stem, is_a) = match (
            t.name.strip_suffix(".lora_A.weight"),
            t.name.strip_suffix(".lora_B.weight"),
        ) {
            (Some(s), _) => (s, true),
            (_, Some(s)) => (s, false),
            _ => {
                return Err(Error::unsupported(
                    &st_path,
                    format!(
                        "tensor {:?} is not a lora_A or lora_B weight (embeddings, \
                         modules_to_save and DoRA magnitudes are not supported)",
                        t.name
                    ),
                ))
            }
        };
        let hf = format!(
            "{}.weight",
            stem.strip_prefix("base_model.model.").unwrap_or(stem)
        );
        let (base, layout) = match cria_import::hf::tensor_name(&hf, n_head, n_head_kv) {
            Some(Ok(x)) => x,
            _ => {
                return Err(Error::unsupported(
                    &st_path,
                    format!("tensor {:?}: {hf:?} is not a LLaMA matrix", t.name),
                ))
            }
        };
        let shape = t.piece.shape.clone();
        let [d0, d1] = shape[..] else {
            return Err(bad(format!(
                "tensor {:?} has shape {shape:?}; 2-D expected",
                t.name
            )));
        };
        // Only B's rows are outputs: A is never permuted.
        let layout = if is_a { Layout::Plain } else { layout };
        let src = SrcTensor {
            name: t.name.clone(),
            shape: shape.clone(),
            source: Source::Pieces {
                dtype: t.dtype,
                pieces: vec![t.piece],
                layout,
            },
            origin: st_path.clone(),
        };
        let raw = src.raw().map_err(|source| Error::Import { source })?;
        let v = cria_import::to_f32(t.dtype, &raw);
        if v.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!(
                "tensor {:?} holds NaN or infinite values",
                t.name
            )));
        }
        let e = halves.entry(base).or_insert((None, None, [0, 0]));
        // dims: A (r, in) -> cols = in; B (out, r) -> rows = out.
        if is_a {
            if d0 != r {
                return Err(bad(format!(
                    "tensor {:?} has rank {d0} but adapter_config.json says r = {r}",
                    t.name
                )));
            }
            e.0 = Some(v);
            e.2[1] = d1;
        } else {
            if d1 != r {
                return Err(bad(format!(
                    "tensor {:?} has rank {d1} but adapter_config.json says r = {r}",
                    t.name
                )));
            }
            e.1 = Some(v);
            e.2[0] = d0;
        }
    }
    if halves.is_empty() {
        return Err(bad("the adapter has no tensors".into()));
    }
    let mut pairs = Vec::with_capacity(halves.len());
    for (base, (a, b, [rows, cols])) in halves {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(bad(format!(
                "{base}: lora_A and lora_B must both be present"
            )));
        };
        pairs.push(LoraPair {
            base,
            rank: r,
            rows,
            cols,
            a,
            b,
        });
    }
    Ok(LoraFile {
        architecture: "llama".into(),
        alpha,
        pairs,
    })
}

fn read_config(path: &Path) -> Result<serde_json::Map<String, Json>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_CONFIG {
        return Err(Error::format(
            path,
            format!("{len} bytes; an adapter config of at most {MAX_CONFIG} is read"),
        ));
    }
    let text = std::fs::read(path).map_err(io)?;
    match serde_json::from_slice(&text) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(Error::format(path, "not a JSON object")),
        Err(e) => Err(Error::format(path, format!("not valid JSON: {e}"))),
    }
}
