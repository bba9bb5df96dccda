//! llama.cpp's GGUF LoRA format, read and written.
//!
//! Metadata: `general.type = "adapter"`, `adapter.type = "lora"`,
//! `general.architecture` of the base, `adapter.lora.alpha` (f32,
//! optional). Tensors: for each changed base tensor `T` (`rows` x `cols`,
//! ggml dims `[cols, rows]`), `T.lora_a` with dims `[cols, rank]` (A, rank
//! rows of `cols`) and `T.lora_b` with dims `[rank, rows]` (B, `rows` rows
//! of `rank`), so `ggml_mul_mat(b, ggml_mul_mat(a, x))` is B (A x).

use crate::error::{Error, Result};
use crate::{LoraFile, LoraPair, MAX_RANK};
use cria_gguf::{GgmlType, GgufFile, TensorInfo, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Reads an adapter GGUF file (checked as a [`LoraFile`], not yet against
/// a base model: see [`crate::bind`]).
pub fn read_gguf(path: &Path) -> Result<LoraFile> {
    let file = GgufFile::open(path).map_err(|source| Error::Gguf {
        path: path.to_path_buf(),
        source,
    })?;
    from_gguf(&file, path)
}

/// [`read_gguf`] for a file already parsed; `origin` names it in errors.
pub fn from_gguf(file: &GgufFile, origin: &Path) -> Result<LoraFile> {
    let md = file.metadata();
    let text = |key: &str| -> Result<Option<String>> {
        match md.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(Error::format(
                origin,
                format!("{key} must be a string, not {}", v.type_description()),
            )),
        }
    };
    match text("general.type")?.as_deref() {
        Some("adapter") => {}
        Some(other) => {
            return Err(Error::format(
                origin,
                format!(
                    "general.type is {other:?}, not \"adapter\": this is not a LoRA adapter \
                     (a model goes after -m)"
                ),
            ))
        }
        None => {
            return Err(Error::format(
                origin,
                "no general.type: not a LoRA adapter (a model goes after -m; an adapter \
                 has general.type = \"adapter\")",
            ))
        }
    }
    match text("adapter.type")?.as_deref() {
        Some("lora") => {}
        other => {
            return Err(Error::unsupported(
                origin,
                format!("adapter.type is {other:?}; cria applies \"lora\" adapters"),
            ))
        }
    }
    let architecture = text("general.architecture")?
        .ok_or_else(|| Error::format(origin, "no general.architecture"))?;
    if md.get("adapter.alora.invocation_tokens").is_some() {
        return Err(Error::unsupported(
            origin,
            "an activated LoRA (adapter.alora.invocation_tokens); cria applies plain LoRA",
        ));
    }
    let alpha = match md.get("adapter.lora.alpha") {
        None => 0.0,
        Some(Value::F32(a)) if a.is_finite() => *a,
        Some(v) => {
            return Err(Error::format(
                origin,
                format!("adapter.lora.alpha must be a finite f32, not {v}"),
            ))
        }
    };
    // Pair `.lora_a` with `.lora_b` by base name.
    let mut halves: BTreeMap<&str, (Option<&TensorInfo>, Option<&TensorInfo>)> = BTreeMap::new();
    for t in file.tensors() {
        if let Some(base) = t.name.strip_suffix(".lora_a") {
            halves.entry(base).or_default().0 = Some(t);
        } else if let Some(base) = t.name.strip_suffix(".lora_b") {
            halves.entry(base).or_default().1 = Some(t);
        } else {
            return Err(Error::unsupported(
                origin,
                format!(
                    "tensor {:?} is not a .lora_a or .lora_b tensor (cria applies only \
                     low-rank pairs)",
                    t.name
                ),
            ));
        }
    }
    if halves.is_empty() {
        return Err(Error::format(origin, "the adapter has no tensors"));
    }
    let mut pairs = Vec::with_capacity(halves.len());
    for (base, (a, b)) in halves {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(Error::format(
                origin,
                format!("{base}: lora_a and lora_b must both be present"),
            ));
        };
        let (cols, rank) = dims2(a, origin)?;
        let (rank_b, rows) = dims2(b, origin)?;
        if rank != rank_b {
            return Err(Error::format(
                origin,
                format!(
                    "{base}: lora_a has rank {rank} (dims {:?}) but lora_b has {rank_b} \
                     (dims {:?}); lora_a must be [cols, rank] and lora_b [rank, rows]",
                    a.dims, b.dims
                ),
            ));
        }
        if rows == 0 || cols == 0 {
            return Err(Error::format(
                origin,
                format!("{base}: an empty matrix ({rows} rows, {cols} columns)"),
            ));
        }
        if rank == 0 || rank > MAX_RANK {
            return Err(Error::format(
                origin,
                format!("{base}: rank {rank} (1..={MAX_RANK} accepted)"),
            ));
        }
        pairs.push(LoraPair {
            base: base.to_string(),
            rank,
            rows,
            cols,
            a: decode(file, a, origin)?,
            b: decode(file, b, origin)?,
        });
    }
    Ok(LoraFile {
        architecture,
        alpha,
        pairs,
    })
}

