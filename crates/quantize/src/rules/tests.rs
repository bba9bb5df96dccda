//! The rules on model shapes, against what llama-quantize chose for the
//! same tensors (its log lines, e.g. `converting to q6_K`).

use super::*;

fn t(name: &str, dims: &[u64]) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        ty: GgmlType::F16,
        dims: dims.to_vec(),
        offset: 0,
        n_elements: dims.iter().product(),
        n_bytes: 0,
    }
}

/// A LLaMA of `n` layers, hidden `h`, ffn `f`, tied embeddings or not.
fn model(n: u32, h: u64, f: u64, tied: bool) -> Vec<TensorInfo> {
    let mut v = vec![
        t("token_embd.weight", &[h, 1000]),
        t("output_norm.weight", &[h]),
    ];
    if !tied {
        v.push(t("output.weight", &[h, 1000]));
    }
    for i in 0..n {
        for (name, dims) in [
            ("attn_norm.weight", vec![h]),
            ("attn_q.weight", vec![h, h]),
            ("attn_k.weight", vec![h, h / 4]),
            ("attn_v.weight", vec![h, h / 4]),
            ("attn_output.weight", vec![h, h]),
            ("ffn_norm.weight", vec![h]),
            ("ffn_gate.weight", vec![h, f]),
            ("ffn_up.weight", vec![h, f]),
            ("ffn_down.weight", vec![f, h]),
        ] {
            v.push(t(&format!("blk.{i}.{name}"), &dims));
        }
    }
    v
}

fn plan_of(
    ts: &[TensorInfo],
    info: &ModelInfo,
    mix: Mix,
    ov: &Overrides,
) -> Vec<(String, GgmlType)> {
    let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
    let order: Vec<&TensorInfo> = llama_order(&names).into_iter().map(|i| &ts[i]).collect();
    let (types, _) = plan(&order, info, mix, ov, false);
    order.iter().map(|t| t.name.clone()).zip(types).collect()
}

fn info(n: u32) -> ModelInfo {
    ModelInfo {
        arch: "llama".into(),
        n_layer: n,
        n_head: 32,
        n_head_kv: 8,
        n_expert: 0,
    }
}

fn ty_of(p: &[(String, GgmlType)], name: &str) -> GgmlType {
    p.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn order_is_layer_then_name() {
    let names = [
        "blk.10.a",
        "blk.2.b",
        "output.weight",
        "blk.2.a",
        "token_embd.weight",
    ];
    let o: Vec<&str> = llama_order(&names).into_iter().map(|i| names[i]).collect();
    assert_eq!(
        o,
        [
            "output.weight",
            "token_embd.weight",
            "blk.2.a",
            "blk.2.b",
            "blk.10.a"
        ]
    );
}

#[test]
fn q4_k_m_on_a_4096_model() {
    let ts = model(32, 4096, 11008, false);
    let p = plan_of(&ts, &info(32), Mix::Q4_K_M, &Overrides::default());
    use GgmlType::*;
    assert_eq!(ty_of(&p, "output.weight"), Q6_K);
    assert_eq!(ty_of(&p, "token_embd.weight"), Q4_K);
    assert_eq!(
        ty_of(&p, "output_norm.weight"),
        F16,
        "1-D tensors are copied"
    );
    // use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2.
    for i in 0..32 {
        let more = !(4..28).contains(&i) || (i - 4) % 3 == 2;
        let want = if more { Q6_K } else { Q4_K };
        assert_eq!(
            ty_of(&p, &format!("blk.{i}.attn_v.weight")),
            want,
            "layer {i}"
        );
        assert_eq!(
            ty_of(&p, &format!("blk.{i}.ffn_down.weight")),
            want,
            "layer {i}"
        );
        assert_eq!(ty_of(&p, &format!("blk.{i}.attn_q.weight")), Q4_K);
    }
    // Rows of 11040 (not a multiple of 256): ffn_down falls back, Q6_K ->
    // Q8_0 (layer 3 of 4 uses more bits), Q4_K -> Q5_0.
    let ts = model(4, 4096, 11008, false);
    let mut ts2 = ts.clone();
    for x in &mut ts2 {
        if x.name.contains("ffn_down") {
            x.dims = vec![11008 + 32, 4096];
        }
    }
    let p = plan_of(&ts2, &info(4), Mix::Q4_K_M, &Overrides::default());
    assert_eq!(ty_of(&p, "blk.3.ffn_down.weight"), Q8_0);
    assert_eq!(ty_of(&p, "blk.0.ffn_down.weight"), Q5_0);
}

#[test]
fn tied_embeddings_take_the_output_rule_and_its_fallback() {
    use GgmlType::*;
    // SmolLM2-135M: 576 columns, tied embeddings: token_embd wants Q6_K,
    // 576 % 256 != 0, so Q8_0.
    let ts = model(30, 576, 1536, true);
    let mut i = info(30);
    i.n_head = 9;
    i.n_head_kv = 3;
    for mix in [Mix::Q4_0, Mix::Q4_K_M, Mix::IQ4_XS] {
        let p = plan_of(&ts, &i, mix, &Overrides::default());
        assert_eq!(ty_of(&p, "token_embd.weight"), Q8_0, "{mix:?}");
    }
    let p = plan_of(&ts, &i, Mix::Q3_K_M, &Overrides::default());
    assert_eq!(
        ty_of(&p, "blk.0.attn_v.weight"),
        Q5_1,
        "Q5_K falls back to Q5_1"
    );
    assert_eq!(
        ty_of(&p, "blk.5.attn_v.weight"),
        Q5_0,
        "Q4_K falls back to Q5_0"
    );
    assert_eq!(
        ty_of(&p, "blk.0.attn_q.weight"),
        Q4_0,
        "Q3_K falls back to Q4_0"
    );
    assert_eq!(
        ty_of(&p, "blk.0.ffn_down.weight"),
        Q5_K,
        "1536 columns need no fallback"
    );
    let p = plan_of(&ts, &i, Mix::IQ4_XS, &Overrides::default());
    assert_eq!(ty_of(&p, "blk.0.attn_q.weight"), IQ4_NL);
    assert_eq!(
        ty_of(&p, "blk.0.ffn_down.weight"),
        Q5_K,
        "first eighth, no imatrix"
    );
    assert_eq!(ty_of(&p, "blk.4.ffn_down.weight"), IQ4_XS);
}

#[test]
fn overrides_pure_and_manual() {
    use GgmlType::*;
    let ts = model(8, 4096, 11264, false);
    let ov = Overrides {
        pure: true,
        ..Default::default()
    };
    let p = plan_of(&ts, &info(8), Mix::Q4_K_M, &ov);
    assert_eq!(ty_of(&p, "blk.0.attn_v.weight"), Q4_K);
    assert_eq!(
        ty_of(&p, "output.weight"),
        Q4_K,
        "--pure applies to output too"
    );
    let ov = Overrides {
        tensor_types: vec![(Regex::new("attn_v").unwrap(), Q8_0)],
        output_tensor_type: Some(F16),
        token_embedding_type: Some(Q5_0),
        ..Default::default()
    };
    let p = plan_of(&ts, &info(8), Mix::Q4_K_M, &ov);
    assert_eq!(ty_of(&p, "blk.3.attn_v.weight"), Q8_0);
    assert_eq!(ty_of(&p, "output.weight"), F16);
    assert_eq!(ty_of(&p, "token_embd.weight"), Q5_0);
    // Manual matches skip the counters: ffn_down still counts from 0.
    assert_eq!(ty_of(&p, "blk.0.ffn_down.weight"), Q6_K);
}
