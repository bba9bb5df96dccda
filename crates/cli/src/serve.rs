//! `cria serve`: the OpenAI-compatible HTTP server (see cria-server).

use crate::default_model;
use crate::gen_args::{LoraArgs, ModelArgs, OverflowArgs, PrefixCacheArgs, SpecArgs};
use anyhow::{bail, Context, Result};
use cria_engine::Fault;
use cria_server::ServerConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub overflow: OverflowArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub prefix_cache: PrefixCacheArgs,
    /// Address to listen on (loopback by default; 0.0.0.0 exposes the server to the network)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one; the address is printed on stdout)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences generated together (continuous batching)
    #[arg(long, alias = "np", default_value_t = 4, value_name = "N")]
    pub parallel: usize,
    /// Requests that may wait while every slot is busy; more get 429 with Retry-After
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_queue: usize,
    /// Largest request body in bytes
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub max_body: usize,
    /// Chat template instead of the model's: a Jinja file, Jinja text, or
    /// one of llama.cpp's built-in names (chatml, llama3, mistral-v7, ...)
    #[arg(long, value_name = "FILE|NAME")]
    pub chat_template: Option<PathBuf>,
    /// Reasoning templates: on or auto opens the model's thinking block
    /// (the default), off closes it (the template's `enable_thinking`)
    #[arg(long, value_name = "on|off|auto", value_parser = ["on", "off", "auto"])]
    pub reasoning: Option<String>,
    /// Model id reported by /v1/models and in replies (default: the file name);
    /// several names separated by commas are all listed, the first in sorted order is the id
    #[arg(long, value_name = "NAME[,NAME...]")]
    pub alias: Option<String>,
    /// Tags listed with the model in /v1/models (comma-separated)
    #[arg(long, value_name = "TAG[,TAG...]", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Temperature of requests that give none (llama-server's --temp)
    #[arg(long = "temp", value_name = "T")]
    pub temperature: Option<f32>,
    /// Seed of requests that give none (default: a fresh one per request)
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Tokens to generate when a request gives no max_tokens/n_predict
    /// (-1: until the model stops or the context is full)
    #[arg(
        short = 'n',
        long = "n-predict",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub n_predict: Option<i64>,
    /// Every OpenAI-shaped reply carries `__verbose` (the prompt as the
    /// model saw it, and the text), as llama-server's --verbose; a request's
    /// `"verbose": false` leaves it out (without this flag, `"verbose": true`
    /// asks for it)
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Serve GET /slots (each slot's context and whether it is busy)
    #[arg(long, overrides_with = "no_slots")]
    pub slots: bool,
    /// Do not serve GET /slots (the default)
    #[arg(long, overrides_with = "slots")]
    pub no_slots: bool,
    /// Serve GET /metrics, Prometheus text (the default; accepted for
    /// llama-server's command line, where it is off unless given)
    #[arg(long, overrides_with = "no_metrics")]
    pub metrics: bool,
    /// Do not serve GET /metrics (it answers 501)
    #[arg(long, overrides_with = "metrics")]
    pub no_metrics: bool,
    /// Test hook: panic inside the engine at SITE (admit, step, sample,
    /// thread) for requests with seed SEED, to test supervision
    #[arg(long, value_name = "SITE:SEED", hide = true)]
    pub debug_inject_panic: Option<Fault>,

    // Connections and tenants.
    /// Require `Authorization: Bearer KEY` on every endpoint but /health;
    /// repeat for several tenants (the Nth key is tenant N in /metrics)
    #[arg(long, value_name = "KEY", env = "CRIA_API_KEY", hide_env_values = true)]
    pub api_key: Vec<String>,
    /// Read API keys from a file, one per line (blank lines and # comments
    /// skipped); the Nth key is tenant N
    #[arg(long, value_name = "FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// Per API key (tenant): requests per minute; more get 429 with Retry-After
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_requests: Option<u32>,
    /// Per API key (tenant): prompt + completion tokens per minute
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_tokens: Option<u32>,
    /// Connections open at once; at the cap a new one takes the place of an
    /// idle or slow one, or gets 503 if every one has a request in flight
    #[arg(long, default_value_t = 512, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Seconds a client has to send a request header, from connecting (or
    /// from its first byte on a kept-alive connection)
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_header_secs: u64,
    /// Seconds a client has to send a request body
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_body_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_idle_secs: u64,
    /// Seconds without a token before a streamed reply gets a `: keep-alive` comment
    #[arg(long, default_value_t = 15, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_keepalive_secs: u64,
    /// Without an API key, accept this Host name besides IP addresses and
    /// localhost (repeatable; guards against DNS rebinding)
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Let web pages of this origin call the API (repeatable or comma-separated;
    /// scheme://host[:port], localhost for any loopback origin, or * for any)
    #[arg(
        long,
        alias = "cors-origins",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub cors: Vec<String>,

    // Around the engine.
    /// How /v1/embeddings pools token vectors (default: the model's
    /// pooling_type; a model without one pools nothing and must be given one)
    #[arg(long, value_name = "none|mean|cls|last")]
    pub pooling: Option<cria_engine::Pooling>,
    /// Do not serve the chat page at / (the API is unchanged)
    #[arg(long, alias = "no-ui")]
    pub no_webui: bool,
    /// On SIGTERM/SIGINT, seconds the requests in flight may take to finish
    /// (new ones get 503 and /health says "draining" meanwhile)
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub drain_timeout_secs: u64,
}

/// Keys from `--api-key` or a key file: one per line, `#` comments and
/// blank lines skipped, in order (the Nth key is tenant N).
fn api_keys(args: &Args) -> Result<Vec<String>> {
    let keys: Vec<String> = match &args.api_key_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the API key file {}", f.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        None => args.api_key.iter().map(|k| k.trim().to_string()).collect(),
    };
    if let Some(f) = &args.api_key_file {
        if keys.is_empty() {
            bail!("the API key file {} holds no key", f.display());
        }
    }
    if keys.iter().any(String::is_empty) {
        bail!("an API key is empty: give a non-empty --api-key");
    }
    Ok(keys)
}