/// A 2-D tensor's `(ne[0], ne[1])`; trailing 1-dimensions are ignored.
fn dims2(t: &TensorInfo, origin: &Path) -> Result<(usize, usize)> {
    let mut d = t.dims.clone();
    while d.len() > 2 && d.last() == Some(&1) {
        d.pop();
    }
    match d[..] {
        [x, y] => Ok((x as usize, y as usize)),
        _ => Err(Error::format(
            origin,
            format!(
                "tensor {:?} has dims {:?}; a 2-D tensor is expected",
                t.name, t.dims
            ),
        )),
    }
}

fn decode(file: &GgufFile, t: &TensorInfo, origin: &Path) -> Result<Vec<f32>> {
    let n = t.n_elements as usize;
    let mut out = vec![0f32; n];
    cria_kernels::dequantize_row(t.ty, file.tensor_data(t), &mut out).map_err(|e| {
        Error::unsupported(
            origin,
            format!("tensor {:?} of type {}: {e}", t.name, t.ty.name()),
        )
    })?;
    if out.iter().any(|x| !x.is_finite()) {
        return Err(Error::format(
            origin,
            format!("tensor {:?} holds NaN or infinite values", t.name),
        ));
    }
    Ok(out)
}

/// An adapter encoded for llama.cpp's format: its metadata and the bytes
/// of every `.lora_a` / `.lora_b` tensor, ready to go into a GGUF writer the
/// caller owns ([`Encoded::add_to`]), e.g. a training checkpoint that adds
/// its own tensors beside the adapter's.
pub struct Encoded {
    architecture: String,
    alpha: f32,
    ty: GgmlType,
    /// Name, ggml dims, bytes.
    tensors: Vec<(String, [u64; 2], Vec<u8>)>,
    path: PathBuf,
}

/// Encodes `lora` with A and B stored as `ty` (F32 or F16, what llama.cpp's
/// converter writes), checking every pair's sizes; `path` names the output
/// in errors.
pub fn encode(lora: &LoraFile, ty: GgmlType, path: &Path) -> Result<Encoded> {
    if !matches!(ty, GgmlType::F32 | GgmlType::F16) {
        return Err(Error::unsupported(
            path,
            format!("adapters are written as F32 or F16, not {}", ty.name()),
        ));
    }
    let mut tensors = Vec::with_capacity(2 * lora.pairs.len());
    for p in &lora.pairs {
        if p.rank == 0 || p.a.len() != p.rank * p.cols || p.b.len() != p.rows * p.rank {
            return Err(Error::format(
                path,
                format!(
                    "{}: A has {} values and B {} for rank {}, {} rows, {} columns",
                    p.base,
                    p.a.len(),
                    p.b.len(),
                    p.rank,
                    p.rows,
                    p.cols
                ),
            ));
        }
        for (name, v, dims) in [
            (format!("{}.lora_a", p.base), &p.a, [p.cols, p.rank]),
            (format!("{}.lora_b", p.base), &p.b, [p.rank, p.rows]),
        ] {
            let len = ty.bytes_for(v.len() as u64).unwrap_or(0) as usize;
            let mut bytes = vec![0u8; len];
            cria_kernels::quantize_row(ty, v, None, &mut bytes)
                .map_err(|e| Error::format(path, format!("{name}: {e}")))?;
            tensors.push((name, dims.map(|d| d as u64), bytes));
        }
    }
    Ok(Encoded {
        architecture: lora.architecture.clone(),
        alpha: lora.alpha,
        ty,
        tensors,
        path: path.to_path_buf(),
    })
}

