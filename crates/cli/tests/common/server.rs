//! A `cria serve` child process on a free loopback port, and a tiny
//! HTTP/1.1 client (std only) that can read SSE and hang up mid-stream.
#![allow(dead_code)]

use super::{cria, default_model};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub key: Option<String>,
}

impl Server {
    /// Starts `cria serve --port 0` with the default model and `extra`
    /// flags, and waits until /health says ready.
    pub fn start(extra: &[&str]) -> Server {
        let model = default_model();
        let mut child = cria()
            .args(["serve", "--port", "0", "-t", "1", "-m"])
            .arg(&model)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start cria serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "unexpected first line {line:?}"
        );
        let key = extra
            .iter()
            .position(|a| *a == "--api-key")
            .map(|i| extra[i + 1].to_string());
        let s = Server { child, addr, key };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = s.try_get("/health") {
                if r.status == 200 {
                    break;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "server not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn auth_headers(&self) -> Vec<(String, String)> {
        self.key
            .iter()
            .map(|k| ("Authorization".to_string(), format!("Bearer {k}")))
            .collect()
    }

    pub fn try_get(&self, path: &str) -> std::io::Result<Resp> {
        request(&self.addr, "GET", path, &self.auth_headers(), b"")
    }

    pub fn get(&self, path: &str) -> Resp {
        self.try_get(path).expect("GET")
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Resp {
        request(
            &self.addr,
            "POST",
            path,
            &self.auth_headers(),
            body.to_string().as_bytes(),
        )
        .expect("POST")
    }

    pub fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        request(&self.addr, "POST", path, &h, body).expect("POST")
    }

    /// A metric's value from /metrics (the first line starting with `name`).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// How the server process ended, if it did (for failure messages: a
    /// connection closed early may mean the process died).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "server did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
            .map(|s| s.trim().to_string())
            .collect()
    }

    /// Asserts an OpenAI error reply and returns its `error` object.
    pub fn error(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let j = self.json();
        let e = j["error"].clone();
        assert!(e["message"].is_string(), "{j}");
        assert!(e["type"].is_string(), "{j}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{j}");
        e
    }
}

fn write_request(
    s: &mut TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    // `headers` may replace the Host and Content-Type sent by default.
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        if !has("content-type") {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)
}

pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<Resp> {
    request_within(addr, method, path, headers, body, Duration::from_secs(300))
}

/// `request`, failing if the server is silent for `timeout`.
pub fn request_within(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    // A server refusing a large body may answer and close before it is
    // all sent: read the answer anyway.
    let sent = write_request(&mut s, addr, method, path, headers, body);
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() {
        sent?;
        read?;
    }
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        // Cut off before the end of the headers: the server dropped us.
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the reply ended inside its headers: {:?}",
                String::from_utf8_lossy(&raw)
            ),
        ));
    }
    Ok(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

/// Opens a streaming request and returns the socket once the first
/// `data:` bytes of the reply arrived (the caller then drops it to hang up).
pub fn start_stream(server: &Server, path: &str, body: &serde_json::Value) -> TcpStream {
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write_request(
        &mut s,
        &server.addr,
        "POST",
        path,
        &server.auth_headers(),
        body.to_string().as_bytes(),
    )
    .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The role chunk, then at least one token.
    while String::from_utf8_lossy(&seen).matches("data:").count() < 2 {
        let n = s.read(&mut buf).expect("read stream");
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    s
}
