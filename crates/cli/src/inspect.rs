//! `cria inspect`: what is inside a GGUF file, for people and for scripts.

use anyhow::Result;
use cria_gguf::{Array, GgufFile, Metadata, Value};
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;

/// Hyperparameter keys shown, as (label, key suffix after `{arch}.`).
const HYPER: &[(&str, &str)] = &[
    ("layers", "block_count"),
    ("embedding", "embedding_length"),
    ("feed_forward", "feed_forward_length"),
    ("heads", "attention.head_count"),
    ("kv_heads", "attention.head_count_kv"),
    ("head_dim", "attention.key_length"),
    ("context_length", "context_length"),
    ("rope_dim", "rope.dimension_count"),
    ("rope_freq_base", "rope.freq_base"),
    ("rope_scaling", "rope.scaling.type"),
    ("rope_scaling_factor", "rope.scaling.factor"),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ("vocab_size", "vocab_size"),
];

const SPECIAL: &[(&str, &str)] = &[
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("eot", "tokenizer.ggml.eot_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
];

pub fn run(path: &Path, json_out: bool) -> Result<()> {
    let f = cria_import::open(path)?;
    let report = build(path, &f);
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn scalar_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        // Through the shortest decimal of the f32, so 1e-5 does not print as 9.99999974e-6.
        Value::F32(x) => x
            .to_string()
            .parse::<f64>()
            .map_or(Json::Null, |d| json!(d)),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => {
            json!({"type": "array", "element_type": a.element_type().name(), "len": a.len()})
        }
    }
}

fn build(path: &Path, f: &GgufFile) -> Json {
    let m = f.metadata();
    let arch = m
        .try_str("general.architecture")
        .ok()
        .flatten()
        .unwrap_or("unknown");
    let mut hyper = Map::new();
    for (label, suffix) in HYPER {
        if let Some(v) = m.get(&format!("{arch}.{suffix}")) {
            hyper.insert(label.to_string(), scalar_json(v));
        }
    }
    let n_params: u64 = f.tensors().iter().map(|t| t.n_elements).sum();
    let tensor_bytes: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in f.tensors() {
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    let tensors: Vec<Json> = f
        .tensors()
        .iter()
        .map(|t| json!({"name": t.name, "type": t.ty.name(), "shape": t.dims, "bytes": t.n_bytes}))
        .collect();
    let metadata: Map<String, Json> = m
        .iter()
        .map(|(k, v)| (k.to_string(), scalar_json(v)))
        .collect();
    json!({
        "file": path.display().to_string(),
        "gguf_version": f.version(),
        "architecture": arch,
        "name": m.try_str("general.name").ok().flatten(),
        "file_type": m.try_u32("general.file_type").ok().flatten(),
        "hyperparameters": hyper,
        "tokenizer": tokenizer_summary(m),
        "tensors": tensors,
        "tensor_types": by_type.iter().map(|(k, (n, b))| json!({"type": k, "count": n, "bytes": b})).collect::<Vec<_>>(),
        "totals": {
            "tensor_count": f.tensors().len(),
            "metadata_count": m.len(),
            "parameters": n_params,
            "tensor_bytes": tensor_bytes,
            "file_bytes": f.file_size(),
            "bits_per_weight": if n_params > 0 { tensor_bytes as f64 * 8.0 / n_params as f64 } else { 0.0 },
        },
        "metadata": metadata,
    })
}

fn tokenizer_summary(m: &Metadata) -> Json {
    let tokens = match m.get("tokenizer.ggml.tokens") {
        Some(Value::Array(Array::String(t))) => Some(t.as_slice()),
        _ => None,
    };
    let mut special = Map::new();
    for (label, key) in SPECIAL {
        if let Ok(Some(id)) = m.try_u32(key) {
            let text = tokens.and_then(|t| t.get(id as usize));
            special.insert(label.to_string(), json!({"id": id, "text": text}));
        }
    }
    json!({
        "model": m.try_str("tokenizer.ggml.model").ok().flatten(),
        "pre": m.try_str("tokenizer.ggml.pre").ok().flatten(),
        "vocab_size": tokens.map(|t| t.len()),
        "merges": m.get_array("tokenizer.ggml.merges").ok().map(|a| a.len()),
        "add_bos": m.try_bool("tokenizer.ggml.add_bos_token").ok().flatten(),
        "add_eos": m.try_bool("tokenizer.ggml.add_eos_token").ok().flatten(),
        "special": special,
        "chat_template": m.get("tokenizer.chat_template").is_some(),
    })
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{x:.2} {}", UNITS[u])
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.2} K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn show(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        v => v.to_string(),
    }
}

