//! Test fixtures made at test time from the cached default model (no large
//! committed files): a Hugging Face folder (F32 safetensors with q/k in
//! Hugging Face's rotate-half order, config.json, tokenizer.json), a Meta
//! folder (two torch.save zip shards written by a tiny pickle writer,
//! params.json, tiktoken tokenizer.model), and torch-style pickles.
#![allow(dead_code)]

use cria_gguf::{GgufFile, Value};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The default model (SmolLM2-135M-Instruct Q4_1), as `cria pull` caches
/// it; None (and the test says so) when it is not there.
pub fn default_model() -> Option<PathBuf> {
    let dir = std::env::var_os("CRIA_MODELS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cria/models"))
        })?;
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    p.is_file().then_some(p)
}

/// Every tensor of `f` as (name, torch shape, f32 values).
pub fn dequantized(f: &GgufFile) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    f.tensors()
        .iter()
        .map(|t| {
            let mut v = vec![0f32; t.n_elements as usize];
            cria_kernels::dequantize_row(t.ty, f.tensor_data(t), &mut v).unwrap();
            let shape = t.dims.iter().rev().map(|&d| d as usize).collect();
            (t.name.clone(), shape, v)
        })
        .collect()
}

/// GGUF's interleaved-pair rows into Hugging Face's rotate-half order
/// (what transformers' checkpoints hold): HF row h*hd + t*hd/2 + j is
/// GGUF row h*hd + 2j + t.
pub fn to_hf_order(v: &[f32], rows: usize, n_head: usize) -> Vec<f32> {
    let cols = v.len() / rows;
    let hd = rows / n_head;
    let mut out = vec![0f32; v.len()];
    for h in 0..n_head {
        for j in 0..hd / 2 {
            for t in 0..2 {
                let hf = h * hd + t * hd / 2 + j;
                let gg = h * hd + 2 * j + t;
                out[hf * cols..(hf + 1) * cols].copy_from_slice(&v[gg * cols..(gg + 1) * cols]);
            }
        }
    }
    out
}

/// Writes a safetensors file of F32 tensors.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    write_safetensors_as(path, tensors, "F32");
}