impl Encoded {
    /// Adds the adapter's metadata (`general.architecture`, `general.type
    /// = adapter`, `adapter.type = lora`, `adapter.lora.alpha`) and tensors
    /// to `w`.
    pub fn add_to<'a>(&'a self, w: &mut cria_gguf::GgufWriter<'a>) -> Result<()> {
        w.add_metadata(
            "general.architecture",
            Value::String(self.architecture.clone()),
        );
        w.add_metadata("general.type", Value::String("adapter".into()));
        w.add_metadata("adapter.type", Value::String("lora".into()));
        w.add_metadata("adapter.lora.alpha", Value::F32(self.alpha));
        for (name, dims, bytes) in &self.tensors {
            w.add_tensor(name, self.ty, dims, bytes)
                .map_err(|source| Error::Gguf {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Writes `lora` in llama.cpp's format with A and B stored as `ty` (see
/// [`encode`]); `path` names the output in errors.
pub fn write_gguf(lora: &LoraFile, ty: GgmlType, out: &mut impl Write, path: &Path) -> Result<()> {
    let encoded = encode(lora, ty, path)?;
    let mut w = cria_gguf::GgufWriter::new();
    encoded.add_to(&mut w)?;
    w.write_to(out).map_err(|source| Error::Gguf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Writes `lora` to the file `path` as [`write_gguf`] does, with
/// `general.name` set, through a temporary file beside it renamed into
/// place, so a crash never leaves half an adapter.
pub fn write_gguf_file(lora: &LoraFile, ty: GgmlType, name: &str, path: &Path) -> Result<()> {
    let encoded = encode(lora, ty, path)?;
    let mut w = cria_gguf::GgufWriter::new();
    encoded.add_to(&mut w)?;
    w.add_metadata("general.name", Value::String(name.into()));
    write_file_atomic(&w, path)
}

/// Writes `w` to `path` through `path.gguf.part`, renamed into place.
pub fn write_file_atomic(w: &cria_gguf::GgufWriter, path: &Path) -> Result<()> {
    let tmp = path.with_extension("gguf.part");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut out = std::io::BufWriter::new(f);
    w.write_to(&mut out).map_err(|source| Error::Gguf {
        path: tmp.clone(),
        source,
    })?;
    out.flush().map_err(io(&tmp))?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LoraFile {
        LoraFile {
            architecture: "llama".into(),
            alpha: 16.0,
            pairs: vec![LoraPair {
                base: "blk.0.attn_q.weight".into(),
                rank: 2,
                rows: 3,
                cols: 4,
                a: (0..8).map(|i| i as f32 * 0.5).collect(),
                b: (0..6).map(|i| 1.0 - i as f32).collect(),
            }],
        }
    }

    fn bytes_of(l: &LoraFile, ty: GgmlType) -> Vec<u8> {
        let mut out = Vec::new();
        write_gguf(l, ty, &mut out, Path::new("t.gguf")).unwrap();
        out
    }

    #[test]
    fn round_trips_in_f32_and_f16() {
        let l = sample();
        for ty in [GgmlType::F32, GgmlType::F16] {
            let f = GgufFile::from_bytes(bytes_of(&l, ty)).unwrap();
            assert_eq!(f.tensor("blk.0.attn_q.weight.lora_a").unwrap().dims, [4, 2]);
            assert_eq!(f.tensor("blk.0.attn_q.weight.lora_b").unwrap().dims, [2, 3]);
            // The values are small integers and halves: exact in F16 too.
            assert_eq!(from_gguf(&f, Path::new("t")).unwrap(), l);
        }
    }

    #[test]
    fn encoded_goes_into_a_caller_writer_beside_other_tensors() {
        let l = sample();
        let e = encode(&l, GgmlType::F32, Path::new("ckpt.gguf")).unwrap();
        let extra = [0u8; 8];
        let mut w = cria_gguf::GgufWriter::new();
        e.add_to(&mut w).unwrap();
        w.add_tensor("train.state", GgmlType::F32, &[2], &extra)
            .unwrap();
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        let f = GgufFile::from_bytes(out).unwrap();
        assert!(f.tensor("train.state").is_some());
        assert_eq!(f.metadata().get_str("general.type").unwrap(), "adapter");
        // The same adapter tensors as write_gguf's, byte for byte.
        let alone = GgufFile::from_bytes(bytes_of(&l, GgmlType::F32)).unwrap();
        for name in ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"] {
            let (a, b) = (f.tensor(name).unwrap(), alone.tensor(name).unwrap());
            assert_eq!(f.tensor_data(a), alone.tensor_data(b));
        }
    }

    #[test]
    fn file_writer_sets_the_name_and_leaves_no_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.gguf");
        write_gguf_file(&sample(), GgmlType::F32, "mine", &p).unwrap();
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.metadata().get_str("general.name").unwrap(), "mine");
        assert_eq!(from_gguf(&f, &p).unwrap(), sample());
        assert!(!p.with_extension("gguf.part").exists());
    }

    #[test]
    fn refuses_a_base_model_and_half_pairs() {
        let mut w = cria_gguf::GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("llama".into()));
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        let e = from_gguf(&GgufFile::from_bytes(out).unwrap(), Path::new("m")).unwrap_err();
        assert!(e.to_string().contains("not a LoRA adapter"), "{e}");

        let mut w = cria_gguf::GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("llama".into()));
        w.add_metadata("general.type", Value::String("adapter".into()));
        w.add_metadata("adapter.type", Value::String("lora".into()));
        let data = [0u8; 32];
        w.add_tensor("blk.0.attn_q.weight.lora_a", GgmlType::F32, &[4, 2], &data)
            .unwrap();
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        let e = from_gguf(&GgufFile::from_bytes(out).unwrap(), Path::new("m")).unwrap_err();
        assert!(e.to_string().contains("must both be present"), "{e}");
    }

    #[test]
    fn refuses_mismatched_ranks() {
        let mut w = cria_gguf::GgufWriter::new();
        w.add_metadata("general.architecture", Value::String("llama".into()));
        w.add_metadata("general.type", Value::String("adapter".into()));
        w.add_metadata("adapter.type", Value::String("lora".into()));
        let data = [0u8; 48];
        w.add_tensor("x.lora_a", GgmlType::F32, &[4, 2], &data[..32])
            .unwrap();
        w.add_tensor("x.lora_b", GgmlType::F32, &[3, 4], &data)
            .unwrap();
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        let e = from_gguf(&GgufFile::from_bytes(out).unwrap(), Path::new("m")).unwrap_err();
        assert!(e.to_string().contains("rank 2"), "{e}");
    }
}
