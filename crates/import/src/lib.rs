//! Foreign checkpoints as GGUF: Hugging Face folders and Meta's original
//! release, read in place or converted.
//!
//! A source folder becomes a [`Plan`]: the GGUF metadata llama.cpp's
//! converter would write, and one [`SrcTensor`] per GGUF tensor saying
//! where its bytes are (ranges of memory-mapped safetensors files or of
//! uncompressed PyTorch zip entries) and what to do to them (nothing, undo
//! Hugging Face's q/k row permutation, or join Meta's model-parallel
//! shards). From a plan:
//!
//! - [`open`] builds a [`cria_gguf::GgufFile`] the model reads like any
//!   GGUF file: tensors that need no change stay in the source's map
//!   (zero-copy); only changed ones are held in memory. A plain GGUF path
//!   is opened as usual, so every command takes `-m FILE` or `-m DIR`.
//! - [`convert`] writes a GGUF file as F32, F16, BF16 or Q8_0, reading,
//!   converting (on every core, [`convert_with`] to choose) and writing
//!   overlapped, with at most two converted tensors in memory.
//!
//! Readers: [`hf`] (config.json, safetensors), [`hf_tokenizer`]
//! (tokenizer.json and its configs), [`meta`] (params.json and `.pth`
//! zips through the restricted [`pickle`] reader), [`spm_model`]
//! (SentencePiece's tokenizer.model protobuf) and [`tiktoken`] (LLaMA 3's
//! tokenizer.model). Every reader bounds what it reads and reports bad
//! input as an [`Error`] naming the file and what is wrong.
//!
//! ```no_run
//! let file = cria_import::open(std::path::Path::new("Llama-3.2-1B"))?;
//! cria_import::convert(std::path::Path::new("Llama-3.2-1B"), std::path::Path::new("out.gguf"),
//!     cria_import::OutType::F16, &mut |_, _| {})?;
//! # Ok::<(), cria_import::Error>(())
//! ```

mod convert;
mod direct;
mod error;
pub mod hf;
pub mod hf_tokenizer;
mod hparams;
mod json;
pub mod meta;
pub mod pickle;
mod plan;
pub mod pth;
pub mod spm_model;
pub mod tiktoken;
mod tokmeta;

pub use convert::{convert, convert_with, convert_with_io, Io};
pub use error::{Error, ErrorKind, Result};
pub use hparams::{HParams, RopeScaling};
pub use plan::{to_f32, DType, Layout, OutType, Plan, Source, SrcTensor};
pub use tokmeta::TokMeta;

use cria_gguf::{GgufFile, Part, TensorBytes};
use std::path::Path;

/// The kinds of source [`plan`] understands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Gguf,
    HuggingFace,
    Meta,
}

/// What `path` holds: a file is GGUF; a folder with config.json is Hugging
/// Face's layout, with params.json Meta's; anything else is an error
/// naming what was found.
pub fn detect(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return Ok(Format::Gguf);
    }
    if path.join("config.json").is_file() {
        return Ok(Format::HuggingFace);
    }
    if path.join("params.json").is_file() {
        return Ok(Format::Meta);
    }
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names.truncate(12);
    Err(ErrorKind::UnknownLayout {
        path: path.to_path_buf(),
        detail: format!("neither config.json nor params.json among {names:?}"),
    }
    .into())
}

/// The plan for a folder, its tensors stored as `out`.
pub fn plan(dir: &Path, out: OutType) -> Result<Plan> {
    match detect(dir)? {
        Format::HuggingFace => hf::plan(dir, out),
        Format::Meta => meta::plan(dir, out),
        Format::Gguf => Err(Error::bad(dir, "is a file; a plan is made from a folder")),
    }
}

/// Opens a model for inference: a GGUF file as is, or a Hugging Face or
/// Meta folder as a GGUF file assembled in memory (tensors kept in their
/// source type; unchanged tensors not copied).
pub fn open(path: &Path) -> Result<GgufFile> {
    if detect(path)? == Format::Gguf {
        return Ok(GgufFile::open(path)?);
    }
    let plan = plan(path, OutType::Source)?;
    let mut parts = Vec::with_capacity(plan.tensors.len());
    // Only 1-D tensors change type here (norms to F32): no threads needed.
    let serial = cria_kernels::ThreadPool::new(1);
    for t in plan.tensors {
        let ty = OutType::Source.for_tensor(&t);
        let bytes = match (&t.source, t.is_zero_copy() && ty == t.dtype().ggml()) {
            (Source::Pieces { pieces, dtype, .. }, true) => TensorBytes::Mapped {
                map: pieces[0].map.clone(),
                start: pieces[0].start,
                len: t.n_elements() * dtype.size(),
            },
            _ => TensorBytes::Owned(plan::encode(t.dtype(), t.raw()?, ty, &serial).into_owned()),
        };
        parts.push(Part {
            name: t.name.clone(),
            ty,
            dims: t.dims(),
            bytes,
        });
    }
    Ok(GgufFile::from_parts(plan.metadata, parts)?)
}
