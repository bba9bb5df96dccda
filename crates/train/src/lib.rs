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
//!   accumulation, validation, checkpoints; [`adapter_out`] writes the
//!   adapter as llama.cpp's GGUF LoRA file; [`plot`] draws the curves.
//!
//! Base products use the inference kernels (`cria_model::matmul`);
//! gradients through a frozen matrix use it dequantized to f32 one matrix
//! (or head strip) at a time, on the kernels' f32 GEMM, so every gradient
//! is the same bits whatever the thread count.

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

pub use error::{Error, ErrorKind, Result};
pub use lora::{parse_targets, Lora, Target};
pub use net::Batch;
