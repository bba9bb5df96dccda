//! Hugging Face folders: `config.json`, `model.safetensors` or the shards
//! named by `model.safetensors.index.json`, and the tokenizer files.
//!
//! Tensors stay in the safetensors maps; only `q_proj` and `k_proj` are
//! rewritten, because Hugging Face stores their rows in rotate-half order
//! and GGUF (like Meta's checkpoints) rotates interleaved pairs.

use crate::error::{Error, Result};
use crate::hparams::{HParams, RopeScaling};
use crate::json;
use crate::plan::{DType, Layout, Piece, Plan, Source, SrcTensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest safetensors header accepted (the format's own limit is 100 MB).
const MAX_HEADER: usize = 100 << 20;

/// Reads `config.json` into hyperparameters (LlamaForCausalLM and
/// MistralForCausalLM; `rope_scaling` none, linear or llama3).
pub fn hparams(dir: &Path) -> Result<HParams> {
    let path = dir.join("config.json");
    let c = json::read_object(&path)?;
    let archs = c.str_list("architectures")?;
    let model_type = c.opt_str("model_type")?.unwrap_or_default();
    let known = ["LlamaForCausalLM", "MistralForCausalLM"];
    if !archs.iter().any(|a| known.contains(&a.as_str())) {
        return Err(Error::unsupported(
            &path,
            format!("architectures {archs:?} (model_type {model_type:?}); cria reads {known:?}"),
        ));
    }
    let dim = c.usize("hidden_size")?;
    let n_head = c.usize("num_attention_heads")?;
    let n_head_kv = c.opt_usize("num_key_value_heads")?.unwrap_or(n_head);
    let head_dim = c.opt_usize("head_dim")?.unwrap_or(dim / n_head.max(1));
    let rope = c.opt_obj("rope_scaling")?.or(c.opt_obj("rope_parameters")?);
    let mut rope_theta = c.opt_f32("rope_theta")?.unwrap_or(10000.0);
    let rope_scaling = match rope {
        None => RopeScaling::None,
        Some(r) => {
            if let Some(t) = r.opt_f32("rope_theta")? {
                rope_theta = t;
            }
            let ty = match r.opt_str("rope_type")? {
                Some(t) => t,
                None => r.opt_str("type")?.unwrap_or_else(|| "default".into()),
            };
            match ty.as_str() {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear {
                    factor: r.f32("factor")?,
                },
                "llama3" => RopeScaling::Llama3 {
                    factor: r.opt_f32("factor")?.unwrap_or(8.0),
                    low_freq_factor: r.opt_f32("low_freq_factor")?.unwrap_or(1.0),
                    high_freq_factor: r.opt_f32("high_freq_factor")?.unwrap_or(4.0),
                    original_context: r
                        .opt_f32("original_max_position_embeddings")?
                        .unwrap_or(8192.0),
                },
                other => {
                    return Err(Error::unsupported(
                        &path,
                        format!("rope_scaling type {other:?}; cria handles linear and llama3"),
                    ))
                }
            }
        }
    };
    let mut h = HParams {
        name: dir
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().into_owned()),
        n_vocab: c.usize("vocab_size")?,
        dim,
        n_layers: c.usize("num_hidden_layers")?,
        n_head,
        n_head_kv,
        ffn_dim: c.usize("intermediate_size")?,
        head_dim,
        context_length: c.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        rope_theta,
        rms_eps: c.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
        rope_scaling,
        sliding_window: None,
    };
    // Mistral's window; `use_sliding_window: false` (Qwen2-style configs)
    // turns a stated window off. A window as long as the context is none.
    if c.opt_bool("use_sliding_window")? != Some(false) {
        h.sliding_window = c
            .opt_usize("sliding_window")?
            .filter(|&w| w > 0 && w < h.context_length);
    }
    if h.n_head == 0
        || h.n_head_kv == 0
        || !h.n_head.is_multiple_of(h.n_head_kv)
        || !h.head_dim.is_multiple_of(2)
    {
        return Err(Error::bad(
            &path,
            format!(
                "num_attention_heads {} / num_key_value_heads {} / head_dim {} do not fit together",
                h.n_head, h.n_head_kv, h.head_dim
            ),
        ));
    }
    Ok(h)
}

/// The safetensors files of the folder, in order.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = json::read_object(&index)?;
        let map = v.obj("weight_map")?;
        let mut files: Vec<String> = Vec::new();
        for (tensor, file) in map.iter() {
            let Some(f) = file.as_str() else {
                return Err(Error::bad(
                    &index,
                    format!("weight_map[{tensor:?}] is not a file name"),
                ));
            };
            // A shard name is a plain file in this folder.
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                return Err(Error::bad(
                    &index,
                    format!("shard name {f:?} leaves the folder"),
                ));
            }
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        files.sort();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let bins = ["pytorch_model.bin", "pytorch_model.bin.index.json"];
    if let Some(b) = bins.iter().find(|b| dir.join(b).exists()) {
        return Err(Error::unsupported(
            dir.join(b),
            "PyTorch .bin weights in a Hugging Face folder; convert them to safetensors \
             (or use the Meta consolidated.NN.pth layout)",
        ));
    }
    Err(Error::from(crate::error::ErrorKind::UnknownLayout {
        path: dir.to_path_buf(),
        detail: "config.json but no model.safetensors or model.safetensors.index.json".into(),
    }))
}

