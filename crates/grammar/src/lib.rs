//! Constrained decoding: the model may only produce text that a grammar or
//! a JSON Schema accepts.
//!
//! - [`Grammars`] is built once per model from its [`Tokenizer`]: it holds
//!   the vocabulary as a byte trie (llguidance's `toktrie`).
//! - [`GrammarSpec`] says what the output must be: a GBNF grammar
//!   (llama.cpp's syntax, see [`gbnf`]), a Lark grammar (llguidance's own),
//!   a JSON Schema, or any JSON object.
//! - [`Grammars::compile`] turns a spec into a [`Constraint`], the state of
//!   one generation: before each token, [`Constraint::allowed`] gives the
//!   bitmask of tokens that keep the output valid (end-of-generation tokens
//!   only where the output is complete); after it, [`Constraint::accept`]
//!   advances the state.
//!
//! Why llguidance: its masks cost tens of microseconds for a 49k vocabulary
//! (its lexer walks the token trie once per step, not once per token), where
//! llama.cpp's own grammar engine checks candidates one by one and can cost
//! more than the forward pass (llama.cpp #7554). It compiles JSON Schema
//! itself and is what mistral.rs, vLLM and OpenAI use. Measured before
//! choosing it, on the default model's 49,152-token vocabulary: 44 us per
//! token for a JSON Schema mask, 10 us for llama.cpp's `json.gbnf`, and no
//! measurable loss of generation speed at 1 or 2 threads (BENCHMARKS.md,
//! "Structured output"). What it lacks is a GBNF reader, which [`gbnf`]
//! provides.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tokenizer: cria_tokenizer::Tokenizer = todo!();
//! use cria_grammar::{GrammarSpec, Grammars};
//! let grammars = Grammars::new(&tokenizer)?;
//! let mut c = grammars.compile(&GrammarSpec::Gbnf(r#"root ::= "yes" | "no""#.into()))?;
//! let mask = c.allowed()?; // one bit per token id
//! # Ok(()) }
//! ```

pub mod gbnf;
mod lexemes;
mod vocab;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use cria_tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use toktrie::{SimpleVob, TokEnv};

/// What the output must match.
#[derive(Clone, Debug)]
pub enum GrammarSpec {
    /// llama.cpp's GBNF (`root ::= ...`).
    Gbnf(String),
    /// llguidance's Lark dialect (text starting with `%llguidance`).
    Lark(String),
    /// A JSON Schema (OpenAI's `response_format.json_schema.schema`).
    JsonSchema(Value),
    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    JsonObject,
}

impl GrammarSpec {
    /// A grammar given as text: Lark when it says so (`%llguidance` or a
    /// `start:` rule), GBNF otherwise, as llama.cpp decides.
    pub fn from_grammar_text(text: &str) -> GrammarSpec {
        let lark = text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("%llguidance") || l.starts_with("start:") || l.starts_with("start :")
        });
        if lark {
            GrammarSpec::Lark(text.to_string())
        } else {
            GrammarSpec::Gbnf(text.to_string())
        }
    }
}

/// Why a grammar or schema was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Gbnf(#[from] gbnf::GbnfError),
    /// The schema uses something the compiler does not support (the
    /// message names it) or is not a valid schema.
    #[error("JSON Schema: {0}")]
    Schema(String),
    #[error("grammar: {0}")]
    Grammar(String),
    /// The constraint's state went wrong during generation (a token it
    /// did not allow was accepted, or its limits were hit).
    #[error("grammar state: {0}")]
    State(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The vocabulary in the form llguidance needs, built once per model.
pub struct Grammars {
    factory: ParserFactory,
    n_vocab: usize,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("n_vocab", &self.n_vocab)
            .finish()
    }
}

/// How long the last compile took, for reporting.
#[derive(Copy, Clone, Debug)]
pub struct CompileStats {
    pub time: Duration,
}

impl Grammars {
    /// Builds the token trie from `tok` (every token's bytes; control
    /// tokens marked special, so no grammar text can produce them).
    pub fn new(tok: &Tokenizer) -> Result<Grammars> {
        let env: TokEnv = vocab::token_env(tok).map_err(Error::Grammar)?;
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| Error::Grammar(e.to_string()))?;
        factory.quiet();
        Ok(Grammars {
            factory,
            n_vocab: tok.vocab_size(),
        })
    }

    /// Compiles `spec` into a fresh [`Constraint`]. Errors name what is
    /// wrong or unsupported; nothing is silently ignored.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint> {
        Ok(self.compile_timed(spec)?.0)
    }

    /// [`Grammars::compile`], also returning how long it took.
    pub fn compile_timed(&self, spec: &GrammarSpec) -> Result<(Constraint, CompileStats)> {
        let start = Instant::now();
        let top = match spec {
            GrammarSpec::Gbnf(text) => {
                let g = gbnf::parse(text)?;
                let trie = self.factory.tok_env().tok_trie();
                let lark = gbnf::to_lark(&g, &|name| trie.get_special_token(name))?;
                TopLevelGrammar::from_lark(lark)
            }
            GrammarSpec::Lark(text) => {
                if text.len() > gbnf::MAX_GRAMMAR_BYTES {
                    return Err(Error::Grammar(format!(
                        "the grammar is {} bytes; the limit is {}",
                        text.len(),
                        gbnf::MAX_GRAMMAR_BYTES
                    )));
                }
                TopLevelGrammar::from_lark(text.clone())
            }
            GrammarSpec::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(with_options(schema)?)
            }
            GrammarSpec::JsonObject => {
                TopLevelGrammar::from_json_schema(with_options(&json!({"type": "object"}))?)
            }
        };
        let is_schema = matches!(spec, GrammarSpec::JsonSchema(_) | GrammarSpec::JsonObject);
        let parser = catch_unwind(AssertUnwindSafe(|| self.factory.create_parser(top)))
            .map_err(|_| Error::Grammar("the grammar compiler failed on this input".into()))?
            .map_err(|e| {
                let msg = e.to_string();
                if is_schema {
                    Error::Schema(msg)
                } else {
                    Error::Grammar(msg)
                }
            })?;
        let matcher = Matcher::new(Ok(parser));
        let mut c = Constraint {
            matcher,
            mask: SimpleVob::alloc(self.n_vocab),
            n_vocab: self.n_vocab,
        };
        // A grammar that allows nothing at all is an error now, not an
        // empty answer later.
        c.allowed()?;
        Ok((
            c,
            CompileStats {
                time: start.elapsed(),
            },
        ))
    }
}

