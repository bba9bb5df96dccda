//! The chat page at `/`: four static files compiled into the binary
//! (`crates/server/webui/`), no CDN and no network access. The page talks
//! to this server's own `/v1/chat/completions`; it holds no secrets, so it
//! is served without a key and asks for one when the API answers 401.
//! `--no-webui` leaves these routes out.
//!
//! A strict Content-Security-Policy (scripts and connections to this
//! origin only, no inline script) backs up the page's own rule that model
//! text is escaped before it becomes HTML.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../webui/index.html");
const APP: &str = include_str!("../webui/app.js");
const MARKDOWN: &str = include_str!("../webui/markdown.js");
const STYLE: &str = include_str!("../webui/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The page's routes, for `routes::router` to merge.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { file(APP, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/markdown.js",
            get(|| async { file(MARKDOWN, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_only_its_own_files() {
        for src in [super::INDEX, super::APP, super::MARKDOWN, super::STYLE] {
            assert!(
                !src.contains("http://") && !src.contains("//cdn"),
                "external URL"
            );
        }
        for f in ["/ui/app.js", "/ui/markdown.js", "/ui/style.css"] {
            assert!(super::INDEX.contains(f), "{f} not referenced");
        }
    }
}
