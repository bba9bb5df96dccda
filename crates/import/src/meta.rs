//! Meta's original release: `params.json`, `consolidated.NN.pth` (one per
//! model-parallel rank) and `tokenizer.model`.
//!
//! Meta's checkpoints rotate interleaved pairs, as GGUF does, so q and k
//! are used as stored (unlike Hugging Face's). With more than one shard,
//! each tensor is joined along the axis Meta split it on: column-parallel
//! weights (wq, wk, wv, w1, w3, output) along dim 0, row-parallel ones
//! (wo, w2) and the token embedding along dim 1; norms are replicated.

use crate::error::{Error, ErrorKind, Result};
use crate::hparams::{HParams, RopeScaling};
use crate::json;
use crate::plan::{Layout, Plan, Source, SrcTensor};
use crate::tokmeta::TokMeta;
use crate::{pth, spm_model, tiktoken, OutType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The shard files, in rank order.
fn shards(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("consolidated.") && n.ends_with(".pth")
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(ErrorKind::UnknownLayout {
            path: dir.to_path_buf(),
            detail: "params.json but no consolidated.NN.pth".into(),
        }
        .into());
    }
    for (i, p) in found.iter().enumerate() {
        let want = format!("consolidated.{i:02}.pth");
        if p.file_name().is_none_or(|n| n != want.as_str()) {
            return Err(Error::bad(p, format!("shard {i} should be named {want}")));
        }
    }
    Ok(found)
}

/// (GGUF name, join axis) of a Meta tensor; `None` for `rope.freqs`.
fn gguf_name(name: &str) -> Option<std::result::Result<(String, usize), ()>> {
    match name {
        "tok_embeddings.weight" => return Some(Ok(("token_embd.weight".into(), 1))),
        "norm.weight" => return Some(Ok(("output_norm.weight".into(), 0))),
        "output.weight" => return Some(Ok(("output.weight".into(), 0))),
        "rope.freqs" => return None,
        _ => {}
    }
    let rest = name.strip_prefix("layers.")?;
    let Some((i, rest)) = rest.split_once('.') else {
        return Some(Err(()));
    };
    let Ok(i) = i.parse::<usize>() else {
        return Some(Err(()));
    };
    let (s, axis) = match rest {
        "attention_norm.weight" => ("attn_norm", 0),
        "ffn_norm.weight" => ("ffn_norm", 0),
        "attention.wq.weight" => ("attn_q", 0),
        "attention.wk.weight" => ("attn_k", 0),
        "attention.wv.weight" => ("attn_v", 0),
        "attention.wo.weight" => ("attn_output", 1),
        "feed_forward.w1.weight" => ("ffn_gate", 0),
        "feed_forward.w3.weight" => ("ffn_up", 0),
        "feed_forward.w2.weight" => ("ffn_down", 1),
        "attention.inner_attention.rope.freqs" => return None,
        _ => return Some(Err(())),
    };
    Some(Ok((format!("blk.{i}.{s}.weight"), axis)))
}

