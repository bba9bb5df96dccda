//! Errors: [`ApiError`] is what a request gets back (OpenAI's error JSON
//! with an HTTP status); [`Error`] is why the server could not start.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::fmt;

/// An OpenAI-style error reply:
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, as a JSON path (`messages[1].role`).
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u32>,
    /// A prompt longer than the context: (prompt tokens, context). The
    /// error's `type` is then llama-server's `exceed_context_size_error`,
    /// with both numbers as `n_prompt_tokens` and `n_ctx`.
    pub exceeded: Option<(usize, usize)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            exceeded: None,
        }
    }

    /// A prompt of `n_prompt` tokens does not fit a context of `n_ctx`.
    pub fn exceeded(mut self, n_prompt: usize, n_ctx: usize) -> ApiError {
        self.code = Some("context_length_exceeded");
        self.exceeded = Some((n_prompt, n_ctx));
        self
    }

    /// 400 about one field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 400 for a parameter cria does not implement.
    pub fn unsupported(param: &str, what: &str) -> ApiError {
        ApiError {
            code: Some("unsupported_parameter"),
            ..ApiError::invalid(param, format!("{param}: {what} is not supported by cria"))
        }
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn retry_after(mut self, secs: u32) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// OpenAI's `type` for a status.
    pub fn kind(&self) -> &'static str {
        if self.exceeded.is_some() {
            return "exceed_context_size_error";
        }
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        });
        if let Some((n_prompt, n_ctx)) = self.exceeded {
            body["error"]["n_prompt_tokens"] = json!(n_prompt);
            body["error"]["n_ctx"] = json!(n_ctx);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Why the server did not start or stopped with an error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    Bind {
        addr: String,
        source: std::io::Error,
    },
    Runtime(std::io::Error),
    Serve(std::io::Error),
    /// The model could not be loaded (the message says why).
    Load(String),
    /// A setting that cannot work (the message says which and why).
    Config(String),
}

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { kind }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source} (is another server on that port? try --port)"
            ),
            ErrorKind::Runtime(e) => write!(f, "cannot start the async runtime: {e}"),
            ErrorKind::Serve(e) => write!(f, "the HTTP server failed: {e}"),
            ErrorKind::Load(e) | ErrorKind::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}
