//! LoRA fine-tuning of LLaMA-family models on the CPU, over a frozen,
//! still-quantized base (as QLoRA does).
//!
//! - [`Lora`]: the adapter pairs (A, B) beside the chosen [`Target`]
//!   matrices, in one flat parameter vector.
//! - [`layer`]: one block's forward and backward; [`net`]: the whole
//!   model, cross-entropy over the target tokens of a [`Batch`].
//! - [`data`]: JSONL records (chat, prompt/completion, text) to token
//!   sequences with loss masks.
//! - [`train`]: AdamW with warm-up and cosine decay, gradient
//!   accumulation, validation, checkpoints; [`adapter_out`] hands the
//!   adapter to cria-lora's writer (llama.cpp's GGUF LoRA file) and reads
//!   it back; [`plot`] draws the curves.
//!
//! Base products of the forward pass use the inference kernels
//! (`cria_model::matmul`, int8 panels). The backward through a frozen
//! quantized matrix runs on the same int8 kernels, over a Q8_0 copy of the
//! matrix's transpose made once per run ([`transposed`], which states what
//! it rounds); F32/F16/BF16 matrices, and every other backward product
//! (the LoRA pairs, attention), use the kernels' f32 GEMM
//! ([`cria_kernels::gemm`]). Both give every element by one fixed chain of
//! operations whatever the thread count, so every gradient is the same
//! bits on 1 thread or 16. Buffers are reused across blocks and steps
//! ([`workspace`]).

pub mod adapter_out;
pub mod data;
mod error;
pub mod layer;
pub mod lora;
pub mod net;
mod ops;
pub mod optim;
pub mod plot;
pub mod train;
pub mod transposed;
pub mod workspace;

pub use error::{Error, ErrorKind, Result};
pub use lora::{parse_targets, Lora, Target};
pub use net::Batch;
