//! The bounds on every request field, in one place (README's Serving
//! section lists them). A request outside them gets a 400 naming the field
//! before anything reaches the template, the tokenizer or the engine, so
//! no field can size an allocation or a loop beyond these numbers, the
//! body limit (`--max-body`) and the context (`n_ctx`).

use std::ops::RangeInclusive;

/// `temperature` (OpenAI's range; 0 is greedy).
pub const TEMPERATURE: RangeInclusive<f64> = 0.0..=2.0;
/// `top_p` and `min_p` (1 and 0 switch them off).
pub const PROBABILITY: RangeInclusive<f64> = 0.0..=1.0;
/// `presence_penalty` and `frequency_penalty` (OpenAI's range).
pub const PENALTY: RangeInclusive<f64> = -2.0..=2.0;
/// `repeat_penalty` (1 switches it off). The sampler divides by it, so
/// it stays well away from 0 (1e-40 would be an f32 whose inverse is
/// infinite).
pub const REPEAT_PENALTY: RangeInclusive<f64> = 0.01..=10.0;
/// `logit_bias` values (OpenAI's range; -100 bans the token).
pub const LOGIT_BIAS: RangeInclusive<f64> = -100.0..=100.0;
/// `logit_bias` entries.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// `stop` strings per request.
pub const MAX_STOP: usize = 16;
/// Bytes of one stop string: the engine holds back up to this much text
/// while it could still be the start of one.
pub const MAX_STOP_BYTES: usize = 256;
/// `top_logprobs` (chat) and `logprobs` (completions): OpenAI's 20.
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// Choices per request (`n`), and prompts per `/completion` request:
/// each is a sequence of its own in the engine.
pub const MAX_CHOICES: usize = 16;
/// `messages` per chat request.
pub const MAX_MESSAGES: usize = 1024;
/// Content parts in one message.
pub const MAX_CONTENT_PARTS: usize = 256;

// Bounded by the model instead: `top_k` <= n_vocab, token ids < n_vocab,
// `repeat_last_n` <= n_ctx (-1 is n_ctx), prompt tokens < n_ctx, and
// `max_tokens` at most what fits after the prompt (n_ctx - prompt tokens;
// larger values are clamped to it and the reply ends with "length").

/// Parsing, templating and tokenizing run on the blocking pool, this many
/// per core at once; more wait their turn, so a few huge prompts cannot
/// take every thread.
pub const PREPARE_JOBS_PER_CORE: usize = 2;
