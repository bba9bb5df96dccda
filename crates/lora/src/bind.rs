//! An adapter file checked against a base model, as the forward pass
//! applies it.

use crate::error::{Error, Result};
use crate::LoraFile;
use cria_gguf::GgufFile;
use cria_model::{Adapter, LlamaConfig, LoraDelta, Model, Target};
use std::path::Path;

/// Reads an adapter: a PEFT folder when `path` is a directory, llama.cpp's
/// GGUF format otherwise. `cfg` gives the head counts PEFT's q/k
/// permutation needs.
pub fn read(path: &Path, cfg: &LlamaConfig) -> Result<LoraFile> {
    if path.is_dir() {
        crate::read_peft(path, cfg.n_heads, cfg.n_kv_heads)
    } else {
        crate::read_gguf(path)
    }
}

/// [`read`] then [`bind`] against a loaded model.
pub fn load(path: &Path, model: &Model) -> Result<Adapter> {
    load_for(path, model.file(), &model.config)
}

/// [`load`] against a model file that is only parsed, not loaded (merge).
pub fn load_for(path: &Path, file: &GgufFile, cfg: &LlamaConfig) -> Result<Adapter> {
    bind(read(path, cfg)?, file, cfg, path)
}

/// Checks `lora` against the model in `file`: the same architecture,
/// every tensor a matrix the forward pass multiplies (the seven of each
/// layer, and `output.weight` when the model has its own), shapes equal to
/// the base tensor's, each tensor once.
pub fn bind(lora: LoraFile, file: &GgufFile, cfg: &LlamaConfig, origin: &Path) -> Result<Adapter> {
    let arch = file
        .metadata()
        .try_str("general.architecture")
        .ok()
        .flatten()
        .unwrap_or("llama");
    if lora.architecture != arch {
        return Err(Error::mismatch(
            origin,
            format!(
                "the adapter is for architecture {:?} but the model is {arch:?}",
                lora.architecture
            ),
        ));
    }
    let n_layers = cfg.n_layers;
    let mut adapter = Adapter {
        name: origin.display().to_string(),
        alpha: lora.alpha,
        layers: vec![Default::default(); n_layers],
        output: None,
    };
    for p in lora.pairs {
        let slot = match locate(&p.base, n_layers) {
            Some(Some((l, t))) => &mut adapter.layers[l][t as usize],
            Some(None) => {
                if file.tensor("output.weight").is_none() {
                    return Err(Error::mismatch(
                        origin,
                        "the adapter changes output.weight but the model ties its output \
                         to the token embedding (llama.cpp refuses this too)",
                    ));
                }
                &mut adapter.output
            }
            None => {
                if p.base == "token_embd.weight" {
                    return Err(Error::unsupported(
                        origin,
                        "the adapter changes token_embd.weight; cria applies adapters to \
                         matrix products only",
                    ));
                }
                if file.tensor(&p.base).is_some() {
                    return Err(Error::unsupported(
                        origin,
                        format!(
                            "the adapter changes {:?}, which is not a matrix product",
                            p.base
                        ),
                    ));
                }
                return Err(Error::mismatch(
                    origin,
                    format!("tensor {:?} does not exist in the base model", p.base),
                ));
            }
        };
        let Some(t) = file.tensor(&p.base) else {
            return Err(Error::mismatch(
                origin,
                format!("tensor {:?} does not exist in the base model", p.base),
            ));
        };
        if t.dims.len() < 2 || t.dims[0] != p.cols as u64 || t.dims[1] != p.rows as u64 {
            return Err(Error::mismatch(
                origin,
                format!(
                    "{}: the adapter's pair is for a matrix of dims [{}, {}] but the model's \
                     has {:?}",
                    p.base, p.cols, p.rows, t.dims
                ),
            ));
        }
        if slot.is_some() {
            return Err(Error::format(origin, format!("{} appears twice", p.base)));
        }
        *slot = Some(LoraDelta {
            rank: p.rank,
            rows: p.rows,
            cols: p.cols,
            a: p.a,
            b: p.b,
        });
    }
    Ok(adapter)
}

