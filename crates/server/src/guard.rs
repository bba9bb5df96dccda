//! What a request passes before its handler, outermost first: the Host
//! check (DNS rebinding, when the server has no key), CORS (off unless
//! origins are listed), the API key, which names the request's [`Tenant`],
//! JSON bodies only, and the tenant's rate limits ([`Limiter`]).

use crate::error::ApiError;
use crate::routes::App;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_http::cors::{AllowCredentials, AllowHeaders, AllowOrigin, CorsLayer};

/// Who sent a request: 1..=N for the server's N API keys in the order they
/// were given; 0 when the server has no keys (and for requests that never
/// got past the key check). Metrics and the engine's prompt cache are kept
/// apart per tenant; rate limits are per tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenant(pub u32);

type Shared = State<Arc<App>>;

/// Refuses a `Host` that is not an address of this server. A web page on
/// evil.example whose name is re-pointed (DNS rebinding) at 127.0.0.1 can
/// otherwise read replies of a key-less server on loopback; its requests
/// carry `Host: evil.example`. With a key, the key is the protection.
pub async fn host(State(app): Shared, req: Request, next: Next) -> Response {
    if app.config.api_keys.is_empty() {
        let host = match req.headers().get(header::HOST) {
            Some(v) => Some(v.to_str().unwrap_or("(not text)")),
            // HTTP/1.0 may omit it; such a client is no browser.
            None => req.uri().authority().map(|a| a.as_str()),
        };
        if let Some(h) = host.filter(|h| !host_allowed(h, &app.config.allow_hosts)) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {h:?} is not an address of this server (a web page may be trying to \
                     reach it through DNS rebinding); use an IP address or localhost, or start \
                     the server with --allow-host NAME or --api-key"
                ),
            )
            .code("host_not_allowed")
            .into_response();
        }
    }
    next.run(req).await
}

/// IP literals (`1.2.3.4`, `[::1]`) and `localhost` with any port, and the
/// names in `allow`. An IP literal cannot be re-pointed by DNS.
pub fn host_allowed(host: &str, allow: &[String]) -> bool {
    let port_ok = |tail: &str| {
        tail.is_empty()
            || tail
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok())
    };
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, tail)| ip.parse::<Ipv6Addr>().is_ok() && port_ok(tail));
    }
    let (name, tail) = host.split_at(host.find(':').unwrap_or(host.len()));
    port_ok(tail)
        && (name.parse::<Ipv4Addr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || allow.iter().any(|a| a.eq_ignore_ascii_case(name)))
}

/// `http(s)://` and a loopback host (localhost, 127.0.0.1, [::1]), any port.
fn loopback_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, tail)) => (ip == "::1").then_some(tail),
            None => None,
        },
        None => {
            let (name, tail) = rest.split_at(rest.find(':').unwrap_or(rest.len()));
            (name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1").then_some(tail)
        }
    };
    host.is_some_and(|tail| {
        tail.is_empty()
            || tail
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok())
    })
}

/// The CORS layer for `--cors` origins (`*` for any, `localhost` for any
/// loopback origin), `None` without them: then browsers keep pages of
/// other origins from reading replies. A preflight from an allowed origin
/// is answered as llama-server answers it: the origin itself, its methods,
/// `Allow-Credentials: true`, and the headers the page asked for.
pub fn cors(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allowed: Arc<dyn Fn(&HeaderValue) -> bool + Send + Sync> =
        if origins.iter().any(|o| o == "*") {
            // The origin itself rather than `*`, as llama-server answers.
            Arc::new(|_| true)
        } else {
            let mut list = Vec::new();
            let loopback = origins.iter().any(|o| o == "localhost");
            for o in origins.iter().filter(|o| *o != "localhost") {
                let well_formed = o.split_once("://").is_some_and(|(scheme, rest)| {
                    !scheme.is_empty() && !rest.is_empty() && !rest.contains('/')
                });
                let v = HeaderValue::from_str(o)
                    .ok()
                    .filter(|_| well_formed)
                    .ok_or_else(|| {
                        format!(
                        "--cors {o:?}: give an origin as browsers send it, scheme://host[:port] \
                     without a path (https://app.example), or *"
                    )
                    })?;
                list.push(v);
            }
            Arc::new(move |origin: &HeaderValue| {
                list.contains(origin) || (loopback && origin.to_str().is_ok_and(loopback_origin))
            })
        };
    let for_credentials = allowed.clone();
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |o: &HeaderValue, _| allowed(o)))
            // llama-server's list (DELETE included: cria serves none, a
            // DELETE then gets 405 as from any other client).
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            // The headers the preflight asks for: `*` would not cover
            // `Authorization` in browsers, and with credentials it is
            // no wildcard at all.
            .allow_headers(AllowHeaders::mirror_request())
            // As llama-server: pages may send credentials. cria sets and
            // reads no cookies, so this lets a page send only what it
            // could send anyway (its API key goes in `Authorization`).
            .allow_credentials(AllowCredentials::predicate(move |o: &HeaderValue, _| {
                for_credentials(o)
            }))
            .expose_headers([header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    ))
}

