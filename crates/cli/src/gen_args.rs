//! Flags shared by the commands that load a model (run, chat, serve,
//! perplexity, bench) and by those that generate (run, chat), declared once
//! and named as llama.cpp names them.

use crate::default_model;
use anyhow::{bail, Context, Result};
use cria_engine::{
    ContextOverflow, GenerateParams, Loaded, PrefixStore, SpecKind, SpecParams, SpecType,
};
use cria_grammar::{Constraint, GrammarSpec, Grammars};
use cria_model::{KvType, KvTypes};
use cria_sampler::SamplerConfig;
use cria_tokenizer::Tokenizer;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model file (default: the cached default model)
    #[arg(short, long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Context size in tokens (run, chat: the model's, capped so the KV cache fits in 1 GiB;
    /// serve: per slot, at most 4096 by default; perplexity: tokens per chunk, 512)
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub ctx_size: Option<usize>,
    /// Threads (default: all cores); bench takes a comma-separated list
    #[arg(short, long, value_name = "N", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// KV cache element type of both keys and values (shorthand for -ctk and -ctv)
    #[arg(long = "cache-type", value_name = "TYPE", default_value = "f16", value_parser = parse_kv_type)]
    pub cache_type: KvType,
    /// KV cache type of the keys: f16, f32, q8_0, q4_0 (default: --cache-type);
    /// also -ctk; quantized types need a head size divisible by 32
    #[arg(long = "cache-type-k", value_name = "TYPE", value_parser = parse_kv_type)]
    pub cache_type_k: Option<KvType>,
    /// KV cache type of the values: f16, f32, q8_0, q4_0 (default: --cache-type); also -ctv
    #[arg(long = "cache-type-v", value_name = "TYPE", value_parser = parse_kv_type)]
    pub cache_type_v: Option<KvType>,
}

fn parse_kv_type(s: &str) -> std::result::Result<KvType, String> {
    s.parse::<KvType>().map_err(|e| e.to_string())
}

/// llama.cpp spells some flags with one dash and several letters (`-ctk`,
/// `-ctv`, `-md`, `-npl`), which clap cannot declare: they become
/// `--cache-type-k`, `--cache-type-v`, `--model-draft` and `--n-parallel`
/// before parsing (also in the `-ctk=q8_0` form).
pub fn llama_cpp_spellings(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    args.map(|a| {
        let Some(s) = a.to_str() else { return a };
        for (short, long) in [
            ("-ctk", "--cache-type-k"),
            ("-ctv", "--cache-type-v"),
            ("-md", "--model-draft"),
            ("-npl", "--n-parallel"),
        ] {
            if s == short {
                return long.into();
            }
            if let Some(v) = s.strip_prefix(short).and_then(|r| r.strip_prefix('=')) {
                return format!("{long}={v}").into();
            }
        }
        a
    })
    .collect()
}

impl ModelArgs {
    /// The key and value types: -ctk / -ctv, each defaulting to --cache-type.
    pub fn kv_type(&self) -> KvTypes {
        KvTypes {
            k: self.cache_type_k.unwrap_or(self.cache_type),
            v: self.cache_type_v.unwrap_or(self.cache_type),
        }
    }

    /// `-t N`, or every core this process may use.
    pub fn threads(&self) -> Result<usize> {
        match self.threads[..] {
            [] => Ok(all_cores()),
            [0] => bail!("-t 0: give at least 1 thread"),
            [n] => Ok(n),
            _ => bail!("-t takes one thread count here (only bench takes a list)"),
        }
    }

    /// `-c N` if given, checked to be at least `min`.
    pub fn ctx_size(&self, min: usize) -> Result<Option<usize>> {
        match self.ctx_size {
            Some(c) if c < min => bail!("--ctx-size {c}: give at least {min} tokens"),
            c => Ok(c),
        }
    }

    /// Resolves `-m` (or the default model), maps it, checks every tensor
    /// and builds the tokenizer.
    pub fn load(&self) -> Result<Loaded> {
        let path = default_model::resolve(self.model.as_deref())?;
        Ok(Loaded::open(&path)?)
    }
}

