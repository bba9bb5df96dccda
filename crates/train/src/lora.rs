//! The trainable part: a low-rank pair (A, B) beside each chosen base
//! matrix, all in one flat f32 vector so the optimizer, checkpoints and
//! the gradient are plain slices.
//!
//! For a base matrix W (out, in), the adapted product is
//! `y = W x + s * B (A x)` with A (rank, in), B (out, rank) and
//! `s = alpha / rank`: llama.cpp's layout (`lora_a` ggml dims `[in, rank]`,
//! `lora_b` `[rank, out]`) and scale. A starts random, B at zero, so a new
//! adapter changes nothing.

use crate::error::{ErrorKind, Result};
use cria_model::LlamaConfig;
use rand::{Rng, SeedableRng};

pub use cria_model::lora::Target;

/// Parses a comma-separated list of LoRA targets such as `q,k,v,o` or
/// `all`.
pub fn parse_targets(s: &str) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part == "all" {
            out.extend(Target::ALL);
            continue;
        }
        let Some(t) = Target::ALL.iter().find(|t| t.name() == part) else {
            return Err(ErrorKind::BadOption {
                    detail: format!(
                        "unknown LoRA target {part:?}: use a comma-separated list of q, k, v, o, gate, up, down (or all)"
                    ),
                }
                .into());
        };
        out.push(*t);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(ErrorKind::BadOption {
            detail: "no LoRA target given".into(),
        }
        .into());
    }
    Ok(out)
}

/// Where one pair lives in the flat parameter vector.
#[derive(Clone, Debug)]
pub struct Slot {
    pub layer: usize,
    pub target: Target,
    pub rows: usize,
    pub cols: usize,
    /// Offset of A (rank, cols), then B (rows, rank) right after it.
    pub a: usize,
    pub b: usize,
}

/// Every adapter pair of a model and their values.
#[derive(Clone, Debug)]
pub struct Lora {
    pub rank: usize,
    pub alpha: f32,
    pub targets: Vec<Target>,
    pub slots: Vec<Slot>,
    /// index[layer * 7 + target as usize] -> slot
    index: Vec<Option<usize>>,
    pub params: Vec<f32>,
}

impl Lora {
    /// A fresh adapter: A drawn uniformly in +-1/sqrt(in) (Kaiming-uniform
    /// with a = sqrt(5), as PEFT does) from `seed`, B zero.
    pub fn new(
        cfg: &LlamaConfig,
        targets: &[Target],
        rank: usize,
        alpha: f32,
        seed: u64,
    ) -> Result<Lora> {
        if rank == 0 {
            return Err(ErrorKind::BadOption {
                detail: "--lora-rank must be at least 1".into(),
            }
            .into());
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(ErrorKind::BadOption {
                detail: format!("--lora-alpha must be finite and positive, not {alpha}"),
            }
            .into());
        }
        let mut slots = Vec::new();
        let mut index = vec![None; cfg.n_layers * 7];
        let mut off = 0;
        for layer in 0..cfg.n_layers {
            for &target in targets {
                let (rows, cols) = target.shape(cfg);
                if rank > rows.min(cols) {
                    return Err(ErrorKind::BadOption {
                        detail: format!(
                            "--lora-rank {rank} is larger than the {rows} x {cols} matrix {}",
                            target.tensor_name(layer)
                        ),
                    }
                    .into());
                }
                index[layer * 7 + target as usize] = Some(slots.len());
                slots.push(Slot {
                    layer,
                    target,
                    rows,
                    cols,
                    a: off,
                    b: off + rank * cols,
                });
                off += rank * (cols + rows);
            }
        }
        let mut params = vec![0.0f32; off];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for s in &slots {
            let bound = 1.0 / (s.cols as f32).sqrt();
            for p in &mut params[s.a..s.b] {
                *p = rng.gen_range(-bound..bound);
            }
        }
        Ok(Lora {
            rank,
            alpha,
            targets: targets.to_vec(),
            slots,
            index,
            params,
        })
    }

    /// `alpha / rank`, the factor on `B A x`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    pub fn slot(&self, layer: usize, t: Target) -> Option<&Slot> {
        self.index
            .get(layer * 7 + t as usize)
            .copied()
            .flatten()
            .map(|i| &self.slots[i])
    }

    /// (A, B) of a slot within `v` (the parameters, or a gradient).
    pub fn ab<'v>(&self, s: &Slot, v: &'v [f32]) -> (&'v [f32], &'v [f32]) {
        (&v[s.a..s.b], &v[s.b..s.b + s.rows * self.rank])
    }

    pub fn ab_mut<'v>(&self, s: &Slot, v: &'v mut [f32]) -> (&'v mut [f32], &'v mut [f32]) {
        let (a, rest) = v[s.a..s.b + s.rows * self.rank].split_at_mut(s.b - s.a);
        (a, rest)
    }
}
