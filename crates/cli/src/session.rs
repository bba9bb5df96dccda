//! What `cria run` and `cria chat` share: a model loaded through the
//! engine's one loader, driven by a one-slot engine (the same engine the
//! server runs), and the summary line printed after an answer.

use crate::gen_args::{LoraArgs, ModelArgs, SpecArgs};
use anyhow::Result;
use cria_engine::{
    default_ctx_size, truncate_middle, ContextOverflow, Done, Engine, EngineConfig, FinishReason,
    GenerateParams, OverflowReport, PrefixCacheConfig, PrefixStore,
};
use cria_model::Model;
use cria_prompt::ChatTemplate;
use cria_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct Session {
    pub engine: Engine,
    pub model: Arc<Model>,
    pub tok: Arc<Tokenizer>,
    pub n_ctx: usize,
    pub path: PathBuf,
    pub load_time: Duration,
    pub overflow: ContextOverflow,
}

impl Session {
    pub fn start(
        args: &ModelArgs,
        lora: &LoraArgs,
        overflow: ContextOverflow,
        spec: &SpecArgs,
        prefix_cache: Option<PrefixStore>,
    ) -> Result<Session> {
        let threads = args.threads()?;
        let ctx = args.ctx_size(2)?;
        let spec = spec.params()?;
        let loaded = args.load()?;
        let spec = match spec {
            Some(p) => Some(p.load(&loaded.tokenizer)?),
            None => None,
        };
        let kv = args.kv_type();
        let n_ctx = ctx.unwrap_or_else(|| default_ctx_size(&loaded.model, kv));
        let lora = lora.load(&loaded.model)?;
        let model = Arc::new(loaded.model);
        let tok = Arc::new(loaded.tokenizer);
        let engine = Engine::start(
            model.clone(),
            tok.clone(),
            EngineConfig {
                overflow,
                spec,
                prefix_cache: prefix_cache.map(PrefixCacheConfig::anonymous),
                lora,
                ..EngineConfig::single(n_ctx, kv, threads)
            },
        )?;
        Ok(Session {
            engine,
            model,
            tok,
            n_ctx,
            path: loaded.path,
            load_time: loaded.load_time,
            overflow,
        })
    }

    /// With `--context-overflow truncate-middle`, cuts the middle of a
    /// prompt that does not fit with `max_tokens` (see
    /// [`cria_engine::truncate_middle`]) and says so on stderr.
    pub fn fit(&self, prompt: &mut Vec<u32>, params: &GenerateParams) {
        if self.overflow != ContextOverflow::TruncateMiddle {
            return;
        }
        let dropped = truncate_middle(prompt, params.max_tokens, self.n_ctx);
        if dropped > 0 {
            let r = OverflowReport {
                action: ContextOverflow::TruncateMiddle,
                dropped_tokens: dropped,
            };
            eprintln!(
                "cria: context overflow: {r} (the prompt's middle was cut to fit the context of {} tokens)",
                self.n_ctx
            );
        }
    }

    /// The stderr note for a context shift during generation.
    pub fn note(&self, d: &Done) {
        if let Some(r) = d.overflow {
            eprintln!(
                "cria: context overflow: {r} (the context of {} tokens filled; the oldest tokens after the prompt were dropped)",
                self.n_ctx
            );
        }
    }

    /// The model's chat template, or the one in `override_file`.
    pub fn template(&self, override_file: Option<&Path>) -> Result<ChatTemplate> {
        Ok(ChatTemplate::load(
            self.model.file().metadata(),
            &self.tok,
            override_file,
        )?)
    }

    /// `[prompt 12 tokens (0 cached), 950.1 t/s | generated ... ]`
    pub fn summary(&self, d: &Done) -> String {
        let rate = |n: usize, t: Duration| {
            if t.as_secs_f64() > 0.0 {
                n as f64 / t.as_secs_f64()
            } else {
                0.0
            }
        };
        let evaluated = d.prompt_tokens - d.cached_tokens;
        // Speculation: its acceptance; the generation rate is the
        // effective one (tokens over wall time).
        let spec = match d.spec {
            Some(s) => format!(
                " | speculative: {} drafted, {} accepted ({:.1}%)",
                s.drafted,
                s.accepted,
                100.0 * s.acceptance()
            ),
            None => String::new(),
        };
        let disk = match d.restored_tokens {
            0 => String::new(),
            n => format!(", {n} from disk"),
        };
        format!(
            "[prompt {} tokens ({} cached{disk}), {:.1} t/s | generated {} tokens, {:.1} t/s{spec} | load {:.2} s | ctx {} | {}]",
            d.prompt_tokens,
            d.cached_tokens,
            rate(evaluated, d.prompt_time),
            d.completion_tokens,
            // The first token comes with the prompt; the rest took
            // generation_time.
            rate(d.completion_tokens.saturating_sub(1), d.generation_time),
            self.load_time.as_secs_f64(),
            self.n_ctx,
            match d.finish {
                FinishReason::EndOfGeneration => "end of text",
                FinishReason::Length => "token limit",
                FinishReason::StopString => "stop string",
                FinishReason::ContextFull => "context full",
                FinishReason::Cancelled => "cancelled",
            }
        )
    }
}