/// Speculative decoding (run, chat, serve), as llama.cpp spells it (its
/// older `--draft-max`/`--draft-min` and newer `--spec-draft-n-max`/`-min`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SpecArgs {
    /// Speculative decoding: ngram (guess the next tokens from earlier occurrences of the
    /// last ones in the prompt and output; no extra model), draft-simple (with -md), none;
    /// the output is the same as without it, faster on tasks that copy from their input
    #[arg(long = "spec-type", value_name = "TYPE")]
    pub spec_type: Option<SpecType>,
    /// Speculative decoding with a draft model: a smaller model of the same vocabulary
    /// guesses the next tokens (also -md); same output as without it
    #[arg(long = "model-draft", value_name = "FILE", alias = "spec-draft-model")]
    pub model_draft: Option<PathBuf>,
    /// Most tokens drafted per step, 1-64 (default 16; the engine adapts the length to
    /// the acceptance rate)
    #[arg(long = "draft-max", value_name = "N", aliases = ["draft", "spec-draft-n-max"])]
    pub draft_max: Option<usize>,
    /// Fewest tokens a draft must have to be checked (default 0)
    #[arg(long = "draft-min", value_name = "N", alias = "spec-draft-n-min")]
    pub draft_min: Option<usize>,
}

impl SpecArgs {
    /// What the flags ask for: `None` without `--spec-type` or `-md`.
    pub fn params(&self) -> Result<Option<SpecParams>> {
        let kind = match (self.spec_type, &self.model_draft) {
            (Some(SpecType::Ngram), Some(_)) => {
                bail!("--spec-type ngram and -md: choose one kind of speculative decoding")
            }
            (Some(SpecType::Ngram), None) => SpecKind::Ngram,
            (Some(SpecType::Draft) | None, Some(path)) => {
                SpecKind::DraftModel(default_model::resolve(Some(path))?)
            }
            (Some(SpecType::Draft), None) => {
                bail!("--spec-type draft-simple needs a draft model: give -md FILE")
            }
            (Some(SpecType::None), Some(_)) => {
                bail!("--spec-type none and -md: drop one of them")
            }
            (Some(SpecType::None) | None, None) => {
                if self.draft_max.is_some() || self.draft_min.is_some() {
                    bail!("--draft-max and --draft-min need --spec-type ngram or -md FILE");
                }
                return Ok(None);
            }
        };
        let p = SpecParams {
            kind,
            draft_max: self.draft_max.unwrap_or(16),
            draft_min: self.draft_min.unwrap_or(0),
        };
        p.check()?;
        Ok(Some(p))
    }
}

/// `--lora` and `--lora-scaled` (run, chat, serve, perplexity, bench).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LoraArgs {
    /// LoRA adapter: llama.cpp's GGUF adapter file or a PEFT folder
    /// (adapter_config.json + adapter_model.safetensors), at scale 1 (repeatable)
    #[arg(long = "lora", value_name = "FILE")]
    pub lora: Vec<PathBuf>,
    /// LoRA adapter at a scale: the effective scale is SCALE * alpha / rank, as in
    /// llama.cpp (repeatable; applied after the --lora ones)
    #[arg(long = "lora-scaled", value_names = ["FILE", "SCALE"], num_args = 2)]
    pub lora_scaled: Vec<String>,
}

impl LoraArgs {
    /// The adapters in order (every `--lora`, then every `--lora-scaled`),
    /// each with its user scale, as (path, scale).
    pub fn list(&self) -> Result<Vec<(PathBuf, f32)>> {
        let mut out: Vec<(PathBuf, f32)> = self.lora.iter().map(|p| (p.clone(), 1.0)).collect();
        for pair in self.lora_scaled.chunks(2) {
            let [file, scale] = pair else {
                bail!("--lora-scaled takes a file and a scale");
            };
            let s: f32 = scale
                .parse()
                .ok()
                .filter(|s: &f32| s.is_finite())
                .with_context(|| {
                    format!("--lora-scaled {file} {scale}: the scale must be a number, e.g. 0.5")
                })?;
            out.push((PathBuf::from(file), s));
        }
        Ok(out)
    }

    /// Reads every adapter and checks it against `model`; they are listed
    /// on stderr.
    pub fn load(&self, model: &cria_model::Model) -> Result<cria_model::LoraSet> {
        let mut set = Vec::new();
        for (path, scale) in self.list()? {
            let a = cria_lora::load(&path, model)
                .with_context(|| format!("cannot load the adapter {}", path.display()))?;
            eprintln!(
                "cria: adapter {} (alpha {}, {} KiB) at scale {scale}",
                path.display(),
                a.alpha,
                a.bytes() / 1024
            );
            set.push((std::sync::Arc::new(a), scale));
        }
        Ok(set)
    }
}

