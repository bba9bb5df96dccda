//! Which type each tensor gets: llama.cpp's `llama_tensor_get_type`
//! (src/llama-quant.cpp), for the mixes cria writes.
//!
//! The rules depend on the order tensors are visited (counters of attn_v
//! and ffn_down tensors seen so far), so [`plan`] takes them in
//! llama.cpp's order: by layer number (`blk.N.`; other tensors first), then
//! by name ([`llama_order`]). Branches for mixes cria does not offer
//! (IQ1/IQ2/IQ3, TQ, MXFP4) are left out; everything else follows the C
//! line by line, including its quirks.

use crate::mix::Mix;
use cria_gguf::{GgmlType, TensorInfo};
use regex::Regex;

/// What the user asked for, besides the mix.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Quantize every tensor to the mix's default type (no per-tensor bumps).
    pub pure: bool,
    /// `--tensor-type REGEX=TYPE`, first match wins (regexes lowercased).
    pub tensor_types: Vec<(Regex, GgmlType)>,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
}

/// The hyperparameters the rules look at.
#[derive(Clone, Debug, Default)]
pub struct ModelInfo {
    pub arch: String,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_expert: u32,
}

impl ModelInfo {
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// llama.cpp's LLM_TYPE_70B: a LLaMA of 80 layers with grouped KV heads.
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_head != self.n_head_kv
    }

    fn falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn is_token_embd(name: &str) -> bool {
    name == "token_embd.weight" || name == "per_layer_token_embd.weight"
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if is_token_embd(name) {
        return TokenEmbd;
    }
    let pats: [(&str, Category); 9] = [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    pats.iter()
        .find(|(p, _)| name.contains(p))
        .map_or(Other, |&(_, c)| c)
}

fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// Whether a tensor may be quantized at all (`tensor_allows_quantization`):
/// 2-D or more, named `*weight`, and not one of the small special tensors.
pub fn allows_quantization(t: &TensorInfo) -> bool {
    let name = t.name.as_str();
    if t.dims.len() < 2 || !name.ends_with("weight") {
        return false;
    }
    const NEVER: [&str; 35] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    // Position embeddings and BERT token types, by exact name.
    if name == "position_embd.weight" || name == "token_types.weight" {
        return false;
    }
    !NEVER.iter().any(|p| name.contains(p))
}

/// The layer of `blk.N.` names (`sscanf("blk.%d.")`), -1 for others.
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else {
        return -1;
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    match (digits.parse::<i64>(), rest[digits.len()..].starts_with('.')) {
        (Ok(n), true) => n,
        _ => -1,
    }
}

/// llama.cpp's tensor order (its `weight_name_comparer`): layer number,
/// then name. Returns indices into `names`.
pub fn llama_order(names: &[&str]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&a, &b| {
        (layer_of(names[a]), names[a].as_bytes()).cmp(&(layer_of(names[b]), names[b].as_bytes()))
    });
    idx
}

/// Counters carried across tensors, as in llama.cpp's `quantize_state_impl`.
struct State {
    n_attention_wv: i64,
    i_attention_wv: i64,
    n_ffn_down: i64,
    i_ffn_down: i64,
    has_tied_embeddings: bool,
    has_imatrix: bool,
}

/// Target types for `tensors` (already in [`llama_order`]), with the
/// number of tensors that fell back to another type because their rows do
/// not split into the type's blocks.
pub fn plan(
    tensors: &[&TensorInfo],
    model: &ModelInfo,
    mix: Mix,
    ov: &Overrides,
    has_imatrix: bool,
) -> (Vec<GgmlType>, usize) {
    let mut st = State {
        n_attention_wv: 0,
        i_attention_wv: 0,
        n_ffn_down: model.n_layer as i64,
        i_ffn_down: 0,
        has_tied_embeddings: true,
        has_imatrix,
    };
    for t in tensors {
        let c = category(&t.name);
        if is_attn_v(c) {
            st.n_attention_wv += 1;
        }
        if c == Category::Output {
            st.has_tied_embeddings = false;
        }
    }
    let mut fallbacks = 0;
    let types = tensors
        .iter()
        .map(|t| {
            if !allows_quantization(t) {
                return t.ty;
            }
            get_type(&mut st, t, model, mix, ov, &mut fallbacks)
        })
        .collect();
    (types, fallbacks)
}