fn render(r: &Json) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let t = &r["totals"];
    let _ = writeln!(o, "file          {}", show(&r["file"]));
    let _ = writeln!(o, "format        GGUF v{}", r["gguf_version"]);
    let _ = writeln!(o, "architecture  {}", show(&r["architecture"]));
    let _ = writeln!(o, "name          {}", show(&r["name"]));
    let _ = writeln!(
        o,
        "size          {} in {} tensors, {} parameters, {:.2} bits per weight",
        human_bytes(t["file_bytes"].as_u64().unwrap_or(0)),
        t["tensor_count"],
        human_count(t["parameters"].as_u64().unwrap_or(0)),
        t["bits_per_weight"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(o, "metadata      {} keys", t["metadata_count"]);

    if let Some(h) = r["hyperparameters"].as_object().filter(|h| !h.is_empty()) {
        let _ = writeln!(o, "\nhyperparameters");
        for (k, v) in h {
            let _ = writeln!(o, "  {k:<20} {}", show(v));
        }
    }

    let tk = &r["tokenizer"];
    if !tk["model"].is_null() {
        let _ = writeln!(o, "\ntokenizer");
        let _ = writeln!(o, "  {:<20} {}", "model", show(&tk["model"]));
        let _ = writeln!(o, "  {:<20} {}", "pre-tokenizer", show(&tk["pre"]));
        let _ = writeln!(o, "  {:<20} {}", "vocab size", show(&tk["vocab_size"]));
        if !tk["merges"].is_null() {
            let _ = writeln!(o, "  {:<20} {}", "merges", show(&tk["merges"]));
        }
        let _ = writeln!(
            o,
            "  {:<20} {} / {}",
            "add bos / eos",
            show(&tk["add_bos"]),
            show(&tk["add_eos"])
        );
        if let Some(sp) = tk["special"].as_object() {
            for (k, v) in sp {
                let _ = writeln!(
                    o,
                    "  {:<20} {} {}",
                    format!("{k} token"),
                    v["id"],
                    show(&v["text"])
                );
            }
        }
        let chat = if tk["chat_template"].as_bool() == Some(true) {
            "present"
        } else {
            "absent"
        };
        let _ = writeln!(o, "  {:<20} {chat}", "chat template");
    }

    if let Some(ts) = r["tensors"].as_array().filter(|t| !t.is_empty()) {
        let name_w = ts
            .iter()
            .filter_map(|t| t["name"].as_str())
            .map(str::len)
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(o, "\ntensors");
        let _ = writeln!(
            o,
            "  {:<name_w$}  {:<6}  {:<22}  {:>12}",
            "name", "type", "shape", "bytes"
        );
        for t in ts {
            let shape: Vec<String> = t["shape"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d.to_string())
                .collect();
            let _ = writeln!(
                o,
                "  {:<name_w$}  {:<6}  {:<22}  {:>12}",
                show(&t["name"]),
                show(&t["type"]),
                shape.join(" x "),
                t["bytes"]
            );
        }
        let _ = writeln!(o, "\nby type");
        for ty in r["tensor_types"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {:<6}  {:>4} tensors  {:>12}",
                show(&ty["type"]),
                ty["count"],
                human_bytes(ty["bytes"].as_u64().unwrap_or(0))
            );
        }
    }
    let _ = writeln!(
        o,
        "\ntotal         {} tensors, {} parameters, {} of tensor data",
        t["tensor_count"],
        human_count(t["parameters"].as_u64().unwrap_or(0)),
        human_bytes(t["tensor_bytes"].as_u64().unwrap_or(0))
    );
    o
}
