//! GGUF in, GGUF out: llama-quantize's `llama_model_quantize_impl`.
//!
//! Tensors are visited in llama.cpp's order and written in it; each one is
//! copied as is (same type, or not quantizable), or dequantized to f32 and
//! quantized row by row on the thread pool. Metadata is copied, then
//! `general.quantization_version` and `general.file_type` are set (moved
//! to the end, as gguf's setters do) and, with an importance matrix, the
//! `quantize.imatrix.*` keys llama-quantize adds.

use crate::error::{Error, ErrorKind, Result};
use crate::imatrix::Imatrix;
use crate::mix::Mix;
use crate::rules::{self, ModelInfo, Overrides};
use cria_gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorInfo, Value};
use cria_kernels::{quantize_row, row_bytes, Cpu, ThreadPool};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// ggml's `GGML_QNT_VERSION`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Elements quantized per task (llama-quantize's chunk: 32 x 512).
const CHUNK_ELEMENTS: usize = 32 * 512;

/// Everything `cria quantize` takes besides the file names.
pub struct Params {
    pub mix: Mix,
    pub threads: usize,
    pub overrides: Overrides,
    pub allow_requantize: bool,
    /// The file (for the `quantize.imatrix.file` key) and its contents.
    pub imatrix: Option<(PathBuf, Imatrix)>,
}

/// What happened to one tensor.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Quantized with an importance matrix entry.
    pub weighted: bool,
}

/// The whole run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub tensors: Vec<TensorReport>,
    /// Tensors whose rows did not split into the wanted type's blocks.
    pub fallbacks: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The facts of a model the type rules need, from its metadata.
pub fn model_info(md: &Metadata) -> Result<ModelInfo> {
    let bad = |e: cria_gguf::Error| -> Error {
        ErrorKind::BadModel {
            detail: e.to_string(),
        }
        .into()
    };
    let arch = md.get_str("general.architecture").map_err(bad)?.to_string();
    let n_layer = md.get_u32(&format!("{arch}.block_count")).map_err(bad)?;
    let n_head = md
        .try_u32(&format!("{arch}.attention.head_count"))
        .map_err(bad)?
        .unwrap_or(0);
    let n_head_kv = md
        .try_u32(&format!("{arch}.attention.head_count_kv"))
        .map_err(bad)?
        .unwrap_or(n_head);
    let n_expert = md
        .try_u32(&format!("{arch}.expert_count"))
        .map_err(bad)?
        .unwrap_or(0);
    Ok(ModelInfo {
        arch,
        n_layer,
        n_head,
        n_head_kv,
        n_expert,
    })
}

