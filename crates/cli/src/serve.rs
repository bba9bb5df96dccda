//! `cria serve`: the OpenAI-compatible HTTP server (see cria-server).

use crate::default_model;
use crate::gen_args::ModelArgs;
use anyhow::{bail, Context, Result};
use cria_engine::Fault;
use cria_server::ServerConfig;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (loopback by default; 0.0.0.0 exposes the server to the network)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one; the address is printed on stdout)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences generated together (continuous batching)
    #[arg(long, alias = "np", default_value_t = 4, value_name = "N")]
    pub parallel: usize,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health
    #[arg(long, value_name = "KEY", env = "CRIA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Read the API key from the first line of a file
    #[arg(long, value_name = "FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// Requests that may wait while every slot is busy; more get 429 with Retry-After
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_queue: usize,
    /// Largest request body in bytes
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub max_body: usize,
    /// Jinja chat template to use instead of the model's
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Model id reported by /v1/models and in replies (default: the file name)
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,
    /// Test hook: panic inside the engine at SITE (admit, step, sample,
    /// thread) for requests with seed SEED, to test supervision
    #[arg(long, value_name = "SITE:SEED", hide = true)]
    pub debug_inject_panic: Option<Fault>,
}

pub fn run(args: Args) -> Result<()> {
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(f)) => {
            let s = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the API key file {}", f.display()))?;
            Some(s.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => None,
    };
    if api_key.as_deref() == Some("") {
        bail!("the API key is empty: give a non-empty --api-key or --api-key-file");
    }
    if args.parallel == 0 {
        bail!("--parallel 0: give at least 1 sequence");
    }
    let threads = args.model.threads()?;
    let ctx_size = args.model.ctx_size(16)?;
    let model_path = default_model::resolve(args.model.model.as_deref())?;
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        parallel: args.parallel,
        ctx_size,
        threads,
        kv: args.model.kv_type(),
        api_key,
        max_queue: args.max_queue,
        body_limit: args.max_body,
        chat_template: args.chat_template,
        alias: args.alias,
        fault: args.debug_inject_panic,
        ..ServerConfig::new(model_path)
    };
    cria_server::run(config)?;
    Ok(())
}
