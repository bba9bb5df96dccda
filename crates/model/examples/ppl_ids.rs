//! Development check: perplexity over token ids given as a JSON-ish list
//! (`llama-tokenize --ids` output), llama-perplexity's chunking, no BOS.
use cria_model::{KvType, Logits, Model, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let model = Model::open(&a[1])?;
    let text = std::fs::read_to_string(&a[2])?;
    let ids: Vec<u32> = text
        .trim()
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let n_ctx = 512;
    let chunks: usize = a.get(3).map_or(ids.len() / n_ctx, |c| c.parse().unwrap());
    let mut s = Session::new(&model, n_ctx, KvType::F16, 512, 2);
    let mut logits = Vec::new();
    let (mut nll, mut count) = (0f64, 0usize);
    let nv = model.config.n_vocab;
    for c in 0..chunks {
        let toks = &ids[c * n_ctx..(c + 1) * n_ctx];
        s.truncate(0);
        let t0 = std::time::Instant::now();
        model.forward(&mut s, toks, Logits::All, &mut logits)?;
        for i in n_ctx / 2..n_ctx - 1 {
            let row = &logits[i * nv..(i + 1) * nv];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
            let lp = (row[toks[i + 1] as usize] - max) as f64 - sum.ln();
            nll -= lp;
            count += 1;
        }
        eprint!(
            "[{}]{:.4} ({:.1}s) ",
            c + 1,
            (nll / count as f64).exp(),
            t0.elapsed().as_secs_f32()
        );
    }
    eprintln!();
    Ok(())
}
