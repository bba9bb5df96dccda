//! `cria tokenize` and `cria detokenize`: text to ids and back with a
//! model's own vocabulary (vocab-only GGUF files work too).

use crate::default_model;
use anyhow::{bail, Context, Result};
use cria_tokenizer::Tokenizer;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct TokenizeArgs {
    /// GGUF model or vocab-only file (default: the cached default model)
    #[arg(short, long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Text to tokenize (default: stdin, read as bytes)
    pub text: Option<String>,
    /// Print only the ids, as a list: [1, 2, 3]
    #[arg(long, conflicts_with = "pieces")]
    pub ids: bool,
    /// Print only the pieces, as a JSON list of strings
    #[arg(long)]
    pub pieces: bool,
    /// Do not add the BOS/EOS tokens the vocabulary asks for
    #[arg(long)]
    pub no_bos: bool,
    /// Treat special-token text like <|im_start|> as plain text
    #[arg(long)]
    pub no_parse_special: bool,
}

#[derive(clap::Args)]
pub struct DetokenizeArgs {
    /// GGUF model or vocab-only file (default: the cached default model)
    #[arg(short, long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Token ids, separated by spaces or commas, brackets allowed (default: stdin)
    pub ids: Vec<String>,
    /// Leave out control tokens (<|im_start|>, <s>, ...)
    #[arg(long)]
    pub no_special: bool,
}

fn tokenizer(model: Option<&Path>) -> Result<Tokenizer> {
    let path = default_model::resolve(model)?;
    let f = cria_import::open(&path)?;
    Tokenizer::from_gguf(f.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))
}

fn stdin_bytes(what: &str) -> Result<Vec<u8>> {
    if std::io::stdin().is_terminal() {
        bail!("no {what} given: pass it as an argument or on stdin");
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read stdin")?;
    Ok(buf)
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let tok = tokenizer(args.model.as_deref())?;
    let text = match args.text {
        Some(t) => t.into_bytes(),
        None => stdin_bytes("text")?,
    };
    let ids = tok.encode_bytes(&text, !args.no_bos, !args.no_parse_special)?;
    let mut out = std::io::stdout().lock();
    let piece = |id: u32| String::from_utf8_lossy(&tok.token_to_piece(id, true)).into_owned();
    if args.ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else if args.pieces {
        let pieces: Vec<String> = ids.iter().map(|&id| piece(id)).collect();
        writeln!(out, "{}", serde_json::to_string(&pieces)?)?;
    } else {
        for &id in &ids {
            writeln!(out, "{id:>6} -> {:?}", piece(id))?;
        }
    }
    Ok(())
}

pub fn detokenize(args: DetokenizeArgs) -> Result<()> {
    let tok = tokenizer(args.model.as_deref())?;
    let text = if args.ids.is_empty() {
        String::from_utf8(stdin_bytes("token ids")?).context("the ids on stdin are not text")?
    } else {
        args.ids.join(" ")
    };
    let mut ids = Vec::new();
    for part in text.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        if part.is_empty() {
            continue;
        }
        ids.push(
            part.parse::<u32>()
                .with_context(|| format!("{part:?} is not a token id"))?,
        );
    }
    let bytes = tok.detokenize(&ids, false, !args.no_special)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    writeln!(out)?;
    Ok(())
}
