//! OpenAI tool calling: `tools`, `tool_choice` and `parallel_tool_calls`
//! in; the model's calls out as `message.tool_calls`.
//!
//! How a model is asked to call tools depends on how it was trained, which
//! its chat template shows ([`Format::of`]):
//! - **Hermes / Qwen** (`<tool_call>` in the template): the template lists
//!   the tools; calls come back as `<tool_call>{"name", "arguments"}</tool_call>`.
//! - **Llama 3.1 / 3.2** (`<|python_tag|>` or `ipython`): the template lists
//!   the tools; a call is the whole reply as `{"name", "parameters"}`.
//! - **Mistral** (`[TOOL_CALLS]`): a JSON array of `{"name", "arguments"}`
//!   after the `[TOOL_CALLS]` token.
//! - **Generic**, for templates that know nothing of tools (ChatML models
//!   such as the default one): a system message describes the tools and the
//!   reply is constrained to JSON, `{"tool_calls": [...]}` or
//!   `{"response": "..."}`, so it is always unambiguous.
//!
//! When a call is required (`tool_choice` "required" or a named function)
//! the reply is constrained by the tools' parameter schemas. A reply is
//! read as a call only in the format's own shape: text that merely
//! contains `{` stays text.

use cria_grammar::GrammarSpec;
use cria_prompt::Message;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// At most this many tools per request.
pub const MAX_TOOLS: usize = 128;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Generic,
    Hermes,
    Llama3,
    Mistral,
}

impl Format {
    /// The tool-call format a chat template was written for.
    pub fn of(template_source: &str) -> Format {
        if template_source.contains("<tool_call>") {
            Format::Hermes
        } else if template_source.contains("[TOOL_CALLS]") {
            Format::Mistral
        } else if template_source.contains("<|python_tag|>") || template_source.contains("ipython")
        {
            Format::Llama3
        } else {
            Format::Generic
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    Auto,
    None,
    Required,
    Named(String),
}

#[derive(Clone, Debug)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// A request's tools, checked.
#[derive(Clone, Debug)]
pub struct Tools {
    pub list: Vec<Tool>,
    pub choice: Choice,
    pub parallel: bool,
}

/// What the reply needs to turn the model's text back into calls.
#[derive(Clone, Debug)]
pub struct Reading {
    pub format: Format,
    pub names: Vec<String>,
}

/// A parsed call: `arguments` is a JSON text (OpenAI's shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

/// Reads `tools`, `tool_choice` and `parallel_tool_calls`. `None` when no
/// tools are given (a `tool_choice` without tools is an error).
pub fn parse(
    tools: Option<&Value>,
    choice: Option<&Value>,
    parallel: Option<&Value>,
) -> Result<Option<Tools>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => {
            return match choice {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s == "none" || s == "auto" => Ok(None),
                Some(_) => Err(ApiError::invalid(
                    "tool_choice",
                    "tool_choice: give `tools` to choose from",
                )),
            }
        }
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::invalid("tools", "tools: must be an array")),
    };
    if list.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            "tools",
            format!("tools: {} given, at most {MAX_TOOLS}", list.len()),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let p = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::unsupported(
                &format!("{p}.type"),
                "tools other than {\"type\": \"function\"}",
            ));
        }
        let f = t
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                ApiError::invalid(format!("{p}.function"), format!("{p}.function: missing"))
            })?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(ApiError::invalid(
                format!("{p}.function.name"),
                format!("{p}.function.name: {name:?} must be 1 to 64 of a-z, A-Z, 0-9, _ and -"),
            ));
        }
        if out.iter().any(|t: &Tool| t.name == name) {
            return Err(ApiError::invalid(
                format!("{p}.function.name"),
                format!("{p}.function.name: {name:?} is given twice"),
            ));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("{p}.function.parameters"),
                    format!("{p}.function.parameters: must be a JSON Schema object"),
                ))
            }
        };
        out.push(Tool {
            name: name.to_string(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            parameters,
        });
    }
    let choice = match choice {
        None | Some(Value::Null) => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Choice::Auto,
            "none" => Choice::None,
            "required" => Choice::Required,
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("tool_choice: {other:?} is not auto, none, required or a function"),
                ))
            }
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "tool_choice",
                        "tool_choice: give {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            if !out.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice.function.name",
                    format!("tool_choice: {name:?} is not one of the tools"),
                ));
            }
            Choice::Named(name.to_string())
        }
    };
    let parallel = match parallel {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "parallel_tool_calls",
                "parallel_tool_calls: must be true or false",
            ))
        }
    };
    Ok(Some(Tools {
        list: out,
        choice,
        parallel,
    }))
}

