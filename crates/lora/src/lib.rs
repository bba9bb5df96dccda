//! LoRA adapters as files: llama.cpp's GGUF adapter format (read and
//! written) and PEFT folders (read), checked against a base model.
//!
//! - [`LoraFile`]: an adapter as the formats state it: the architecture,
//!   `alpha`, and one [`LoraPair`] (A, B in f32) per base tensor it changes,
//!   named by the base tensor's GGUF name (`blk.0.attn_q.weight`).
//! - [`read_gguf`] / [`write_gguf`]: llama.cpp's format (`general.type =
//!   adapter`, `adapter.type = lora`, `adapter.lora.alpha`, tensors
//!   `<base>.lora_a` with ggml dims `[cols, rank]` and `<base>.lora_b` with
//!   `[rank, rows]`, as src/llama-adapter.cpp checks them). One writer for
//!   every producer of adapters: [`write_gguf_file`] for a standalone
//!   adapter (`cria finetune`'s output), [`encode`] and [`Encoded::add_to`]
//!   to put one into a GGUF the caller writes (its checkpoints).
//! - [`read_peft`]: a PEFT folder (`adapter_config.json` and
//!   `adapter_model.safetensors`); Hugging Face names become GGUF names
//!   and the q/k output rows are permuted to GGUF's rope layout with
//!   cria-import's own renaming and permutation (the base-model path).
//! - [`bind`]: checks a [`LoraFile`] against a [`cria_model::Model`]
//!   (architecture, every tensor exists and is a matrix the forward pass
//!   multiplies, shapes, ranks) and gives the [`cria_model::Adapter`] the
//!   forward pass applies. [`load`] does all of it for a path.
//! - [`merge`]: adapters baked into a standalone GGUF (`cria merge`), one
//!   tensor at a time, requantized with cria-quantize's quantizers.
//!
//! Files are hostile: the GGUF side is parsed by cria-gguf (every size
//! checked against the file), the safetensors side by the `safetensors`
//! crate through cria-import, the JSON is bounded, and every count, shape
//! and rank is checked before anything is decoded.
//!
//! ```no_run
//! let model = cria_model::Model::open("model.gguf")?;
//! let adapter = cria_lora::load("adapter.gguf".as_ref(), &model)?;
//! let mut session = cria_model::Session::new(&model, 512, cria_model::KvType::F16, 64, 2);
//! session.lora = vec![(std::sync::Arc::new(adapter), 1.0)];
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bind;
mod error;
mod gguf;
mod merge;
mod peft;

pub use bind::{bind, load, load_for, read};
pub use error::{Error, Result};
pub use gguf::{
    encode, from_gguf, read_gguf, write_file_atomic, write_gguf, write_gguf_file, Encoded,
};
pub use merge::{merge, MergeReport};
pub use peft::read_peft;

/// Largest rank accepted (real adapters use 4..256).
pub const MAX_RANK: usize = 8192;

/// One base tensor's low-rank pair.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPair {
    /// The base tensor's GGUF name (`blk.0.attn_q.weight`).
    pub base: String,
    pub rank: usize,
    /// Output rows of the base tensor.
    pub rows: usize,
    /// Input columns of the base tensor (ggml `ne[0]`).
    pub cols: usize,
    /// (rank, cols), row-major.
    pub a: Vec<f32>,
    /// (rows, rank), row-major.
    pub b: Vec<f32>,
}

/// An adapter as a file states it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraFile {
    /// `general.architecture` of the base model (`llama`).
    pub architecture: String,
    /// `adapter.lora.alpha`; 0 when the file has none (then the scale is
    /// the user's scale alone).
    pub alpha: f32,
    pub pairs: Vec<LoraPair>,
}
