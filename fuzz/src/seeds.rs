//! Writes seed inputs for the fuzz targets into `corpus/<target>/`: random
//! bytes almost never make a whole model or vocabulary, so each target
//! starts from small valid ones and mutates them.

use cria_gguf::{Array, GgmlType, GgufWriter, Value};
use std::path::Path;

fn write(dir: &str, name: &str, bytes: &[u8]) {
    let d = Path::new("corpus").join(dir);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

/// Bytes of `n` elements of `ty` (a repeating pattern; f16 scales of 1/64).
fn data(ty: GgmlType, n: u64) -> Vec<u8> {
    let len = ty.bytes_for(n).unwrap() as usize;
    let block = ty.block_bytes() as usize;
    (0..len)
        .map(|i| match (ty, i % block) {
            (GgmlType::F32, j) if j % 4 == 3 => 0x3c,
            (GgmlType::F32, _) => 0,
            (GgmlType::Q8_0, 0) => 0x00,
            (GgmlType::Q8_0, 1) => 0x24,
            _ => (i * 7 % 13) as u8,
        })
        .collect()
}

fn tiny_model(ty: GgmlType, tied: bool) -> Vec<u8> {
    let (dim, ffn, vocab, kv) = (32u64, 64u64, 16u64, 16u64);
    let mut t: Vec<(String, Vec<u64>, GgmlType)> = vec![
        ("token_embd.weight".into(), vec![dim, vocab], ty),
        ("output_norm.weight".into(), vec![dim], GgmlType::F32),
    ];
    if !tied {
        t.push(("output.weight".into(), vec![dim, vocab], ty));
    }
    for l in 0..2 {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        t.extend([
            (p("attn_norm"), vec![dim], GgmlType::F32),
            (p("attn_q"), vec![dim, dim], ty),
            (p("attn_k"), vec![dim, kv], ty),
            (p("attn_v"), vec![dim, kv], ty),
            (p("attn_output"), vec![dim, dim], ty),
            (p("ffn_norm"), vec![dim], GgmlType::F32),
            (p("ffn_gate"), vec![dim, ffn], ty),
            (p("ffn_up"), vec![dim, ffn], ty),
            (p("ffn_down"), vec![ffn, dim], ty),
        ]);
    }
    let bytes: Vec<Vec<u8>> = t.iter().map(|(_, d, ty)| data(*ty, d.iter().product())).collect();
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    for (k, v) in [
        ("llama.block_count", 2),
        ("llama.embedding_length", dim as u32),
        ("llama.feed_forward_length", ffn as u32),
        ("llama.attention.head_count", 4),
        ("llama.attention.head_count_kv", 2),
        ("llama.context_length", 64),
    ] {
        w.add_metadata(k, Value::U32(v));
    }
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w.add_metadata("llama.rope.freq_base", Value::F32(10000.0));
    for ((name, dims, ty), b) in t.iter().zip(&bytes) {
        w.add_tensor(name, *ty, dims, b).unwrap();
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

fn vocab(model: &str, pre: &str, tokens: Vec<String>, merges: Option<Vec<String>>) -> Vec<u8> {
    let n = tokens.len();
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.model", Value::String(model.into()));
    w.add_metadata("tokenizer.ggml.pre", Value::String(pre.into()));
    let types: Vec<i32> = tokens
        .iter()
        .map(|t| match t.as_str() {
            "<unk>" => 2,
            "<s>" | "</s>" | "<|im_start|>" | "<|im_end|>" => 3,
            t if t.starts_with("<0x") => 6,
            _ => 1,
        })
        .collect();
    let scores: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
    w.add_metadata("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    w.add_metadata("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    w.add_metadata("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    if let Some(m) = merges {
        w.add_metadata("tokenizer.ggml.merges", Value::Array(Array::String(m)));
    }
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

fn with_text(mut gguf: Vec<u8>, text: &str) -> Vec<u8> {
    gguf.extend_from_slice(text.as_bytes());
    gguf.push(text.len() as u8);
    gguf
}

fn main() {
    write("model_load", "tiny-f32-tied", &tiny_model(GgmlType::F32, true));
    write("model_load", "tiny-q8_0", &tiny_model(GgmlType::Q8_0, false));

    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut spm = s(&["<unk>", "<s>", "</s>", "\u{2581}", "\u{2581}the", "th", "he", "e", "t", "h"]);
    spm.extend((0..=255).map(|b| format!("<0x{b:02X}>")));
    let spm = vocab("llama", "default", spm, None);
    write("tokenizer_load", "spm", &with_text(spm, "the theth he \u{e9}"));
    let bpe_tokens = s(&["a", "b", "c", "\u{120}", "ab", "\u{120}a", "abc", "<|im_start|>", "<|im_end|>"]);
    let merges = Some(s(&["a b", "\u{120} a", "ab c"]));
    for pre in ["gpt-2", "llama-bpe", "smollm"] {
        let b = vocab("gpt2", pre, bpe_tokens.clone(), merges.clone());
        write("tokenizer_load", &format!("bpe-{pre}"), &with_text(b, "abc a<|im_start|>b 12345"));
    }

    let templates = [
        ("chatml", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'].strip() + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
        ("llama3", "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"),
        ("mistral", "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}"),
        ("macros", "{% macro m(x, n) %}{% if n > 0 %}{{ m(x ~ x, n - 1) }}{% else %}{{ x }}{% endif %}{% endmacro %}{% set ns = namespace(s='') %}{% for i in range(3) %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ m(ns.s, 3) }}{{ messages|tojson }}{{ strftime_now('%Y') }}"),
    ];
    for (name, t) in templates {
        write("chat_template", name, t.as_bytes());
    }
    write("gguf_parse", "tiny-q8_0", &tiny_model(GgmlType::Q8_0, false));

    // prefix_cache_entry: whole entries of every KV type, 2 layers x 64.
    for t in cria_model::KvType::ALL {
        use cria_prefix_cache::entry::{encode, Meta};
        let kv = cria_model::KvTypes::from(t);
        let meta = Meta { ident: [1; 32], parent: [2; 32], start: 16, n_layers: 2, kv_dim: 64, kv };
        let tokens: Vec<u32> = (0..20).collect();
        let n = cria_model::KvCache::range_bytes(2, 64, kv, 16, 36).expect("size") as usize;
        let payload: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
        // The first byte: 0 (as is) and 1 (checksums recomputed).
        for mode in [0u8, 1] {
            let mut seed = vec![mode];
            seed.extend(encode(&meta, &tokens, &payload).1);
            write("prefix_cache_entry", &format!("{}-{mode}", t.name()), &seed);
        }
    }
    // lora_load: a rank-2 adapter of the tiny model's q and down.
    let pair = |base: &str, rows: usize, cols: usize| cria_lora::LoraPair {
        base: base.into(),
        rank: 2,
        rows,
        cols,
        a: (0..2 * cols).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect(),
        b: (0..rows * 2).map(|i| (i % 3) as f32 * 0.5 - 0.5).collect(),
    };
    let lora = cria_lora::LoraFile {
        architecture: "llama".into(),
        alpha: 4.0,
        pairs: vec![pair("blk.0.attn_q.weight", 32, 32), pair("blk.1.ffn_down.weight", 32, 64)],
    };
    let mut bytes = Vec::new();
    let out = std::path::Path::new("seed");
    cria_lora::write_gguf(&lora, GgmlType::F16, &mut bytes, out).unwrap();
    write("lora_load", "tiny-rank2-f16", &bytes);

    // grammar: the first byte picks GBNF (0), Lark (1) or JSON Schema (2).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/grammar/tests/fixtures/llama.cpp");
    for entry in std::fs::read_dir(dir).expect("grammar fixtures").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "gbnf") {
            let mut seed = vec![0u8];
            seed.extend(std::fs::read(&path).expect("grammar"));
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            write("grammar", &name, &seed);
        }
    }
    write("grammar", "lark", b"\x01start: \"a\" /[0-9]+/ | %json {\"type\": \"integer\"}");
    write("grammar", "schema", b"\x02{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"pattern\":\"^[a-z]{2,5}$\"},\"b\":{\"anyOf\":[{\"type\":\"integer\",\"minimum\":3},{\"$ref\":\"#/$defs/x\"}]}},\"$defs\":{\"x\":{\"type\":\"array\",\"items\":{\"enum\":[1,\"two\"]},\"maxItems\":3}}}");
}
