//! `POST /v1/embeddings` in OpenAI's shape.
//!
//! `input` is a string, an array of strings, an array of token ids, or an
//! array of arrays of token ids (the `prompt` shapes of `shapes.rs`), at
//! most [`MAX_INPUTS`] of them. Each input is one engine request with
//! [`cria_engine::EmbedParams`], so embeddings share the scheduler's
//! forward passes with generation; the inputs of one call go in at most
//! `--parallel` at a time and the reply keeps their order (`data[i].index`).
//! An input longer than the context is a 400 (`context_length_exceeded`),
//! never cut.
//!
//! Vectors are L2-normalized unless `"normalize": false` (or llama.cpp's
//! `"embd_normalize": -1`). `encoding_format` is `"float"` (default) or
//! `"base64"` (little-endian f32 bytes, as OpenAI sends them).

use crate::error::ApiError;
use crate::guard::Tenant;
use crate::openai;
use crate::routes::{read_body, App, Ready};
use crate::shapes::Prompt;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cria_engine::{EmbedParams, Embedding, Event, Pooling, Request, SubmitError};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// Inputs per request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Deserialize, Debug)]
struct EmbeddingRequest {
    input: serde_json::Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    normalize: Option<bool>,
    /// llama-server's spelling: -1 off, 2 Euclidean (its default).
    #[serde(default)]
    embd_normalize: Option<i64>,
}

/// A parsed and tokenized embedding request.
pub struct Prepared {
    inputs: Vec<Vec<u32>>,
    base64: bool,
    params: EmbedParams,
}

/// The route: parse and tokenize on the blocking pool, embed through the
/// engine, reply.
pub async fn handler(
    State(app): State<Arc<App>>,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let r = app.ready()?.clone();
    let body = read_body(&app, &headers, body).await?;
    let pooling = r
        .pooling
        .clone()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let prepared = {
        let r = r.clone();
        app.prepare.run(move || prepare(&r, pooling, &body)).await?
    };
    let reply = run(&r, tenant.0, prepared, app.state()).await?;
    let bytes = serde_json::to_vec(&reply).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the reply: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// Parses the body and tokenizes the inputs (on the blocking pool).
pub fn prepare(r: &Ready, pooling: Pooling, body: &[u8]) -> Result<Prepared, ApiError> {
    let req: EmbeddingRequest = openai::parse(body)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format: {other:?} is not \"float\" or \"base64\""),
            ))
        }
    };
    let dim = r.model.config.dim;
    if let Some(d) = req.dimensions.filter(|&d| d != dim as u64) {
        return Err(ApiError::invalid(
            "dimensions",
            format!("dimensions: {d}, but this model's embeddings have {dim} (they cannot be shortened)"),
        ));
    }
    let normalize = match (req.normalize, req.embd_normalize) {
        (Some(n), None) => n,
        (None, None | Some(2)) => true,
        (None, Some(-1)) => false,
        (None, Some(n)) => {
            return Err(ApiError::invalid(
                "embd_normalize",
                format!("embd_normalize: {n} is not supported (2: Euclidean, -1: none)"),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "normalize",
                "give normalize or embd_normalize, not both",
            ))
        }
    };
    if pooling == Pooling::None {
        return Err(ApiError::invalid(
            "input",
            "this model pools nothing (its GGUF has no pooling_type), which gives one vector \
             per token and is not OpenAI's shape: start the server with --pooling mean|cls|last",
        ));
    }
    // As llama-embedding: special tokens added and parsed.
    let encode = |i: usize, t: &str| {
        r.tok
            .encode(t, true, true)
            .map_err(|e| ApiError::invalid(format!("input[{i}]"), format!("input[{i}]: {e}")))
    };
    let texts = |texts: Vec<String>| -> Result<Vec<Vec<u32>>, ApiError> {
        check_count(texts.len())?;
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| encode(i, t))
            .collect()
    };
    let inputs = match content_inputs(&req.input)? {
        Some(entries) => {
            check_count(entries.len())?;
            let mut inputs = Vec::with_capacity(entries.len());
            for (i, e) in entries.into_iter().enumerate() {
                inputs.push(match e {
                    Entry::Text(t) => encode(i, &t)?,
                    Entry::Tokens(ids) => ids,
                });
            }
            inputs
        }
        // The shapes completions take too (errors with their JSON paths).
        None => {
            #[derive(Deserialize)]
            struct Plain {
                input: Prompt,
            }
            match openai::parse::<Plain>(body)?.input {
                Prompt::Text(t) => texts(vec![t])?,
                Prompt::Texts(t) => texts(t)?,
                Prompt::Tokens(ids) => vec![ids],
                Prompt::TokenLists(lists) => {
                    check_count(lists.len())?;
                    lists
                }
            }
        }
    };
    let n_ctx = r.engine.config().n_ctx;
    let n_vocab = r.model.config.n_vocab;
    for (i, ids) in inputs.iter().enumerate() {
        let param = format!("input[{i}]");
        if ids.is_empty() {
            return Err(ApiError::invalid(
                &param,
                format!("{param}: the input has no tokens"),
            ));
        }
        if ids.len() > n_ctx {
            return Err(ApiError::invalid(
                &param,
                format!(
                    "{param}: the input has {} tokens but the context holds {n_ctx}: split it or \
                     raise --ctx-size (inputs are never cut)",
                    ids.len()
                ),
            )
            .code("context_length_exceeded"));
        }
        if let Some((j, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= n_vocab)
        {
            return Err(ApiError::invalid(
                format!("{param}[{j}]"),
                format!("{param}[{j}]: {id} is not in the vocabulary of {n_vocab}"),
            ));
        }
    }
    Ok(Prepared {
        inputs,
        base64,
        params: EmbedParams { pooling, normalize },
    })
}

