//! llama-server's native API, on the same engine and request preparation
//! as the OpenAI routes: the fields of `/completion` that OpenAI's
//! completions lack (`n_predict`, `n_probs`, `return_tokens`,
//! `response_fields`, `timings_per_token`, `return_progress`, `id_slot`,
//! `cache_prompt`, prompts of token ids and texts mixed), and the JSON
//! shapes of its replies (`content`, `tokens`, `stop`, `stop_type`,
//! `timings`, `completion_probabilities`, `generation_settings`), of
//! `/props` and of `/slots`. Sampling fields are read by `openai.rs`'s
//! one parser, constraints by `constrain.rs`.

use crate::error::ApiError;
use crate::limits::{MAX_CHOICES, MAX_TOP_LOGPROBS};
use crate::routes::Ready;
use cria_engine::{Done, FinishReason, GenerateParams, TokenEvent};
use cria_tokenizer::Tokenizer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::fmt;
use std::time::Duration;

/// One piece of a prompt: a token id or a text to tokenize.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Id(u32),
    Text(String),
}

/// `prompt` of `/completion`: one prompt (a text, an array of token ids,
/// an array mixing ids and texts, or `{"prompt_string": text}`), or an
/// array of several (texts, arrays, objects), each answered on its own.
/// Token ids are kept as `u32` while the array holds only ids, so a body
/// of 4 MiB of ids costs 4 bytes each.
#[derive(Debug)]
pub struct Prompts(pub Vec<Vec<Part>>);

/// An element of a prompt array, before the array's kind is known.
enum Elem {
    Id(u32),
    Text(String),
    Many(Vec<Part>),
}

