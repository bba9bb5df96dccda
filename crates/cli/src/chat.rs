//! `cria chat`: an interactive conversation that keeps its KV cache between
//! turns, so each turn evaluates only the new messages.

use crate::gen_args::{LoraArgs, ModelArgs, OverflowArgs, PrefixCacheArgs, SamplingArgs, SpecArgs};
use crate::session::Session;
use anyhow::{Context, Result};
use cria_engine::FinishReason;
use cria_prompt::{tokenize_prompt, Message};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// System message that starts the conversation
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Chat template instead of the model's: a Jinja file, Jinja text, or
    /// one of llama.cpp's built-in names (chatml, llama3, mistral-v7, ...)
    #[arg(long, value_name = "FILE|NAME")]
    pub chat_template: Option<PathBuf>,
    /// Print a summary line on stderr after each answer
    #[arg(short, long)]
    pub verbose: bool,
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
}

pub fn run(args: Args) -> Result<()> {
    let mut params = args.sampling.params()?;
    let session = Session::start(
        &args.model,
        &args.lora,
        args.overflow.context_overflow,
        &args.spec,
        args.prefix_cache.store(),
    )?;
    let tok = &session.tok;
    params.constraint = args.sampling.constraint(tok)?;
    let template = session.template(args.chat_template.as_deref())?;
    let n_ctx = session.n_ctx;

    // Ctrl-C stops the answer being written; at the prompt it ends the chat.
    let generating = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let (generating, cancel) = (generating.clone(), cancel.clone());
        ctrlc::set_handler(move || {
            if generating.load(Ordering::SeqCst) {
                cancel.store(true, Ordering::SeqCst);
            } else {
                eprintln!();
                std::process::exit(130);
            }
        })
        .context("cannot install the Ctrl-C handler")?;
    }

    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("cria chat: {} (ctx {n_ctx}). /reset starts over, /exit or Ctrl-D quits, Ctrl-C stops an answer.", session.path.display());
    }
    let start = || {
        args.system
            .iter()
            .map(|s| Message::new("system", s))
            .collect::<Vec<_>>()
    };
    let mut messages = start();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!(">>> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read stdin")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/bye" | "/quit" => break,
            "/reset" | "/clear" => {
                // The slot's cache stays: the next prompt reuses only the
                // prefix it shares (the system message).
                messages = start();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", text));
        let mut prompt = tokenize_prompt(tok, &template.render(&messages, true)?)?;
        session.fit(&mut prompt, &params);
        cancel.store(false, Ordering::SeqCst);
        generating.store(true, Ordering::SeqCst);
        let mut answer = String::new();
        let mut out = std::io::stdout().lock();
        let result =
            session
                .engine
                .generate(prompt, params.clone(), Some(cancel.clone()), &mut |t| {
                    answer.push_str(t);
                    let _ = out.write_all(t.as_bytes()).and_then(|_| out.flush());
                });
        generating.store(false, Ordering::SeqCst);
        let _ = writeln!(out);
        match result {
            Ok(stats) => {
                if args.verbose {
                    eprintln!("{}", session.summary(&stats));
                }
                session.note(&stats);
                match stats.finish {
                    FinishReason::Cancelled => eprintln!("(answer stopped)"),
                    FinishReason::ContextFull => eprintln!(
                        "(the context of {n_ctx} tokens is full: /reset to start over, or restart with a larger --ctx-size)"
                    ),
                    _ => {}
                }
                messages.push(Message::new("assistant", answer.trim()));
            }
            Err(e) => {
                // The turn is dropped; the conversation goes on.
                messages.pop();
                eprintln!("error: {e}");
            }
        }
    }
    Ok(())
}
