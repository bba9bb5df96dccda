//! Math on slices for cria: ggml block dequantization, SIMD dot products,
//! the quantized matmul of the forward pass, and a thread pool.
//!
//! - [`dequantize_row`]: ggml blocks (F32, F16, BF16, Q4_0, Q4_1, Q5_0,
//!   Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS) to f32, bit-identical to
//!   ggml. Scalar; the reference for everything faster.
//! - [`quantize_row`]: the other way, f32 rows to those blocks, with or
//!   without importance weights, byte-identical to ggml's reference
//!   quantizers (what llama-quantize writes).
//! - [`Cpu`]: the one runtime ISA dispatch point (AVX-512F, AVX2+FMA, NEON,
//!   scalar), with [`Cpu::dot`] and the register tiles matmul is built on;
//!   [`dot_scalar`] is their reference.
//! - [`QMatrix`] views a weight tensor's bytes as `rows x cols`;
//!   [`matmul`] multiplies it by a batch of activation rows on a
//!   [`ThreadPool`]. For Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q5_K,
//!   Q6_K and IQ4_XS
//!   it quantizes the activations to int8 once per call and uses integer
//!   dot products on the weight blocks (AVX-512 VNNI or AVX2), as ggml
//!   does; other types (and [`matmul_f32_with`]) dequantize to f32 strips
//!   of [`STRIP_ROWS`] rows.
//! - [`PackedMatrix`]: those types repacked at load into 8-row interleaved
//!   panels (AVX-512 VNNI), read by mat-vec and the prompt GEMM alike;
//!   [`matmul_packed_many`] multiplies several of them by one input.
//! - [`gemm`]: `C = [C +] A * B` over strided f32 views ([`MatRef`]) with
//!   B f32 or a quantized weight matrix as stored ([`Rhs`]): the products
//!   of training's backward pass, at GEMM speed, bit-identical to
//!   [`gemm_reference`] on every ISA and thread count.
//! - [`ThreadPool`]: persistent workers that spin briefly, then park.
//! - [`attend_f16`]: causal attention over one head of an f16 KV cache
//!   ([`KvHead`]: keys in blocks of 16 positions), several queries at a
//!   time, each bit-identical to itself alone; [`attend_scalar`] is its
//!   reference. [`dot_f16`], [`axpy_f16`]: the row ops it shares.
//! - [`rmsnorm`], [`softmax`], [`silu_mul`], [`exp_inplace`]: the row ops
//!   of a LLaMA layer (AVX-512F, AVX2 or scalar), each beside its scalar
//!   reference [`rmsnorm_scalar`], [`softmax_scalar`], [`silu_mul_scalar`],
//!   [`exp_scalar`] (f64 sums, `f32::exp`); [`f16_to_f32`], [`f32_to_f16`].
//!
//! ```
//! use cria_kernels::{matmul, GgmlType, QMatrix, ThreadPool};
//! // A 2 x 32 Q8_0 matrix: row 0 all 1.0, row 1 all 2.0 (d = 1.0 = f16 0x3C00).
//! let mut bytes = Vec::new();
//! for q in [1u8, 2] {
//!     bytes.extend([0x00, 0x3C]);
//!     bytes.extend([q; 32]);
//! }
//! let w = QMatrix::new(GgmlType::Q8_0, 2, 32, &bytes).unwrap();
//! let x = vec![0.5f32; 32]; // one activation row
//! let mut out = [0f32; 2];
//! matmul(&w, &x, &mut out, &ThreadPool::new(2)).unwrap();
//! // Activations are rounded to 8 bits with an f16 block scale, as
//! // llama.cpp rounds them: close to [16, 32], not exactly.
//! assert!((out[0] - 16.0).abs() < 0.01 && (out[1] - 32.0).abs() < 0.01);
//! ```

mod attn;
// Only the x86-64 packed kernels allocate weight buffers so far.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod buf;
pub use buf::{advise_huge_pages, populate};
mod dequant;
mod error;
mod gemm;
mod logsoftmax;
mod matmul;
mod pool;
mod qdot;
mod quant;
mod rowops;
mod simd;

pub use attn::lsq::{quantize_q4_0_lsq, quantize_q4_0_lsq_scalar};
pub use attn::quant::{
    pack_key, quantize_kv_row, quantize_q4_0, quantize_q8_0, unpack_key, QIsa, QKeys, QType,
    QValues, QBLOCK,
};
pub use attn::{
    attend, attend_f16, attend_f16_window, attend_scalar, attend_scalar_window, attend_window,
    axpy_f16, axpy_f16_rows, axpy_f16_scalar, dot_f16, dot_f16_rows, dot_f16_scalar, window_start,
    AttScratch, Keys, KvHead, Values,
};
pub use cria_gguf::GgmlType;
pub use dequant::{block_geometry, dequantize_row, row_bytes, QK_K};
pub use error::{Error, ErrorKind, Result};
pub use gemm::{gemm, gemm_reference, gemm_with, MatRef, Rhs};
pub use logsoftmax::LogSoftmax;
pub use matmul::{
    can_group, matmul, matmul_f32_with, matmul_packed, matmul_packed_many, matmul_with,
    PackedMatrix, QMatrix, MAX_GROUP, STRIP_ROWS,
};
pub use pool::ThreadPool;
pub use quant::{can_quantize, quantize_row, quantize_row_on};
pub use rowops::{
    argmax, argmax_scalar, exp_inplace, exp_scalar, f16_to_f32, f32_to_f16, rmsnorm,
    rmsnorm_scalar, silu_mul, silu_mul_scalar, softmax, softmax_scalar,
};
pub use simd::{dot, dot_scalar, Cpu, Isa};
