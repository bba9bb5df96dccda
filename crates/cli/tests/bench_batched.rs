//! `cria bench -npl`: llama-batched-bench's PP/TG/B table through the
//! engine (issue 14, item 5). Shapes and errors only; speeds are measured
//! by scripts, never asserted.

mod common;
use common::{assert_clean_error, cria, default_model, stdout};

#[test]
fn batched_table_has_one_line_per_size() {
    let model = default_model();
    let o = cria()
        .args(["bench", "-m"])
        .arg(&model)
        .args([
            "-p", "8", "-n", "4", "-npl", "1,3", "-t", "1", "-r", "1", "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let lines = v.as_array().unwrap();
    assert_eq!(lines.len(), 2);
    for (line, pl) in lines.iter().zip([1u64, 3]) {
        assert_eq!(line["pl"], pl);
        assert_eq!(
            (line["pp"].as_u64(), line["tg"].as_u64()),
            (Some(8), Some(4))
        );
        assert_eq!(line["n_kv"].as_u64(), Some(pl * 12));
        for k in ["t_pp", "t_tg", "t", "speed_pp", "speed_tg", "speed"] {
            let x = line[k].as_f64().unwrap();
            assert!(x.is_finite() && x > 0.0, "{k} = {x}");
        }
    }
    // The markdown table, as llama-batched-bench's columns.
    let o = cria()
        .args(["bench", "-m"])
        .arg(&model)
        .args(["-p", "4", "-n", "2", "-npl", "2", "-t", "1", "-r", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("| S_TG t/s |"), "{out}");
    let row = out.lines().last().unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(&cells[1..6], ["1", "4", "2", "2", "12"], "{row}");
}

#[test]
fn batched_bad_sizes_are_clean_errors() {
    let model = default_model();
    for (args, needle) in [
        (&["-npl", "0"][..], "-npl 0"),
        (&["-npl", "2", "-n", "1"][..], "-n 1 with -npl"),
        (&["-npl", "2", "-p", "0"][..], "-p 0 with -npl"),
        (&["-npl", "2", "-d", "4"][..], "-d does not apply"),
    ] {
        let o = cria()
            .args(["bench", "-m"])
            .arg(&model)
            .args(args)
            .args(["-r", "1", "-t", "1"])
            .output()
            .unwrap();
        assert_clean_error(&o, needle);
    }
}
