//! The request fields that constrain the output, read into one
//! [`GrammarSpec`] and compiled: OpenAI's `response_format` (`text`,
//! `json_object`, `json_schema`), and llama.cpp's `grammar` (GBNF, or
//! llguidance Lark) and `json_schema`. At most one may be given; what the
//! compiler cannot do is a 400 that names it.

use cria_grammar::{Constraint, GrammarSpec, Grammars};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

#[derive(Deserialize, Default)]
struct Fields {
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    grammar: Option<Value>,
    #[serde(default)]
    json_schema: Option<Value>,
}

/// The constraint a request body asks for, or `None`.
pub fn spec(body: &[u8]) -> Result<Option<(&'static str, GrammarSpec)>, ApiError> {
    let f: Fields = crate::openai::parse(body)?;
    let mut found: Vec<(&'static str, GrammarSpec)> = Vec::new();
    if let Some(rf) = f.response_format.filter(|v| !v.is_null()) {
        if let Some(s) = response_format(&rf)? {
            found.push(("response_format", s));
        }
    }
    match f.grammar {
        None | Some(Value::Null) => {}
        Some(Value::String(g)) if g.trim().is_empty() => {}
        Some(Value::String(g)) => found.push(("grammar", GrammarSpec::from_grammar_text(&g))),
        Some(_) => {
            return Err(ApiError::invalid(
                "grammar",
                "grammar: give the grammar as a string (GBNF, as llama.cpp)",
            ))
        }
    }
    match f.json_schema {
        None | Some(Value::Null) => {}
        Some(s) => found.push(("json_schema", GrammarSpec::JsonSchema(s))),
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
        return Err(ApiError::invalid(
            names[1],
            format!(
                "{} and {} both constrain the output: give only one",
                names[0], names[1]
            ),
        ));
    }
    Ok(found.pop())
}

/// OpenAI's shapes, plus llama.cpp's `{"type": "json_object", "schema": ...}`.
fn response_format(rf: &Value) -> Result<Option<GrammarSpec>, ApiError> {
    const P: &str = "response_format";
    let Some(obj) = rf.as_object() else {
        return Err(ApiError::invalid(
            P,
            "response_format: must be an object with a \"type\"",
        ));
    };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(match obj.get("schema") {
            Some(s) if !s.is_null() => GrammarSpec::JsonSchema(s.clone()),
            _ => GrammarSpec::JsonObject,
        })),
        "json_schema" => {
            let js = obj.get("json_schema").and_then(Value::as_object);
            let schema = js
                .and_then(|j| j.get("schema"))
                .or_else(|| obj.get("schema"))
                .filter(|s| !s.is_null());
            match schema {
                Some(s) => Ok(Some(GrammarSpec::JsonSchema(s.clone()))),
                None => Err(ApiError::invalid(
                    "response_format.json_schema.schema",
                    "response_format: type \"json_schema\" needs json_schema.schema (the schema \
                     the reply must match)",
                )),
            }
        }
        "" => Err(ApiError::invalid(P, "response_format: \"type\" is missing")),
        other => Err(ApiError::unsupported(
            "response_format.type",
            &format!("response_format type {other:?} (text, json_object and json_schema are)"),
        )),
    }
}

/// Compiles `spec`; a failure is a 400 on `param` that says why.
pub fn compile(
    grammars: &Grammars,
    param: &str,
    spec: &GrammarSpec,
) -> Result<Constraint, ApiError> {
    grammars
        .compile(spec)
        .map_err(|e| ApiError::invalid(param, format!("{param}: {e}")).code("invalid_grammar"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_of(body: &str) -> Result<Option<(&'static str, GrammarSpec)>, ApiError> {
        spec(body.as_bytes())
    }

    #[test]
    fn shapes() {
        assert!(spec_of(r#"{"response_format":{"type":"text"}}"#)
            .unwrap()
            .is_none());
        assert!(matches!(
            spec_of(r#"{"response_format":{"type":"json_object"}}"#).unwrap(),
            Some(("response_format", GrammarSpec::JsonObject))
        ));
        assert!(matches!(
            spec_of(r#"{"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"integer"},"strict":true}}}"#).unwrap(),
            Some(("response_format", GrammarSpec::JsonSchema(_)))
        ));
        assert!(matches!(
            spec_of(r#"{"grammar":"root ::= \"a\""}"#).unwrap(),
            Some(("grammar", GrammarSpec::Gbnf(_)))
        ));
        assert!(matches!(
            spec_of(r#"{"json_schema":{"type":"string"}}"#).unwrap(),
            Some(("json_schema", GrammarSpec::JsonSchema(_)))
        ));
        assert!(spec_of(r#"{"grammar":""}"#).unwrap().is_none());
    }

    #[test]
    fn refusals_name_the_field() {
        for (body, param) in [
            (
                r#"{"response_format":{"type":"xml"}}"#,
                "response_format.type",
            ),
            (
                r#"{"response_format":{"type":"json_schema","json_schema":{"name":"x"}}}"#,
                "response_format.json_schema.schema",
            ),
            (r#"{"response_format":"json"}"#, "response_format"),
            (r#"{"grammar":42}"#, "grammar"),
            (
                r#"{"grammar":"root ::= \"a\"","json_schema":{}}"#,
                "json_schema",
            ),
        ] {
            let e = spec_of(body).expect_err(body);
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }
}
