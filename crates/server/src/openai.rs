//! OpenAI request bodies, parsed at the edge into native types: JSON errors
//! name the field at fault, every field is checked against the bounds of
//! `limits.rs` (and the model's vocabulary and context) before anything
//! reaches the engine, and every field cria does not implement is refused
//! rather than ignored.

use crate::error::ApiError;
use crate::limits::{
    LOGIT_BIAS, MAX_CHOICES, MAX_MESSAGES, MAX_TOP_LOGPROBS, PENALTY, PROBABILITY, REPEAT_PENALTY,
    TEMPERATURE,
};
use crate::shapes::{AtMost, BiasKey, Content, Given, LogitBias, Prompt, Stop};
use cria_engine::GenerateParams;
use cria_prompt::Message;
use cria_sampler::SamplerConfig;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::Number;
use std::ops::RangeInclusive;

/// The bounds that come from the loaded model, and the server's defaults.
#[derive(Clone, Copy, Debug)]
pub struct ModelBounds {
    pub n_vocab: usize,
    /// Tokens of context per sequence: prompt and reply together.
    pub n_ctx: usize,
    pub defaults: RequestDefaults,
}

/// Request defaults from the server's command line (llama-server's
/// `--temp`, `--seed`, `--n-predict` and `--verbose`), used where a request
/// leaves the field out (as in llama-server, a request's own `n_predict`
/// or `verbose` wins; the context still bounds `n_predict`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RequestDefaults {
    pub temperature: Option<f32>,
    pub seed: Option<u64>,
    pub n_predict: Option<usize>,
    /// Every reply carries `__verbose` (the prompt and the text) unless the
    /// request says `"verbose": false`.
    pub verbose: bool,
}

/// Parses one view of a body (several types read the same body, since
/// `#[serde(flatten)]` would lose the paths of errors), straight from the
/// bytes (see `shapes.rs`). Malformed JSON is a 400 about the body; wrong
/// types or values are 400s whose `param` is the JSON path of the field
/// (`messages[0].role`). serde_json refuses nesting deeper than 128, so a
/// body of `[[[[...` is a 400, not a stack overflow.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde's derived structs would also read an array.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(ApiError::invalid("body", "the body must be a JSON object")),
        None => {
            return Err(ApiError::invalid(
                "body",
                "the body is empty: send a JSON object",
            ))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json calls some wrong types (null for an enum) syntax
        // errors: the body is only malformed if it does not parse at all.
        let valid = || serde_json::from_slice::<IgnoredAny>(body).is_ok();
        if inner.classify() != Category::Data && !valid() {
            return not_json(&inner);
        }
        // serde names Rust types; say what JSON was expected.
        let inner = inner
            .to_string()
            .replace("expected i64", "expected an integer")
            .replace("expected u32", "expected a token id (an integer from 0)")
            .replace("expected f64", "expected a number");
        if path == "." {
            ApiError::invalid("body", inner)
        } else {
            ApiError::invalid(path.clone(), format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| not_json(&e))?;
    Ok(value)
}

fn not_json(e: &serde_json::Error) -> ApiError {
    ApiError::invalid("body", format!("the body is not valid JSON: {e}"))
}

/// An optional flag: absent or `null` is false (OpenAI's flags are
/// nullable), anything but a boolean is a 400.
fn null_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

fn out_of_range(param: &str, v: impl std::fmt::Display, range: &str) -> ApiError {
    ApiError::invalid(param, format!("{param}: {v} is out of range ({range})"))
}

/// An optional float field inside `range`, or its default.
fn float(
    param: &str,
    v: Option<f64>,
    default: f32,
    range: RangeInclusive<f64>,
) -> Result<f32, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if range.contains(&x) => Ok(x as f32),
        Some(x) => Err(out_of_range(
            param,
            x,
            &format!("{} to {}", range.start(), range.end()),
        )),
    }
}

/// `max_tokens` or `max_completion_tokens`: `None` (absent or -1) means as
/// many as fit in the context; see [`fit_prompt`].
fn max_tokens(param: &str, v: Option<i64>) -> Result<Option<usize>, ApiError> {
    match v {
        None | Some(-1) => Ok(None),
        Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(n) => Err(out_of_range(
            param,
            n,
            "at least 1, or -1 for as many as fit in the context",
        )),
    }
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
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant's earlier calls (OpenAI's shape).
    #[serde(default)]
    pub tool_calls: Option<serde_json::Value>,
    /// A tool result: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// An assistant's earlier reasoning (llama-server's field), given to
    /// the template as the message's `reasoning_content`.
    #[serde(default)]
    pub reasoning_content: Option<String>,
}

