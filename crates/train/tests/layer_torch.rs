//! One full block's forward and gradients (input and every LoRA matrix)
//! against torch in float64: tests/fixtures/layer_golden.gguf, made by
//! tests/fixtures/make_layer_golden.py (its docstring says how).

use cria_gguf::GgufFile;
use cria_kernels::ThreadPool;
use cria_model::Model;
use cria_train::layer::{self, Saved};
use cria_train::{adapter_out, net, Lora, Target};

fn path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layer_golden.gguf")
}

fn tensor(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.require_tensor(name).unwrap();
    f.tensor_data(t)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 2e-4 * scale,
        "{what}: largest difference {worst} (values up to {scale})"
    );
}

#[test]
fn block_gradients_match_torch() {
    let f = GgufFile::open(path()).unwrap();
    let model = Model::from_file(GgufFile::open(path()).unwrap()).unwrap();
    let alpha = f.metadata().get_f32("golden.lora_alpha").unwrap();
    let mut lora = Lora::new(&model.config, &Target::ALL, 4, alpha, 0).unwrap();
    adapter_out::read_params(&f, &mut lora).unwrap();
    let seqs = [(0, 5), (5, 3)];
    let x = tensor(&f, "golden.x");
    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        let c = net::ctx(&model, &lora, &pool, None);
        let lw = &model.weights.layers[0];
        let mut y = x.clone();
        let mut saved = Saved::default();
        layer::forward(&c, lw, 0, &mut y, &seqs, Some(&mut saved)).unwrap();
        close("y", &y, &tensor(&f, "golden.y"));
        let mut dx = tensor(&f, "golden.dy");
        let mut grad = vec![0.0; lora.params.len()];
        layer::backward(&c, lw, 0, &x, &saved, &seqs, &mut dx, &mut grad).unwrap();
        close("dx", &dx, &tensor(&f, "golden.dx"));
        for s in &lora.slots {
            let (ga, gb) = lora.ab(s, &grad);
            let name = s.target.tensor_name(0);
            let base = name
                .trim_start_matches("blk.0.")
                .trim_end_matches(".weight");
            close(
                &format!("{base} dA"),
                ga,
                &tensor(&f, &format!("golden.{base}.lora_a.grad")),
            );
            close(
                &format!("{base} dB"),
                gb,
                &tensor(&f, &format!("golden.{base}.lora_b.grad")),
            );
        }
    }
}
