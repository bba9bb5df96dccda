//! llama-server's `/completion` reply shapes: the whole reply for one
//! prompt, a streamed token's chunk, and the running timings
//! (`timings_per_token`).

use super::{overflow_json, Collected, NativeReply, ReplyCtx};
use cria_engine::{FinishReason, TokenEvent};
use serde_json::{json, Value};
use std::time::Instant;

impl ReplyCtx {
    /// llama-server's `/completion` reply for one prompt.
    pub(super) fn native_body(&self, index: usize, c: &Collected, n: &NativeReply) -> Value {
        let d = &c.done;
        let mut body = json!({
            "index": index,
            "content": c.text,
            "tokens": if n.options.return_tokens {
                c.tokens.iter().map(|t| t.id).collect::<Vec<u32>>()
            } else {
                Vec::new()
            },
            "id_slot": -1,
            "stop": true,
            "model": self.model,
            "tokens_predicted": d.completion_tokens,
            "tokens_evaluated": d.prompt_tokens,
            "generation_settings": n.settings,
            "prompt": n.prompt_text,
            "has_new_line": c.text.contains('\n'),
            // llama-server's sense: the context was cut or filled.
            "truncated": self.overflow.or(d.overflow).is_some()
                || d.finish == FinishReason::ContextFull
                || n.settings["n_ctx"]
                    .as_u64()
                    .is_some_and(|n_ctx| (d.prompt_tokens + d.completion_tokens) as u64 >= n_ctx),
            "stop_type": crate::native::stop_type(d.finish),
            "stopping_word": "",
            "tokens_cached": d.prompt_tokens,
            "timings": crate::native::done_timings(d),
        });
        if n.options.n_probs > 0 {
            body["completion_probabilities"] = c
                .tokens
                .iter()
                .map(|t| crate::native::probs(&self.tok, t))
                .collect();
        }
        if let Some(r) = &self.overflow.or(d.overflow) {
            body["context_overflow"] = overflow_json(r);
        }
        crate::native::pick_fields(body, &n.options.response_fields)
    }

    /// Timings while a request runs (`timings_per_token`): the prompt's
    /// time is until the first token; the counts of cached prompt tokens
    /// are known only at the end, so they are left out here.
    pub(super) fn running_timings(&self, first: Option<Instant>, predicted: usize) -> Value {
        let now = Instant::now();
        let first = first.unwrap_or(now);
        let prompt_ms = (first - self.accepted).as_secs_f64() * 1e3;
        let predicted_ms = (now - first).as_secs_f64() * 1e3;
        let steps = predicted.saturating_sub(1);
        let rate = if steps > 0 && predicted_ms > 0.0 {
            1e3 / predicted_ms * steps as f64
        } else {
            0.0
        };
        json!({
            "prompt_ms": prompt_ms,
            "predicted_n": predicted,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": if steps > 0 { predicted_ms / steps as f64 } else { 0.0 },
            "predicted_per_second": rate,
        })
    }

    /// A streamed `/completion` chunk for one token.
    pub(super) fn native_chunk(
        &self,
        t: &TokenEvent,
        st_first: Option<Instant>,
        predicted: usize,
    ) -> Value {
        let mut c = json!({
            "index": 0,
            "content": t.text,
            "tokens": [t.id],
            "stop": false,
            "id_slot": -1,
            "tokens_predicted": predicted,
        });
        if self
            .native
            .as_ref()
            .is_some_and(|n| n[0].options.n_probs > 0)
        {
            c["completion_probabilities"] = json!([crate::native::probs(&self.tok, t)]);
        }
        if self.timings_per_token {
            c["timings"] = self.running_timings(st_first, predicted);
        }
        c
    }
}