pub fn run(args: Args) -> Result<()> {
    let api_keys = api_keys(&args)?;
    if args.parallel == 0 {
        bail!("--parallel 0: give at least 1 sequence");
    }
    let threads = args.model.threads()?;
    let ctx_size = args.model.ctx_size(16)?;
    let spec = args.spec.params()?;
    let model_path = default_model::resolve(args.model.model.as_deref())?;
    // llama-server's `--alias a,b`: every name is listed, the first in
    // sorted order is the id.
    let mut aliases: Vec<String> = args
        .alias
        .iter()
        .flat_map(|a| a.split(','))
        .map(|a| a.trim().to_string())
        .collect();
    aliases.sort();
    aliases.dedup();
    if aliases.iter().any(String::is_empty) {
        bail!(
            "--alias {:?}: an empty name",
            args.alias.unwrap_or_default()
        );
    }
    let n_predict = match args.n_predict {
        None | Some(-1) => None,
        Some(n) if n >= 1 => Some(n as usize),
        Some(n) => bail!("--n-predict {n}: give at least 1, or -1 for no limit"),
    };
    if let Some(t) = args.temperature {
        if !(0.0..=2.0).contains(&t) {
            bail!("--temp {t}: give a temperature from 0 to 2");
        }
    }
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        parallel: args.parallel,
        ctx_size,
        threads,
        kv: args.model.kv_type(),
        overflow: args.overflow.context_overflow,
        spec,
        max_queue: args.max_queue,
        body_limit: args.max_body,
        chat_template: args.chat_template,
        alias: aliases.first().cloned(),
        aliases,
        tags: args.tags,
        defaults: cria_server::RequestDefaults {
            temperature: args.temperature,
            seed: args.seed,
            n_predict,
            verbose: args.verbose,
        },
        slots_endpoint: args.slots && !args.no_slots,
        fault: args.debug_inject_panic,
        api_keys,
        max_connections: args.max_connections as usize,
        timeout_header: Duration::from_secs(args.timeout_header_secs),
        timeout_body: Duration::from_secs(args.timeout_body_secs),
        timeout_idle: Duration::from_secs(args.timeout_idle_secs),
        sse_keepalive: Duration::from_secs(args.sse_keepalive_secs),
        allow_hosts: args.allow_host,
        cors_origins: args.cors,
        rate_limit_requests: args.rate_limit_requests,
        rate_limit_tokens: args.rate_limit_tokens,
        pooling: args.pooling,
        webui: !args.no_webui,
        // On unless --no-metrics is the last of the two.
        metrics_endpoint: args.metrics || !args.no_metrics,
        enable_thinking: args.reasoning.as_deref() != Some("off"),
        lora: args.lora.list()?,
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        prefix_cache: args.prefix_cache.store(),
        ..ServerConfig::new(model_path)
    };
    cria_server::run(config)?;
    Ok(())
}
