//! Model hyperparameters as both source formats state them, and the
//! `general.*` / `llama.*` metadata llama.cpp's converter writes for them.

use crate::plan::{OutType, Plan, Source, SrcTensor};
use cria_gguf::Value;
use std::path::Path;

/// How rope positions are scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f32,
    },
    /// LLaMA 3.1's per-frequency factors (written as `rope_freqs.weight`).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: f32,
    },
}

#[derive(Clone, Debug)]
pub struct HParams {
    pub name: String,
    pub n_vocab: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub ffn_dim: usize,
    pub head_dim: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub rope_scaling: RopeScaling,
    /// Attention over the last this-many positions only (Mistral 7B v0.1's
    /// `sliding_window`), when shorter than the context.
    pub sliding_window: Option<usize>,
}

impl HParams {
    /// llama.cpp's `generate_extra_tensors` for rope type llama3: one
    /// divisor per rotated pair, computed in f32 as torch does there.
    pub fn rope_factors(&self) -> Option<Vec<f32>> {
        let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } = self.rope_scaling
        else {
            return None;
        };
        let dim = self.head_dim;
        let low_wavelen = original_context / low_freq_factor;
        let high_wavelen = original_context / high_freq_factor;
        Some(
            (0..dim / 2)
                .map(|i| {
                    let freq = 1.0 / self.rope_theta.powf((2 * i) as f32 / dim as f32);
                    let wavelen = 2.0 * std::f32::consts::PI / freq;
                    if wavelen < high_wavelen {
                        1.0
                    } else if wavelen > low_wavelen {
                        factor
                    } else {
                        let smooth = (original_context / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        1.0 / ((1.0 - smooth) / factor + smooth)
                    }
                })
                .collect(),
        )
    }

    /// Appends the rope factors tensor when the scaling needs one.
    pub fn push_rope_freqs(&self, tensors: &mut Vec<SrcTensor>, origin: &Path) {
        if let Some(f) = self.rope_factors() {
            tensors.push(SrcTensor {
                name: "rope_freqs.weight".into(),
                shape: vec![f.len()],
                source: Source::F32(f),
                origin: origin.to_path_buf(),
            });
        }
    }
}

/// `general.*` and `llama.*` in llama.cpp's converter's order.
pub fn model_metadata(h: &HParams, out: OutType, plan: &mut Plan) {
    let source = plan
        .tensors
        .iter()
        .find(|t| t.shape.len() == 2)
        .map_or(crate::plan::DType::F32, |t| t.dtype());
    let u = |x: usize| Value::U32(x as u32);
    plan.set("general.architecture", Value::String("llama".into()));
    plan.set("general.type", Value::String("model".into()));
    plan.set("general.name", Value::String(h.name.clone()));
    plan.set("llama.block_count", u(h.n_layers));
    plan.set("llama.context_length", u(h.context_length));
    plan.set("llama.embedding_length", u(h.dim));
    plan.set("llama.feed_forward_length", u(h.ffn_dim));
    plan.set("llama.attention.head_count", u(h.n_head));
    plan.set("llama.attention.head_count_kv", u(h.n_head_kv));
    plan.set("llama.rope.freq_base", Value::F32(h.rope_theta));
    plan.set(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(h.rms_eps),
    );
    if h.head_dim * h.n_head != h.dim {
        plan.set("llama.attention.key_length", u(h.head_dim));
        plan.set("llama.attention.value_length", u(h.head_dim));
    }
    plan.set("general.file_type", Value::U32(out.file_type(source)));
    plan.set("llama.vocab_size", u(h.n_vocab));
    plan.set("llama.rope.dimension_count", u(h.head_dim));
    if let Some(w) = h.sliding_window {
        // llama.cpp ignores this key for llama (it attends to the whole
        // context, which is the same up to `w` positions); cria applies it.
        plan.set("llama.attention.sliding_window", u(w));
    }
    if let RopeScaling::Linear { factor } = h.rope_scaling {
        plan.set("llama.rope.scaling.type", Value::String("linear".into()));
        plan.set("llama.rope.scaling.factor", Value::F32(factor));
    }
    plan.set("general.quantization_version", Value::U32(2));
}