/// Writes a safetensors file with every tensor stored as `dtype` ("F32",
/// "F16" or "BF16", converted from the f32 values as ggml converts them).
pub fn write_safetensors_as(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: &str) {
    let size = if dtype == "F32" { 4 } else { 2 };
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (n, s, v) in tensors {
        header.insert(
            n.clone(),
            json!({"dtype": dtype, "shape": s, "data_offsets": [off, off + v.len() * size]}),
        );
        off += v.len() * size;
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    let ty = match dtype {
        "F32" => cria_gguf::GgmlType::F32,
        "F16" => cria_gguf::GgmlType::F16,
        "BF16" => cria_gguf::GgmlType::BF16,
        d => panic!("write_safetensors_as: no dtype {d}"),
    };
    for (_, _, v) in tensors {
        let mut bytes = vec![0u8; v.len() * size];
        cria_kernels::quantize_row(ty, v, None, &mut bytes).unwrap();
        f.write_all(&bytes).unwrap();
    }
}

fn hf_name(gguf: &str) -> String {
    match gguf {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.").unwrap();
    let (i, rest) = rest.split_once('.').unwrap();
    let s = match rest {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        o => panic!("{o}"),
    };
    format!("model.layers.{i}.{s}")
}

/// A Hugging Face folder from a GGUF file: weights dequantized to F32 in
/// two shards, config.json, tokenizer files from its `tokenizer.*`.
pub fn write_hf_folder(src: &GgufFile, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let md = src.metadata();
    let n_head = md.get_u32("llama.attention.head_count").unwrap() as usize;
    let n_kv = md.get_u32("llama.attention.head_count_kv").unwrap() as usize;
    let mut all = dequantized(src);
    for (name, shape, v) in &mut all {
        if name.ends_with("attn_q.weight") {
            *v = to_hf_order(v, shape[0], n_head);
        } else if name.ends_with("attn_k.weight") {
            *v = to_hf_order(v, shape[0], n_kv);
        }
        *name = hf_name(name);
    }
    let half = all.len() / 2;
    let (a, b) = all.split_at(half);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [a, b].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        write_safetensors(&dir.join(&file), part);
        for (n, _, _) in part.iter() {
            weight_map.insert(n.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let u = |k: &str| md.get_u32(&format!("llama.{k}")).unwrap();
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": u("embedding_length"),
        "intermediate_size": u("feed_forward_length"),
        "num_hidden_layers": u("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "max_position_embeddings": u("context_length"),
        "rms_norm_eps": md.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        "rope_theta": md.get_f32("llama.rope.freq_base").unwrap(),
        "vocab_size": md.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        "tie_word_embeddings": src.tensor("output.weight").is_none(),
        "torch_dtype": "float32",
        "bos_token_id": md.get_u32("tokenizer.ggml.bos_token_id").unwrap(),
        "eos_token_id": md.get_u32("tokenizer.ggml.eos_token_id").unwrap(),
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    write_hf_tokenizer(src, dir);
}

/// tokenizer.json (byte-level BPE, SmolLM's Digits + ByteLevel
/// pre-tokenizer, merges as pairs) and tokenizer_config.json.
pub fn write_hf_tokenizer(src: &GgufFile, dir: &Path) {
    let md = src.metadata();
    let tokens = md.get_str_array("tokenizer.ggml.tokens").unwrap();
    let types = md.get_i32_array("tokenizer.ggml.token_type").unwrap();
    let merges = md.get_str_array("tokenizer.ggml.merges").unwrap();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), json!(i));
        if types[i] == 3 {
            added.push(
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}),
            );
        }
    }
    let merges: Vec<_> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').unwrap();
            json!([a, b])
        })
        .collect();
    let tj = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    });
    std::fs::write(dir.join("tokenizer.json"), tj.to_string()).unwrap();
    let name = |k: &str| md.try_u32(k).unwrap().map(|i| tokens[i as usize].clone());
    let mut cfg = json!({
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": name("tokenizer.ggml.bos_token_id"),
        "eos_token": name("tokenizer.ggml.eos_token_id"),
        "unk_token": name("tokenizer.ggml.unknown_token_id"),
        "pad_token": name("tokenizer.ggml.padding_token_id"),
    });
    if let Ok(t) = md.get_str("tokenizer.chat_template") {
        cfg["chat_template"] = json!(t);
    }
    if let Ok(b) = md.get_bool("tokenizer.ggml.add_bos_token") {
        cfg["add_bos_token"] = json!(b);
    }
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
}