/// The tokenizer.model: SentencePiece protobuf or tiktoken text.
pub fn read_tokenizer(path: &Path, llama3_1: bool) -> Result<TokMeta> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > json::MAX_JSON {
        return Err(Error::bad(
            path,
            format!("{len} bytes is too large for a tokenizer"),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // A ModelProto starts with field 1 (pieces), length-delimited: 0x0a.
    if bytes.first() == Some(&0x0a) {
        let m = spm_model::parse(&bytes)
            .map_err(|e| Error::bad(path, format!("SentencePiece model: {e}")))?;
        return m.to_meta().map_err(|e| Error::unsupported(path, e));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::bad(path, "neither a SentencePiece protobuf nor tiktoken text"))?;
    let ranks = tiktoken::parse(text).map_err(|e| Error::bad(path, format!("tiktoken: {e}")))?;
    Ok(tiktoken::to_meta(&ranks, llama3_1))
}

pub fn plan(dir: &Path, out: OutType) -> Result<Plan> {
    let ppath = dir.join("params.json");
    let p = json::read_object(&ppath)?;
    let scaled = p.opt_bool("use_scaled_rope")?.unwrap_or(false);
    let mut tok = read_tokenizer(&dir.join("tokenizer.model"), scaled)?;

    // Tensors of every shard, by GGUF name.
    let files = shards(dir)?;
    let mut by_name: BTreeMap<String, (usize, Vec<pth::PthTensor>)> = BTreeMap::new();
    for f in &files {
        for t in pth::read(f)? {
            let (name, axis) = match gguf_name(&t.name) {
                None => continue,
                Some(Ok(x)) => x,
                Some(Err(())) => {
                    return Err(Error::unsupported(
                        f,
                        format!("tensor {:?} is not part of a LLaMA model", t.name),
                    ))
                }
            };
            by_name.entry(name).or_insert((axis, Vec::new())).1.push(t);
        }
    }
    let mut tensors = Vec::new();
    for (name, (axis, parts)) in by_name {
        let origin = files[0].clone();
        if parts.len() != files.len() {
            return Err(Error::bad(
                &origin,
                format!(
                    "tensor {name} is in {} of {} shards",
                    parts.len(),
                    files.len()
                ),
            ));
        }
        let dtype = parts[0].dtype;
        if parts
            .iter()
            .any(|p| p.dtype != dtype || p.piece.shape.len() != parts[0].piece.shape.len())
        {
            return Err(Error::bad(
                &origin,
                format!("the shards of {name} differ in type or rank"),
            ));
        }
        let s0 = parts[0].piece.shape.clone();
        let (shape, layout) = if parts.len() == 1 || s0.len() == 1 {
            // One shard, or a replicated norm.
            (s0, Layout::Plain)
        } else {
            if axis >= s0.len() {
                return Err(Error::bad(
                    &origin,
                    format!("{name} of shape {s0:?} cannot join on dim {axis}"),
                ));
            }
            let mut shape = s0.clone();
            shape[axis] = 0;
            for p in &parts {
                for (d, (&a, &b)) in p.piece.shape.iter().zip(&s0).enumerate() {
                    if d != axis && a != b {
                        return Err(Error::bad(
                            &origin,
                            format!(
                                "shards of {name} have shapes {s0:?} and {:?}",
                                p.piece.shape
                            ),
                        ));
                    }
                }
                shape[axis] += p.piece.shape[axis];
            }
            (shape, Layout::Join { axis })
        };
        let pieces = if matches!(layout, Layout::Plain) {
            vec![parts[0].piece.clone()]
        } else {
            parts.into_iter().map(|p| p.piece).collect()
        };
        tensors.push(SrcTensor {
            name,
            shape,
            source: Source::Pieces {
                dtype,
                pieces,
                layout,
            },
            origin,
        });
    }

    let get = |n: &str| tensors.iter().find(|t| t.name == n);
    let missing = |n: &str| Error::bad(&files[0], format!("no tensor for {n}"));
    let emb = get("token_embd.weight").ok_or_else(|| missing("tok_embeddings.weight"))?;
    let ffn =
        get("blk.0.ffn_gate.weight").ok_or_else(|| missing("layers.0.feed_forward.w1.weight"))?;
    let dim = p.usize("dim")?;
    let n_head = p.usize("n_heads")?;
    let n_vocab = match p.opt_i64("vocab_size")? {
        Some(v) if v > 0 => v as usize,
        _ => emb.shape[0],
    };
    if emb.shape != [n_vocab, dim] {
        return Err(Error::bad(
            &ppath,
            format!(
                "dim {dim} and vocab_size {n_vocab} do not match tok_embeddings {:?}",
                emb.shape
            ),
        ));
    }
    let norm_eps = p.opt_f32("norm_eps")?.unwrap_or(1e-5);
    let context_length = match p.opt_usize("max_seq_len")? {
        Some(c) => c,
        None if n_vocab >= 128000 && scaled => 131072,
        None if n_vocab >= 128000 => 8192,
        None if norm_eps >= 1e-5 => 4096,
        None => 2048,
    };
    let h = HParams {
        name: dir
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().into_owned()),
        n_vocab,
        dim,
        n_layers: p.usize("n_layers")?,
        n_head,
        n_head_kv: p.opt_usize("n_kv_heads")?.unwrap_or(n_head),
        ffn_dim: ffn.shape[0],
        head_dim: dim / n_head.max(1),
        context_length,
        rope_theta: p.opt_f32("rope_theta")?.unwrap_or(10000.0),
        rms_eps: norm_eps,
        rope_scaling: if scaled {
            RopeScaling::Llama3 {
                factor: p.opt_f32("rope_scaling_factor")?.unwrap_or(8.0),
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_context: 8192.0,
            }
        } else {
            RopeScaling::None
        },
        sliding_window: None,
    };
    if n_head == 0 || dim % n_head != 0 || h.n_head_kv == 0 || n_head % h.n_head_kv != 0 {
        return Err(Error::bad(
            &ppath,
            format!(
                "dim {dim}, n_heads {n_head}, n_kv_heads {} do not fit",
                h.n_head_kv
            ),
        ));
    }
    // Order as the Hugging Face path does: embedding, rope factors, blocks, output.
    let mut ordered = Vec::with_capacity(tensors.len() + 1);
    let mut rest: BTreeMap<String, SrcTensor> =
        tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    ordered.extend(rest.remove("token_embd.weight"));
    h.push_rope_freqs(&mut ordered, &ppath);
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
            ordered.extend(rest.remove(&format!("blk.{i}.{s}.weight")));
        }
    }
    ordered.extend(rest.remove("output_norm.weight"));
    ordered.extend(rest.remove("output.weight"));
    if let Some(extra) = rest.keys().next() {
        return Err(Error::bad(
            &ppath,
            format!("n_layers is {} but the weights have {extra}", h.n_layers),
        ));
    }
    let mut plan = Plan {
        metadata: Vec::new(),
        tensors: ordered,
    };
    tok.pad_to(n_vocab);
    if tok.tokens.len() != n_vocab {
        return Err(Error::bad(
            dir.join("tokenizer.model"),
            format!(
                "{} tokens for an embedding of {n_vocab} rows",
                tok.tokens.len()
            ),
        ));
    }
    crate::hparams::model_metadata(&h, out, &mut plan);
    plan.metadata.extend(tok.into_metadata());
    Ok(plan)
}
