//! Hyperparameters of a LLaMA-family model, read from GGUF metadata and
//! checked against the tensors in the same file before anything is sized
//! by them.
//!
//! A file's metadata and its tensors can disagree (a broken converter, or a
//! file built to make a loader allocate `u32::MAX` layers). Every number the
//! forward pass sizes buffers by is either read off a tensor's shape or
//! compared with one here, so after [`LlamaConfig::from_file`] each is
//! bounded by the bytes actually present.

use crate::error::{Error, ErrorKind, Result};
use cria_gguf::{GgufFile, TensorInfo};

/// Largest `context_length` accepted: 64 Mi positions. The longest real
/// contexts are ~10 M; the value only caps the default context size, but a
/// number near 2^64 would overflow any arithmetic done with it.
pub const MAX_CONTEXT_LENGTH: u64 = 1 << 26;

/// How rotary position angles are scaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by the factor (`rope.scaling.type = linear`).
    Linear {
        factor: f32,
    },
}

/// Everything the forward pass needs to know about the model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_vocab: usize,
    /// Width of the residual stream (`embedding_length`).
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Hidden width of the feed-forward block.
    pub ffn_dim: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// How many dimensions of each head are rotated (usually all).
    pub rope_dim: usize,
    pub rope_scaling: RopeScaling,
    /// Mistral 7B v0.1's sliding window (`attention.sliding_window`): a
    /// token attends to the last this-many positions, itself included.
    /// `None`: every earlier position.
    pub sliding_window: Option<usize>,
}

