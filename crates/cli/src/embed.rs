//! `cria embed`: embeddings of texts on the command line, through the same
//! engine as the server (each text is an embedding request; up to
//! `--parallel` share each forward pass).
//!
//! Inputs as `llama-embedding` takes them: `-p TEXT` split at newlines
//! (`--embd-separator` changes that), `-f FILE` likewise, or texts as
//! arguments. Pooling and normalization are llama.cpp's flags.

use crate::gen_args::ModelArgs;
use anyhow::{bail, Context, Result};
use cria_engine::{
    EmbedParams, Embedding, Engine, EngineConfig, Event, GenerateParams, Pooling, Request,
};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts to embed, one vector each
    pub texts: Vec<String>,
    /// Text to embed; each line is one input (llama-embedding's -p)
    #[arg(short, long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Read the inputs from a file, split like -p
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// What separates inputs in -p and -f
    #[arg(long, default_value = "\n", value_name = "STRING")]
    pub embd_separator: String,
    /// How token vectors combine (default: the model's pooling_type; none
    /// without one, as llama.cpp: one vector per token)
    #[arg(long, value_name = "none|mean|cls|last")]
    pub pooling: Option<Pooling>,
    /// 2: divide by the Euclidean norm (default), -1: leave as is
    #[arg(
        long,
        default_value_t = 2,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub embd_normalize: i32,
    /// Inputs evaluated together
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallel: usize,
    /// Print OpenAI's JSON shape ({"data": [{"index", "embedding"}], "usage"})
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let normalize = match args.embd_normalize {
        2 => true,
        -1 => false,
        n => bail!("--embd-normalize {n}: cria supports 2 (Euclidean) and -1 (none)"),
    };
    if args.parallel == 0 {
        bail!("--parallel 0: give at least 1");
    }
    let texts = inputs(&args)?;
    let threads = args.model.threads()?;
    let loaded = args.model.load()?;
    let pooling = match args.pooling {
        Some(p) => p,
        None => Pooling::from_model(&loaded.model)?,
    };
    let kv = args.model.kv_type();
    let n_ctx = match args.model.ctx_size(2)? {
        Some(c) => c,
        None => cria_engine::default_ctx_size(&loaded.model, kv),
    };
    let mut ids = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        // As llama-embedding: special tokens added and parsed.
        let v = loaded.tokenizer.encode(t, true, true)?;
        if v.len() > n_ctx {
            bail!(
                "input {i} has {} tokens but the context holds {n_ctx}: split it or raise \
                 --ctx-size (inputs are never cut)",
                v.len()
            );
        }
        ids.push(v);
    }
    let engine = Engine::start(
        Arc::new(loaded.model),
        Arc::new(loaded.tokenizer),
        EngineConfig {
            slots: args.parallel.min(ids.len()),
            max_queue: ids.len(),
            step_tokens: 512,
            ..EngineConfig::single(n_ctx, kv, threads)
        },
    )?;
    let params = EmbedParams { pooling, normalize };
    let out = embed_all(&engine, ids, params)?;
    if args.json {
        print_json(&out)
    } else {
        print_text(&out);
        Ok(())
    }
}

fn inputs(args: &Args) -> Result<Vec<String>> {
    let sep = args.embd_separator.as_str();
    if sep.is_empty() {
        bail!("--embd-separator must not be empty");
    }
    let mut texts = args.texts.clone();
    if let Some(p) = &args.prompt {
        texts.extend(p.split(sep).map(String::from));
    }
    if let Some(f) = &args.file {
        let s =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let s = s.strip_suffix('\n').unwrap_or(&s);
        texts.extend(s.split(sep).map(String::from));
    }
    if texts.is_empty() {
        bail!("nothing to embed: give texts, -p TEXT or -f FILE");
    }
    Ok(texts)
}

/// Submits every input and gathers the answers in input order.
fn embed_all(engine: &Engine, ids: Vec<Vec<u32>>, params: EmbedParams) -> Result<Vec<Embedding>> {
    let mut receivers = Vec::with_capacity(ids.len());
    for (i, prompt) in ids.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let gen = GenerateParams::for_embedding();
        let req = Request {
            embed: Some(params),
            ..Request::new(prompt, gen, tx)
        };
        engine
            .submit(req)
            .map_err(|e| anyhow::anyhow!("input {i}: {e:?}"))?;
        receivers.push(rx);
    }
    let mut out = Vec::with_capacity(receivers.len());
    for (i, mut rx) in receivers.into_iter().enumerate() {
        loop {
            match rx.blocking_recv() {
                Some(Event::Embedding(e)) => {
                    out.push(e);
                    break;
                }
                Some(Event::Token(_) | Event::Progress(_)) => continue,
                Some(Event::Error(e)) => return Err(e).context(format!("input {i}")),
                Some(Event::Done(_)) | None => bail!("input {i}: the engine stopped"),
            }
        }
    }
    Ok(out)
}

/// One line per vector: `embedding I: v v v ...` (with pooling none, one
/// line per token, `embedding I.T:`).
fn print_text(out: &[Embedding]) {
    use std::fmt::Write;
    for (i, e) in out.iter().enumerate() {
        for (t, v) in e.vectors.iter().enumerate() {
            let mut line = if e.vectors.len() == 1 {
                format!("embedding {i}:")
            } else {
                format!("embedding {i}.{t}:")
            };
            for x in v {
                let _ = write!(line, " {x}");
            }
            println!("{line}");
        }
    }
}

fn print_json(out: &[Embedding]) -> Result<()> {
    /// Typed, so f32s print as f32s (a `Value` widens them to f64).
    #[derive(serde::Serialize)]
    struct Item<'a> {
        object: &'static str,
        index: usize,
        embedding: Vector<'a>,
    }
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Vector<'a> {
        One(&'a [f32]),
        PerToken(&'a [Vec<f32>]),
    }
    let mut data = Vec::new();
    let mut tokens = 0;
    for (index, e) in out.iter().enumerate() {
        tokens += e.prompt_tokens;
        let embedding = match &e.vectors[..] {
            [one] => Vector::One(one),
            all => Vector::PerToken(all),
        };
        data.push(Item {
            object: "embedding",
            index,
            embedding,
        });
    }
    #[derive(serde::Serialize)]
    struct Reply<'a> {
        object: &'static str,
        data: Vec<Item<'a>>,
        usage: serde_json::Value,
    }
    let reply = Reply {
        object: "list",
        data,
        usage: serde_json::json!({"prompt_tokens": tokens, "total_tokens": tokens}),
    };
    println!("{}", serde_json::to_string(&reply)?);
    Ok(())
}
