//! `cria finetune` end to end on the default model: bad data is refused
//! with the line and the reason; the same seed gives the same adapter bits
//! on 1 and 2 threads (with the int8 backward and with `--exact-backward`);
//! a run stopped and resumed ends with the same bits as one that was not;
//! the outputs (adapter, CSV, PNG) are written.

mod common;
use common::*;
use std::path::Path;

const CHATS: &str = r#"{"messages": [{"role": "user", "content": "Review: The kettle works perfectly.\nPositive or negative?"}, {"role": "assistant", "content": "positive"}]}
{"messages": [{"role": "user", "content": "Review: The lamp broke after two days.\nPositive or negative?"}, {"role": "assistant", "content": "negative"}]}
{"prompt": "The capital of France is", "completion": " Paris."}
{"text": "It is a truth universally acknowledged that a single man in possession of a good fortune must be in want of a wife."}
"#;

fn finetune(dir: &Path, data: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    cria()
        .arg("finetune")
        .arg("-m")
        .arg(default_model())
        .arg("--data")
        .arg(data)
        .arg("-o")
        .arg(dir.join(out))
        .args(["-c", "96", "-b", "2", "--epochs", "2", "--lora-rank", "2"])
        .args(["--lora-targets", "q,v,down", "--quiet", "--eval-every", "0"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn bad_records_name_the_line_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        (
            "{\"text\": \"fine text here\"}\n\nnot json\n",
            ":3: not JSON",
        ),
        (
            "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n",
            ":1: messages[0]: role \"robot\"",
        ),
        ("{\"prompt\": \"a\"}\n", ":1: missing \"completion\""),
        ("{\"input\": \"a\"}\n", ":1: unknown record"),
        ("[1, 2]\n", ":1: a record must be a JSON object"),
    ] {
        let p = dir.path().join("bad.jsonl");
        std::fs::write(&p, body).unwrap();
        let o = finetune(dir.path(), &p, "x.gguf", &[]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{body}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{body}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn same_seed_same_bits_and_resume_ends_where_a_full_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    std::fs::write(&data, CHATS).unwrap();
    // Each run in its own folder, the adapter always named ad.gguf (the
    // name is in the file's metadata).
    let run = |sub: &str, extra: &[&str]| {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let o = finetune(&d, &data, "ad.gguf", extra);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(d.join("ad.gguf")).unwrap()
    };
    let a = run("a", &["-t", "1"]);
    let b = run("b", &["-t", "2"]);
    assert!(a == b, "1 and 2 threads gave different adapters");
    // 4 steps in all (4 records, 2 a batch, 2 epochs); stop after 1, resume.
    let _ = run("c", &["-t", "2", "--stop-after", "1"]);
    let partial = std::fs::read_to_string(dir.path().join("c/ad.csv")).unwrap();
    assert_eq!(
        partial.lines().count(),
        2,
        "--stop-after 1 ran on: {partial}"
    );
    let c = run("c", &["-t", "2", "--resume"]);
    assert!(a == c, "the resumed run ended elsewhere");
    let other = run("d", &["-t", "2", "--seed", "7"]);
    assert!(a != other, "another seed gave the same adapter");
    // --exact-backward: the f32 GEMM backward instead of the int8
    // transposes, deterministic too, and a (slightly) different adapter.
    let e1 = run("e1", &["-t", "1", "--exact-backward"]);
    let e2 = run("e2", &["-t", "2", "--exact-backward"]);
    assert!(e1 == e2, "--exact-backward: 1 and 2 threads differ");
    assert!(a != e1, "--exact-backward changed nothing");
    let dir = dir.path().join("a");
    let csv = std::fs::read_to_string(dir.join("ad.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let png = std::fs::read(dir.join("ad.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // The adapter is a llama.cpp LoRA file that the trainer reads back.
    let f = cria_gguf::GgufFile::open(dir.join("ad.gguf")).unwrap();
    assert_eq!(f.metadata().get_str("general.type").unwrap(), "adapter");
    assert_eq!(f.metadata().get_str("adapter.type").unwrap(), "lora");
    let t = f.require_tensor("blk.0.attn_q.weight.lora_a").unwrap();
    assert_eq!(t.dims, vec![576, 2]);
    let t = f.require_tensor("blk.29.ffn_down.weight.lora_b").unwrap();
    assert_eq!(t.dims, vec![2, 576]);
}
