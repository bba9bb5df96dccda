//! The official `openai` Python package against `cria serve` (issue 6):
//! installs it with pip if missing, then runs tests/python/openai_client.py.

mod common;

use common::server::Server;
use std::process::Command;

#[test]
fn official_openai_client() {
    let have = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        let st = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "openai"])
            .status()
            .expect("python3 is needed for this test");
        assert!(st.success(), "pip install openai failed");
    }
    let s = Server::start(&["--parallel", "2", "-c", "1024", "--api-key", "test-key"]);
    let script = common::fixture("crates/cli/tests/python/openai_client.py");
    let out = Command::new("python3")
        .arg(script)
        .env("CRIA_URL", format!("http://{}", s.addr))
        .env("CRIA_KEY", "test-key")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai client script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
