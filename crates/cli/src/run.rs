//! `cria run`: one prompt in, streamed text out (like `ollama run` with a
//! prompt, or `llama-completion` with --raw).

use crate::gen_args::{
    LoraArgs, ModelArgs, OverflowArgs, PrefixCacheArgs, PromptCacheArgs, SamplingArgs, SpecArgs,
};
use crate::session::Session;
use anyhow::{bail, Context, Result};
use cria_engine::FinishReason;
use cria_prompt::{tokenize_prompt, Message};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The prompt (or -p TEXT, or stdin)
    pub prompt: Option<String>,
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "prompt",
        value_name = "TEXT"
    )]
    pub prompt_flag: Option<String>,
    /// Read the prompt from a file
    #[arg(short = 'f', long = "file", conflicts_with_all = ["prompt", "prompt_flag"], value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Continue the text as is, without the chat template
    #[arg(long)]
    pub raw: bool,
    /// System message (chat models)
    #[arg(long, value_name = "TEXT", conflicts_with = "raw")]
    pub system: Option<String>,
    /// Chat template instead of the model's: a Jinja file, Jinja text, or
    /// one of llama.cpp's built-in names (chatml, llama3, mistral-v7, ...)
    #[arg(long, value_name = "FILE|NAME", conflicts_with = "raw")]
    pub chat_template: Option<PathBuf>,
    /// Print no summary line on stderr
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub overflow: OverflowArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub prefix_cache: PrefixCacheArgs,
    #[command(flatten)]
    pub prompt_cache: PromptCacheArgs,
}

pub fn run(args: Args) -> Result<()> {
    let prompt = match (args.prompt.or(args.prompt_flag), &args.file) {
        (Some(p), _) => p,
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the prompt from stdin")?;
            s
        }
        (None, None) => {
            bail!("no prompt: give one as an argument, with -p TEXT, -f FILE or on stdin")
        }
    };
    let mut params = args.sampling.params()?;
    let session = Session::start(
        &args.model,
        &args.lora,
        args.overflow.context_overflow,
        &args.spec,
        args.prompt_cache.store(&args.prefix_cache),
    )?;
    let tok = &session.tok;
    params.constraint = args.sampling.constraint(tok)?;
    let mut tokens = if args.raw {
        tok.encode(&prompt, true, true)?
    } else {
        let template = session.template(args.chat_template.as_deref())?;
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::new("user", &prompt));
        tokenize_prompt(tok, &template.render(&messages, true)?)?
    };
    session.fit(&mut tokens, &params);
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    let done = session.engine.generate(tokens, params, None, &mut |text| {
        if write_err.is_none() {
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                write_err = Some(e);
            }
        }
    })?;
    if let Some(e) = write_err {
        // A closed pipe (`| head`) is a normal way to stop reading.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("cannot write to stdout");
        }
    }
    let _ = writeln!(out).and_then(|_| out.flush());
    if !args.quiet {
        eprintln!("{}", session.summary(&done));
    }
    session.note(&done);
    if done.finish == FinishReason::ContextFull {
        eprintln!(
            "cria: stopped because the context of {} tokens is full; raise --ctx-size to go on",
            session.n_ctx
        );
    }
    Ok(())
}
