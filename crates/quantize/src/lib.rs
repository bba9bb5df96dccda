//! GGUF to GGUF quantization, as llama-quantize does it, byte for byte.
//!
//! - [`Mix`]: a target such as `Q4_K_M` (llama.cpp's file types): its name,
//!   its `general.file_type` id and its default tensor type.
//! - [`rules`]: which type each tensor gets (llama.cpp's
//!   `llama_tensor_get_type`): the output and token-embedding rules, the
//!   attn_v / ffn_down bumps of each mix, `--tensor-type` overrides, and
//!   the fallbacks for rows that do not split into 256-element blocks.
//! - [`quantize_file`]: the driver. It reads a GGUF, dequantizes each
//!   tensor that changes type to f32 and quantizes it on a
//!   [`cria_kernels::ThreadPool`] with [`cria_kernels::quantize_row`] (the
//!   reference quantizers, beside their dequantizers in cria-kernels), and
//!   writes the result with [`cria_gguf::GgufWriter`].
//! - [`Imatrix`]: importance matrices in llama.cpp's GGUF and legacy
//!   `.dat` formats, read and written.
//!
//! ```no_run
//! use cria_quantize::{quantize_file, Mix, Overrides, Params};
//! let params = Params {
//!     mix: Mix::parse("Q4_K_M").unwrap(),
//!     threads: 2,
//!     overrides: Overrides::default(),
//!     allow_requantize: false,
//!     imatrix: None,
//! };
//! let report = quantize_file("in-f16.gguf".as_ref(), "out.gguf".as_ref(), &params, |_| {}).unwrap();
//! println!("{} -> {} bytes", report.bytes_in, report.bytes_out);
//! ```

mod driver;
mod error;
mod imatrix;
mod mix;
pub mod rules;

pub use driver::{
    model_info, quantize_file, quantize_rows, Params, Report, TensorReport, QUANTIZATION_VERSION,
};
pub use error::{Error, ErrorKind, Result};
pub use imatrix::{Entry, Imatrix};
pub use mix::{parse_tensor_type, Mix};
pub use rules::{ModelInfo, Overrides};

/// Parses `--tensor-type REGEX=TYPE` as llama-quantize does: the pattern is
/// lowercased, then searched (not anchored) in each tensor name.
pub fn parse_tensor_override(arg: &str) -> Result<(regex::Regex, cria_gguf::GgmlType)> {
    let bad = |detail: String| -> Error {
        ErrorKind::BadTensorType {
            arg: arg.to_string(),
            detail,
        }
        .into()
    };
    let Some((pat, ty)) = arg.split_once('=') else {
        return Err(bad("no '='".into()));
    };
    if pat.is_empty() {
        return Err(bad("missing tensor name pattern".into()));
    }
    if ty.is_empty() {
        return Err(bad("missing quantization type".into()));
    }
    let re = regex::Regex::new(&pat.to_lowercase()).map_err(|e| {
        // The regex crate's message spans lines (a caret under the pattern).
        let one: Vec<String> = e
            .to_string()
            .lines()
            .map(|l| l.trim().to_string())
            .collect();
        bad(format!("bad regex: {}", one.join(" ")))
    })?;
    let ty = parse_tensor_type(ty).map_err(|e| bad(e.to_string()))?;
    Ok((re, ty))
}
