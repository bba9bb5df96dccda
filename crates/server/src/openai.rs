//! OpenAI request bodies, parsed at the edge into native types: JSON errors
//! name the field at fault, and every field cria does not implement is
//! refused rather than ignored.

use crate::error::ApiError;
use cria_engine::GenerateParams;
use cria_prompt::Message;
use cria_sampler::SamplerConfig;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Parses a body: malformed JSON and wrong types or values are 400s whose
/// `param` is the JSON path of the field (`messages[0].role`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_value(&json_object(body)?)
}

/// The body as a JSON object.
pub fn json_object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    }
    Ok(value)
}

/// One view of a parsed body (several types read the same object, since
/// `#[serde(flatten)]` would lose the paths of errors).
pub fn parse_value<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            ApiError::invalid("body", inner)
        } else {
            ApiError::invalid(path.clone(), format!("{path}: {inner}"))
        }
    })
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Value>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize, Debug)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
}

/// The sampling fields both endpoints share (OpenAI's, plus llama.cpp's
/// `top_k`, `min_p`, `repeat_penalty`, `repeat_last_n`).
#[derive(Deserialize, Debug, Default)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    pub stop: Option<Stop>,
    pub max_tokens: Option<i64>,
    pub n: Option<i64>,
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<i64>,
    pub response_format: Option<ResponseFormat>,
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub functions: Option<Value>,
    pub function_call: Option<Value>,
    pub audio: Option<Value>,
    pub prediction: Option<Value>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
    pub best_of: Option<i64>,
}

#[derive(Deserialize, Debug)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default)]
    pub parse_special: Option<bool>,
    #[serde(default)]
    pub with_pieces: bool,
}

#[derive(Deserialize, Debug)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

fn present(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => s != "none",
        Some(_) => true,
    }
}

impl ChatRequest {
    /// Refuses what cria does not do, then flattens the messages.
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if present(&self.tools) || present(&self.functions) {
            let p = if present(&self.tools) {
                "tools"
            } else {
                "functions"
            };
            return Err(ApiError::unsupported(p, "tool and function calling"));
        }
        for (p, v) in [
            ("tool_choice", &self.tool_choice),
            ("function_call", &self.function_call),
        ] {
            if present(v) && !matches!(v, Some(Value::String(s)) if s == "auto") {
                return Err(ApiError::unsupported(p, "tool and function calling"));
            }
        }
        if present(&self.audio) {
            return Err(ApiError::unsupported("audio", "audio output"));
        }
        if present(&self.prediction) {
            return Err(ApiError::unsupported("prediction", "predicted output"));
        }
        if let Some(f) = &self.response_format {
            if f.kind != "text" {
                return Err(ApiError::unsupported(
                    "response_format",
                    &format!("response_format type {:?} (only \"text\")", f.kind),
                ));
            }
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages: give at least one message",
            ));
        }
        let mut out = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool | Role::Function => {
                    return Err(ApiError::unsupported(
                        &format!("messages[{i}].role"),
                        "the tool/function role (tool calling)",
                    ))
                }
            };
            if present(&m.tool_calls) {
                return Err(ApiError::unsupported(
                    &format!("messages[{i}].tool_calls"),
                    "tool calling",
                ));
            }
            let content = match &m.content {
                None if m.role == Role::Assistant => String::new(),
                None => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].content"),
                        format!("messages[{i}].content: a {role} message needs content"),
                    ))
                }
                Some(Content::Text(s)) => s.clone(),
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            ("text", None) => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content[{j}].text"),
                                    format!("messages[{i}].content[{j}].text: missing"),
                                ))
                            }
                            (other, _) => {
                                return Err(ApiError::unsupported(
                                    &format!("messages[{i}].content[{j}].type"),
                                    &format!("content of type {other:?} (only \"text\")"),
                                ))
                            }
                        }
                    }
                    s
                }
            };
            out.push(Message::new(role, &content));
        }
        Ok(out)
    }

    /// `top_logprobs` when `logprobs` is on.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match (self.logprobs, self.top_logprobs) {
            (false, Some(n)) if n > 0 => Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs: set logprobs to true to use it",
            )),
            (false, _) => Ok(None),
            (true, None) => Ok(Some(0)),
            (true, Some(n)) if (0..=20).contains(&n) => Ok(Some(n as usize)),
            (true, Some(n)) => Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs: {n} is out of range (0 to 20)"),
            )),
        }
    }
}