/// Keys of the schema dialects that carry no constraint (annotations), and
/// are therefore safe to drop before compiling.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$id",
    "$comment",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "strict",
];

/// Checks the schema's shape and fixes the output style: compact JSON with
/// `", "` and `": "` separators (no free whitespace a sampler could loop
/// in), `oneOf` compiled as `anyOf` (exact when the branches are disjoint,
/// as in tagged unions).
fn with_options(schema: &Value) -> Result<Value> {
    let mut schema = schema.clone();
    match &schema {
        Value::Object(_) | Value::Bool(_) => {}
        other => {
            return Err(Error::Schema(format!(
                "a schema must be an object or a boolean, not {}",
                kind_of(other)
            )))
        }
    }
    // Refuses `x-guidance` too: those options are cria's to set.
    strip_annotations(&mut schema, 0)?;
    if let Value::Object(map) = &mut schema {
        map.insert(
            "x-guidance".into(),
            json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
                "coerce_one_of": true,
            }),
        );
    }
    Ok(schema)
}

/// The keywords the compiler enforces.
const ENFORCED: &[&str] = &[
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "const",
    "enum",
    "type",
    "items",
    "additionalItems",
    "prefixItems",
    "minItems",
    "maxItems",
    "properties",
    "additionalProperties",
    "patternProperties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];
/// Structural keywords it reads without enforcing anything.
const STRUCTURAL: &[&str] = &[
    "$defs",
    "definitions",
    "$anchor",
    "contentMediaType",
    "contentEncoding",
];

/// Removes annotation keys from every subschema (not from `properties`
/// maps, where they are property names) and refuses every other keyword
/// the compiler would not enforce, a misspelt one included: a schema is
/// never silently weakened. Vendor extensions (`x-...`) are annotations.
/// Refuses nesting deeper than 64.
fn strip_annotations(v: &mut Value, depth: usize) -> Result<()> {
    if depth > 64 {
        return Err(Error::Schema(
            "the schema nests deeper than 64 levels".into(),
        ));
    }
    let Value::Object(map) = v else { return Ok(()) };
    for k in ANNOTATIONS {
        map.remove(*k);
    }
    map.retain(|k, _| !k.starts_with("x-") || k == "x-guidance");
    let known = |k: &str| ENFORCED.contains(&k) || STRUCTURAL.contains(&k);
    if let Some(k) = map.keys().find(|k| !known(k)) {
        return Err(Error::Schema(format!(
            "keyword `{k}` is not supported (cria enforces: {})",
            ENFORCED.join(", ")
        )));
    }
    for (k, child) in map.iter_mut() {
        match k.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                if let Value::Object(props) = child {
                    for p in props.values_mut() {
                        strip_annotations(p, depth + 1)?;
                    }
                }
            }
            "enum" | "const" => {}
            _ => match child {
                Value::Array(items) => {
                    for it in items {
                        strip_annotations(it, depth + 1)?;
                    }
                }
                Value::Object(_) => strip_annotations(child, depth + 1)?,
                _ => {}
            },
        }
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The state of one constrained generation.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    /// (n_vocab bits) the last mask computed.
    mask: SimpleVob,
    n_vocab: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("n_vocab", &self.n_vocab)
            .field("finished", &self.matcher.is_stopped())
            .finish()
    }
}

impl Constraint {
    /// One bit per token id (bit `id % 32` of word `id / 32`): the tokens
    /// that keep the output valid. End-of-generation tokens are set only
    /// where the output so far is complete.
    pub fn allowed(&mut self) -> Result<&[u32]> {
        let m = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| Error::State(e.to_string()))?;
        if m.is_zero() {
            return Err(Error::State(
                "no token can continue the output (the grammar is a dead end for this vocabulary)"
                    .into(),
            ));
        }
        self.mask = m;
        Ok(&self.mask.as_slice()[..self.n_vocab.div_ceil(32)])
    }

    /// Advances past token `id` (which must have been allowed).
    pub fn accept(&mut self, id: u32) -> Result<()> {
        self.matcher
            .consume_token(id)
            .map_err(|e| Error::State(e.to_string()))
    }

    /// The output so far is complete: ending here is valid.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// Nothing but the end can follow: generation should stop now.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}
