//! Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`),
//! as llama-server offers it: the body is translated into the OpenAI chat
//! request it means and prepared by the one chat path (`prepare.rs`:
//! template, tools, constraints, limits), and the engine's answer is shaped
//! back into Anthropic's message (or its stream of events) in `reply.rs`.
//! The translation is a JSON-to-JSON rewrite of a body already bounded by
//! `--max-body`; what has no meaning here (images: cria's models read text
//! only) is refused with a 400 naming the block.

use crate::error::ApiError;
use serde_json::{json, Map, Value};

fn bad(param: &str, msg: &str) -> ApiError {
    ApiError::invalid(param, format!("{param}: {msg}"))
}

/// An image block: refused, with llama-server's status and words for a
/// model without a vision projector (a 500 whose message says "image
/// input is not supported", which clients of llama-server look for).
/// Nothing of the image is read.
fn no_images(param: &str) -> ApiError {
    ApiError {
        param: Some(param.to_string()),
        ..ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "{param}: image input is not supported: this model reads text only \
                 (cria serves no vision model)"
            ),
        )
        .code("not_supported")
    }
}

/// The text of a `system` field or a `tool_result`'s `content`: a string,
/// or text blocks (joined).
fn text_of(v: &Value, param: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for (i, b) in blocks.iter().enumerate() {
                let p = format!("{param}[{i}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => out.push_str(
                        b.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&p, "a text block needs \"text\""))?,
                    ),
                    Some("image") => return Err(no_images(&p)),
                    other => {
                        return Err(bad(
                            &p,
                            &format!("a block of type {other:?} is not supported"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(param, "give a string or an array of text blocks")),
    }
}

/// Anthropic's body -> the OpenAI chat body it means.
pub fn to_openai(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let v: Value = crate::openai::parse(body)?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "the body must be a JSON object"))?;
    let mut out = Map::new();
    let mut messages = Vec::new();
    if let Some(s) = obj.get("system") {
        let text = text_of(s, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let list = match obj.get("messages") {
        Some(Value::Array(l)) => l,
        Some(_) => return Err(bad("messages", "must be an array")),
        None => return Err(bad("messages", "missing: give the conversation")),
    };
    for (i, m) in list.iter().enumerate() {
        let p = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{p}.role"), "give \"user\" or \"assistant\""))?;
        if role != "user" && role != "assistant" {
            return Err(bad(
                &format!("{p}.role"),
                &format!("{role:?}: give \"user\" or \"assistant\""),
            ));
        }
        let content = m.get("content").unwrap_or(&Value::Null);
        let blocks = match content {
            Value::String(s) => {
                messages.push(json!({"role": role, "content": s}));
                continue;
            }
            Value::Array(b) => b,
            _ => {
                return Err(bad(
                    &format!("{p}.content"),
                    "give a string or an array of blocks",
                ))
            }
        };
        let mut text = String::new();
        let mut thinking = String::new();
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let bp = format!("{p}.content[{j}]");
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(
                    b.get("text")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(&bp, "a text block needs \"text\""))?,
                ),
                // Earlier reasoning goes to the template as the message's
                // `reasoning_content`, as llama-server does (reasoning
                // templates decide whether to show it); redacted reasoning
                // has no text to show.
                Some("thinking") if role == "assistant" => thinking.push_str(
                    b.get("thinking")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(&bp, "a thinking block needs \"thinking\""))?,
                ),
                Some("thinking") | Some("redacted_thinking") => {}
                Some("tool_use") if role == "assistant" => {
                    let name = b
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(&bp, "a tool_use block needs \"name\""))?;
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(json!({
                        "id": b.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {"name": name, "arguments": input.to_string()},
                    }));
                }
                Some("tool_result") if role == "user" => {
                    let mut content = text_of(
                        b.get("content").unwrap_or(&Value::Null),
                        &format!("{bp}.content"),
                    )?;
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        content = format!("Error: {content}");
                    }
                    results.push(json!({
                        "role": "tool",
                        "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null),
                        "content": content,
                    }));
                }
                Some("image") => return Err(no_images(&bp)),
                Some("document") => {
                    return Err(bad(
                        &bp,
                        "documents are not supported: send their text as a text block",
                    ))
                }
                other => {
                    return Err(bad(
                        &bp,
                        &format!("a block of type {other:?} is not supported here"),
                    ))
                }
            }
        }
        // Tool results answer the calls before them; the text after. A
        // user turn of results only is those results (as llama-server's:
        // an empty user turn after them would end the assistant's turn for
        // reasoning templates, which then hide its thinking).
        let only_results = !results.is_empty();
        messages.extend(results);
        let mut message = if !calls.is_empty() {
            json!({"role": "assistant", "content": text, "tool_calls": calls})
        } else if !text.is_empty() || !thinking.is_empty() || (role == "user" && !only_results) {
            json!({"role": role, "content": text})
        } else {
            continue;
        };
        if !thinking.is_empty() {
            message["reasoning_content"] = Value::String(thinking);
        }
        messages.push(message);
    }
    out.insert("messages".into(), Value::Array(messages));
    for (from, to) in [
        ("max_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stream", "stream"),
        ("stop_sequences", "stop"),
    ] {
        if let Some(x) = obj.get(from) {
            out.insert(to.into(), x.clone());
        }
    }
    if let Some(tools) = obj.get("tools") {
        let list = tools
            .as_array()
            .ok_or_else(|| bad("tools", "must be an array"))?;
        let mut converted = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("tools[{i}].name"), "missing"))?;
            converted.push(json!({"type": "function", "function": {
                "name": name,
                "description": t.get("description").cloned().unwrap_or(Value::Null),
                "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
            }}));
        }
        out.insert("tools".into(), Value::Array(converted));
    }
    if let Some(tc) = obj.get("tool_choice") {
        let choice = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": tc.get("name").cloned().unwrap_or(Value::Null)}})
            }
            _ => {
                return Err(bad(
                    "tool_choice",
                    "give {\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}",
                ))
            }
        };
        out.insert("tool_choice".into(), choice);
    }
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| ApiError::invalid("body", format!("cannot translate the body: {e}")))
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish: &str, stop_string: bool) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        _ if stop_string => "stop_sequence",
        _ => "end_turn",
    }
}

