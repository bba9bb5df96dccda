//! `-m DIR` in every command: a Hugging Face folder made from the default
//! model (F32 safetensors in two shards, q/k in Hugging Face order,
//! tokenizer.json) runs, chats, tokenizes, inspects, benches and measures
//! perplexity like a GGUF file; `cria convert` writes a GGUF that runs the
//! same; a folder cria does not know is a one-line error naming it.

mod common;
#[path = "../../import/tests/common/mod.rs"]
mod import_common;

use common::*;
use std::path::{Path, PathBuf};

fn hf_folder(tmp: &Path) -> PathBuf {
    let src = cria_gguf::GgufFile::open(default_model()).unwrap();
    let dir = tmp.join("SmolLM2-135M-hf");
    import_common::write_hf_folder(&src, &dir);
    dir
}

fn ok(args: &[&str], model: &Path) -> String {
    let o = cria()
        .arg(args[0])
        .arg("-m")
        .arg(model)
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cria {args:?} -m {}: {}",
        model.display(),
        stderr(&o)
    );
    stdout(&o)
}

#[test]
fn every_command_takes_a_hugging_face_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = hf_folder(tmp.path());
    let gguf = default_model();

    // Same ids from the folder's tokenizer.json as from the GGUF.
    let text = "Hello, world! 2024 <|im_start|>";
    assert_eq!(
        ok(&["tokenize", text], &dir),
        ok(&["tokenize", text], &gguf)
    );

    let inspect = ok(&["inspect", "--json"], &dir);
    assert!(inspect.contains("\"pre\": \"smollm\""), "{inspect}");
    assert!(inspect.contains("\"F32\""), "{inspect}");

    // Greedy raw continuation: the same text as the Q4_1 file on this clear case.
    let greedy = [
        "run",
        "--raw",
        "--temp",
        "0",
        "-n",
        "9",
        "-q",
        "1, 2, 3, 4, 5,",
    ];
    assert_eq!(ok(&greedy, &dir), " 6, 7, 8,\n");
    let chat = ok(
        &[
            "run",
            "--temp",
            "0",
            "-n",
            "8",
            "-q",
            "What is the capital of France?",
        ],
        &dir,
    );
    assert!(!chat.is_empty());

    let text_file = tmp.path().join("text.txt");
    std::fs::write(
        &text_file,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let ppl = cria()
        .args(["perplexity", "-m"])
        .arg(&dir)
        .arg("-f")
        .arg(&text_file)
        .args(["-c", "64", "--chunks", "1"])
        .output()
        .unwrap();
    assert!(ppl.status.success(), "{}", stderr(&ppl));
    let bench = cria()
        .args(["bench", "-m"])
        .arg(&dir)
        .args(["-p", "8", "-n", "2", "-r", "1"])
        .output()
        .unwrap();
    assert!(bench.status.success(), "{}", stderr(&bench));

    // cria convert: f16 output runs and gives the same greedy text.
    let out = tmp.path().join("converted.f16.gguf");
    let o = cria()
        .arg("convert")
        .arg(&dir)
        .arg(&out)
        .args(["--outtype", "f16"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ok(&greedy, &out), " 6, 7, 8,\n");
    let info = ok(&["inspect", "--json"], &out);
    assert!(info.contains("\"file_type\": 1"), "{info}");

    let o = cria()
        .arg("convert")
        .arg(&dir)
        .arg(tmp.path().join("x.gguf"))
        .args(["--outtype", "q2_k"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("q2_k"), "{}", stderr(&o));
}

#[test]
fn an_unknown_folder_is_one_line_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model.onnx"), b"onnx").unwrap();
    let o = cria()
        .args(["run", "-m"])
        .arg(tmp.path())
        .arg("hi")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("model.onnx") && e.contains("config.json"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}
