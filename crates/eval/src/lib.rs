//! cria-eval: perplexity and KL-divergence bookkeeping, compatible with
//! llama.cpp's `llama-perplexity`, as pure functions with no model inside.
//!
//! The caller owns the model; this crate says what to feed it and what to do
//! with the logits:
//!
//! - [`Chunks`] cuts the token list into `n_ctx` windows ([`Chunk`]): the
//!   tokens to decode (first one replaced by BOS if the vocab adds BOS), and
//!   which logits rows score which tokens (the second half of the window).
//! - [`PerplexityAccumulator`] turns each chunk's logits into the running
//!   `[1]12.3456,` line and the final `Final estimate: PPL = ... +/- ...`.
//! - [`BaseFileWriter`] / [`BaseFileReader`] write and read the
//!   `--kl-divergence-base` file in llama.cpp's binary layout (see
//!   [`basefile`] for the format), so files are interchangeable.
//! - [`KlDivergence`] compares the current logits with a base file and gives
//!   the per-chunk lines and the final [`KlReport`].
//!
//! ```
//! use cria_eval::{BaseFileReader, BaseFileWriter, BaseChunk, Chunks, KlDivergence, PerplexityAccumulator};
//!
//! let n_vocab = 5;
//! let tokens: Vec<u32> = (0..20).map(|i| i % 5).collect();
//! let chunks = Chunks::new(&tokens, 8, true, 1, None)?; // 2 chunks of 8
//! assert_eq!((chunks.n_chunk(), chunks.first(), chunks.n_scored()), (2, 4, 3));
//!
//! // Stand-in for a model: logits for positions first.. of each chunk.
//! let model = |input: &[u32]| -> Vec<f32> {
//!     input[4..].iter().flat_map(|&t| (0..5).map(move |v| if v == (t + 1) % 5 { 2.0 } else { 0.0 })).collect()
//! };
//!
//! let mut ppl = PerplexityAccumulator::new(n_vocab);
//! let mut file = Vec::new();
//! let mut base = BaseFileWriter::new(&mut file, chunks.n_ctx(), n_vocab, chunks.n_chunk(), chunks.tokens())?;
//! for chunk in chunks.iter() {
//!     let logits = model(chunk.input_tokens());
//!     ppl.add_chunk(&logits, chunk.tokens())?;
//!     base.write_chunk_logits(&logits, chunk.tokens())?;
//! }
//! base.finish()?;
//! println!("{}", ppl.estimate()?);
//!
//! let mut reader = BaseFileReader::new(&file[..])?;
//! reader.header().check_vocab(n_vocab)?;
//! let mut kld = KlDivergence::new(n_vocab);
//! let mut stored = BaseChunk::default();
//! for chunk in chunks.iter() {
//!     assert!(reader.read_chunk(&mut stored)?);
//!     kld.add_chunk(&stored, &model(chunk.input_tokens()), chunk.tokens())?;
//! }
//! assert!(kld.report()?.kld.value.abs() < 1e-6);
//! # Ok::<(), cria_eval::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod basefile;
mod chunks;
mod error;
mod kld;
mod ppl;

pub use basefile::{
    compress_row, row_len_u16, BaseChunk, BaseFileHeader, BaseFileReader, BaseFileWriter,
    CompressedLogProbs,
};
pub use chunks::{first_scored_position, scored_per_chunk, Chunk, Chunks};
pub use error::{Error, ErrorKind, Result};
pub use kld::{Estimate, KlDivergence, KlReport, TokenKld, CHUNK_HEADER, MIN_TOKENS_FOR_REPORT};
pub use ppl::{log_softmax_of, ChunkNll, PerplexityAccumulator, PplEstimate};

#[cfg(test)]
mod tests;
