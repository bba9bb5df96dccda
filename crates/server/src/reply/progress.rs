//! llama-server's `prompt_progress` (`return_progress` on a stream): one
//! chunk per report of the engine's [`PromptProgress`], in the shape of the
//! route's other chunks, before the first token.

use super::{Api, ReplyCtx};
use cria_engine::PromptProgress;
use serde_json::{json, Value};
use std::time::Duration;

impl ReplyCtx {
    /// The chunk for one progress report; `None` where the API has no
    /// such event (Anthropic's Messages).
    pub(super) fn progress_chunk(&self, p: &PromptProgress) -> Option<Value> {
        let progress = json!({
            "total": p.total,
            "cache": p.cache,
            "processed": p.processed,
            "time_ms": p.elapsed.as_millis() as u64,
        });
        // The prompt's timings so far (nothing generated yet).
        let timings = crate::native::timings(
            p.processed.saturating_sub(p.cache),
            p.cache,
            p.elapsed,
            0,
            Duration::ZERO,
        );
        let mut c = match self.api {
            Api::Native => json!({
                "index": 0,
                "content": "",
                "tokens": [],
                "stop": false,
                "id_slot": -1,
                "tokens_predicted": 0,
                "tokens_evaluated": p.total,
            }),
            // As llama-server: a progress chunk carries the assistant's role.
            Api::Chat => self.chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": null},
                       "logprobs": null, "finish_reason": null}),
                None,
            ),
            Api::Completion => self.chunk(
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": null}),
                None,
            ),
            Api::Anthropic => return None,
        };
        c["prompt_progress"] = progress;
        if self.timings_per_token {
            c["timings"] = timings;
        }
        Some(c)
    }
}