/// Maps a file read-only.
pub(crate) fn map_file(path: &Path) -> Result<Arc<memmap2::Mmap>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map; a file truncated under us may fault, the
    // hazard every mmap-based loader shares (see cria_gguf::GgufFile::open).
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(path, e))?;
    Ok(Arc::new(map))
}

/// A named tensor of a safetensors file (torch names, torch order).
pub struct StTensor {
    pub name: String,
    pub dtype: DType,
    pub piece: Piece,
}

/// Reads a safetensors header; every tensor is checked to lie in the file.
pub fn read_safetensors(path: &Path) -> Result<Vec<StTensor>> {
    let map = map_file(path)?;
    let bad = |d: String| Error::bad(path, d);
    if map.len() >= 8 {
        let n = u64::from_le_bytes(map[..8].try_into().unwrap_or([0; 8]));
        if n as usize > MAX_HEADER {
            return Err(bad(format!(
                "header of {n} bytes; at most {MAX_HEADER} are read"
            )));
        }
    }
    let st = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let base = map.as_ptr() as usize;
    let file = Arc::new(path.to_path_buf());
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::unsupported(
                    path,
                    format!("tensor {name:?} has type {other:?}; cria reads F32, F16 and BF16"),
                ))
            }
        };
        let start = view.data().as_ptr() as usize - base;
        out.push(StTensor {
            name,
            dtype,
            piece: Piece {
                map: map.clone(),
                path: file.clone(),
                start,
                shape: view.shape().to_vec(),
            },
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The GGUF name of a Hugging Face LLaMA tensor and the row permutation
/// it needs; `None` for tensors that carry nothing (`rotary_emb.inv_freq`).
fn gguf_name(name: &str, h: &HParams) -> Option<std::result::Result<(String, Layout), ()>> {
    tensor_name(name, h.n_head, h.n_head_kv)
}

/// [`tensors`]' renaming, for other readers of Hugging Face names (PEFT
/// adapters): the GGUF name of a LLaMA tensor (`model.layers.3.self_attn.
/// q_proj.weight` -> `blk.3.attn_q.weight`) and the row permutation its
/// output rows need (q with `n_head` heads, k with `n_head_kv`). `None`
/// for tensors that carry nothing, `Some(Err(()))` for unknown names.
pub fn tensor_name(
    name: &str,
    n_head: usize,
    n_head_kv: usize,
) -> Option<std::result::Result<(String, Layout), ()>> {
    let plain = |s: String| Some(Ok((s, Layout::Plain)));
    match name {
        "model.embed_tokens.weight" => return plain("token_embd.weight".into()),
        "model.norm.weight" => return plain("output_norm.weight".into()),
        "lm_head.weight" => return plain("output.weight".into()),
        _ => {}
    }
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return Some(Err(()));
    };
    let Some((i, rest)) = rest.split_once('.') else {
        return Some(Err(()));
    };
    let Ok(i) = i.parse::<usize>() else {
        return Some(Err(()));
    };
    let blk = |s: &str| format!("blk.{i}.{s}.weight");
    let (n, layout) = match rest {
        "input_layernorm.weight" => (blk("attn_norm"), Layout::Plain),
        "post_attention_layernorm.weight" => (blk("ffn_norm"), Layout::Plain),
        "self_attn.q_proj.weight" => (blk("attn_q"), Layout::Permute { n_head }),
        "self_attn.k_proj.weight" => (blk("attn_k"), Layout::Permute { n_head: n_head_kv }),
        "self_attn.v_proj.weight" => (blk("attn_v"), Layout::Plain),
        "self_attn.o_proj.weight" => (blk("attn_output"), Layout::Plain),
        "mlp.gate_proj.weight" => (blk("ffn_gate"), Layout::Plain),
        "mlp.up_proj.weight" => (blk("ffn_up"), Layout::Plain),
        "mlp.down_proj.weight" => (blk("ffn_down"), Layout::Plain),
        "self_attn.rotary_emb.inv_freq" => return None,
        _ => return Some(Err(())),
    };
    Some(Ok((n, layout)))
}

/// The folder's tensors, renamed and described for GGUF.
pub fn tensors(dir: &Path, h: &HParams) -> Result<Vec<SrcTensor>> {
    let mut by_name: BTreeMap<String, SrcTensor> = BTreeMap::new();
    for file in weight_files(dir)? {
        for t in read_safetensors(&file)? {
            let (name, layout) = match gguf_name(&t.name, h) {
                None => continue,
                Some(Ok(x)) => x,
                Some(Err(())) => {
                    return Err(Error::unsupported(
                        &file,
                        format!("tensor {:?} is not part of a LLaMA model", t.name),
                    ))
                }
            };
            if by_name.contains_key(&name) {
                return Err(Error::bad(
                    &file,
                    format!("tensor {:?} appears twice", t.name),
                ));
            }
            by_name.insert(
                name.clone(),
                SrcTensor {
                    name,
                    shape: t.piece.shape.clone(),
                    source: Source::Pieces {
                        dtype: t.dtype,
                        pieces: vec![t.piece],
                        layout,
                    },
                    origin: file.clone(),
                },
            );
        }
    }
    let mut out = Vec::with_capacity(by_name.len() + 1);
    let mut take = |n: &str| by_name.remove(n);
    out.extend(take("token_embd.weight"));
    h.push_rope_freqs(&mut out, &dir.join("config.json"));
    for i in 0..h.n_layers {
        for s in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            out.extend(take(&format!("blk.{i}.{s}.weight")));
        }
    }
    out.extend(take("output_norm.weight"));
    out.extend(take("output.weight"));
    if let Some(extra) = by_name.keys().next() {
        return Err(Error::bad(
            dir.join("config.json"),
            format!(
                "num_hidden_layers is {} but the weights have {extra:?}",
                h.n_layers
            ),
        ));
    }
    Ok(out)
}

/// The plan for a Hugging Face folder (tensors, model metadata and
/// tokenizer metadata); the caller adds `general.file_type`.
pub fn plan(dir: &Path, out: crate::OutType) -> Result<Plan> {
    let mut h = hparams(dir)?;
    let tensors = tensors(dir, &h)?;
    let mut plan = Plan {
        metadata: Vec::new(),
        tensors,
    };
    let tok = crate::hf_tokenizer::read(dir, h.n_vocab)?;
    h.n_vocab = h.n_vocab.max(tok.tokens.len());
    crate::hparams::model_metadata(&h, out, &mut plan);
    plan.metadata.extend(tok.into_metadata());
    Ok(plan)
}