#[derive(Deserialize, Debug)]
pub struct StreamOptions {
    #[serde(default, deserialize_with = "null_is_false")]
    pub include_usage: bool,
}

/// The sampling fields both endpoints share (OpenAI's, plus llama.cpp's
/// `top_k`, `min_p`, `repeat_penalty`, `repeat_last_n`). Floats are read
/// as f64 so that 1e39 is out of range rather than an f32 infinity.
#[derive(Deserialize, Debug, Default)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Any integer from i64::MIN to u64::MAX.
    pub seed: Option<Number>,
    pub logit_bias: Option<LogitBias>,
    pub stop: Option<Stop>,
    pub max_tokens: Option<i64>,
    /// llama-server's name for `max_tokens` (it wins when both are given).
    pub n_predict: Option<i64>,
    /// Choices per request (see [`Sampling::choices`]).
    pub n: Option<i64>,
    #[serde(default, deserialize_with = "null_is_false")]
    pub ignore_eos: bool,
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: AtMost<ChatMessage, MAX_MESSAGES>,
    #[serde(default, deserialize_with = "null_is_false")]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_completion_tokens: Option<i64>,
    #[serde(default, deserialize_with = "null_is_false")]
    pub logprobs: bool,
    pub top_logprobs: Option<i64>,
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<serde_json::Value>,
    pub functions: Option<Given>,
    pub function_call: Option<Given>,
    pub audio: Option<Given>,
    pub prediction: Option<Given>,
    /// Open the assistant's turn after the messages (default true).
    pub add_generation_prompt: Option<bool>,
    /// Continue the last (assistant) message instead (vLLM's name for
    /// llama-server's prefill).
    pub continue_final_message: Option<bool>,
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(default, deserialize_with = "null_is_false")]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<i64>,
    #[serde(default, deserialize_with = "null_is_false")]
    pub echo: bool,
    pub suffix: Option<String>,
    pub best_of: Option<i64>,
}

#[derive(Deserialize, Debug)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default, deserialize_with = "null_is_false")]
    pub add_special: bool,
    #[serde(default)]
    pub parse_special: Option<bool>,
    #[serde(default, deserialize_with = "null_is_false")]
    pub with_pieces: bool,
}

#[derive(Deserialize, Debug)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

/// Checks a tokenized prompt against the model and fits `max_tokens` to
/// the context: absent, it is what is left after the prompt; larger, it is
/// clamped to that and the reply ends with finish_reason "length" (so a
/// client's habitual `max_tokens: 4096` still works on a small context).
/// The prompt itself is never cut.
pub fn fit_prompt(
    prompt: &[u32],
    params: &mut GenerateParams,
    b: ModelBounds,
    param: &str,
) -> Result<(), ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            param,
            format!("{param}: the prompt is empty (it has no tokens)"),
        ));
    }
    if let Some((i, id)) = prompt
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= b.n_vocab)
    {
        return Err(ApiError::invalid(
            param,
            format!(
                "{param}: token {i} is {id}, not in the vocabulary of {}",
                b.n_vocab
            ),
        ));
    }
    // One token of the context must stay free for the reply.
    if prompt.len() >= b.n_ctx {
        return Err(ApiError::invalid(
            param,
            format!(
                "{param}: the prompt is {} tokens, which exceeds the available context size of {} \
                 tokens; shorten the prompt below that, or start the server with a larger \
                 --ctx-size",
                prompt.len(),
                b.n_ctx
            ),
        )
        .exceeded(prompt.len(), b.n_ctx));
    }
    let room = b.n_ctx - prompt.len();
    params.max_tokens = Some(params.max_tokens.map_or(room, |m| m.min(room)));
    Ok(())
}

/// An assistant message's `tool_calls`, checked, with each call's
/// `arguments` (a JSON text) parsed into an object for the template.
fn earlier_calls(calls: &serde_json::Value, param: &str) -> Result<serde_json::Value, ApiError> {
    let bad = |what: &str| ApiError::invalid(param, format!("{param}: {what}"));
    let list = calls.as_array().ok_or_else(|| bad("must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let f = c
            .get("function")
            .ok_or_else(|| bad("each call needs a function"))?;
        let name = f
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| bad("a call has no function.name"))?;
        let args = match f.get("arguments") {
            Some(serde_json::Value::String(s)) => serde_json::from_str::<serde_json::Value>(s)
                .map_err(|_| bad("function.arguments is not a JSON text"))?,
            Some(v @ serde_json::Value::Object(_)) => v.clone(),
            _ => serde_json::json!({}),
        };
        out.push(serde_json::json!({
            "id": c.get("id").cloned().unwrap_or(serde_json::Value::Null),
            "type": "function",
            "function": {"name": name, "arguments": args},
        }));
    }
    Ok(serde_json::Value::Array(out))
}