/// `key = value: reason`, the error for a hyperparameter that is out of
/// range or contradicts the tensors.
fn lie(key: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> Error {
    ErrorKind::BadHyperparameter {
        key: format!("llama.{key}"),
        value: value.to_string(),
        reason: reason.into(),
    }
    .into()
}

/// A tensor's shape without trailing 1-dimensions (some converters write
/// them), which must have exactly `rank` dimensions.
fn shape(t: &TensorInfo, rank: usize) -> Result<&[u64]> {
    let mut d = t.dims.as_slice();
    while d.len() > rank && d.last() == Some(&1) {
        d = &d[..d.len() - 1];
    }
    if d.len() != rank {
        return Err(ErrorKind::BadTensorShape {
            tensor: t.name.clone(),
            expected: vec![0; rank],
            found: t.dims.clone(),
        }
        .into());
    }
    Ok(d)
}

/// The number of transformer blocks the tensor names describe: one more
/// than the highest `N` in a `blk.N.` name (0 when there are none).
fn blocks_in(file: &GgufFile) -> u64 {
    file.tensors()
        .iter()
        .filter_map(|t| {
            let rest = t.name.strip_prefix("blk.")?;
            let n = &rest[..rest.find('.')?];
            n.parse::<u64>().ok()
        })
        .max()
        .map_or(0, |m| m.saturating_add(1))
}

impl LlamaConfig {
    /// Reads the `llama.*` keys and checks each against the tensors of
    /// `file`: the token embedding fixes the width and the vocabulary,
    /// `blk.N.*` names fix the depth, block 0's attention and feed-forward
    /// matrices fix the head layout and the hidden width. Nothing is
    /// allocated from a number before it has been checked.
    pub fn from_file(file: &GgufFile) -> Result<LlamaConfig> {
        let m = file.metadata();
        let arch = m.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(ErrorKind::UnsupportedArchitecture {
                arch: arch.to_string(),
            }
            .into());
        }
        let key = |k: &str| format!("llama.{k}");
        // Read as u64 so that a value past u32 gets the message below
        // rather than a type error.
        let opt = |k: &str| m.try_u64(&key(k));
        let req = |k: &str| m.get_u64(&key(k));
        if opt("expert_count")?.unwrap_or(0) > 0 {
            return Err(ErrorKind::Unsupported {
                detail: "mixture-of-experts models (llama.expert_count > 0)".into(),
            }
            .into());
        }

        // Width and vocabulary: the token embedding is (n_vocab, dim),
        // ggml dims [dim, n_vocab].
        let embd = file.require_tensor("token_embd.weight")?;
        let d = shape(embd, 2)?;
        let (embd_dim, n_vocab) = (d[0], d[1]);
        let dim = req("embedding_length")?;
        if dim == 0 || dim != embd_dim {
            return Err(lie(
                "embedding_length",
                dim,
                format!(
                    "token_embd.weight is {:?}, so the embedding length is {embd_dim}",
                    embd.dims
                ),
            ));
        }
        if n_vocab == 0 {
            return Err(ErrorKind::BadTensorShape {
                tensor: embd.name.clone(),
                expected: vec![dim, 1],
                found: embd.dims.clone(),
            }
            .into());
        }
        if let Some(v) = opt("vocab_size")? {
            if v != n_vocab {
                return Err(lie(
                    "vocab_size",
                    v,
                    format!(
                        "token_embd.weight is {:?}, so the vocabulary has {n_vocab} tokens",
                        embd.dims
                    ),
                ));
            }
        }

        // Depth: blk.0 .. blk.{n-1} exist and blk.{n} does not.
        let n_layers = req("block_count")?;
        let found = blocks_in(file);
        if n_layers == 0 || n_layers != found {
            return Err(lie(
                "block_count",
                n_layers,
                match found {
                    0 => "the file has no blk.N.* tensors".to_string(),
                    1 => "the tensors hold 1 block: blk.0".to_string(),
                    n => format!("the tensors hold {n} blocks: blk.0 to blk.{}", n - 1),
                },
            ));
        }

        // Heads: `head_count` query heads share `head_count_kv` key/value
        // heads of `head_dim` each; blk.0's wq and wk fix both products.
        let n_heads = req("attention.head_count")?;
        let n_kv_heads = opt("attention.head_count_kv")?.unwrap_or(n_heads);
        if n_heads == 0 || n_heads > dim {
            return Err(lie(
                "attention.head_count",
                n_heads,
                format!("must be between 1 and the embedding length {dim}"),
            ));
        }
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(lie(
                "attention.head_count_kv",
                n_kv_heads,
                format!("must be non-zero and divide head_count {n_heads}"),
            ));
        }
        let head_dim = match opt("attention.key_length")? {
            Some(k) => k,
            None if dim % n_heads == 0 => dim / n_heads,
            None => {
                return Err(lie(
                    "attention.head_count",
                    n_heads,
                    format!(
                        "does not divide the embedding length {dim} (and no key_length is given)"
                    ),
                ))
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 || head_dim > dim {
            return Err(lie(
                "attention.key_length",
                head_dim,
                format!("the head dimension must be even, non-zero and at most the embedding length {dim}"),
            ));
        }
        if let Some(v) = opt("attention.value_length")? {
            if v != head_dim {
                return Err(lie(
                    "attention.value_length",
                    v,
                    format!("differs from the key length {head_dim}"),
                ));
            }
        }
        let wq = file.require_tensor("blk.0.attn_q.weight")?;
        let q_rows = shape(wq, 2)?[1];
        if n_heads.checked_mul(head_dim) != Some(q_rows) {
            let (k, v) = match opt("attention.key_length")? {
                Some(k) => ("attention.key_length", k),
                None => ("attention.head_count", n_heads),
            };
            return Err(lie(
                k,
                v,
                format!(
                    "{n_heads} heads of {head_dim} do not make the {q_rows} query rows of blk.0.attn_q.weight {:?}",
                    wq.dims
                ),
            ));
        }
        let wk = file.require_tensor("blk.0.attn_k.weight")?;
        let k_rows = shape(wk, 2)?[1];
        if n_kv_heads.checked_mul(head_dim) != Some(k_rows) {
            return Err(lie(
                "attention.head_count_kv",
                n_kv_heads,
                format!(
                    "{n_kv_heads} heads of {head_dim} do not make the {k_rows} key rows of blk.0.attn_k.weight {:?}",
                    wk.dims
                ),
            ));
        }

        let ffn_dim = req("feed_forward_length")?;
        let up = file.require_tensor("blk.0.ffn_up.weight")?;
        let up_rows = shape(up, 2)?[1];
        if ffn_dim == 0 || ffn_dim != up_rows {
            return Err(lie(
                "feed_forward_length",
                ffn_dim,
                format!(
                    "blk.0.ffn_up.weight is {:?}, so the hidden width is {up_rows}",
                    up.dims
                ),
            ));
        }

        let rope_dim = opt("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim == 0 || rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(lie(
                "rope.dimension_count",
                rope_dim,
                format!("must be even, non-zero and at most the head dimension {head_dim}"),
            ));
        }
        let n_ctx_train = req("context_length")?;
        if n_ctx_train == 0 || n_ctx_train > MAX_CONTEXT_LENGTH {
            return Err(lie(
                "context_length",
                n_ctx_train,
                format!("must be between 1 and {MAX_CONTEXT_LENGTH}"),
            ));
        }

        let positive = |k: &str, x: f32| -> Result<f32> {
            if x.is_finite() && x > 0.0 {
                Ok(x)
            } else {
                Err(lie(k, x, "must be finite and positive"))
            }
        };
        let rope_scaling = match m.try_str(&key("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: positive(
                    "rope.scaling.factor",
                    m.try_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0),
                )?,
            },
            Some(other) => {
                return Err(ErrorKind::Unsupported {
                    detail: format!("rope scaling type {other:?}"),
                }
                .into())
            }
        };
        // llama.cpp writes this key for other architectures and ignores it
        // for llama; cria's import writes it for a config.json
        // `sliding_window` shorter than the context. 0 is no window.
        let sliding_window = match opt("attention.sliding_window")? {
            None | Some(0) => None,
            Some(w) if w < n_ctx_train => Some(w as usize),
            Some(_) => None,
        };
        let rope_base = positive(
            "rope.freq_base",
            m.try_f32(&key("rope.freq_base"))?.unwrap_or(10000.0),
        )?;
        let rms_eps = positive(
            "attention.layer_norm_rms_epsilon",
            m.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
        )?;

        // Every count is now bounded by the bytes of a tensor in the file
        // (or by MAX_CONTEXT_LENGTH), so these conversions are lossless.
        let us = |x: u64| x as usize;
        Ok(LlamaConfig {
            n_vocab: us(n_vocab),
            dim: us(dim),
            n_layers: us(n_layers),
            n_heads: us(n_heads),
            n_kv_heads: us(n_kv_heads),
            head_dim: us(head_dim),
            ffn_dim: us(ffn_dim),
            n_ctx_train: us(n_ctx_train),
            rms_eps,
            rope_base,
            rope_dim: us(rope_dim),
            rope_scaling,
            sliding_window,
        })
    }

    /// Width of the keys and values of one position across all KV heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Width of the queries across all heads.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
}