/// `--context-overflow` (run, chat, serve).
#[derive(clap::Args, Clone, Debug)]
pub struct OverflowArgs {
    /// When a request does not fit the context: error (refuse it; stop when full),
    /// truncate-middle (cut the prompt's middle so prompt + -n fit), or shift (when the
    /// cache fills while generating, drop the oldest half after the prompt and go on)
    #[arg(
        long = "context-overflow",
        value_name = "MODE",
        default_value = "error"
    )]
    pub context_overflow: ContextOverflow,
}

/// `--prefix-cache DIR` and its cap (run, chat, serve).
#[derive(clap::Args, Clone, Debug)]
pub struct PrefixCacheArgs {
    /// Keep the KV state of prompt prefixes in DIR (blocks of 256 tokens, per model, cache
    /// type and API key), so a prompt starting like an earlier one (after a restart too, or
    /// from another process sharing DIR) evaluates only what is new
    #[arg(long, value_name = "DIR")]
    pub prefix_cache: Option<PathBuf>,
    /// Most bytes --prefix-cache may take (K, M, G, T suffixes); least recently used
    /// prefixes go first
    #[arg(long, value_name = "BYTES", default_value = "2G", value_parser = cria_prefix_cache::store::parse_size)]
    pub prefix_cache_size: u64,
}

impl PrefixCacheArgs {
    pub fn store(&self) -> Option<PrefixStore> {
        self.prefix_cache.as_ref().map(|path| PrefixStore::Dir {
            path: path.clone(),
            max_bytes: self.prefix_cache_size,
        })
    }
}

/// llama.cpp's `--prompt-cache FILE` (run).
#[derive(clap::Args, Clone, Debug)]
pub struct PromptCacheArgs {
    /// Save the prompt's KV state to FILE after evaluating it; a later run whose prompt shares
    /// a prefix with it loads that and evaluates only the rest (llama.cpp's --prompt-cache)
    #[arg(long, value_name = "FILE", conflicts_with = "prefix_cache")]
    pub prompt_cache: Option<PathBuf>,
    /// With --prompt-cache: use the file but never write it
    #[arg(long, requires = "prompt_cache")]
    pub prompt_cache_ro: bool,
}

impl PromptCacheArgs {
    /// The store these flags ask for, or `other`'s (`--prefix-cache`).
    pub fn store(&self, other: &PrefixCacheArgs) -> Option<PrefixStore> {
        match &self.prompt_cache {
            Some(path) => Some(PrefixStore::File {
                path: path.clone(),
                read_only: self.prompt_cache_ro,
            }),
            None => other.store(),
        }
    }
}

pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Tokens to generate (-1: until the model stops or the context is full)
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Temperature (0: always the most likely token)
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: off)
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probabilities add up to P (1: off)
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0: off)
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalize repeating any of the last --repeat-last-n tokens (1: off)
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Subtract F times each token's count in the recent window
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Subtract P from every token seen in the recent window
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Random seed (default: a fresh one each run); same seed, same output
    #[arg(long)]
    pub seed: Option<u64>,
    /// Bias a token: ID+BIAS or ID-BIAS, e.g. 15043+1.5; ID-inf bans it (repeatable)
    #[arg(short = 'l', long = "logit-bias", value_name = "ID(+|-)BIAS")]
    pub logit_bias: Vec<String>,
    /// Stop when this text appears; it is not printed (repeatable)
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens
    #[arg(long)]
    pub ignore_eos: bool,
    /// Constrain the output to a GBNF grammar (llama.cpp's syntax) or an llguidance Lark grammar
    #[arg(long, value_name = "GRAMMAR", group = "constraint")]
    pub grammar: Option<String>,
    /// --grammar, read from a file (e.g. llama.cpp's grammars/json.gbnf)
    #[arg(long, value_name = "FILE", group = "constraint")]
    pub grammar_file: Option<PathBuf>,
    /// Constrain the output to JSON matching a JSON Schema, given inline or as a file
    #[arg(short = 'j', long, value_name = "FILE|JSON", group = "constraint")]
    pub json_schema: Option<String>,
    /// Constrain the output to a JSON object
    #[arg(long, group = "constraint")]
    pub json: bool,
}