fn present(v: &Option<Given>) -> bool {
    matches!(v, Some(Given::Auto | Given::Other))
}

/// `logprobs` (completions) or `top_logprobs` (chat): 0 to [`MAX_TOP_LOGPROBS`].
fn top_logprobs(param: &str, n: i64) -> Result<usize, ApiError> {
    if (0..=MAX_TOP_LOGPROBS).contains(&n) {
        Ok(n as usize)
    } else {
        Err(out_of_range(param, n, &format!("0 to {MAX_TOP_LOGPROBS}")))
    }
}

impl ChatRequest {
    /// Refuses what cria does not do, then flattens the messages.
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if present(&self.functions) {
            return Err(ApiError::unsupported(
                "functions",
                "the deprecated `functions` (give `tools`)",
            ));
        }
        if self.function_call == Some(Given::Other) {
            return Err(ApiError::unsupported(
                "function_call",
                "the deprecated `function_call` (give `tool_choice`)",
            ));
        }
        if present(&self.audio) {
            return Err(ApiError::unsupported("audio", "audio output"));
        }
        if present(&self.prediction) {
            return Err(ApiError::unsupported("prediction", "predicted output"));
        }
        if self.messages.0.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages: give at least one message",
            ));
        }
        self.messages_maybe_none()
    }

    /// The text of the last message when it is continued (a prefill) and
    /// given as parts: llama-server joins its text parts with a blank line
    /// (its `render_content`), where the parts of a message rendered by the
    /// template are joined as they come. `None` for a string.
    pub fn continued_parts_text(&self) -> Option<String> {
        match &self.messages.0.last()?.content {
            Some(Content::Parts(parts)) => Some(
                parts
                    .iter()
                    .filter(|p| p.kind == "text")
                    .filter_map(|p| p.text.as_deref())
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            ),
            _ => None,
        }
    }

    /// [`ChatRequest::messages`] that lets the list be empty (Anthropic's
    /// endpoint, as llama-server's: the template then renders no turn,
    /// only the assistant's opening).
    pub fn messages_maybe_none(&self) -> Result<Vec<Message>, ApiError> {
        let messages = &self.messages.0;
        let mut out = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
                Role::Function => {
                    return Err(ApiError::unsupported(
                        &format!("messages[{i}].role"),
                        "the deprecated function role (use \"tool\")",
                    ))
                }
            };
            let tool_calls = match &m.tool_calls {
                None | Some(serde_json::Value::Null) => None,
                Some(calls) if m.role == Role::Assistant => {
                    Some(earlier_calls(calls, &format!("messages[{i}].tool_calls"))?)
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].tool_calls"),
                        format!("messages[{i}].tool_calls: only assistant messages have calls"),
                    ))
                }
            };
            let content = match &m.content {
                None if m.role == Role::Assistant => String::new(),
                Some(Content::Text(s)) if s.is_empty() && m.role == Role::Tool => String::new(),
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
            let mut msg = Message::new(role, &content);
            msg.tool_calls = tool_calls;
            msg.tool_call_id = m.tool_call_id.clone();
            msg.reasoning_content = m.reasoning_content.clone();
            out.push(msg);
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
            (false, Some(n)) => top_logprobs("top_logprobs", n).map(|_| None),
            (false, None) => Ok(None),
            (true, None) => Ok(Some(0)),
            (true, Some(n)) => top_logprobs("top_logprobs", n).map(Some),
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
        self.logprobs
            .map(|n| top_logprobs("logprobs", n))
            .transpose()
    }
}