/// A minimal pickle writer for `torch.save`-style state dicts: enough to
/// write fixtures the reader must accept (and hostile variants of them).
pub mod pk {
    pub fn global(out: &mut Vec<u8>, module: &str, name: &str) {
        out.push(b'c');
        out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    pub fn str(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    pub fn int(out: &mut Vec<u8>, v: i64) {
        out.push(0x8a);
        out.push(8);
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn ints(out: &mut Vec<u8>, v: &[usize]) {
        out.push(b'(');
        for &x in v {
            int(out, x as i64);
        }
        out.push(b't');
    }
    /// One `name: tensor` pair: a view of `shape` at `offset` in storage
    /// `key` of `numel` elements of `storage_type` (e.g. FloatStorage).
    pub fn tensor(
        out: &mut Vec<u8>,
        name: &str,
        storage_type: &str,
        key: &str,
        numel: usize,
        offset: usize,
        shape: &[usize],
    ) {
        str(out, name);
        global(out, "torch._utils", "_rebuild_tensor_v2");
        out.push(b'(');
        out.push(b'(');
        str(out, "storage");
        global(out, "torch", storage_type);
        str(out, key);
        str(out, "cpu");
        int(out, numel as i64);
        out.push(b't');
        out.push(b'Q');
        int(out, offset as i64);
        ints(out, shape);
        let mut stride = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        ints(out, &stride);
        out.push(0x89);
        global(out, "collections", "OrderedDict");
        out.push(b')');
        out.push(b'R');
        out.push(b't');
        out.push(b'R');
    }
    /// A whole state dict pickle from (name, storage key, numel, shape).
    pub fn state_dict(items: &[(String, String, usize, Vec<usize>)]) -> Vec<u8> {
        let mut out = vec![0x80, 2];
        global(&mut out, "collections", "OrderedDict");
        out.push(b')');
        out.push(b'R');
        out.push(b'(');
        for (n, k, numel, shape) in items {
            tensor(&mut out, n, "FloatStorage", k, *numel, 0, shape);
        }
        out.push(b'u');
        out.push(b'.');
        out
    }
}

/// A torch.save-style zip: `archive/data.pkl` and `archive/data/KEY`
/// entries stored uncompressed.
pub fn write_pth(path: &Path, pickle: &[u8], storages: &[(String, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(std::io::BufWriter::new(f));
    let opt = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    z.start_file("archive/data.pkl", opt).unwrap();
    z.write_all(pickle).unwrap();
    for (k, data) in storages {
        z.start_file(format!("archive/data/{k}"), opt).unwrap();
        z.write_all(data).unwrap();
    }
    z.start_file("archive/version", opt).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Splits a torch-order 2-D tensor into `n` parts along `axis`.
fn split(v: &[f32], shape: &[usize], axis: usize, n: usize) -> Vec<(Vec<usize>, Vec<f32>)> {
    if shape.len() == 1 {
        return (0..n).map(|_| (shape.to_vec(), v.to_vec())).collect();
    }
    let (rows, cols) = (shape[0], shape[1]);
    (0..n)
        .map(|p| {
            if axis == 0 {
                let r = rows / n;
                (vec![r, cols], v[p * r * cols..(p + 1) * r * cols].to_vec())
            } else {
                let c = cols / n;
                let mut out = Vec::with_capacity(rows * c);
                for row in 0..rows {
                    out.extend_from_slice(&v[row * cols + p * c..row * cols + (p + 1) * c]);
                }
                (vec![rows, c], out)
            }
        })
        .collect()
}

/// A Meta folder from a GGUF file: two model-parallel shards split the way
/// Meta's are, params.json, and a tiktoken tokenizer.model of the first
/// n_vocab - 256 tokens (Meta's 256 specials complete it; the logits test
/// feeds ids, so the vocabulary's text does not matter).
pub fn write_meta_folder(src: &GgufFile, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let md = src.metadata();
    let meta_name = |g: &str| -> (String, usize) {
        match g {
            "token_embd.weight" => return ("tok_embeddings.weight".into(), 1),
            "output_norm.weight" => return ("norm.weight".into(), 0),
            "output.weight" => return ("output.weight".into(), 0),
            _ => {}
        }
        let rest = g.strip_prefix("blk.").unwrap();
        let (i, rest) = rest.split_once('.').unwrap();
        let (s, axis) = match rest {
            "attn_norm.weight" => ("attention_norm.weight", 0),
            "ffn_norm.weight" => ("ffn_norm.weight", 0),
            "attn_q.weight" => ("attention.wq.weight", 0),
            "attn_k.weight" => ("attention.wk.weight", 0),
            "attn_v.weight" => ("attention.wv.weight", 0),
            "attn_output.weight" => ("attention.wo.weight", 1),
            "ffn_gate.weight" => ("feed_forward.w1.weight", 0),
            "ffn_up.weight" => ("feed_forward.w3.weight", 0),
            "ffn_down.weight" => ("feed_forward.w2.weight", 1),
            o => panic!("{o}"),
        };
        (format!("layers.{i}.{s}"), axis)
    };
    let all = dequantized(src);
    for shard in 0..2 {
        let mut items = Vec::new();
        let mut storages = Vec::new();
        for (k, (name, shape, v)) in all.iter().enumerate() {
            let (mname, axis) = meta_name(name);
            let (s, part) = split(v, shape, axis, 2).swap_remove(shard);
            items.push((mname, k.to_string(), part.len(), s));
            storages.push((k.to_string(), f32_bytes(&part)));
        }
        write_pth(
            &dir.join(format!("consolidated.{shard:02}.pth")),
            &pk::state_dict(&items),
            &storages,
        );
    }
    let u = |k: &str| md.get_u32(&format!("llama.{k}")).unwrap();
    let params = json!({
        "dim": u("embedding_length"),
        "n_layers": u("block_count"),
        "n_heads": u("attention.head_count"),
        "n_kv_heads": u("attention.head_count_kv"),
        "vocab_size": md.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        "multiple_of": 256,
        "norm_eps": md.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        "rope_theta": md.get_f32("llama.rope.freq_base").unwrap(),
        "max_seq_len": u("context_length"),
    });
    std::fs::write(dir.join("params.json"), params.to_string()).unwrap();
    let tokens = md.get_str_array("tokenizer.ggml.tokens").unwrap();
    let n = tokens.len() - 256;
    std::fs::write(dir.join("tokenizer.model"), tiktoken_text(&tokens[..n])).unwrap();
}

/// GGUF byte-level token texts back to bytes, as tiktoken lines.
pub fn tiktoken_text(tokens: &[String]) -> String {
    use base64::Engine;
    let mut inv = std::collections::HashMap::new();
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
        inv.insert(c, b as u8);
    }
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        // Control tokens of the source vocabulary are not bytes: stand-ins.
        let bytes: Vec<u8> = match t
            .chars()
            .map(|c| inv.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
        {
            Some(b) if !b.is_empty() => b,
            _ => format!("<special {i}>").into_bytes(),
        };
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(&bytes));
        out.push_str(&format!(" {i}\n"));
    }
    out
}

pub fn metadata_value<'a>(f: &'a GgufFile, key: &str) -> Option<&'a Value> {
    f.metadata().get(key)
}

/// make_families.py's `synth_values`: uniform [-1, 1) from splitmix64 of
/// (fnv1a64(name) + k + 1), times `scale`, plus `offset`, in f32, so the
/// tests write the same weights transformers ran without committing them.
pub fn synth_values(name: &str, n: usize, scale: f32, offset: f32) -> Vec<f32> {
    let mut h: u64 = 0xCBF29CE484222325;
    for &b in name.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001B3);
    }
    (0..n as u64)
        .map(|k| {
            let mut z = h.wrapping_add((k + 1).wrapping_mul(0x9E3779B97F4A7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 * (2.0 / (1u64 << 24) as f32) - 1.0;
            let v = u * scale;
            if offset != 0.0 {
                v + offset
            } else {
                v
            }
        })
        .collect()
}

/// tests/fixtures/import/families/NAME as a complete Hugging Face folder
/// in `dir`: the committed files, the shared tokenizer.json, and
/// model.safetensors written from weights.json.
pub fn write_family_folder(name: &str, dir: &Path) {
    let root = families_dir();
    let src = root.join(name);
    std::fs::create_dir_all(dir).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    }
    let w = family_weights_json(name);
    let kind = w["tokenizer"].as_str().unwrap();
    std::fs::copy(
        root.join("tokenizers").join(format!("{kind}.json")),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    write_safetensors(&dir.join("model.safetensors"), &family_weights(name));
}

fn family_weights_json(name: &str) -> serde_json::Value {
    let path = families_dir().join(name).join("weights.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The weights of family fixture NAME (Hugging Face names, torch shapes,
/// f32 values), as its model.safetensors holds them.
pub fn family_weights(name: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    family_weights_json(name)["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap().to_string();
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let n = shape.iter().product();
            let (scale, offset) = (t["scale"].as_f64().unwrap(), t["offset"].as_f64().unwrap());
            let v = synth_values(&name, n, scale as f32, offset as f32);
            (name, shape, v)
        })
        .collect()
}

pub fn families_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/import/families")
}