impl SamplingArgs {
    /// The grammar or schema the flags ask for, compiled for `tok`.
    pub fn constraint(&self, tok: &Tokenizer) -> Result<Option<Constraint>> {
        let spec = if let Some(g) = &self.grammar {
            GrammarSpec::from_grammar_text(g)
        } else if let Some(path) = &self.grammar_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--grammar-file {}", path.display()))?;
            GrammarSpec::from_grammar_text(&text)
        } else if let Some(s) = &self.json_schema {
            let text = if s.trim_start().starts_with('{') || s.trim() == "true" {
                s.clone()
            } else {
                std::fs::read_to_string(s).with_context(|| {
                    format!("--json-schema {s}: not JSON, and not a readable file")
                })?
            };
            let schema = serde_json::from_str(&text)
                .with_context(|| format!("--json-schema: {} is not valid JSON", short(s)))?;
            GrammarSpec::JsonSchema(schema)
        } else if self.json {
            GrammarSpec::JsonObject
        } else {
            return Ok(None);
        };
        let grammars = Grammars::new(tok)?;
        let (c, stats) = grammars.compile_timed(&spec)?;
        if std::env::var_os("CRIA_GRAMMAR_STATS").is_some() {
            eprintln!(
                "cria: grammar compiled in {:.2} ms",
                stats.time.as_secs_f64() * 1e3
            );
        }
        Ok(Some(c))
    }

    pub fn params(&self) -> Result<GenerateParams> {
        let mut logit_bias = Vec::new();
        for b in &self.logit_bias {
            logit_bias.push(parse_bias(b)?);
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(GenerateParams {
            max_tokens: usize::try_from(self.n_predict).ok(),
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            constraint: None,
            sampler: SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                frequency_penalty: self.frequency_penalty,
                presence_penalty: self.presence_penalty,
                logit_bias,
                seed,
            },
        })
    }
}

/// `15043+1.5`, `15043-1`, `2-inf`.
fn parse_bias(s: &str) -> Result<(u32, f32)> {
    let split = s
        .find(['+', '-'])
        .with_context(|| format!("--logit-bias {s:?}: expected ID+BIAS or ID-BIAS"))?;
    let id: u32 = s[..split]
        .trim()
        .parse()
        .with_context(|| format!("--logit-bias {s:?}: {:?} is not a token id", &s[..split]))?;
    let bias: f32 = s[split..]
        .trim()
        .parse()
        .with_context(|| format!("--logit-bias {s:?}: {:?} is not a number", &s[split..]))?;
    if bias.is_nan() {
        bail!("--logit-bias {s:?}: the bias is not a number");
    }
    Ok((id, bias))
}

/// The first 40 characters of `s`, for error messages.
fn short(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_type_spellings() {
        let args = [
            "cria",
            "run",
            "-ctk",
            "q8_0",
            "-ctv=q4_0",
            "-ctkx",
            "-md",
            "d.gguf",
            "-npl",
            "1,8",
        ]
        .map(Into::into);
        let want = [
            "cria",
            "run",
            "--cache-type-k",
            "q8_0",
            "--cache-type-v=q4_0",
            "-ctkx",
            "--model-draft",
            "d.gguf",
            "--n-parallel",
            "1,8",
        ];
        assert_eq!(
            super::llama_cpp_spellings(args.into_iter()),
            want.map(std::ffi::OsString::from)
        );
        assert_eq!(super::parse_kv_type("Q8_0"), Ok(cria_model::KvType::Q8_0));
        let e = super::parse_kv_type("q5_1").unwrap_err();
        assert_eq!(
            e,
            "unknown KV cache type \"q5_1\": use f16, f32, q8_0 or q4_0"
        );
    }

    #[test]
    fn biases() {
        assert_eq!(super::parse_bias("15043+1.5").unwrap(), (15043, 1.5));
        assert_eq!(super::parse_bias("2-inf").unwrap(), (2, f32::NEG_INFINITY));
        assert!(super::parse_bias("x+1").is_err());
        assert!(super::parse_bias("12").is_err());
    }
}
