//! Structured output end to end (issue 13): `cria serve` with JSON Schema,
//! GBNF and the `openai` client's `parse()`, validated by the `jsonschema`
//! Python library (installed with pip if missing), then the CLI flags.

mod common;

use common::server::Server;
use std::process::Command;

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn schemas_and_grammars_validate_across_seeds() {
    for (module, package) in [("openai", "openai"), ("jsonschema", "jsonschema")] {
        if !python_has(module) {
            let st = Command::new("python3")
                .args(["-m", "pip", "install", "-q", package])
                .status()
                .expect("python3 is needed for this test");
            assert!(st.success(), "pip install {package} failed");
        }
    }
    let s = Server::start(&["--parallel", "3", "-c", "1024"]);
    let script = common::fixture("crates/cli/tests/python/structured.py");
    let out = Command::new("python3")
        .arg(script)
        .env("CRIA_URL", format!("http://{}", s.addr))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "structured-output script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn cli_flags_constrain_run() {
    let schema = r#"{"type":"object","properties":{"n":{"type":"integer","minimum":1,"maximum":9}},"required":["n"],"additionalProperties":false}"#;
    for seed in ["1", "2"] {
        let o = common::cria()
            .args(["run", "-m"])
            .arg(common::default_model())
            .args([
                "--temp",
                "1.5",
                "--seed",
                seed,
                "-n",
                "40",
                "-q",
                "-j",
                schema,
                "Pick a number",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
        let text = common::stdout(&o);
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect(&text);
        let n = v["n"].as_i64().unwrap();
        assert!((1..=9).contains(&n), "{text}");
    }
    let o = common::cria()
        .args(["run", "-m"])
        .arg(common::default_model())
        .args([
            "--temp",
            "0",
            "-n",
            "20",
            "-q",
            "--grammar",
            "root ::= [0-9]{3}",
            "--raw",
            "Numbers:",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = common::stdout(&o);
    assert!(
        text.trim().len() == 3 && text.trim().chars().all(|c| c.is_ascii_digit()),
        "{text:?}"
    );
    // Bad grammars and schemas are clean errors.
    for (flag, value, needle) in [
        ("--grammar", "root ::= nope", "`nope`, which is not defined"),
        ("-j", "{\"type\": \"object\", \"foo\": 1}", "foo"),
        (
            "-j",
            "/no/such/file.json",
            "not JSON, and not a readable file",
        ),
    ] {
        let o = common::cria()
            .args(["run", "-m"])
            .arg(common::default_model())
            .args([flag, value, "hi"])
            .output()
            .unwrap();
        common::assert_clean_error(&o, needle);
    }
    // One constraint at a time.
    let o = common::cria()
        .args(["run", "--json", "--grammar", "root ::= \"a\"", "hi"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("cannot be used with"),
        "{}",
        common::stderr(&o)
    );
}
