//! Embeddings: a request whose answer is a vector instead of tokens.
//!
//! An embedding request goes through the same scheduler as generation: it
//! takes a slot, its prompt rows share the step's forward pass with
//! everything else, and the rows it needs give their final hidden state
//! (`norm(x)`, the input of the output projection, `dim` wide) instead of
//! logits. [`Pooling`] says which rows and how they combine, as llama.cpp
//! does (`llama-embedding`, `llama-server --embeddings`):
//!
//! - `None`: one vector per token;
//! - `Mean`: the mean of every token's vector;
//! - `Cls`: the first token's;
//! - `Last`: the last token's.
//!
//! Then each vector is divided by its Euclidean norm unless the request
//! says not to (llama.cpp's `--embd-normalize 2`, its default; `-1` is off).

use crate::error::{ErrorKind, Result};
use cria_model::Model;
use std::fmt;
use std::str::FromStr;

/// How the hidden states of a sequence's tokens become its embedding.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// One vector per token.
    None,
    Mean,
    /// The first token's.
    Cls,
    /// The last token's.
    Last,
}

impl Pooling {
    /// The model's own pooling: `{arch}.pooling_type` (llama.cpp's
    /// numbering: 0 none, 1 mean, 2 cls, 3 last; 4 rank needs a classifier
    /// head and is refused). A file without the key pools nothing, as in
    /// llama.cpp, so a plain causal LLaMA gives one vector per token unless
    /// `--pooling` says otherwise.
    pub fn from_model(model: &Model) -> Result<Pooling> {
        let m = model.file().metadata();
        let arch = m
            .try_str("general.architecture")
            .ok()
            .flatten()
            .unwrap_or("llama");
        let key = format!("{arch}.pooling_type");
        let value = m.try_u64(&key).map_err(|e| ErrorKind::Config {
            detail: format!("{key}: {e}"),
        })?;
        match value {
            None | Some(0) => Ok(Pooling::None),
            Some(1) => Ok(Pooling::Mean),
            Some(2) => Ok(Pooling::Cls),
            Some(3) => Ok(Pooling::Last),
            Some(v) => Err(ErrorKind::Config {
                detail: format!(
                    "{key} = {v} is not a pooling cria knows (0 none, 1 mean, 2 cls, 3 last); \
                     choose one with --pooling"
                ),
            }
            .into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }

    /// Whether the token at `index` of a `len`-token input gives a row.
    pub(crate) fn wants(self, index: usize, len: usize) -> bool {
        match self {
            Pooling::None | Pooling::Mean => true,
            Pooling::Cls => index == 0,
            Pooling::Last => index + 1 == len,
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Pooling, String> {
        match s {
            "none" => Ok(Pooling::None),
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last" => Ok(Pooling::Last),
            _ => Err(format!(
                "unknown pooling {s:?}: give none, mean, cls or last"
            )),
        }
    }
}

/// What an embedding request asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EmbedParams {
    pub pooling: Pooling,
    /// Divide each vector by its Euclidean norm.
    pub normalize: bool,
}

/// The answer to an embedding request.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// One vector of the model's width, or one per token with
    /// [`Pooling::None`].
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

/// Divides `v` by its Euclidean norm (summed in f64, as llama.cpp's
/// `common_embd_normalize`); a zero vector stays zero.
pub fn l2_normalize(v: &mut [f32]) {
    let sum: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
    let norm = sum.sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    for x in v {
        *x = (*x as f64 * scale) as f32;
    }
}

/// Cosine similarity of two vectors of the same length (0 if either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// One embedding request's pooled rows, gathered over as many steps as its
/// input takes.
pub(crate) struct Pooler {
    params: EmbedParams,
    /// (dim): the running sum for mean pooling, or the chosen row.
    sum: Vec<f32>,
    count: usize,
    /// (tokens, dim) with [`Pooling::None`].
    per_token: Vec<Vec<f32>>,
}

impl Pooler {
    pub(crate) fn new(params: EmbedParams, dim: usize) -> Pooler {
        Pooler {
            params,
            sum: vec![0.0; dim],
            count: 0,
            per_token: Vec::new(),
        }
    }

    pub(crate) fn pooling(&self) -> Pooling {
        self.params.pooling
    }

    /// Takes the hidden state of one row the pooling wants.
    pub(crate) fn add(&mut self, row: &[f32]) {
        self.count += 1;
        match self.params.pooling {
            Pooling::None => self.per_token.push(row.to_vec()),
            Pooling::Mean => self.sum.iter_mut().zip(row).for_each(|(s, x)| *s += x),
            Pooling::Cls | Pooling::Last => self.sum.copy_from_slice(row),
        }
    }

    pub(crate) fn finish(self, prompt_tokens: usize) -> Embedding {
        let mut vectors = match self.params.pooling {
            Pooling::None => self.per_token,
            Pooling::Mean => {
                let n = self.count.max(1) as f32;
                vec![self.sum.into_iter().map(|s| s / n).collect()]
            }
            Pooling::Cls | Pooling::Last => vec![self.sum],
        };
        if self.params.normalize {
            vectors.iter_mut().for_each(|v| l2_normalize(v));
        }
        Embedding {
            vectors,
            prompt_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_picks_rows_and_normalizes() {
        let p = |pooling, normalize| EmbedParams { pooling, normalize };
        let rows = [[1.0f32, 0.0], [3.0, 4.0]];
        let run = |params: EmbedParams| {
            let mut pooler = Pooler::new(params, 2);
            for (i, r) in rows.iter().enumerate() {
                if params.pooling.wants(i, rows.len()) {
                    pooler.add(r);
                }
            }
            pooler.finish(2).vectors
        };
        assert_eq!(run(p(Pooling::Mean, false)), vec![vec![2.0, 2.0]]);
        assert_eq!(run(p(Pooling::Cls, false)), vec![vec![1.0, 0.0]]);
        assert_eq!(run(p(Pooling::Last, false)), vec![vec![3.0, 4.0]]);
        assert_eq!(run(p(Pooling::Last, true)), vec![vec![0.6, 0.8]]);
        assert_eq!(run(p(Pooling::None, true)).len(), 2);
        let mut zero = [0.0f32; 3];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn pooling_names_round_trip() {
        for p in [Pooling::None, Pooling::Mean, Pooling::Cls, Pooling::Last] {
            assert_eq!(p.name().parse::<Pooling>(), Ok(p));
        }
        assert!("max".parse::<Pooling>().is_err());
    }
}
