//! placeholder
mod dequant;
mod error;
pub use cria_gguf::GgmlType;
pub use dequant::{block_geometry, dequantize_row, row_bytes, QK_K};
pub use error::{Error, ErrorKind, Result};
