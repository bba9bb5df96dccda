//! Exact-answer rate of a model (with or without an adapter) on chat
//! records: each record's last assistant message is the expected answer;
//! the conversation before it is rendered through the model's chat
//! template and decoded greedily (temperature 0) with the trainer's own
//! forward pass until an end-of-generation token or 6 tokens (the answers are one word). An answer
//! is exact when the decoded text, trimmed, equals the expected one.
//!
//! cargo run --release -p cria-train --example exact_answers -- MODEL.gguf VAL.jsonl [ADAPTER.gguf]

use cria_model::Model;
use cria_prompt::{tokenize_prompt, ChatTemplate, Message};
use cria_tokenizer::Tokenizer;
use cria_train::{adapter_out, net, Lora, Target};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: exact_answers MODEL.gguf VAL.jsonl [ADAPTER.gguf]".into());
    }
    let model = Model::open(&args[0])?;
    let tok = Tokenizer::from_gguf(model.file().metadata())?;
    let template = ChatTemplate::load(model.file().metadata(), &tok, None)?;
    let lora = match args.get(2) {
        Some(p) => adapter_out::read(&model.config, &cria_gguf::GgufFile::open(p)?)?,
        None => {
            let mut l = Lora::new(&model.config, &[Target::Q], 1, 1.0, 0)?;
            l.params.iter_mut().for_each(|p| *p = 0.0); // no adapter
            l
        }
    };
    let pool = cria_kernels::ThreadPool::new(2);
    let c = net::ctx(&model, &lora, &pool, None);
    let (mut exact, mut total) = (0, 0);
    for line in std::fs::read_to_string(&args[1])?.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)?;
        let msgs: Vec<Message> = v["messages"]
            .as_array()
            .ok_or("a record without \"messages\"")?
            .iter()
            .map(|m| {
                Message::new(
                    m["role"].as_str().unwrap_or(""),
                    m["content"].as_str().unwrap_or(""),
                )
            })
            .collect();
        let (want, context) = msgs.split_last().ok_or("an empty record")?;
        let mut ids = tokenize_prompt(&tok, &template.render(context, true)?)?;
        let n_prompt = ids.len();
        for _ in 0..6 {
            let lp = net::next_log_probs(&c, &model, &ids)?;
            let next = (0..lp.len()).fold(0, |b, i| if lp[i] > lp[b] { i } else { b }) as u32;
            if tok.is_eog(next) {
                break;
            }
            ids.push(next);
        }
        let got = tok.decode(&ids[n_prompt..], false)?;
        total += 1;
        if got.trim() == want.content.trim() {
            exact += 1;
        }
        println!("{:?}\t{:?}", want.content, got);
    }
    println!("exact answers: {exact}/{total}");
    Ok(())
}
