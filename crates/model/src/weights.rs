//! Named weight tensors of a LLaMA model, checked against the configuration
//! and left in place in the memory map.

use crate::config::LlamaConfig;
use crate::error::{ErrorKind, Result};
use cria_gguf::{GgmlType, GgufFile, TensorInfo};
use cria_kernels::{PackedMatrix, QMatrix};
use std::sync::Arc;

/// Types the kernels can multiply with.
pub const SUPPORTED: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// A 2-D weight matrix stored row-major in the file: `rows` rows of `cols`
/// elements (ggml `ne[0]` = cols). The bytes are located by offset so the
/// model can own the file without borrowing from itself.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Absolute byte range in the file.
    start: usize,
    len: usize,
    /// The matrix repacked for the kernels at load (types and machines
    /// that have a packed kernel); products use it instead of the file.
    pub packed: Option<Arc<PackedMatrix>>,
}

impl Matrix {
    pub fn bytes<'f>(&self, file: &'f GgufFile) -> &'f [u8] {
        file.data_at(self.start, self.len)
    }

    /// Repack for the kernels (if they have a packed kernel for this type
    /// on this machine) and release the file pages read to do so.
    fn pack(&mut self, file: &GgufFile) {
        if std::env::var_os("CRIA_NO_REPACK").is_some() {
            return;
        }
        let Ok(q) = QMatrix::new(self.ty, self.rows, self.cols, self.bytes(file)) else {
            return;
        };
        if let Some(p) = PackedMatrix::pack(&q) {
            self.packed = Some(Arc::new(p));
            file.release(self.start, self.len);
        }
    }

    /// Drops this matrix's resident file pages (best effort; they fault
    /// back in if read again): for a caller that has made its own copy,
    /// as the trainer's int8 transposes do.
    pub fn release_pages(&self, file: &GgufFile) {
        file.release(self.start, self.len);
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.len / self.rows
    }
}

/// One transformer block's weights.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
}

#[derive(Clone, Debug)]
pub struct Weights {
    /// (n_vocab, dim): one row per token.
    pub token_embd: Matrix,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// (n_vocab, dim); the token embedding when the model ties them.
    pub output: Matrix,
    /// Per-frequency divisors for LLaMA 3.1-style long-context rope.
    pub rope_freqs: Option<Vec<f32>>,
}

fn matrix(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    let t = file.require_tensor(name)?;
    check_shape(t, &[cols as u64, rows as u64])?;
    check_type(t)?;
    Ok(Matrix {
        name: name.to_string(),
        ty: t.ty,
        rows,
        cols,
        start: (file.data_offset() + t.offset) as usize,
        len: t.n_bytes as usize,
        packed: None,
    })
}

fn check_shape(t: &TensorInfo, expected: &[u64]) -> Result<()> {
    // Trailing 1-dimensions are the same shape (some converters write them).
    let mut found = t.dims.clone();
    while found.len() > expected.len() && found.last() == Some(&1) {
        found.pop();
    }
    if found != expected {
        return Err(ErrorKind::BadTensorShape {
            tensor: t.name.clone(),
            expected: expected.to_vec(),
            found: t.dims.clone(),
        }
        .into());
    }
    Ok(())
}

fn check_type(t: &TensorInfo) -> Result<()> {
    if SUPPORTED.contains(&t.ty) {
        Ok(())
    } else {
        Err(ErrorKind::UnsupportedTensorType {
            tensor: t.name.clone(),
            ty: t.ty,
        }
        .into())
    }
}

/// A 1-D tensor (norm weights, rope factors) dequantized to f32 once.
fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = file.require_tensor(name)?;
    check_shape(t, &[len as u64])?;
    check_type(t)?;
    let mut out = vec![0f32; len];
    cria_kernels::dequantize_row(t.ty, file.tensor_data(t), &mut out).map_err(|e| {
        ErrorKind::BadArgument {
            detail: format!("tensor {name:?}: {e}"),
        }
    })?;
    Ok(out)
}

/// Repack `todo` on all cores (the biggest first, handed out in turn).
fn pack_all(file: &GgufFile, mut todo: Vec<&mut Matrix>) {
    todo.sort_by_key(|m| std::cmp::Reverse(m.len));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len());
    if threads <= 1 {
        todo.into_iter().for_each(|m| m.pack(file));
        return;
    }
    let queue = std::sync::Mutex::new(todo.into_iter());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().next();
                match next {
                    Some(m) => m.pack(file),
                    None => break,
                }
            });
        }
    });
}

impl Weights {
    pub fn load(file: &GgufFile, cfg: &LlamaConfig) -> Result<Weights> {
        let (d, q, kv, f) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        let token_embd = matrix(file, "token_embd.weight", cfg.n_vocab, d)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(LayerWeights {
                attn_norm: vector(file, &n("attn_norm"), d)?,
                wq: matrix(file, &n("attn_q"), q, d)?,
                wk: matrix(file, &n("attn_k"), kv, d)?,
                wv: matrix(file, &n("attn_v"), kv, d)?,
                wo: matrix(file, &n("attn_output"), d, q)?,
                ffn_norm: vector(file, &n("ffn_norm"), d)?,
                w_gate: matrix(file, &n("ffn_gate"), f, d)?,
                w_up: matrix(file, &n("ffn_up"), f, d)?,
                w_down: matrix(file, &n("ffn_down"), d, f)?,
            });
        }
        let mut output = match file.tensor("output.weight") {
            Some(_) => matrix(file, "output.weight", cfg.n_vocab, d)?,
            None => token_embd.clone(),
        };
        // The matrices of the products are repacked for the kernels (the
        // token embedding itself is only read a row at a time).
        let mut todo: Vec<&mut Matrix> = vec![&mut output];
        for l in &mut layers {
            todo.extend([
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.w_gate,
                &mut l.w_up,
                &mut l.w_down,
            ]);
        }
        pack_all(file, todo);
        let rope_freqs = match file.tensor("rope_freqs.weight") {
            Some(_) => Some(vector(file, "rope_freqs.weight", cfg.rope_dim / 2)?),
            None => None,
        };
        Ok(Weights {
            token_embd,
            layers,
            output_norm: vector(file, "output_norm.weight", d)?,
            output,
            rope_freqs,
        })
    }
}