/// Anthropic's content blocks for a reply's text and tool calls (OpenAI's
/// shape, `arguments` a JSON text).
pub fn content(text: &str, calls: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    if !text.is_empty() || calls.is_empty() {
        out.push(json!({"type": "text", "text": text}));
    }
    for c in calls {
        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        out.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
    }
    out
}

/// Anthropic's `usage` of an answered request.
pub fn usage(d: &cria_engine::Done) -> Value {
    json!({
        "input_tokens": d.prompt_tokens.saturating_sub(d.cached_tokens),
        "cache_read_input_tokens": d.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": d.completion_tokens,
    })
}

/// One event of Anthropic's stream (`event: TYPE` and its JSON).
pub fn sse_event(v: serde_json::Value) -> axum::response::sse::Event {
    let kind = v["type"].as_str().unwrap_or("message").to_string();
    axum::response::sse::Event::default()
        .event(kind)
        .data(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(v: Value) -> Result<Value, ApiError> {
        to_openai(v.to_string().as_bytes()).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn system_tools_and_results_become_openai_messages() {
        let out = conv(json!({
            "system": [{"type": "text", "text": "Be brief."}],
            "max_tokens": 10,
            "stop_sequences": ["X"],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
            ],
        }))
        .unwrap();
        let m = out["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "sunny"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "ok"}));
        assert_eq!(out["stop"], json!(["X"]));
        assert_eq!(out["tool_choice"], "required");
        assert_eq!(
            out["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
    }

    #[test]
    fn thinking_blocks_become_reasoning_content() {
        let out = conv(json!({
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Look first. ", "signature": "s"},
                    {"type": "redacted_thinking", "data": "x"},
                    {"type": "thinking", "thinking": "Then list."},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {}},
                ]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "Alone."}]},
            ],
        }))
        .unwrap();
        let m = out["messages"].as_array().unwrap();
        assert_eq!(m[1]["reasoning_content"], "Look first. Then list.");
        assert_eq!(m[1]["tool_calls"][0]["id"], "t1");
        assert_eq!(
            m[2],
            json!({"role": "assistant", "content": "", "reasoning_content": "Alone."})
        );
        assert!(m[0].get("reasoning_content").is_none());
        // Results alone are no user turn.
        let out = conv(json!({"max_tokens": 1, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]}
        ]}))
        .unwrap();
        assert_eq!(
            out["messages"],
            json!([{"role": "tool", "tool_call_id": "t1", "content": "x"}])
        );
        assert!(conv(json!({"max_tokens": 1, "messages": [
            {"role": "assistant", "content": [{"type": "thinking"}]}
        ]}))
        .is_err());
    }

    #[test]
    fn what_cannot_be_read_is_refused_by_name() {
        for (body, param) in [
            (json!({}), "messages"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [], "tool_choice": {"type": "x"}}),
                "tool_choice",
            ),
        ] {
            let e = conv(body.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn images_get_llama_servers_refusal_and_empty_messages_pass() {
        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}});
        for (body, param) in [
            (
                json!({"messages": [{"role": "user", "content": [image.clone(), {"type": "text", "text": "?"}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "f"}, image]}]}]}),
                "messages[0].content[0].content[1]",
            ),
        ] {
            let e = conv(body.clone()).unwrap_err();
            assert_eq!(e.status.as_u16(), 500, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
            assert!(
                e.message.contains("image input is not supported"),
                "{}",
                e.message
            );
        }
        // No turn at all: the chat path renders the assistant's opening.
        let out = conv(json!({"messages": [], "max_tokens": 5})).unwrap();
        assert_eq!(out["messages"], json!([]));
    }
}
