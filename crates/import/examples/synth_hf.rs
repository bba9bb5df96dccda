//! Writes a Hugging Face folder of a real model's shape with arbitrary
//! weights, for timing `cria convert` (its speed does not depend on the
//! values). BF16 safetensors in 5 GB shards, config.json and a byte-level
//! tokenizer.json (for `llama3.2-1b`: tied embeddings, rope_scaling llama3,
//! and the LLaMA 3 tokenizer.json of the family fixtures, so llama.cpp's
//! convert_hf_to_gguf.py recognises it too).
//!
//!     cargo run --release -p cria-import --example synth_hf -- llama2-7b /tmp/l7b-hf
//!     cargo run --release -p cria-import --example synth_hf -- llama3.2-1b /tmp/l1b-hf

use serde_json::json;
use std::io::Write;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (preset, out) = match args.as_slice() {
        [_, p, o] => (p.as_str(), Path::new(o)),
        _ => {
            return Err(
                "usage: synth_hf PRESET OUT_DIR (presets: llama2-7b, llama3.2-1b, tiny)".into(),
            )
        }
    };
    // dim, layers, heads, kv heads, ffn, vocab
    let (dim, n_layers, n_head, n_kv, ffn, n_vocab) = match preset {
        "llama2-7b" => (4096usize, 32usize, 32usize, 32usize, 11008usize, 32000usize),
        "llama3.2-1b" => (2048, 16, 32, 8, 8192, 128256),
        "tiny" => (256, 2, 4, 2, 512, 512),
        p => return Err(format!("unknown preset {p}").into()),
    };
    std::fs::create_dir_all(out)?;
    let hd = dim / n_head;
    let mut tensors: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![n_vocab, dim])];
    for i in 0..n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        tensors.extend([
            (p("input_layernorm.weight"), vec![dim]),
            (p("self_attn.q_proj.weight"), vec![dim, dim]),
            (p("self_attn.k_proj.weight"), vec![n_kv * hd, dim]),
            (p("self_attn.v_proj.weight"), vec![n_kv * hd, dim]),
            (p("self_attn.o_proj.weight"), vec![dim, dim]),
            (p("post_attention_layernorm.weight"), vec![dim]),
            (p("mlp.gate_proj.weight"), vec![ffn, dim]),
            (p("mlp.up_proj.weight"), vec![ffn, dim]),
            (p("mlp.down_proj.weight"), vec![dim, ffn]),
        ]);
    }
    tensors.push(("model.norm.weight".into(), vec![dim]));
    let llama3 = preset == "llama3.2-1b";
    if !llama3 {
        // LLaMA 3.2 ties the output to the embedding.
        tensors.push(("lm_head.weight".into(), vec![n_vocab, dim]));
    }

    // Shards of at most 5 GB, as transformers writes them.
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![Vec::new()];
    let mut size = 0usize;
    for t in tensors {
        let bytes = t.1.iter().product::<usize>() * 2;
        if size + bytes > 5_000_000_000 && !shards.last().unwrap().is_empty() {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        shards.last_mut().unwrap().push(t);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut state = 0x9e3779b97f4a7c15u64;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        let mut header = serde_json::Map::new();
        let mut off = 0usize;
        for (name, shape) in shard {
            let len = shape.iter().product::<usize>() * 2;
            header.insert(
                name.clone(),
                json!({"dtype": "BF16", "shape": shape, "data_offsets": [off, off + len]}),
            );
            weight_map.insert(name.clone(), json!(file));
            off += len;
        }
        let mut h = serde_json::to_vec(&header)?;
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut f =
            std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(out.join(&file))?);
        f.write_all(&(h.len() as u64).to_le_bytes())?;
        f.write_all(&h)?;
        let mut buf = vec![0u8; 1 << 22];
        let mut left = off;
        while left > 0 {
            let k = left.min(buf.len());
            // Small bf16 values: sign and low mantissa from a xorshift, exponent fixed.
            for c in buf[..k].chunks_exact_mut(2) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = 0x3c00u16 | (state as u16 & 0x807f);
                c.copy_from_slice(&v.to_le_bytes());
            }
            f.write_all(&buf[..k])?;
            left -= k;
        }
        f.flush()?;
        eprintln!("wrote {file}");
    }
    std::fs::write(
        out.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )?;
    let mut config = json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": dim, "intermediate_size": ffn, "num_hidden_layers": n_layers,
        "num_attention_heads": n_head, "num_key_value_heads": n_kv,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "vocab_size": n_vocab, "torch_dtype": "bfloat16", "hidden_act": "silu"});
    if llama3 {
        config["max_position_embeddings"] = json!(131072);
        config["rope_theta"] = json!(500000.0);
        config["tie_word_embeddings"] = json!(true);
        config["rope_scaling"] = json!({"rope_type": "llama3", "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192});
        config["bos_token_id"] = json!(128000);
        config["eos_token_id"] = json!(128001);
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/import/families");
        std::fs::copy(
            fixtures.join("tokenizers/llama3.json"),
            out.join("tokenizer.json"),
        )?;
        std::fs::copy(
            fixtures.join("llama3.2/tokenizer_config.json"),
            out.join("tokenizer_config.json"),
        )?;
        std::fs::write(out.join("config.json"), config.to_string())?;
        return Ok(());
    }
    std::fs::write(out.join("config.json"), config.to_string())?;
    // Byte-level BPE: the 256 byte characters, then filler tokens.
    let mut vocab = serde_json::Map::new();
    let mut k = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            char::from_u32(b).unwrap_or('?')
        } else {
            k += 1;
            char::from_u32(255 + k).unwrap_or('?')
        };
        vocab.insert(c.to_string(), json!(b));
    }
    for i in 256..n_vocab {
        vocab.insert(format!("tok{i}"), json!(i));
    }
    std::fs::write(
        out.join("tokenizer.json"),
        json!({"version": "1.0", "normalizer": null, "added_tokens": [],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
            "model": {"type": "BPE", "vocab": vocab, "merges": []}})
        .to_string(),
    )?;
    Ok(())
}