/// `Access-Control-Allow-Methods` as llama-server spells it, `GET, POST`
/// rather than tower-http's `GET,POST` (the same list; clients that
/// compare the text see llama-server's).
pub async fn cors_methods_spelling(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let name = header::ACCESS_CONTROL_ALLOW_METHODS;
    let spelled = resp
        .headers()
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(str::trim).collect::<Vec<_>>().join(", "))
        .and_then(|v| HeaderValue::from_str(&v).ok());
    if let Some(v) = spelled {
        resp.headers_mut().insert(name, v);
    }
    resp
}

/// `Authorization: Bearer KEY` when the server has keys; the key found
/// names the tenant, put in the request's and the reply's extensions (the
/// metrics layer reads it from the reply).
pub async fn auth(State(app): Shared, mut req: Request, next: Next) -> Response {
    let keys = &app.config.api_keys;
    let tenant = if keys.is_empty() {
        Tenant(0)
    } else {
        // `Authorization: Bearer KEY`, or Anthropic's `X-Api-Key: KEY`.
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim);
        match given.map(|g| find_key(keys, g)) {
            Some(Some(t)) => t,
            found => {
                let msg = if found.is_some() {
                    "invalid API key"
                } else {
                    "missing API key: send it as `Authorization: Bearer KEY`"
                };
                return ApiError::new(StatusCode::UNAUTHORIZED, msg)
                    .code("invalid_api_key")
                    .into_response();
            }
        }
    };
    req.extensions_mut().insert(tenant);
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(tenant);
    resp
}

/// The tenant whose key `given` is. Every key is compared, each in
/// constant time, so the time taken says nothing about which matched.
fn find_key(keys: &[String], given: &str) -> Option<Tenant> {
    let mut found = 0u32;
    for (i, k) in keys.iter().enumerate() {
        let hit = u32::from(constant_time_eq(given.as_bytes(), k.as_bytes()));
        found |= hit.wrapping_neg() & (i as u32 + 1);
    }
    (found != 0).then_some(Tenant(found))
}

/// Compares in time that depends only on the lengths, never on where the
/// first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// POST bodies only as `application/json` (parameters such as
/// `; charset=utf-8` allowed). Browsers send text/plain and form bodies
/// across origins without asking first (no CORS preflight); JSON they
/// do not.
pub async fn json_only(req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        let ct = req.headers().get(header::CONTENT_TYPE);
        let media = ct
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim());
        if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
            let got = match ct {
                Some(v) => format!("got {:?}", String::from_utf8_lossy(v.as_bytes())),
                None => "got none".to_string(),
            };
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("the request body must be JSON sent as `Content-Type: application/json` ({got})"),
            )
            .code("unsupported_media_type")
            .into_response();
        }
    }
    next.run(req).await
}

/// Takes one request from the tenant's budgets, or answers 429.
pub async fn rate_limit(State(app): Shared, req: Request, next: Next) -> Response {
    let tenant = req
        .extensions()
        .get::<Tenant>()
        .copied()
        .unwrap_or_default();
    if let Err(e) = app.limiter.admit(tenant) {
        return e.into_response();
    }
    next.run(req).await
}

/// Token buckets per tenant: requests per minute and tokens (prompt +
/// completion) per minute, each refilling continuously up to one minute's
/// worth. A request is let in while the tenant has a request and at least
/// one token left; its tokens are charged when it ends, so one long answer
/// may overdraw the budget and the tenant then waits for the refill.
pub struct Limiter {
    requests: Option<u32>,
    tokens: Option<u32>,
    buckets: Mutex<HashMap<Tenant, [Bucket; 2]>>,
}

struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, per_min: u32, now: Instant) {
        let rate = f64::from(per_min) / 60.0;
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * rate).min(f64::from(per_min));
        self.at = now;
    }

    /// Whole seconds until the level is back to 1, if it is below.
    fn wait(&self, per_min: u32) -> Option<u32> {
        (self.level < 1.0).then(|| {
            ((1.0 - self.level) * 60.0 / f64::from(per_min))
                .ceil()
                .max(1.0) as u32
        })
    }
}

