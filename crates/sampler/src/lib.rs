//! cria-sampler: logits -> token id, as a chain of small stages.
//!
//! [`Sampler`] runs llama.cpp's default chain on one row of logits:
//! logit bias -> repetition/frequency/presence penalties -> top-k -> top-p
//! -> min-p -> temperature -> a seeded random draw (or the argmax when
//! `temperature <= 0`). [`SamplerConfig`] holds the settings, with
//! llama.cpp's defaults, and is validated by [`Sampler::new`].
//!
//! A seed draws as llama.cpp's does: the random pick is llama.cpp's `dist`
//! (an `std::mt19937` seeded with `SamplerConfig::seed`, one libstdc++
//! `uniform_real_distribution<double>` number per pick, a cumulative walk
//! over the candidates in the order llama.cpp leaves them; `rng.rs`), so
//! with the same seed, chain and probabilities (up to float rounding) cria
//! picks the token llama.cpp picks. A seed and a sequence of logits give
//! the same ids on every platform (as far as the platform's `expf` agrees
//! to the last bit, which mainstream libms do for the values a draw
//! depends on; `tests.rs` pins a golden sequence). [`Sampler::post_sampling_probs`]
//! gives the probabilities after the chain (llama-server's
//! `post_sampling_probs`).
//!
//! [`top_logprobs`] gives the most likely tokens of the raw distribution (for
//! OpenAI-style `logprobs`), and [`StopStrings`] decides how much streamed
//! text is safe to show when stop strings may span tokens.
//!
//! ```
//! use cria_sampler::{Sampler, SamplerConfig, StopOutcome, StopStrings};
//!
//! let logits = [0.1f32, 2.5, -1.0, 0.7];
//! let mut greedy = Sampler::new(SamplerConfig::greedy(), logits.len())?;
//! let id = greedy.sample(&logits)?;
//! assert_eq!(id, 1);
//! greedy.accept(id)?;
//!
//! let config = SamplerConfig { seed: 42, ..SamplerConfig::default() };
//! let mut a = Sampler::new(config.clone(), logits.len())?;
//! let mut b = Sampler::new(config, logits.len())?;
//! assert_eq!(a.sample(&logits)?, b.sample(&logits)?);
//!
//! let mut stops = StopStrings::new(["</s>"]);
//! assert_eq!(stops.push("Hi</"), StopOutcome::Continue { emit: "Hi".into() });
//! assert_eq!(stops.push("s> more"), StopOutcome::Stopped { emit: "".into(), index: 0 });
//! # Ok::<(), cria_sampler::Error>(())
//! ```
#![forbid(unsafe_code)]

mod config;
mod error;
mod rng;
mod sampler;
mod stages;
mod stop;

pub use config::SamplerConfig;
pub use error::{Error, ErrorKind, Result};
pub use sampler::{argmax_rows, top_logprobs, RowArgmax, Sampler};
pub use stages::Candidate;
pub use stop::{StopOutcome, StopStrings};

#[cfg(test)]
mod tests;