impl Tools {
    /// The tools as OpenAI lists them, for templates' `tools` variable.
    pub fn openai_list(&self) -> Value {
        Value::Array(
            self.list
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect(),
        )
    }

    /// The tools the model may call under `tool_choice`.
    fn callable(&self) -> Vec<&Tool> {
        match &self.choice {
            Choice::Named(n) => self.list.iter().filter(|t| &t.name == n).collect(),
            _ => self.list.iter().collect(),
        }
    }

    /// Adds the generic format's instructions to the conversation.
    pub fn instruct_generic(&self, messages: &mut Vec<Message>) {
        let listed: Vec<Value> = self
            .callable()
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        let how = match self.choice {
            Choice::Auto => "To call tools, reply with JSON {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments object>}]}; to answer directly, reply with JSON {\"response\": <your answer>}.",
            _ => "Reply with JSON {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments object>}]}.",
        };
        let text = format!(
            "You can call these tools:\n{}\n\n{how}",
            serde_json::to_string_pretty(&listed).unwrap_or_default()
        );
        match messages.first_mut() {
            Some(m) if m.role == "system" => {
                m.content = format!("{}\n\n{text}", m.content);
            }
            _ => messages.insert(0, Message::new("system", &text)),
        }
        // Earlier calls, in the same JSON the model is asked to write.
        for m in messages.iter_mut() {
            if let Some(calls) = m.tool_calls.take() {
                let calls: Vec<Value> = calls
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| json!({"name": c["function"]["name"], "arguments": c["function"]["arguments"]}))
                    .collect();
                m.content = json!({"tool_calls": calls}).to_string();
            }
        }
    }

    /// The constraint for the reply, if any.
    pub fn grammar(&self, format: Format) -> Option<GrammarSpec> {
        let one_call = |t: &Tool, args: &str| {
            json!({"type": "object",
                   "properties": {"name": {"const": t.name}, args: t.parameters},
                   "required": ["name", args], "additionalProperties": false})
        };
        let callable = self.callable();
        match format {
            Format::Generic => {
                let mut items = json!({"anyOf": callable.iter().map(|t| one_call(t, "arguments")).collect::<Vec<_>>()});
                if callable.len() == 1 {
                    items = one_call(callable[0], "arguments");
                }
                let mut array = json!({"type": "array", "items": items, "minItems": 1});
                if !self.parallel {
                    array["maxItems"] = json!(1);
                }
                let calls = json!({"type": "object", "properties": {"tool_calls": array},
                                   "required": ["tool_calls"], "additionalProperties": false});
                let response = json!({"type": "object", "properties": {"response": {"type": "string"}},
                                      "required": ["response"], "additionalProperties": false});
                Some(GrammarSpec::JsonSchema(match self.choice {
                    Choice::Auto => json!({"anyOf": [calls, response]}),
                    _ => calls,
                }))
            }
            _ if matches!(self.choice, Choice::Auto | Choice::None) => None,
            Format::Hermes => {
                let any = json!({"anyOf": callable.iter().map(|t| one_call(t, "arguments")).collect::<Vec<_>>()});
                Some(GrammarSpec::Lark(format!(
                    "%llguidance {{}}\nstart: \"<tool_call>\\n\" call \"\\n</tool_call>\"\ncall: %json {any}\n"
                )))
            }
            Format::Llama3 => Some(GrammarSpec::JsonSchema(
                json!({"anyOf": callable.iter().map(|t| one_call(t, "parameters")).collect::<Vec<_>>()}),
            )),
            Format::Mistral => Some(GrammarSpec::JsonSchema(
                json!({"type": "array", "minItems": 1,
                "items": {"anyOf": callable.iter().map(|t| one_call(t, "arguments")).collect::<Vec<_>>()}}),
            )),
        }
    }
}