impl Limiter {
    /// Limits of 0 are none.
    pub fn new(requests: Option<u32>, tokens: Option<u32>) -> Limiter {
        Limiter {
            requests: requests.filter(|&n| n > 0),
            tokens: tokens.filter(|&n| n > 0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, tenant: Tenant, f: impl FnOnce(&mut [Bucket; 2]) -> R) -> R {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(tenant).or_insert_with(|| {
            let full = |n: Option<u32>| Bucket {
                level: f64::from(n.unwrap_or(0)),
                at: now,
            };
            [full(self.requests), full(self.tokens)]
        });
        if let Some(n) = self.requests {
            b[0].refill(n, now);
        }
        if let Some(n) = self.tokens {
            b[1].refill(n, now);
        }
        f(b)
    }

    pub fn admit(&self, tenant: Tenant) -> Result<(), ApiError> {
        if self.requests.is_none() && self.tokens.is_none() {
            return Ok(());
        }
        let (req_wait, tok_wait) = self.with(tenant, |b| {
            let r = self.requests.and_then(|n| b[0].wait(n));
            let t = self.tokens.and_then(|n| b[1].wait(n));
            if r.is_none() && t.is_none() && self.requests.is_some() {
                b[0].level -= 1.0;
            }
            (r, t)
        });
        let (what, n, secs) = match (req_wait, tok_wait) {
            (None, None) => return Ok(()),
            (Some(r), t) if t.is_none_or(|t| r >= t) => ("requests", self.requests, r),
            (_, t) => ("tokens (prompt + completion)", self.tokens, t.unwrap_or(1)),
        };
        let whose = if tenant.0 == 0 {
            "shared by all requests (the server has no API keys)"
        } else {
            "for this API key"
        };
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limit reached: {} {what} per minute {whose}; retry in {secs} s",
                n.unwrap_or(0)
            ),
        )
        .code("rate_limit_exceeded")
        .retry_after(secs))
    }

    /// Charges the tokens of a finished (or cancelled) request.
    pub fn charge(&self, tenant: Tenant, tokens: usize) {
        if self.tokens.is_some() {
            self.with(tenant, |b| b[1].level -= tokens as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let allow = vec!["my-box.lan".to_string()];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "10.1.2.3:1",
            "[::1]",
            "[::1]:8080",
            "[fe80::1]:80",
            "localhost",
            "LocalHost:3000",
            "my-box.lan:8080",
            "MY-BOX.LAN",
        ] {
            assert!(host_allowed(ok, &allow), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "127.0.0.1:notaport",
            "127.0.0.1:99999",
            "[::1",
            "[::1]x",
            "[evil.example]:80",
            "my-box.lan.evil.example",
            "",
            "1.2.3",
        ] {
            assert!(!host_allowed(bad, &allow), "{bad}");
        }
    }

    #[test]
    fn keys_name_tenants() {
        let keys: Vec<String> = ["alpha", "beta", "gamma"].map(String::from).to_vec();
        assert_eq!(find_key(&keys, "alpha"), Some(Tenant(1)));
        assert_eq!(find_key(&keys, "gamma"), Some(Tenant(3)));
        assert_eq!(find_key(&keys, "gamm"), None);
        assert_eq!(find_key(&keys, "gammaa"), None);
        assert_eq!(find_key(&keys, ""), None);
    }

    #[test]
    fn cors_origins_are_checked() {
        assert!(cors(&[]).unwrap().is_none());
        assert!(
            cors(&["https://app.example".into(), "http://localhost:3000".into()])
                .unwrap()
                .is_some()
        );
        assert!(cors(&["*".into()]).unwrap().is_some());
        for bad in ["app.example", "https://app.example/", "https://", "://x"] {
            assert!(cors(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(cors(&["localhost".into()]).unwrap().is_some());
        for ok in [
            "http://localhost",
            "http://127.0.0.1:3000",
            "https://[::1]:8080",
        ] {
            assert!(loopback_origin(ok), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com",
            "http://notlocalhost",
            "http://evil.com",
            "localhost",
            "http://127.0.0.1:x",
            "http://[::2]",
        ] {
            assert!(!loopback_origin(bad), "{bad}");
        }
    }

    #[test]
    fn request_bucket_refuses_then_refills() {
        let l = Limiter::new(Some(2), None);
        let t = Tenant(1);
        assert!(l.admit(t).is_ok());
        assert!(l.admit(t).is_ok());
        let e = l.admit(t).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code, Some("rate_limit_exceeded"));
        // 2 per minute: one comes back within 30 s.
        let secs = e.retry_after.unwrap();
        assert!((1..=30).contains(&secs), "{secs}");
        // Other tenants have their own buckets.
        assert!(l.admit(Tenant(2)).is_ok());
        // Time passes.
        l.with(t, |b| b[0].at -= Duration::from_secs(31));
        assert!(l.admit(t).is_ok());
    }

    #[test]
    fn tokens_are_charged_after_and_may_overdraw() {
        let l = Limiter::new(None, Some(60));
        let t = Tenant(3);
        assert!(l.admit(t).is_ok());
        l.charge(t, 90);
        let e = l.admit(t).unwrap_err();
        // 31 tokens short at one per second.
        assert_eq!(e.retry_after, Some(31));
        assert!(e.message.contains("tokens"), "{}", e.message);
        l.with(t, |b| b[1].at -= Duration::from_secs(31));
        assert!(l.admit(t).is_ok());
        // Without limits nothing is kept.
        let none = Limiter::new(Some(0), None);
        none.charge(t, 1000);
        assert!(none.admit(t).is_ok());
        assert!(none.buckets.lock().unwrap().is_empty());
    }
}
