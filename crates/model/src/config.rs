//! Hyperparameters of a LLaMA-family model, read from GGUF metadata.

use crate::error::{ErrorKind, Result};
use cria_gguf::Metadata;

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
}

impl LlamaConfig {
    /// Reads `llama.*` keys. `n_vocab` comes from the token embedding, the
    /// one number the weights themselves fix.
    pub fn from_gguf(m: &Metadata, n_vocab: usize) -> Result<LlamaConfig> {
        let arch = m.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(ErrorKind::UnsupportedArchitecture {
                arch: arch.to_string(),
            }
            .into());
        }
        let key = |k: &str| format!("llama.{k}");
        let usize_of = |k: &str| -> Result<usize> { Ok(m.get_u32(&key(k))? as usize) };
        if m.try_u32(&key("expert_count"))?.unwrap_or(0) > 0 {
            return Err(ErrorKind::Unsupported {
                detail: "mixture-of-experts models (llama.expert_count > 0)".into(),
            }
            .into());
        }
        let dim = usize_of("embedding_length")?;
        let n_heads = usize_of("attention.head_count")?;
        let n_kv_heads = m
            .try_u32(&key("attention.head_count_kv"))?
            .map_or(n_heads, |x| x as usize);
        let bad =
            |detail: String| -> Result<LlamaConfig> { Err(ErrorKind::BadConfig { detail }.into()) };
        if dim == 0 || n_heads == 0 || n_kv_heads == 0 {
            return bad(format!("embedding_length {dim}, head_count {n_heads}, head_count_kv {n_kv_heads}: none may be 0"));
        }
        if n_heads % n_kv_heads != 0 {
            return bad(format!(
                "head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}"
            ));
        }
        let head_dim = match m.try_u32(&key("attention.key_length"))? {
            Some(k) => k as usize,
            None if dim % n_heads == 0 => dim / n_heads,
            None => {
                return bad(format!(
                    "embedding_length {dim} is not a multiple of head_count {n_heads}"
                ))
            }
        };
        if let Some(v) = m.try_u32(&key("attention.value_length"))? {
            if v as usize != head_dim {
                return bad(format!(
                    "value_length {v} differs from key_length {head_dim}"
                ));
            }
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return bad(format!(
                "head dimension {head_dim} must be even and non-zero"
            ));
        }
        let rope_dim = m
            .try_u32(&key("rope.dimension_count"))?
            .map_or(head_dim, |x| x as usize);
        if rope_dim == 0 || rope_dim > head_dim || rope_dim % 2 != 0 {
            return bad(format!("rope.dimension_count {rope_dim} must be even and at most the head dimension {head_dim}"));
        }
        let rope_scaling = match m.try_str(&key("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => {
                let factor = m.try_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0);
                if !(factor.is_finite() && factor > 0.0) {
                    return bad(format!("rope.scaling.factor {factor} must be positive"));
                }
                RopeScaling::Linear { factor }
            }
            Some(other) => {
                return Err(ErrorKind::Unsupported {
                    detail: format!("rope scaling type {other:?}"),
                }
                .into())
            }
        };
        let rope_base = m.try_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
        let rms_eps = m.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        if !(rope_base.is_finite() && rope_base > 0.0 && rms_eps.is_finite() && rms_eps >= 0.0) {
            return bad(format!(
                "rope.freq_base {rope_base} or rms epsilon {rms_eps} out of range"
            ));
        }
        let cfg = LlamaConfig {
            n_vocab,
            dim,
            n_layers: usize_of("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: usize_of("feed_forward_length")?,
            n_ctx_train: usize_of("context_length")?,
            rms_eps,
            rope_base,
            rope_dim,
            rope_scaling,
        };
        if cfg.n_layers == 0 || cfg.ffn_dim == 0 || cfg.n_vocab == 0 {
            return bad(format!(
                "block_count {}, feed_forward_length {}, vocabulary {}: none may be 0",
                cfg.n_layers, cfg.ffn_dim, cfg.n_vocab
            ));
        }
        Ok(cfg)
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
