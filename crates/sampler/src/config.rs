//! [`SamplerConfig`]: the knobs of the sampling chain, with llama.cpp's defaults.

use crate::error::{Error, ErrorKind, Result};

/// Settings for a [`crate::Sampler`]. `Default` gives llama.cpp's defaults
/// (`common_params_sampling`): temperature 0.8, top-k 40, top-p 0.95,
/// min-p 0.05, penalties off, repeat window 64.
///
/// A stage is disabled by its neutral value: `top_k = 0`, `top_p = 1.0`,
/// `min_p = 0.0`, `repeat_penalty = 1.0`, `frequency_penalty = 0.0`,
/// `presence_penalty = 0.0`, `repeat_last_n = 0`. `temperature <= 0.0`
/// means greedy (argmax after bias and penalties).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Divides the logits before the draw; `<= 0` picks the argmax.
    pub temperature: f32,
    /// Keep the `top_k` highest logits; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest prefix (by probability) whose mass reaches `top_p`; 1.0 keeps all.
    pub top_p: f32,
    /// Keep tokens with probability `>= min_p * p_max`; 0.0 keeps all.
    pub min_p: f32,
    /// Divides positive / multiplies negative logits of recent tokens; 1.0 is off.
    pub repeat_penalty: f32,
    /// How many of the most recent accepted tokens the penalties look at; 0 is off.
    /// (llama.cpp's `-1` = "context size" must be resolved by the caller.)
    pub repeat_last_n: usize,
    /// Subtracted `count` times from a recent token's logit.
    pub frequency_penalty: f32,
    /// Subtracted once from the logit of any token seen in the window.
    pub presence_penalty: f32,
    /// `(token id, delta)` added to the raw logits; `f32::NEG_INFINITY` bans a token.
    /// Entries with the same id add up.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random draw: an `std::mt19937` as llama.cpp's (seeds
    /// below 2^32 are llama.cpp's seeds; see `rng.rs` for larger ones).
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding: temperature 0, every other stage at its default
    /// (they cannot change the argmax anyway).
    pub fn greedy() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    /// Checks every field; the error names the first bad field and its value.
    pub fn validate(&self, n_vocab: usize) -> Result<()> {
        if n_vocab == 0 {
            return Err(ErrorKind::EmptyVocab.into());
        }
        if !self.temperature.is_finite() {
            return Err(Error::invalid(
                "temperature",
                self.temperature,
                "a finite number (<= 0 for greedy)",
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(Error::invalid(
                "top_p",
                self.top_p,
                "a number in [0, 1] (1 disables it)",
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::invalid(
                "min_p",
                self.min_p,
                "a number in [0, 1] (0 disables it)",
            ));
        }
        // Same rule as llama.cpp's common_sampler_init: 1/penalty must be finite too.
        if !self.repeat_penalty.is_finite()
            || self.repeat_penalty <= 0.0
            || !(1.0 / self.repeat_penalty).is_finite()
        {
            return Err(Error::invalid(
                "repeat_penalty",
                self.repeat_penalty,
                "a finite number > 0 (1 disables it)",
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(Error::invalid(
                "frequency_penalty",
                self.frequency_penalty,
                "a finite number",
            ));
        }
        if !self.presence_penalty.is_finite() {
            return Err(Error::invalid(
                "presence_penalty",
                self.presence_penalty,
                "a finite number",
            ));
        }
        for &(id, delta) in &self.logit_bias {
            if id as usize >= n_vocab {
                return Err(ErrorKind::TokenOutOfRange { id, n_vocab }.into());
            }
            if delta.is_nan() || delta == f32::INFINITY {
                return Err(Error::invalid(
                    "logit_bias",
                    format!("({id}, {delta})"),
                    "a finite delta, or -inf to ban the token",
                ));
            }
        }
        Ok(())
    }

    /// True when the penalty stage changes nothing (llama.cpp's `is_disabled`).
    pub(crate) fn penalties_disabled(&self) -> bool {
        self.repeat_last_n == 0
            || (self.repeat_penalty == 1.0
                && self.frequency_penalty == 0.0
                && self.presence_penalty == 0.0)
    }
}