/// Quantizes `input` to `output`. `progress` sees each tensor as it is done.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    params: &Params,
    mut progress: impl FnMut(&TensorReport),
) -> Result<Report> {
    let file = GgufFile::open(input)?;
    let model = model_info(file.metadata())?;
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    let tensors: Vec<&TensorInfo> = rules::llama_order(&names)
        .into_iter()
        .map(|i| &file.tensors()[i])
        .collect();
    let weights = match &params.imatrix {
        Some((path, m)) => Some(checked_weights(m, path, &tensors)?),
        None => None,
    };
    let (types, fallbacks) = rules::plan(
        &tensors,
        &model,
        params.mix,
        &params.overrides,
        weights.is_some(),
    );
    for (t, &ty) in tensors.iter().zip(&types) {
        if ty != t.ty && !cria_kernels::can_quantize(ty) {
            return Err(ErrorKind::CannotQuantize {
                tensor: t.name.clone(),
                ty: ty.name().into(),
            }
            .into());
        }
        let has_w = weights.as_ref().is_some_and(|w| w.contains_key(&t.name));
        if ty != t.ty && rules::requires_imatrix(&t.name, ty, params.mix) && !has_w {
            return Err(ErrorKind::NeedsImatrix {
                tensor: t.name.clone(),
                ty: ty.name().into(),
            }
            .into());
        }
        if ty != t.ty && is_quantized(t.ty) && !params.allow_requantize {
            return Err(ErrorKind::Requantize {
                tensor: t.name.clone(),
                ty: t.ty.name().into(),
            }
            .into());
        }
    }

    let pool = ThreadPool::new(params.threads.max(1));
    let mut report = Report {
        fallbacks,
        ..Default::default()
    };
    // Quantized tensors are held until the file is written; copied ones
    // stay borrowed from the input's map.
    let mut outputs: Vec<Option<Vec<u8>>> = Vec::with_capacity(tensors.len());
    for (t, &ty) in tensors.iter().zip(&types) {
        let src = file.tensor_data(t);
        let w = weights.as_ref().and_then(|w| w.get(&t.name));
        let out = if ty == t.ty {
            None
        } else {
            Some(convert(t, src, ty, w.map(|v| v.as_slice()), &pool)?)
        };
        let r = TensorReport {
            name: t.name.clone(),
            dims: t.dims.clone(),
            from: t.ty,
            to: ty,
            bytes_in: src.len() as u64,
            bytes_out: out.as_ref().map_or(src.len(), Vec::len) as u64,
            weighted: out.is_some() && w.is_some(),
        };
        report.bytes_in += r.bytes_in;
        report.bytes_out += r.bytes_out;
        progress(&r);
        report.tensors.push(r);
        outputs.push(out);
    }

    let mut writer = GgufWriter::new();
    const MOVED: [&str; 5] = [
        "general.quantization_version",
        "general.file_type",
        "split.no",
        "split.count",
        "split.tensors.count",
    ];
    for (k, v) in file.metadata().iter() {
        if !MOVED.contains(&k) {
            writer.add_metadata(k, v.clone());
        }
    }
    writer.add_metadata(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    writer.add_metadata("general.file_type", Value::U32(params.mix.ftype()));
    if let Some((path, m)) = &params.imatrix {
        // llama-quantize keeps at most 127 bytes of these strings.
        let clip = |s: &str| -> String {
            let mut end = s.len().min(127);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        writer.add_metadata(
            "quantize.imatrix.file",
            Value::String(clip(&path.display().to_string())),
        );
        if let Some(d) = m.datasets.first() {
            writer.add_metadata("quantize.imatrix.dataset", Value::String(clip(d)));
        }
        writer.add_metadata(
            "quantize.imatrix.entries_count",
            Value::U32(m.entries.len() as u32),
        );
        if m.chunk_count > 0 {
            writer.add_metadata("quantize.imatrix.chunks_count", Value::U32(m.chunk_count));
        }
    }
    for ((t, &ty), out) in tensors.iter().zip(&types).zip(&outputs) {
        let data = match out {
            Some(v) => v.as_slice(),
            None => file.tensor_data(t),
        };
        writer.add_tensor(&t.name, ty, &t.dims, data)?;
    }
    let tmp = output.with_extension("gguf.partial");
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut bw = std::io::BufWriter::with_capacity(1 << 20, f);
    writer.write_to(&mut bw)?;
    bw.into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    std::fs::rename(&tmp, output).map_err(|e| Error::io(output, e))?;
    Ok(report)
}

fn is_quantized(t: GgmlType) -> bool {
    !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// The importance of each tensor's columns, checked against the model as
/// llama-quantize checks it (finite values; the size of each entry is the
/// tensor's columns times its experts), plus: an imatrix that matches no
/// tensor at all is for another model.
fn checked_weights(
    m: &Imatrix,
    path: &Path,
    tensors: &[&TensorInfo],
) -> Result<BTreeMap<String, Vec<f32>>> {
    let p = path.display().to_string();
    let w = m.weights();
    for (name, v) in &w {
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(Error::imatrix(
                &p,
                format!("{name} holds a non-finite value {x}"),
            ));
        }
    }
    let mut matched = 0;
    for t in tensors {
        let Some(v) = w.get(&t.name) else { continue };
        let want = t.dims[0] * t.dims.get(2).copied().unwrap_or(1);
        if v.len() as u64 != want {
            if t.name == "token_embd.weight" || t.name == "per_layer_token_embd.weight" {
                continue;
            }
            return Err(Error::imatrix(
                &p,
                format!(
                    "{} has {} values but tensor {} needs {want}: is it for another model?",
                    t.name,
                    v.len(),
                    t.name
                ),
            ));
        }
        matched += 1;
    }
    if matched == 0 {
        return Err(Error::imatrix(
            &p,
            format!(
                "none of its {} entries names a tensor of this model: it is for another model",
                w.len()
            ),
        ));
    }
    Ok(w)
}

/// One tensor to `ty`: dequantize (if needed) and quantize, rows spread over
/// the pool. `w`: importance per column, per expert (`dims[2]` blocks).
fn convert(
    t: &TensorInfo,
    src: &[u8],
    ty: GgmlType,
    w: Option<&[f32]>,
    pool: &ThreadPool,
) -> Result<Vec<u8>> {
    let cols = t.dims[0] as usize;
    let n = t.n_elements as usize;
    let rows_per_expert = t.dims.get(1).map_or(1, |&d| d as usize);
    // Weights only where they are the right size (token_embd may not be).
    let w = w.filter(|w| w.len() == cols * t.dims.get(2).map_or(1, |&d| d as usize));
    let src_row = row_bytes(t.ty, cols)?;
    let rows_per_task = CHUNK_ELEMENTS.div_ceil(cols).max(1);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        if let Ok(mut slot) = first_err.lock() {
            slot.get_or_insert(e);
        }
    };

    let owned;
    let f32s: &[f32] = if t.ty == GgmlType::F32 {
        owned = src
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<f32>>();
        &owned
    } else {
        let mut buf = vec![0f32; n];
        pool.for_each_chunk_mut(&mut buf, rows_per_task * cols, |i, chunk| {
            let r0 = i * rows_per_task;
            let nr = chunk.len() / cols;
            let s = &src[r0 * src_row..(r0 + nr) * src_row];
            // The SIMD dequantizer where there is one (F16, BF16, ...):
            // the same bits as the reference.
            if let Err(e) = Cpu::get().dequantize_row(t.ty, s, chunk) {
                fail(e.into());
            }
        });
        owned = buf;
        &owned
    };

    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    quantize_rows(f32s, cols, ty, w, rows_per_expert, pool)
}

/// Quantizes `x` ((rows, cols) f32) to `ty` row by row on `pool`, with the
/// kernels' reference quantizers; `w`: importance per column, one block of
/// `cols` per `rows_per_expert` rows (or `None`). What `quantize_file`
/// does to each tensor that changes type, for other writers of quantized
/// tensors (`cria merge`).
pub fn quantize_rows(
    x: &[f32],
    cols: usize,
    ty: GgmlType,
    w: Option<&[f32]>,
    rows_per_expert: usize,
    pool: &ThreadPool,
) -> Result<Vec<u8>> {
    let f32s = x;
    let rows = x.len() / cols.max(1);
    let dst_row = row_bytes(ty, cols)?;
    let rows_per_task = CHUNK_ELEMENTS.div_ceil(cols).max(1);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        if let Ok(mut slot) = first_err.lock() {
            slot.get_or_insert(e);
        }
    };
    let mut out = vec![0u8; rows * dst_row];
    pool.for_each_chunk_mut(&mut out, rows_per_task * dst_row, |i, chunk| {
        let r0 = i * rows_per_task;
        for (k, y) in chunk.chunks_exact_mut(dst_row).enumerate() {
            let r = r0 + k;
            let x = &f32s[r * cols..(r + 1) * cols];
            let wr = w.map(|w| {
                let e = r / rows_per_expert.max(1);
                &w[e * cols..(e + 1) * cols]
            });
            if let Err(e) = quantize_row(ty, x, wr, y) {
                fail(e.into());
                return;
            }
        }
    });
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(out)
}