impl<'de> Deserialize<'de> for Elem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Elem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a token id, a text, an array of them, or {{\"prompt_string\": text}}"
                )
            }
            fn visit_u64<E: de::Error>(self, id: u64) -> Result<Elem, E> {
                u32::try_from(id)
                    .map(Elem::Id)
                    .map_err(|_| E::custom(format!("{id} is not a token id")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Elem, E> {
                Ok(Elem::Text(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Elem, E> {
                Ok(Elem::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Elem, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element::<Elem>()? {
                    match p {
                        Elem::Id(id) => parts.push(Part::Id(id)),
                        Elem::Text(t) => parts.push(Part::Text(t)),
                        Elem::Many(_) => {
                            return Err(de::Error::custom(
                                "a prompt inside a prompt: give token ids and texts",
                            ))
                        }
                    }
                }
                Ok(Elem::Many(parts))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Elem, A::Error> {
                object_prompt(map).map(|t| Elem::Many(vec![Part::Text(t)]))
            }
        }
        d.deserialize_any(V)
    }
}

/// `{"prompt_string": text}`; `multimodal_data` is refused (cria runs
/// text models only).
fn object_prompt<'de, A: MapAccess<'de>>(mut map: A) -> Result<String, A::Error> {
    let mut text = None;
    while let Some(k) = map.next_key::<String>()? {
        match k.as_str() {
            "prompt_string" => text = Some(map.next_value::<String>()?),
            "multimodal_data" => {
                map.next_value::<IgnoredAny>()?;
                return Err(de::Error::custom(
                    "multimodal_data: this model takes text only (cria has no multimodal models)",
                ));
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    text.ok_or_else(|| de::Error::custom("a prompt object needs \"prompt_string\""))
}

impl<'de> Deserialize<'de> for Prompts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Prompts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a text, an array of token ids and texts, {{\"prompt_string\": text}}, or an \
                     array of such prompts"
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Prompts, E> {
                Ok(Prompts(vec![vec![Part::Text(s.to_string())]]))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Prompts, E> {
                Ok(Prompts(vec![vec![Part::Text(s)]]))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Prompts, A::Error> {
                Ok(Prompts(vec![vec![Part::Text(object_prompt(map)?)]]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompts, A::Error> {
                // llama-server's reading: ids only, or ids and texts mixed,
                // is one prompt; texts only, or any nested array or
                // object, is one prompt per element.
                let mut ids: Vec<u32> = Vec::new();
                let mut elems: Vec<Elem> = Vec::new();
                while let Some(e) = seq.next_element::<Elem>()? {
                    match e {
                        Elem::Id(id) if elems.is_empty() => ids.push(id),
                        e => {
                            if elems.len() == MAX_CHOICES * 64 {
                                return Err(de::Error::custom(format!(
                                    "more than {} prompt elements besides token ids",
                                    MAX_CHOICES * 64
                                )));
                            }
                            elems.push(e)
                        }
                    }
                }
                let mut parts: Vec<Part> = ids.into_iter().map(Part::Id).collect();
                if elems.is_empty() {
                    if parts.is_empty() {
                        return Err(de::Error::custom("the prompt is empty"));
                    }
                    return Ok(Prompts(vec![parts]));
                }
                let any_nested = elems.iter().any(|e| matches!(e, Elem::Many(_)));
                let any_id = !parts.is_empty() || elems.iter().any(|e| matches!(e, Elem::Id(_)));
                if any_nested {
                    if !parts.is_empty() || any_id {
                        return Err(de::Error::custom(
                            "a token id beside nested prompts: give one prompt per element",
                        ));
                    }
                    let out = elems
                        .into_iter()
                        .map(|e| match e {
                            Elem::Many(p) => p,
                            Elem::Text(t) => vec![Part::Text(t)],
                            Elem::Id(id) => vec![Part::Id(id)],
                        })
                        .collect();
                    return Ok(Prompts(out));
                }
                if !any_id {
                    // Texts only: a batch.
                    let out = elems
                        .into_iter()
                        .map(|e| match e {
                            Elem::Text(t) => vec![Part::Text(t)],
                            Elem::Id(id) => vec![Part::Id(id)],
                            Elem::Many(p) => p,
                        })
                        .collect();
                    return Ok(Prompts(out));
                }
                for e in elems {
                    match e {
                        Elem::Id(id) => parts.push(Part::Id(id)),
                        Elem::Text(t) => parts.push(Part::Text(t)),
                        Elem::Many(p) => parts.extend(p),
                    }
                }
                Ok(Prompts(vec![parts]))
            }
        }
        d.deserialize_any(V)
    }
}

/// Tokenizes one prompt as llama-server does: the BOS (when the model
/// adds one) only before a text that comes first; special tokens in texts
/// are parsed.
pub fn tokenize(tok: &Tokenizer, parts: &[Part], param: &str) -> Result<Vec<u32>, ApiError> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        match p {
            Part::Id(id) => out.push(*id),
            Part::Text(t) => out.extend(
                tok.encode(t, i == 0 && tok.add_bos(), true)
                    .map_err(|e| ApiError::invalid(param, format!("{param}: {e}")))?,
            ),
        }
    }
    Ok(out)
}

/// The fields of `/completion` (and of the OpenAI routes where llama-server
/// reads them there too) besides sampling and constraints. `cache_prompt`
/// is not among them: cria always reuses a slot's cached prefix.
#[derive(Deserialize, Debug, Default)]
pub struct Extras {
    #[serde(default)]
    pub n_probs: Option<i64>,
    #[serde(default)]
    pub post_sampling_probs: Option<bool>,
    #[serde(default)]
    pub return_tokens: Option<bool>,
    #[serde(default)]
    pub response_fields: Option<crate::shapes::AtMost<String, 64>>,
    #[serde(default)]
    pub timings_per_token: Option<bool>,
    #[serde(default)]
    pub return_progress: Option<bool>,
    #[serde(default)]
    pub id_slot: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// llama-server's debugging aid: the reply carries `__verbose` (the
    /// prompt as the model saw it, and the text). Default: `--verbose`.
    #[serde(default)]
    pub verbose: Option<bool>,
}

/// What the native reply shapes need, checked.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub n_probs: usize,
    pub return_tokens: bool,
    pub response_fields: Vec<String>,
    pub timings_per_token: bool,
    pub return_progress: bool,
    /// Probabilities after the sampler chain (`prob`, `top_probs`) instead
    /// of the model's log-probabilities.
    pub post_sampling_probs: bool,
    /// The request's `verbose`; `None` takes the server's `--verbose`.
    pub verbose: Option<bool>,
}

impl Extras {
    pub fn options(&self, slots: usize) -> Result<Options, ApiError> {
        let n_probs = match self.n_probs {
            None => 0,
            Some(n) if (0..=MAX_TOP_LOGPROBS).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    "n_probs",
                    format!("n_probs: {n} is out of range (0 to {MAX_TOP_LOGPROBS})"),
                ))
            }
        };
        check_slot(self.id_slot, slots)?;
        Ok(Options {
            n_probs,
            return_tokens: self.return_tokens.unwrap_or(false),
            response_fields: self
                .response_fields
                .as_ref()
                .map_or(Vec::new(), |f| f.0.clone()),
            timings_per_token: self.timings_per_token.unwrap_or(false),
            return_progress: self.return_progress.unwrap_or(false),
            post_sampling_probs: self.post_sampling_probs.unwrap_or(false),
            verbose: self.verbose,
        })
    }
}

/// `id_slot`: -1 (any) or a slot that exists. cria's scheduler picks the
/// slot whose cache holds the longest prefix of the prompt, so a valid
/// `id_slot` is checked, not followed (README: differences).
pub fn check_slot(id_slot: Option<i64>, slots: usize) -> Result<(), ApiError> {
    match id_slot {
        None | Some(-1) => Ok(()),
        Some(s) if s >= 0 && (s as u64) < slots as u64 => Ok(()),
        Some(s) => Err(ApiError::invalid(
            "id_slot",
            format!(
                "id_slot: {s} is not a slot of this server (0 to {}, or -1 for any)",
                slots - 1
            ),
        )),
    }
}

/// llama-server's `stop_type`.
pub fn stop_type(f: FinishReason) -> &'static str {
    match f {
        FinishReason::EndOfGeneration => "eos",
        FinishReason::StopString => "word",
        FinishReason::Length | FinishReason::ContextFull => "limit",
        FinishReason::Cancelled => "none",
    }
}

/// `timings` of a finished (or running) request. Generation speed is
/// over the decode steps after the first token (which comes from the
/// prompt's last batch), as llama-server counts it.
pub fn timings(
    prompt_n: usize,
    cache_n: usize,
    prompt: Duration,
    predicted_n: usize,
    generation: Duration,
) -> Value {
    let prompt_ms = prompt.as_secs_f64() * 1e3;
    let predicted_ms = generation.as_secs_f64() * 1e3;
    let per = |ms: f64, n: usize| {
        if n > 0 && ms > 0.0 {
            ms / n as f64
        } else {
            0.0
        }
    };
    let rate = |ms: f64, n: usize| {
        if n > 0 && ms > 0.0 {
            1e3 / ms * n as f64
        } else {
            0.0
        }
    };
    let steps = predicted_n.saturating_sub(1);
    json!({
        "cache_n": cache_n,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per(prompt_ms, prompt_n),
        "prompt_per_second": rate(prompt_ms, prompt_n),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per(predicted_ms, steps),
        "predicted_per_second": rate(predicted_ms, steps),
    })
}

/// `timings` from a request's summary.
pub fn done_timings(d: &Done) -> Value {
    timings(
        d.prompt_tokens.saturating_sub(d.cached_tokens),
        d.cached_tokens,
        d.prompt_time,
        d.completion_tokens,
        d.generation_time,
    )
}

/// `generation_settings` (llama-server's names) of what the engine runs.
/// Samplers cria does not have are listed at the values that switch them
/// off in llama-server (clients read these keys).
pub fn settings(
    r: &Ready,
    p: &GenerateParams,
    n_predict: Option<usize>,
    options: &Options,
    stream: bool,
) -> Value {
    let n_probs = options.n_probs;
    let s = &p.sampler;
    let bias: Vec<Value> = s
        .logit_bias
        .iter()
        .map(|&(id, b)| json!({"token": id, "bias": if b.is_finite() { json!(b) } else { Value::Null }}))
        .chain(
            // What ignore_eos amounts to, as llama-server lists it.
            r.tok
                .eog_ids()
                .iter()
                .filter(|_| p.ignore_eos)
                .map(|&id| json!({"token": id, "bias": Value::Null})),
        )
        .collect();
    json!({
        "n_ctx": r.engine.config().n_ctx,
        "n_predict": n_predict.map_or(-1, |n| n as i64),
        "model": r.model_id,
        "seed": s.seed,
        "temperature": s.temperature,
        "dynatemp_range": 0.0,
        "dynatemp_exponent": 1.0,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "top_n_sigma": -1.0,
        "xtc_probability": 0.0,
        "xtc_threshold": 0.1,
        "typical_p": 1.0,
        "repeat_last_n": s.repeat_last_n,
        "repeat_penalty": s.repeat_penalty,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "dry_multiplier": 0.0,
        "dry_base": 1.75,
        "dry_allowed_length": 2,
        "dry_penalty_last_n": -1,
        "mirostat": 0,
        "mirostat_tau": 5.0,
        "mirostat_eta": 0.1,
        "adaptive_target": -1.0,
        "adaptive_decay": 0.9,
        "stop": p.stop,
        "max_tokens": n_predict.map_or(-1, |n| n as i64),
        "n_keep": 0,
        "n_discard": 0,
        "ignore_eos": p.ignore_eos,
        "stream": stream,
        "logit_bias": bias,
        "n_probs": n_probs,
        "min_keep": 0,
        "grammar": "",
        "post_sampling_probs": options.post_sampling_probs,
    })
}

/// One token's entry of `completion_probabilities` (and, as llama-server,
/// of chat `logprobs.content` with `post_sampling_probs`): `logprob` and
/// `top_logprobs` of the model's distribution, or with
/// `post_sampling_probs` `prob` and `top_probs` after the sampler chain.
pub fn probs(tok: &Tokenizer, t: &TokenEvent) -> Value {
    let post = t.prob.is_some();
    let key = if post { "prob" } else { "logprob" };
    let entry = |id: u32, v: f32| {
        let bytes = tok.token_to_piece(id, true);
        json!({"id": id, "token": String::from_utf8_lossy(&bytes), "bytes": bytes, key: v})
    };
    let (p, top) = if post {
        (t.prob.unwrap_or(0.0), &t.top_probs)
    } else {
        (t.logprob.unwrap_or(0.0), &t.top_logprobs)
    };
    let mut v = entry(t.id, p);
    v[if post { "top_probs" } else { "top_logprobs" }] =
        top.iter().map(|&(id, x)| entry(id, x)).collect();
    v
}

/// Keeps only `fields` of a reply (`generation_settings/n_predict` reaches
/// into an object and keeps the whole path as the key, as llama-server).
pub fn pick_fields(body: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return body;
    }
    let mut out = Map::new();
    for f in fields {
        let mut v = &body;
        let mut found = true;
        for key in f.split('/') {
            match v.get(key) {
                Some(x) => v = x,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            out.insert(f.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// `/props`.
pub fn props(r: &Ready, config: &crate::ServerConfig) -> Value {
    let params = json!({
        "seed": config.defaults.seed.map_or(-1i64, |s| s as i64),
        "temperature": config.defaults.temperature.unwrap_or(cria_sampler::SamplerConfig::default().temperature),
        "n_predict": config.defaults.n_predict.map_or(-1, |n| n as i64),
    });
    let template = r.template.as_ref().map_or("", |t| t.source());
    json!({
        "default_generation_settings": {
            "id": 0,
            "n_ctx": r.engine.config().n_ctx,
            "is_processing": false,
            "params": params,
        },
        "total_slots": r.engine.config().slots,
        "model_alias": r.model_id,
        "model_path": config.model_path.display().to_string(),
        "modalities": {"vision": false, "audio": false},
        "chat_template": template,
        "bos_token": r.tok.bos().and_then(|b| r.tok.token_text(b)).unwrap_or(""),
        "eos_token": r.tok.eos().and_then(|b| r.tok.token_text(b)).unwrap_or(""),
        "build_info": crate::FINGERPRINT,
        "is_sleeping": false,
    })
}

/// `/slots`: one entry per slot. The engine counts busy slots, not which:
/// the first `active` entries are reported busy.
pub fn slots(r: &Ready) -> Value {
    use std::sync::atomic::Ordering;
    let n = r.engine.config().slots;
    let active = r.engine.stats().active.load(Ordering::Relaxed).min(n);
    let list: Vec<Value> = (0..n)
        .map(|id| {
            json!({
                "id": id,
                "n_ctx": r.engine.config().n_ctx,
                "is_processing": id < active,
                "next_token": [{"has_next_token": id < active, "n_remain": -1, "n_decoded": 0}],
            })
        })
        .collect();
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Vec<Vec<Part>>, String> {
        serde_json::from_str::<Prompts>(json)
            .map(|p| p.0)
            .map_err(|e| e.to_string())
    }

    fn t(s: &str) -> Part {
        Part::Text(s.into())
    }

    #[test]
    fn prompt_shapes_follow_llama_server() {
        assert_eq!(read("\"hi\"").unwrap(), [vec![t("hi")]]);
        assert_eq!(read("[1, 2]").unwrap(), [vec![Part::Id(1), Part::Id(2)]]);
        // Mixed ids and texts: one prompt.
        assert_eq!(
            read("[1, \"a\", 2]").unwrap(),
            [vec![Part::Id(1), t("a"), Part::Id(2)]]
        );
        assert_eq!(read("[\"a\", 1]").unwrap(), [vec![t("a"), Part::Id(1)]]);
        // Texts only, or nested: several.
        assert_eq!(
            read("[\"a\", \"b\"]").unwrap(),
            [vec![t("a")], vec![t("b")]]
        );
        assert_eq!(
            read("[[1, 2], \"b\", {\"prompt_string\": \"c\"}]").unwrap(),
            [vec![Part::Id(1), Part::Id(2)], vec![t("b")], vec![t("c")]]
        );
        assert_eq!(read("{\"prompt_string\": \"x\"}").unwrap(), [vec![t("x")]]);
        for bad in [
            "[]",
            "1",
            "[[1], 2]",
            "[-1]",
            "[1.5]",
            "[[[1]]]",
            "{}",
            "{\"prompt_string\": \"x\", \"multimodal_data\": [\"AA==\"]}",
            "[true]",
            "[4294967296]",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn response_fields_reach_into_objects() {
        let body = json!({"content": "x", "generation_settings": {"n_predict": 3}, "other": 1});
        let fields = vec![
            "content".to_string(),
            "generation_settings/n_predict".into(),
            "nope".into(),
        ];
        assert_eq!(
            pick_fields(body, &fields),
            json!({"content": "x", "generation_settings/n_predict": 3})
        );
    }

    #[test]
    fn rates_leave_out_the_first_token() {
        let t = timings(10, 2, Duration::from_millis(100), 1, Duration::ZERO);
        assert_eq!(t["predicted_per_second"], 0.0);
        assert_eq!(t["prompt_per_token_ms"], 10.0);
        let t = timings(
            10,
            0,
            Duration::from_millis(100),
            16,
            Duration::from_millis(300),
        );
        assert!((t["predicted_per_second"].as_f64().unwrap() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn slot_ids_are_checked() {
        assert!(check_slot(None, 2).is_ok());
        assert!(check_slot(Some(-1), 2).is_ok());
        assert!(check_slot(Some(1), 2).is_ok());
        assert_eq!(
            check_slot(Some(2), 2).unwrap_err().param.as_deref(),
            Some("id_slot")
        );
        assert!(check_slot(Some(-2), 2).is_err());
    }
}