/// Turns the model's reply into text and calls, in `r.format`'s shape only.
/// A reply that is not a well-formed call of a known tool is text.
pub fn read_reply(r: &Reading, text: &str) -> (Option<String>, Vec<Call>) {
    let known = |name: &str| r.names.iter().any(|n| n == name);
    let call_of = |v: &Value, args: &str| -> Option<Call> {
        let o = v.as_object()?;
        let name = o.get("name")?.as_str()?;
        let a = o.get(args).or_else(|| o.get("arguments"))?;
        (known(name) && a.is_object()).then(|| Call {
            name: name.to_string(),
            arguments: a.to_string(),
        })
    };
    let all = |v: &[Value], args: &str| -> Option<Vec<Call>> {
        let calls: Option<Vec<Call>> = v.iter().map(|c| call_of(c, args)).collect();
        calls.filter(|c| !c.is_empty())
    };
    let trimmed = text.trim();
    let text_only = || (Some(text.to_string()), Vec::new());
    match r.format {
        Format::Generic => match serde_json::from_str::<Map<String, Value>>(trimmed) {
            Ok(o) => {
                if let Some(calls) = o.get("tool_calls").and_then(Value::as_array) {
                    if let Some(calls) = all(calls, "arguments") {
                        return (None, calls);
                    }
                }
                match o.get("response").and_then(Value::as_str) {
                    Some(s) if o.len() == 1 => (Some(s.to_string()), Vec::new()),
                    _ => text_only(),
                }
            }
            Err(_) => text_only(),
        },
        Format::Hermes => {
            let mut calls = Vec::new();
            let mut rest = String::new();
            let mut s = text;
            while let Some(start) = s.find("<tool_call>") {
                let after = &s[start + "<tool_call>".len()..];
                let Some(end) = after.find("</tool_call>") else {
                    break;
                };
                let Some(call) = serde_json::from_str::<Value>(after[..end].trim())
                    .ok()
                    .and_then(|v| call_of(&v, "arguments"))
                else {
                    return text_only();
                };
                rest.push_str(&s[..start]);
                calls.push(call);
                s = &after[end + "</tool_call>".len()..];
            }
            rest.push_str(s);
            if calls.is_empty() {
                return text_only();
            }
            let rest = rest.trim();
            ((!rest.is_empty()).then(|| rest.to_string()), calls)
        }
        Format::Llama3 => {
            let body = trimmed.strip_prefix("<|python_tag|>").unwrap_or(trimmed);
            match serde_json::from_str::<Value>(body) {
                Ok(v) => match call_of(&v, "parameters") {
                    Some(c) => (None, vec![c]),
                    None => text_only(),
                },
                Err(_) => text_only(),
            }
        }
        Format::Mistral => {
            let body = trimmed
                .strip_prefix("[TOOL_CALLS]")
                .unwrap_or(trimmed)
                .trim();
            match serde_json::from_str::<Vec<Value>>(body) {
                Ok(v) => match all(&v, "arguments") {
                    Some(calls) => (None, calls),
                    None => text_only(),
                },
                Err(_) => text_only(),
            }
        }
    }
}

/// A fresh id for each call of a reply (`call_` and 24 hex digits).
pub fn call_id(reply_id: &str, index: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(reply_id.as_bytes());
    h.write_usize(index);
    let a = h.finish();
    h.write_u8(1);
    format!("call_{a:016x}{:08x}", h.finish() as u32)
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