fn get_type(
    st: &mut State,
    t: &TensorInfo,
    model: &ModelInfo,
    mix: Mix,
    ov: &Overrides,
    fallbacks: &mut usize,
) -> GgmlType {
    let c = category(&t.name);
    if let (Some(ty), Category::TokenEmbd) = (ov.token_embedding_type, c) {
        // per_layer_token_embd follows the token embedding type unless a
        // --tensor-type names it.
        let named = t.name == "per_layer_token_embd.weight"
            && ov.tensor_types.iter().any(|(re, _)| re.is_match(&t.name));
        if !named {
            return ty;
        }
    }
    if let (Some(ty), Category::Output) = (ov.output_tensor_type, c) {
        return ty;
    }
    let mut new_type = mix.default_type();
    if !is_quantized(new_type) {
        return new_type;
    }
    let manual = ov.tensor_types.iter().find(|(re, _)| re.is_match(&t.name));
    if let Some(&(_, ty)) = manual {
        new_type = ty;
    } else if !ov.pure {
        new_type = mix_rules(st, t, c, new_type, model, mix, ov);
    }
    fallback(t, new_type, fallbacks)
}

fn is_quantized(t: GgmlType) -> bool {
    !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// `tensor_type_fallback`: a type whose block does not divide the row.
fn fallback(t: &TensorInfo, ty: GgmlType, fallbacks: &mut usize) -> GgmlType {
    use GgmlType::*;
    let ncols = t.dims[0];
    if ncols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    *fallbacks += 1;
    let to = match ty {
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
        Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other => other,
    };
    if !ncols.is_multiple_of(to.block_size()) {
        F16
    } else {
        to
    }
}

/// `llama_tensor_get_type_impl` for cria's mixes.
// The if-chains copy llama.cpp's branch by branch, including neighbours
// that set the same type.
#[allow(clippy::if_same_then_else)]
fn mix_rules(
    st: &mut State,
    t: &TensorInfo,
    c: Category,
    mut new_type: GgmlType,
    model: &ModelInfo,
    mix: Mix,
    ov: &Overrides,
) -> GgmlType {
    use GgmlType as G;
    use Mix as M;
    let use_more_bits = |i: i64, n: i64| i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    // Mixture-of-experts files name the layer; others count tensors.
    let layer = |counter: i64, n: i64| -> (i64, i64) {
        if model.n_expert > 1 {
            (layer_of(&t.name), n)
        } else {
            (counter, n)
        }
    };
    let n_gqa = model.n_gqa();
    if c == Category::Output || (st.has_tied_embeddings && c == Category::TokenEmbd) {
        if let Some(ty) = ov.output_tensor_type {
            new_type = ty;
        } else if model.falcon() || !t.dims[0].is_multiple_of(new_type.block_size()) {
            new_type = G::Q8_0;
        } else if new_type != G::Q8_0 {
            new_type = G::Q6_K;
        }
    } else if c == Category::TokenEmbd {
        if let Some(ty) = ov.token_embedding_type {
            new_type = ty;
        }
    } else if is_attn_v(c) {
        let i = st.i_attention_wv;
        if mix == M::Q2_K {
            new_type = if n_gqa >= 4 { G::Q4_K } else { G::Q3_K };
        } else if mix == M::Q2_K_S && n_gqa >= 4 {
            new_type = G::Q4_K;
        } else if mix == M::Q3_K_M {
            new_type = if i < 2 { G::Q5_K } else { G::Q4_K };
        } else if mix == M::Q3_K_L {
            new_type = G::Q5_K;
        } else if matches!(mix, M::IQ4_NL | M::IQ4_XS) && n_gqa >= 4 {
            new_type = G::Q5_K;
        } else if matches!(mix, M::Q4_K_M | M::Q5_K_M) && use_more_bits(i, st.n_attention_wv) {
            new_type = G::Q6_K;
        } else if mix == M::Q4_K_S && i < 4 {
            new_type = G::Q5_K;
        }
        if model.is_70b() && matches!(new_type, G::Q3_K | G::Q4_K) {
            new_type = G::Q5_K;
        }
        if model.n_expert == 8 {
            new_type = G::Q8_0;
        }
        st.i_attention_wv += 1;
    } else if c == Category::AttnK {
        if model.n_expert == 8 {
            new_type = G::Q8_0;
        }
    } else if c == Category::FfnDown {
        let (i, n) = layer(st.i_ffn_down, st.n_ffn_down);
        let falcon = model.falcon();
        if mix == M::Q2_K {
            new_type = G::Q3_K;
        } else if mix == M::Q2_K_S {
            if i < n / 8 {
                new_type = G::Q4_K;
            }
        } else if mix == M::Q3_K_M {
            new_type = if i < n / 16 {
                G::Q5_K
            } else if !falcon || use_more_bits(i, n) {
                G::Q4_K
            } else {
                G::Q3_K
            };
        } else if mix == M::Q3_K_L {
            new_type = if falcon { G::Q4_K } else { G::Q5_K };
        } else if mix == M::Q4_K_M {
            if falcon {
                new_type = if i < n / 16 {
                    G::Q6_K
                } else if use_more_bits(i, n) {
                    G::Q5_K
                } else {
                    G::Q4_K
                };
            } else if use_more_bits(i, n) {
                new_type = G::Q6_K;
            }
        } else if i < n / 8 && matches!(mix, M::IQ4_NL | M::IQ4_XS) && !st.has_imatrix {
            new_type = G::Q5_K;
        } else if mix == M::Q5_K_M && use_more_bits(i, n) {
            new_type = G::Q6_K;
        } else if mix == M::Q4_K_S && !falcon && i < n / 8 {
            new_type = G::Q5_K;
        } else if matches!(mix, M::Q4_0 | M::Q5_0) && st.has_imatrix && i < n / 8 {
            new_type = if mix == M::Q4_0 { G::Q4_1 } else { G::Q5_1 };
        }
        st.i_ffn_down += 1;
    } else if c == Category::AttnOutput {
        if !model.falcon() {
            if model.n_expert == 8 {
                if matches!(
                    mix,
                    M::Q2_K | M::Q3_K_S | M::Q3_K_M | M::IQ4_NL | M::Q4_K_S | M::Q4_K_M | M::IQ4_XS
                ) {
                    new_type = G::Q5_K;
                }
            } else if mix == M::Q2_K {
                new_type = G::Q3_K;
            } else if mix == M::Q3_K_M {
                new_type = G::Q4_K;
            } else if mix == M::Q3_K_L {
                new_type = G::Q5_K;
            }
        } else if mix == M::Q3_K_L {
            new_type = G::Q4_K;
        }
    }
    // llama.cpp's attn_qkv branch after this is unreachable (attn_qkv is
    // attn_v-like, handled above), so it is left out.
    new_type
}

/// Whether the mix needs an importance matrix for a tensor of this type
/// (`tensor_requires_imatrix`, for cria's types: only Q2_K in a Q2_K_S).
pub fn requires_imatrix(name: &str, ty: GgmlType, mix: Mix) -> bool {
    if is_token_embd(name) || name == "output.weight" {
        return false;
    }
    ty == GgmlType::Q2_K && mix == Mix::Q2_K_S
}

#[cfg(test)]
mod tests;
