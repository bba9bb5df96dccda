//! Quantization mixes: llama-quantize's type names (`Q4_K_M`, ...), the
//! `llama_ftype` id written as `general.file_type`, and each mix's default
//! tensor type (the per-tensor rules in `rules.rs` adjust it).

use crate::error::{ErrorKind, Result};
use cria_gguf::GgmlType;

/// A target of `cria quantize`: a file type in llama.cpp's sense.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Mix {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

impl Mix {
    /// Every mix, in llama-quantize's listing order.
    pub const ALL: [Mix; 20] = [
        Mix::Q4_0,
        Mix::Q4_1,
        Mix::Q5_0,
        Mix::Q5_1,
        Mix::Q2_K,
        Mix::Q2_K_S,
        Mix::Q3_K_S,
        Mix::Q3_K_M,
        Mix::Q3_K_L,
        Mix::IQ4_NL,
        Mix::IQ4_XS,
        Mix::Q4_K_S,
        Mix::Q4_K_M,
        Mix::Q5_K_S,
        Mix::Q5_K_M,
        Mix::Q6_K,
        Mix::Q8_0,
        Mix::F16,
        Mix::BF16,
        Mix::F32,
    ];

    pub fn name(self) -> &'static str {
        use Mix::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q2_K => "Q2_K",
            Q2_K_S => "Q2_K_S",
            Q3_K_S => "Q3_K_S",
            Q3_K_M => "Q3_K_M",
            Q3_K_L => "Q3_K_L",
            Q4_K_S => "Q4_K_S",
            Q4_K_M => "Q4_K_M",
            Q5_K_S => "Q5_K_S",
            Q5_K_M => "Q5_K_M",
            Q6_K => "Q6_K",
            IQ4_NL => "IQ4_NL",
            IQ4_XS => "IQ4_XS",
        }
    }

    /// Parses a mix name as llama-quantize does (case-insensitive; `Q3_K`,
    /// `Q4_K` and `Q5_K` are its aliases for the `_M` mixes).
    pub fn parse(s: &str) -> Result<Mix> {
        let up = s.to_ascii_uppercase();
        let alias = match up.as_str() {
            "Q3_K" => Some(Mix::Q3_K_M),
            "Q4_K" => Some(Mix::Q4_K_M),
            "Q5_K" => Some(Mix::Q5_K_M),
            _ => None,
        };
        alias
            .or_else(|| Mix::ALL.into_iter().find(|m| m.name() == up))
            .ok_or_else(|| {
                ErrorKind::UnknownType {
                    name: s.to_string(),
                    expected: Mix::ALL.map(Mix::name).join(" "),
                }
                .into()
            })
    }

    /// The `llama_ftype` id (`general.file_type`).
    pub fn ftype(self) -> u32 {
        use Mix::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            Q2_K_S => 21,
            IQ4_NL => 25,
            IQ4_XS => 30,
            BF16 => 32,
        }
    }

    /// The tensor type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        use Mix::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q2_K | Q2_K_S => GgmlType::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => GgmlType::Q3_K,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
            IQ4_NL => GgmlType::IQ4_NL,
            IQ4_XS => GgmlType::IQ4_XS,
        }
    }
}

/// Parses a single tensor type name (`--output-tensor-type q8_0`), as
/// llama-quantize's `parse_ggml_type`: any ggml type name, any case, that
/// cria can write.
pub fn parse_tensor_type(s: &str) -> Result<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(s) && cria_kernels::can_quantize(*t))
        .ok_or_else(|| {
            let names: Vec<&str> = GgmlType::ALL
                .into_iter()
                .filter(|t| cria_kernels::can_quantize(*t))
                .map(GgmlType::name)
                .collect();
            ErrorKind::UnknownType {
                name: s.to_string(),
                expected: names.join(" "),
            }
            .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        for m in Mix::ALL {
            assert_eq!(Mix::parse(m.name()).unwrap(), m);
            assert_eq!(Mix::parse(&m.name().to_lowercase()).unwrap(), m);
        }
        assert_eq!(Mix::parse("q4_k").unwrap(), Mix::Q4_K_M);
        let e = Mix::parse("Q4_K_X").unwrap_err().to_string();
        assert!(e.contains("\"Q4_K_X\"") && e.contains("Q4_K_M"), "{e}");
        assert_eq!(parse_tensor_type("q8_0").unwrap(), GgmlType::Q8_0);
        assert!(parse_tensor_type("IQ2_XXS").is_err());
        assert!(parse_tensor_type("Q4_K_M").is_err());
    }
}