/// One input of a list that holds content objects.
#[derive(Debug, PartialEq)]
enum Entry {
    Text(String),
    Tokens(Vec<u32>),
}

/// llama-server's content objects in `input`: `{"content": [{"type":
/// "text", "text": ...}, ...]}` alone or among strings and token lists,
/// each the concatenation of its text parts. `None` when `input` holds no
/// object (the plain shapes, parsed as for completions). Other part types
/// (images, audio) are a 400: the model reads text only.
fn content_inputs(input: &serde_json::Value) -> Result<Option<Vec<Entry>>, ApiError> {
    use serde_json::Value;
    let object = |v: &Value, param: &str| -> Result<Entry, ApiError> {
        let bad = |why: &str| ApiError::invalid(param, format!("{param}: {why}"));
        let Some(parts) = v.get("content") else {
            return Err(bad(
                "an object needs \"content\": [{\"type\": \"text\", \"text\": ...}]",
            ));
        };
        let Value::Array(parts) = parts else {
            return Err(bad(
                "\"content\" must be an array of parts ({\"type\": \"text\", \"text\": ...})",
            ));
        };
        let mut text = String::new();
        for (j, p) in parts.iter().enumerate() {
            let at = |why: &str| {
                ApiError::invalid(
                    format!("{param}.content[{j}]"),
                    format!("{param}.content[{j}]: {why}"),
                )
            };
            match p.get("type").and_then(Value::as_str) {
                Some("text") => match p.get("text").and_then(Value::as_str) {
                    Some(t) => text.push_str(t),
                    None => return Err(at("a text part needs \"text\", a string")),
                },
                Some(kind @ ("image_url" | "input_audio" | "input_video")) => {
                    return Err(at(&format!(
                        "{kind}: this model reads text only; give text parts"
                    )))
                }
                Some(other) => {
                    return Err(at(&format!(
                        "a part of type {other:?} is not supported (give \"text\")"
                    )))
                }
                None => return Err(at("a part needs \"type\": \"text\"")),
            }
        }
        Ok(Entry::Text(text))
    };
    match input {
        Value::Object(_) => Ok(Some(vec![object(input, "input")?])),
        Value::Array(items) if items.iter().any(Value::is_object) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let param = format!("input[{i}]");
                match v {
                    Value::String(s) => Ok(Entry::Text(s.clone())),
                    Value::Object(_) => object(v, &param),
                    Value::Array(ids) => ids
                        .iter()
                        .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                        .collect::<Option<Vec<u32>>>()
                        .map(Entry::Tokens)
                        .ok_or_else(|| {
                            ApiError::invalid(
                                &param,
                                format!("{param}: a list of token ids must hold only token ids"),
                            )
                        }),
                    _ => Err(ApiError::invalid(
                        &param,
                        format!(
                            "{param}: give a string, a list of token ids or \
                             {{\"content\": [{{\"type\": \"text\", \"text\": ...}}]}}"
                        ),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Ok(None),
    }
}

fn check_count(n: usize) -> Result<(), ApiError> {
    if n > MAX_INPUTS {
        return Err(ApiError::invalid(
            "input",
            format!("input: {n} inputs, at most {MAX_INPUTS}"),
        ));
    }
    Ok(())
}

/// Runs every input through the engine, at most `slots` at a time, and
/// builds the reply.
pub async fn run(
    r: &Ready,
    tenant: u32,
    p: Prepared,
    state: &'static str,
) -> Result<Reply, ApiError> {
    let n = p.inputs.len();
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n];
    let mut prompt_tokens = 0usize;
    let mut in_flight: VecDeque<(usize, UnboundedReceiver<Event>)> = VecDeque::new();
    let window = r.engine.config().slots.max(1);
    let mut todo: VecDeque<(usize, Vec<u32>)> = p.inputs.into_iter().enumerate().collect();
    while !todo.is_empty() || !in_flight.is_empty() {
        if in_flight.len() < window {
            if let Some((i, ids)) = todo.pop_front() {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let req = Request {
                    tenant,
                    embed: Some(p.params),
                    // The engine takes the ids; they are kept for a retry.
                    ..Request::new(
                        ids.clone(),
                        cria_engine::GenerateParams::for_embedding(),
                        tx,
                    )
                };
                match r.engine.submit(req) {
                    Ok(()) => {
                        in_flight.push_back((i, rx));
                        continue;
                    }
                    // Ours in flight will free places: wait for one.
                    Err(SubmitError::QueueFull { .. }) if !in_flight.is_empty() => {
                        todo.push_front((i, ids));
                    }
                    Err(SubmitError::QueueFull { max_queue }) => {
                        return Err(ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            format!(
                                "the server is busy: all {} slots are in use and {max_queue} \
                                 requests are waiting; retry later",
                                r.engine.config().slots
                            ),
                        )
                        .code("server_busy")
                        .retry_after(1));
                    }
                    Err(SubmitError::Stopped) => return Err(stopped(state)),
                    Err(SubmitError::Invalid(e)) => {
                        return Err(ApiError::invalid(
                            format!("input[{i}]"),
                            format!("input[{i}]: {e}"),
                        ))
                    }
                }
            }
        }
        let Some((i, mut rx)) = in_flight.pop_front() else {
            continue;
        };
        let e = wait(&mut rx, state).await?;
        prompt_tokens += e.prompt_tokens;
        vectors[i] = e.vectors.into_iter().next();
    }
    let data: Vec<Item> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let v = v.unwrap_or_default();
            Item {
                object: "embedding",
                index,
                embedding: if p.base64 {
                    Vector::Base64(base64(&v))
                } else {
                    Vector::Float(v)
                },
            }
        })
        .collect();
    Ok(Reply {
        object: "list",
        data,
        model: r.model_id.clone(),
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

/// The reply, serialized straight from f32s (a `serde_json::Value` would
/// widen them to f64 and print twice the digits).
#[derive(Serialize)]
pub struct Reply {
    object: &'static str,
    data: Vec<Item>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

fn stopped(state: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the engine has stopped ({state})"),
    )
}

/// The embedding that ends a request's events.
async fn wait(rx: &mut UnboundedReceiver<Event>, state: &str) -> Result<Embedding, ApiError> {
    loop {
        match rx.recv().await {
            Some(Event::Embedding(e)) => return Ok(e),
            Some(Event::Token(_) | Event::Progress(_)) => continue,
            Some(Event::Error(e)) => return Err(crate::reply::engine_error(&e)),
            Some(Event::Done(_)) | None => return Err(stopped(state).retry_after(5)),
        }
    }
}

/// Standard base64 with padding of the vector's little-endian bytes.
fn base64(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= c.len() {
                out.push(ABC[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{content_inputs, Entry};
    use serde_json::json;

    #[test]
    fn content_objects_are_their_text() {
        let got = content_inputs(&json!([
            "hello world",
            {"content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]},
            [1, 2],
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            [
                Entry::Text("hello world".into()),
                Entry::Text("hello world".into()),
                Entry::Tokens(vec![1, 2]),
            ]
        );
        assert_eq!(
            content_inputs(&json!({"content": [{"type": "text", "text": "x"}]})).unwrap(),
            Some(vec![Entry::Text("x".into())])
        );
        // The plain shapes are left to the completions parser.
        assert_eq!(content_inputs(&json!(["a", "b"])).unwrap(), None);
        assert_eq!(content_inputs(&json!("a")).unwrap(), None);
    }

    #[test]
    fn other_content_is_a_400_naming_the_part() {
        for (input, param) in [
            (json!({"content": "string"}), "input"),
            (json!({"text": "x"}), "input"),
            (
                json!({"content": [{"type": "unknown"}]}),
                "input.content[0]",
            ),
            (
                json!({"content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}),
                "input.content[0]",
            ),
            (
                json!([{"content": [{"type": "text"}]}]),
                "input[0].content[0]",
            ),
            (json!([{"content": []}, 3]), "input[1]"),
            (json!([{"content": []}, [1, -2]]), "input[1]"),
        ] {
            let e = content_inputs(&input).expect_err(&input.to_string());
            assert_eq!(e.param.as_deref(), Some(param), "{input}: {e:?}");
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // 1.0f32 = 00 00 80 3f; 2.0 = 00 00 00 40.
        assert_eq!(super::base64(&[1.0]), "AACAPw==");
        assert_eq!(super::base64(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(super::base64(&[]), "");
    }
}