/// `Some(Some((layer, target)))` for a layer matrix, `Some(None)` for
/// `output.weight`, `None` otherwise.
pub(crate) fn locate(name: &str, n_layers: usize) -> Option<Option<(usize, Target)>> {
    if name == "output.weight" {
        return Some(None);
    }
    let rest = name.strip_prefix("blk.")?;
    let (l, _) = rest.split_once('.')?;
    let l: usize = l.parse().ok()?;
    if l >= n_layers {
        return None;
    }
    Target::ALL
        .iter()
        .find(|t| t.tensor_name(l) == name)
        .map(|&t| Some((l, t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoraPair;
    use cria_gguf::{GgmlType, GgufWriter, Value};

    /// A 1-layer LLaMA header (dim 8, ffn 16, 2 heads, 1 KV head, vocab 4)
    /// with zero weights; `tied`: no output.weight.
    fn tiny(tied: bool) -> GgufFile {
        let (d, f, kv, v) = (8u64, 16u64, 4u64, 4u64);
        let mut t: Vec<(String, Vec<u64>)> = vec![
            ("token_embd.weight".into(), vec![d, v]),
            ("output_norm.weight".into(), vec![d]),
        ];
        if !tied {
            t.push(("output.weight".into(), vec![d, v]));
        }
        let p = |s: &str| format!("blk.0.{s}.weight");
        t.extend([
            (p("attn_norm"), vec![d]),
            (p("attn_q"), vec![d, d]),
            (p("attn_k"), vec![d, kv]),
            (p("attn_v"), vec![d, kv]),
            (p("attn_output"), vec![d, d]),
            (p("ffn_norm"), vec![d]),
            (p("ffn_gate"), vec![d, f]),
            (p("ffn_up"), vec![d, f]),
            (p("ffn_down"), vec![f, d]),
        ]);
        let bytes: Vec<Vec<u8>> = t
            .iter()
            .map(|(_, dims)| vec![0u8; 4 * dims.iter().product::<u64>() as usize])
            .collect();
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("llama".into()));
        for (k, x) in [
            ("llama.block_count", 1),
            ("llama.embedding_length", d as u32),
            ("llama.feed_forward_length", f as u32),
            ("llama.attention.head_count", 2),
            ("llama.attention.head_count_kv", 1),
            ("llama.context_length", 16),
        ] {
            w.add_metadata(k, Value::U32(x));
        }
        w.add_metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
        for ((name, dims), b) in t.iter().zip(&bytes) {
            w.add_tensor(name, GgmlType::F32, dims, b).unwrap();
        }
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        GgufFile::from_bytes(out).unwrap()
    }

    fn lora(base: &str, rows: usize, cols: usize) -> LoraFile {
        LoraFile {
            architecture: "llama".into(),
            alpha: 2.0,
            pairs: vec![LoraPair {
                base: base.into(),
                rank: 2,
                rows,
                cols,
                a: vec![0.5; 2 * cols],
                b: vec![0.25; rows * 2],
            }],
        }
    }

    fn check(l: LoraFile, tied: bool) -> Result<Adapter> {
        let file = tiny(tied);
        let cfg = LlamaConfig::from_file(&file).unwrap();
        bind(l, &file, &cfg, Path::new("a.gguf"))
    }

    #[test]
    fn binds_each_target_and_the_output() {
        let a = check(lora("blk.0.ffn_down.weight", 8, 16), false).unwrap();
        assert_eq!(a.delta(0, Target::Down).map(|d| d.rank), Some(2));
        assert!(a.delta(0, Target::Up).is_none());
        let a = check(lora("output.weight", 4, 8), false).unwrap();
        assert!(a.output.is_some());
    }

    #[test]
    fn refuses_what_does_not_fit_the_model() {
        let cases = [
            (lora("blk.0.ffn_down.weight", 16, 8), false, "dims"),
            (lora("blk.1.attn_q.weight", 8, 8), false, "does not exist"),
            (
                lora("blk.0.attn_norm.weight", 1, 8),
                false,
                "not a matrix product",
            ),
            (lora("token_embd.weight", 4, 8), false, "token_embd"),
            (lora("output.weight", 4, 8), true, "ties"),
        ];
        for (l, tied, needle) in cases {
            let e = check(l, tied).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let mut other = lora("blk.0.attn_q.weight", 8, 8);
        other.architecture = "qwen2".into();
        assert!(check(other, false)
            .unwrap_err()
            .to_string()
            .contains("qwen2"));
        let mut twice = lora("blk.0.attn_q.weight", 8, 8);
        twice.pairs.push(twice.pairs[0].clone());
        assert!(check(twice, false)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }
}