impl CompletionRequest {
    pub fn check(&self) -> Result<(), ApiError> {
        if self.echo {
            return Err(ApiError::unsupported("echo", "echo"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::unsupported("suffix", "suffix (insertion)"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::unsupported("best_of", "best_of other than 1"));
        }
        Ok(())
    }

    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match self.logprobs {
            None => Ok(None),
            Some(n) if (0..=20).contains(&n) => Ok(Some(n as usize)),
            Some(n) => Err(ApiError::invalid(
                "logprobs",
                format!("logprobs: {n} is out of range (0 to 20)"),
            )),
        }
    }
}

impl Sampling {
    /// Native generation parameters; `max_tokens` may come from another
    /// field (`max_completion_tokens`). Ranges are checked here so the
    /// error names the OpenAI field; the sampler checks again.
    pub fn params(
        &self,
        max_tokens: Option<i64>,
        n_vocab: usize,
    ) -> Result<GenerateParams, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::unsupported(
                    "n",
                    &format!("n = {n} (more than one choice per request)"),
                ));
            }
        }
        let d = SamplerConfig::default();
        let temperature = self.temperature.unwrap_or(d.temperature);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature: {temperature} is out of range (0 to 2)"),
            ));
        }
        let top_p = self.top_p.unwrap_or(d.top_p);
        if !(0.0..=1.0).contains(&top_p) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p: {top_p} is out of range (0 to 1)"),
            ));
        }
        let min_p = self.min_p.unwrap_or(d.min_p);
        if !(0.0..=1.0).contains(&min_p) {
            return Err(ApiError::invalid(
                "min_p",
                format!("min_p: {min_p} is out of range (0 to 1)"),
            ));
        }
        let top_k = match self.top_k {
            None => d.top_k,
            Some(k) if k <= 0 => 0,
            Some(k) => k as usize,
        };
        let repeat_last_n = match self.repeat_last_n {
            None => d.repeat_last_n,
            Some(n) if n < 0 => 4096,
            Some(n) => n as usize,
        };
        let penalty = |name: &str, v: Option<f32>| -> Result<f32, ApiError> {
            match v {
                None => Ok(0.0),
                Some(x) if (-2.0..=2.0).contains(&x) => Ok(x),
                Some(x) => Err(ApiError::invalid(
                    name,
                    format!("{name}: {x} is out of range (-2 to 2)"),
                )),
            }
        };
        let presence_penalty = penalty("presence_penalty", self.presence_penalty)?;
        let frequency_penalty = penalty("frequency_penalty", self.frequency_penalty)?;
        let repeat_penalty = self.repeat_penalty.unwrap_or(d.repeat_penalty);
        if !(repeat_penalty.is_finite() && repeat_penalty > 0.0 && repeat_penalty <= 10.0) {
            return Err(ApiError::invalid(
                "repeat_penalty",
                format!("repeat_penalty: {repeat_penalty} is out of range (above 0, at most 10)"),
            ));
        }
        let mut logit_bias = Vec::new();
        for (k, v) in self.logit_bias.iter().flatten() {
            let param = format!("logit_bias.{k}");
            let id: u32 = k.parse().map_err(|_| {
                ApiError::invalid(&param, format!("{param}: {k:?} is not a token id"))
            })?;
            if id as usize >= n_vocab {
                return Err(ApiError::invalid(
                    &param,
                    format!("{param}: token {id} is not in the vocabulary of {n_vocab}"),
                ));
            }
            let bias = match v.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => b as f32,
                _ => {
                    return Err(ApiError::invalid(
                        &param,
                        format!("{param}: {v} must be a number from -100 to 100"),
                    ))
                }
            };
            // OpenAI: -100 bans the token.
            logit_bias.push((
                id,
                if bias <= -100.0 {
                    f32::NEG_INFINITY
                } else {
                    bias
                },
            ));
        }
        let seed = match self.seed {
            Some(s) => s as u64,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        let max_tokens = match max_tokens.or(self.max_tokens) {
            None => None,
            Some(n) if n < 0 => None,
            Some(n) => Some(n as usize),
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 16 {
            return Err(ApiError::invalid(
                "stop",
                format!("stop: {} stop strings given, at most 16", stop.len()),
            ));
        }
        Ok(GenerateParams {
            max_tokens,
            stop,
            ignore_eos: self.ignore_eos,
            sampler: SamplerConfig {
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                repeat_last_n,
                frequency_penalty,
                presence_penalty,
                logit_bias,
                seed,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_role_names_the_field() {
        let e = parse::<ChatRequest>(
            br#"{"messages":[{"role":"user","content":"x"},{"role":"robot","content":"y"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[1].role"));
        assert!(e.message.contains("robot"), "{}", e.message);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse::<Sampling>(br#"{"messages":[],"temperature":"hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
    }

    #[test]
    fn malformed_json() {
        let e = parse::<ChatRequest>(b"{\"messages\": [").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn n_and_tools_refused() {
        let r: Sampling = parse(br#"{"messages":[{"role":"user","content":"x"}],"n":2}"#).unwrap();
        assert_eq!(r.params(None, 10).unwrap_err().param.as_deref(), Some("n"));
        let r: ChatRequest =
            parse(br#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#)
                .unwrap();
        assert_eq!(r.messages().unwrap_err().param.as_deref(), Some("tools"));
    }
}