impl Sampling {
    /// Native generation parameters, every field checked against
    /// `limits.rs` and the model. `max_tokens` is the request's wish
    /// (chat's `max_completion_tokens` wins over it); call [`fit_prompt`]
    /// once the prompt is tokenized to fit it to the context. The sampler
    /// checks again, but never has to.
    /// `tok` reads `logit_bias` keys that are text (llama-server's
    /// `[["hello", -1]]` and `{"hello": -1}`): every token of the text is
    /// biased. Without it, such keys are an error.
    pub fn params(
        &self,
        max_completion_tokens: Option<i64>,
        b: ModelBounds,
        tok: Option<&cria_tokenizer::Tokenizer>,
    ) -> Result<GenerateParams, ApiError> {
        self.choices()?;
        let d = SamplerConfig::default();
        let temperature = float(
            "temperature",
            self.temperature,
            b.defaults.temperature.unwrap_or(d.temperature),
            TEMPERATURE,
        )?;
        let top_p = float("top_p", self.top_p, d.top_p, PROBABILITY)?;
        let min_p = float("min_p", self.min_p, d.min_p, PROBABILITY)?;
        let presence_penalty = float("presence_penalty", self.presence_penalty, 0.0, PENALTY)?;
        let frequency_penalty = float("frequency_penalty", self.frequency_penalty, 0.0, PENALTY)?;
        let repeat_penalty = float(
            "repeat_penalty",
            self.repeat_penalty,
            d.repeat_penalty,
            REPEAT_PENALTY,
        )?;
        let top_k = match self.top_k {
            None => d.top_k,
            Some(k) if k >= 0 && k as u64 <= b.n_vocab as u64 => k as usize,
            Some(k) => {
                return Err(out_of_range(
                    "top_k",
                    k,
                    &format!("0 to the vocabulary size {}; 0 keeps all", b.n_vocab),
                ))
            }
        };
        // The penalty window holds at most the whole context.
        let repeat_last_n = match self.repeat_last_n {
            None => d.repeat_last_n.min(b.n_ctx),
            Some(-1) => b.n_ctx,
            Some(n) if n >= 0 && n as u64 <= b.n_ctx as u64 => n as usize,
            Some(n) => {
                return Err(out_of_range(
                    "repeat_last_n",
                    n,
                    &format!("0 to the context size {}, or -1 for all of it", b.n_ctx),
                ))
            }
        };
        let logit_bias = self.logit_bias(b.n_vocab, tok)?;
        let seed = match &self.seed {
            // Negative seeds are as good as any: their bits are the seed.
            Some(s) => match (s.as_u64(), s.as_i64()) {
                (Some(u), _) => u,
                (None, Some(i)) => i as u64,
                _ => {
                    return Err(ApiError::invalid(
                        "seed",
                        format!("seed: {s} is not an integer"),
                    ))
                }
            },
            None => b.defaults.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            }),
        };
        let mut wish = max_tokens("max_tokens", self.max_tokens)?;
        if self.n_predict.is_some() {
            wish = max_tokens("n_predict", self.n_predict)?;
        }
        if max_completion_tokens.is_some() {
            wish = max_tokens("max_completion_tokens", max_completion_tokens)?;
        }
        if wish.is_none() {
            wish = b.defaults.n_predict;
        }
        Ok(GenerateParams {
            max_tokens: wish,
            stop: self.stop.as_ref().map_or(Vec::new(), |s| s.0.clone()),
            ignore_eos: self.ignore_eos,
            constraint: None,
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

    /// How many choices (`n`): 1 to [`MAX_CHOICES`], each generated as
    /// its own request (seed, seed + 1, ...).
    pub fn choices(&self) -> Result<usize, ApiError> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(out_of_range("n", n, &format!("1 to {MAX_CHOICES}"))),
        }
    }

    /// `logit_bias`: token ids of the vocabulary, or texts (each of their
    /// tokens), at most [`MAX_LOGIT_BIAS`] entries (counted while
    /// parsing), each to a number in [`LOGIT_BIAS`] or `false` (banned).
    fn logit_bias(
        &self,
        n_vocab: usize,
        tok: Option<&cria_tokenizer::Tokenizer>,
    ) -> Result<Vec<(u32, f32)>, ApiError> {
        let Some(LogitBias(entries)) = &self.logit_bias else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let param = match k {
                BiasKey::Id(id) => format!("logit_bias.{id}"),
                BiasKey::Text(t) => format!("logit_bias.{t}"),
            };
            let bias = if *v == f64::NEG_INFINITY {
                f32::NEG_INFINITY
            } else if !LOGIT_BIAS.contains(v) {
                return Err(ApiError::invalid(
                    &param,
                    format!(
                        "{param}: {v} is out of range ({} to {}, or false to ban)",
                        LOGIT_BIAS.start(),
                        LOGIT_BIAS.end()
                    ),
                ));
            } else if *v <= -100.0 {
                // OpenAI: -100 bans the token.
                f32::NEG_INFINITY
            } else {
                *v as f32
            };
            let ids = match k {
                BiasKey::Id(id) => vec![*id],
                BiasKey::Text(t) => match tok {
                    Some(tok) => tok
                        .encode(t, false, false)
                        .map_err(|e| ApiError::invalid(&param, format!("{param}: {e}")))?,
                    None => {
                        return Err(ApiError::invalid(
                            &param,
                            format!("{param}: {t:?} is not a token id"),
                        ))
                    }
                },
            };
            for id in ids {
                if id as usize >= n_vocab {
                    return Err(ApiError::invalid(
                        &param,
                        format!("{param}: token {id} is not in the vocabulary of {n_vocab}"),
                    ));
                }
                out.push((id, bias));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
