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
