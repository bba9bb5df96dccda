//! One sequence's generation loop.

use crate::error::{ErrorKind, Result};
use cria_model::{KvCache, KvType, Logits, Model, Session};
use cria_sampler::{Sampler, SamplerConfig, StopOutcome, StopStrings};
use cria_tokenizer::{Detokenizer, Tokenizer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why generation ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    Length,
    /// A stop string appeared (it is not part of the output).
    StopString,
    /// The context is full: no room for another token.
    ContextFull,
    /// The cancel flag was raised.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// At most this many new tokens; `None` runs until another reason.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub sampler: SamplerConfig,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
}

#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens found already in the cache and not evaluated again.
    pub cached_tokens: usize,
    pub prompt_time: Duration,
    pub generated_tokens: usize,
    pub generation_time: Duration,
    pub finish: FinishReason,
    /// Every generated token id, end-of-generation token included.
    pub tokens: Vec<u32>,
}

/// Default context size: the model's training context, capped so the KV
/// cache stays within 1 GiB and at most 8192 positions.
pub fn default_ctx_size(model: &Model, kv: KvType) -> usize {
    let c = &model.config;
    let per_pos = KvCache::bytes_for(c.n_layers, 1, c.kv_dim(), kv).max(1);
    let by_memory = ((1u64 << 30) / per_pos) as usize;
    c.n_ctx_train.min(8192).min(by_memory).max(16)
}

/// A conversation's state on a model: its cache and the tokens in it.
pub struct Sequence<'m> {
    model: &'m Model,
    session: Session,
    /// Tokens whose keys and values are in the cache, in order.
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

impl<'m> Sequence<'m> {
    pub fn new(model: &'m Model, n_ctx: usize, kv: KvType, threads: usize) -> Sequence<'m> {
        Sequence {
            model,
            session: Session::new(model, n_ctx, kv, 512, threads),
            tokens: Vec::new(),
            logits: Vec::new(),
        }
    }

    pub fn n_ctx(&self) -> usize {
        self.session.n_ctx()
    }

    /// Tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets everything (`/reset` in a chat).
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.session.truncate(0);
    }

    /// Evaluates `prompt`, reusing the longest prefix already in the cache,
    /// then generates. `on_text` receives complete UTF-8 text as it is
    /// produced; raising `cancel` stops at the next token.
    pub fn generate(
        &mut self,
        tok: &Tokenizer,
        prompt: &[u32],
        params: &GenerateParams,
        cancel: &AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<GenerationStats> {
        if prompt.is_empty() {
            return Err(ErrorKind::EmptyPrompt.into());
        }
        let n_ctx = self.n_ctx();
        if prompt.len() >= n_ctx {
            return Err(ErrorKind::PromptTooLong {
                prompt_tokens: prompt.len(),
                n_ctx,
            }
            .into());
        }
        let mut sampler = Sampler::new(params.sampler.clone(), self.model.config.n_vocab)?;
        for &t in prompt {
            sampler.accept(t)?;
        }

        // Reuse the cached prefix, but evaluate at least the last prompt
        // token: its logits choose the first new token.
        let t0 = Instant::now();
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = common.min(prompt.len() - 1);
        self.tokens.truncate(keep);
        self.session.truncate(keep);
        self.eval(&prompt[keep..])?;
        let prompt_time = t0.elapsed();

        let t1 = Instant::now();
        let mut detok = Detokenizer::new(tok, false);
        let mut stops = StopStrings::new(params.stop.iter().map(String::as_str));
        let mut generated = Vec::new();
        let finish = loop {
            if cancel.load(Ordering::Relaxed) {
                break FinishReason::Cancelled;
            }
            if params.max_tokens.is_some_and(|m| generated.len() >= m) {
                break FinishReason::Length;
            }
            let id = sampler.sample(&self.logits)?;
            sampler.accept(id)?;
            generated.push(id);
            if tok.is_eog(id) && !params.ignore_eos {
                break FinishReason::EndOfGeneration;
            }
            match stops.push(&detok.push(id)) {
                StopOutcome::Continue { emit } => on_text(&emit),
                StopOutcome::Stopped { emit, .. } => {
                    on_text(&emit);
                    break FinishReason::StopString;
                }
            }
            if self.tokens.len() >= n_ctx {
                break FinishReason::ContextFull;
            }
            self.eval(&[id])?;
        };
        if finish != FinishReason::StopString {
            let rest = detok.finish();
            let mut tail = match stops.push(&rest) {
                StopOutcome::Continue { emit } | StopOutcome::Stopped { emit, .. } => emit,
            };
            tail.push_str(&stops.flush());
            on_text(&tail);
        }
        Ok(GenerationStats {
            prompt_tokens: prompt.len(),
            cached_tokens: keep,
            prompt_time,
            generated_tokens: generated.len(),
            generation_time: t1.elapsed(),
            finish,
            tokens: generated,
        })
    }

    fn eval(&mut self, tokens: &[u32]) -> Result<()> {
        self.model
            .forward(&mut self.session, tokens, Logits::Last, &mut self.logits)?;
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }
}
