//! What goes into the engine (a [`Request`]) and what comes back on the
//! request's channel ([`Event`]s).

use crate::embed::{EmbedParams, Embedding};
use crate::error::Error;
use crate::params::{FinishReason, GenerateParams};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// One generation request.
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// `Some(n)`: report each token's log-probability and the `n` most
    /// likely alternatives.
    pub logprobs: Option<usize>,
    /// Where this request's events go. Dropping the receiver cancels it.
    pub events: UnboundedSender<Event>,
    /// Whose request this is (the server's API key id; 0 when there are no
    /// keys). A cached prompt prefix is reused only by the same tenant, so
    /// `cached_tokens` never tells one tenant about another's prompts.
    pub tenant: u32,
    /// Raised from outside (the CLI's Ctrl-C): the request ends at the next
    /// step with [`FinishReason::Cancelled`] and its `Done` summary.
    pub cancel: Option<Arc<AtomicBool>>,
    /// `Some`: an embedding request. Its prompt is evaluated and pooled,
    /// nothing is generated (`params` only need to be valid), and it ends
    /// with [`Event::Embedding`].
    pub embed: Option<EmbedParams>,
    /// The adapters applied to this request, with their scales; `None`:
    /// the engine's default ([`crate::EngineConfig::lora`]).
    pub lora: Option<cria_model::LoraSet>,
    /// With `logprobs`: report the probabilities after the sampler chain
    /// ([`TokenEvent::prob`], [`TokenEvent::top_probs`]) instead of the
    /// model's raw log-probabilities (llama-server's `post_sampling_probs`).
    pub post_sampling_probs: bool,
    /// Send [`Event::Progress`] as the prompt is evaluated (llama-server's
    /// `return_progress`).
    pub progress: bool,
}

impl Request {
    pub fn new(
        prompt: Vec<u32>,
        params: GenerateParams,
        events: UnboundedSender<Event>,
    ) -> Request {
        Request {
            prompt,
            params,
            logprobs: None,
            events,
            tenant: 0,
            cancel: None,
            embed: None,
            lora: None,
            post_sampling_probs: false,
            progress: false,
        }
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.events.is_closed()
            || self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
pub enum Event {
    /// How far the prompt is evaluated; only when [`Request::progress`]
    /// asks, before the first token.
    Progress(PromptProgress),
    Token(TokenEvent),
    Done(Done),
    Error(Error),
    /// The answer to an embedding request (its last event).
    Embedding(Embedding),
}

#[derive(Clone, Debug)]
pub struct TokenEvent {
    pub id: u32,
    /// Text that is now safe to show (maybe empty: held back while it
    /// could start a stop string or is an incomplete UTF-8 character).
    pub text: String,
    /// Log-probability of `id` under the model's raw distribution, and the
    /// top alternatives (most likely first), when asked for.
    pub logprob: Option<f32>,
    pub top_logprobs: Vec<(u32, f32)>,
    /// With [`Request::post_sampling_probs`] (instead of the two above):
    /// the probability of `id` after the sampler chain, and the most
    /// likely tokens that survived the chain (most likely first, none of
    /// probability 0). A greedy pick has probability 1.
    pub prob: Option<f32>,
    pub top_probs: Vec<(u32, f32)>,
}

/// How far a request's prompt is evaluated (llama-server's
/// `prompt_progress`): sent once when the request takes its slot
/// (`processed == cache`), then after every step that evaluated some of
/// the prompt, the last with `processed == total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptProgress {
    /// Prompt tokens in all.
    pub total: usize,
    /// Found in the slot's cache (or restored from disk), not evaluated.
    pub cache: usize,
    /// Prompt tokens in the cache so far, the cached ones included.
    pub processed: usize,
    /// From admission to the end of the step that got this far; zero in
    /// the first report.
    pub elapsed: Duration,
}

#[derive(Clone, Debug)]
pub struct Done {
    pub finish: FinishReason,
    /// Text held back until the end (no stop string completed it).
    pub text: String,
    pub prompt_tokens: usize,
    /// Prompt tokens found in the slot's cache and not evaluated again.
    pub cached_tokens: usize,
    /// Of those, the tokens restored from the prefix cache on disk.
    pub restored_tokens: usize,
    pub completion_tokens: usize,
    /// From admission to the first token.
    pub prompt_time: Duration,
    pub generation_time: Duration,
    /// Context shifts done during generation (`--context-overflow shift`).
    pub overflow: Option<crate::OverflowReport>,
    /// Speculative decoding's counts, when the engine speculates.
    pub spec: Option<SpecReport>,
}

/// How speculation went for one request: tokens guessed, and guesses the
/// target model confirmed (each saved a forward pass).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecReport {
    pub drafted: usize,
    pub accepted: usize,
}

impl SpecReport {
    /// Accepted / drafted (0 when nothing was drafted).
    pub fn acceptance(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}
