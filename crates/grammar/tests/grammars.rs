//! Every grammar in llama.cpp's `grammars/` folder parses, compiles against
//! a real vocabulary (SmolLM2's, 49,152 tokens) and constrains: random walks
//! through the allowed tokens that end (EOS allowed and taken) produce text
//! that an independent GBNF recognizer, written here over the parsed rules,
//! accepts. The recognizer shares nothing with llguidance, so a wrong
//! translation to Lark shows up as a rejected output.

use std::collections::HashMap;
use std::path::PathBuf;

use cria_gguf::GgufFile;
use cria_grammar::gbnf::{self, Grammar, Node};
use cria_grammar::{GrammarSpec, Grammars};
use cria_tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn smol() -> Tokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tokenizer/tests/fixtures/ggml-vocab-smollm2.gguf");
    let f = GgufFile::open(path).expect("vocab fixture opens");
    Tokenizer::from_gguf(f.metadata()).expect("tokenizer builds")
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llama.cpp")
        .join(name);
    std::fs::read_to_string(path).expect("grammar fixture")
}

/// An independent recognizer: the set of end positions each node can
/// reach from a start position, memoized per (rule, start).
struct Recognizer<'g> {
    g: &'g Grammar,
    text: Vec<char>,
    memo: HashMap<(String, usize), Vec<usize>>,
}

impl Recognizer<'_> {
    fn accepts(g: &Grammar, text: &str) -> bool {
        let mut r = Recognizer {
            g,
            text: text.chars().collect(),
            memo: HashMap::new(),
        };
        let n = r.text.len();
        r.rule("root", 0).contains(&n)
    }

    fn rule(&mut self, name: &str, at: usize) -> Vec<usize> {
        let key = (name.to_string(), at);
        if let Some(v) = self.memo.get(&key) {
            return v.clone();
        }
        // Guards left recursion (none of the fixtures has it).
        self.memo.insert(key.clone(), Vec::new());
        let body = self.g.rule(name).expect("defined").clone();
        let out = self.node(&body, at);
        self.memo.insert(key, out.clone());
        out
    }

    fn node(&mut self, node: &Node, at: usize) -> Vec<usize> {
        let mut out = match node {
            Node::Literal(s) => {
                let s: Vec<char> = s.chars().collect();
                if self.text.len() >= at + s.len() && self.text[at..at + s.len()] == s[..] {
                    vec![at + s.len()]
                } else {
                    vec![]
                }
            }
            Node::Class { negated, ranges } => match self.text.get(at) {
                Some(&c) if ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated => {
                    vec![at + 1]
                }
                _ => vec![],
            },
            Node::Any => {
                if at < self.text.len() {
                    vec![at + 1]
                } else {
                    vec![]
                }
            }
            Node::Rule(r) => self.rule(r, at),
            Node::Token { .. } => vec![],
            Node::Alt(alts) => {
                let mut ends = Vec::new();
                for seq in alts {
                    let mut cur = vec![at];
                    for n in seq {
                        let mut next = Vec::new();
                        for p in cur {
                            next.extend(self.node(n, p));
                        }
                        next.sort_unstable();
                        next.dedup();
                        cur = next;
                    }
                    ends.extend(cur);
                }
                ends
            }
            Node::Repeat { node, min, max } => {
                let mut ends = Vec::new();
                let mut cur = vec![at];
                let mut k = 0u32;
                loop {
                    if k >= *min {
                        ends.extend(cur.iter().copied());
                    }
                    if max.is_some_and(|m| k >= m) || cur.is_empty() {
                        break;
                    }
                    let mut next = Vec::new();
                    for p in &cur {
                        // An empty match cannot make progress in a loop.
                        next.extend(self.node(node, *p).into_iter().filter(|&e| e > *p));
                    }
                    next.sort_unstable();
                    next.dedup();
                    if k >= *min && next.iter().all(|e| ends.contains(e)) {
                        break;
                    }
                    cur = next;
                    k += 1;
                }
                ends
            }
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn set_bits(mask: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for (w, &word) in mask.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            out.push(w as u32 * 32 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
    out
}

/// Walks the constraint with random allowed tokens; returns the text if
/// the walk ended on an end-of-generation token within `budget` tokens.
fn walk(
    tok: &Tokenizer,
    grammars: &Grammars,
    spec: &GrammarSpec,
    seed: u64,
    budget: usize,
) -> Option<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut c = grammars.compile(spec).expect("compiles");
    let mut bytes = Vec::new();
    let eager = rng.gen_range(0..budget / 2);
    for step in 0..budget {
        if c.is_finished() {
            return Some(String::from_utf8(bytes).expect("constrained text is UTF-8"));
        }
        let allowed = set_bits(c.allowed().expect("mask"));
        assert!(!allowed.is_empty(), "a mask never allows nothing");
        let eog: Vec<u32> = allowed.iter().copied().filter(|&t| tok.is_eog(t)).collect();
        if !eog.is_empty() && step >= eager {
            assert!(
                c.is_accepting(),
                "EOS is allowed only where the output is complete"
            );
            return Some(String::from_utf8(bytes).expect("constrained text is UTF-8"));
        }
        // Mostly short tokens, so walks reach an end.
        let pick = if rng.gen_bool(0.8) {
            let short: Vec<u32> = allowed
                .iter()
                .copied()
                .filter(|&t| !tok.is_eog(t) && tok.token_to_piece(t, false).len() <= 1)
                .collect();
            if short.is_empty() {
                allowed[rng.gen_range(0..allowed.len())]
            } else {
                short[rng.gen_range(0..short.len())]
            }
        } else {
            allowed[rng.gen_range(0..allowed.len())]
        };
        if tok.is_eog(pick) {
            return Some(String::from_utf8(bytes).expect("constrained text is UTF-8"));
        }
        bytes.extend(tok.token_to_piece(pick, false));
        c.accept(pick).expect("an allowed token is accepted");
    }
    if std::env::var("WALK_DEBUG").is_ok() {
        eprintln!("unfinished: {:?}", String::from_utf8_lossy(&bytes));
    }
    None
}

#[test]
fn every_llama_cpp_grammar_parses_and_constrains() {
    let tok = smol();
    let grammars = Grammars::new(&tok).unwrap();
    let names = [
        "arithmetic.gbnf",
        "c.gbnf",
        "chess.gbnf",
        "english.gbnf",
        "japanese.gbnf",
        "json.gbnf",
        "json_arr.gbnf",
        "list.gbnf",
    ];
    for name in names {
        let text = fixture(name);
        let g = gbnf::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let spec = GrammarSpec::from_grammar_text(&text);
        let mut finished = 0;
        for seed in 0..12 {
            if let Some(out) = walk(&tok, &grammars, &spec, seed, 300) {
                assert!(
                    Recognizer::accepts(&g, &out),
                    "{name} seed {seed}: output not in the grammar's language: {out:?}"
                );
                finished += 1;
            }
        }
        // C programs rarely close every brace on a random walk.
        let need = if name == "c.gbnf" { 1 } else { 3 };
        assert!(
            finished >= need,
            "{name}: only {finished} of 12 walks ended"
        );
    }
}

#[test]
fn recognizer_rejects_what_it_should() {
    // The recognizer itself must be able to say no, or the test above
    // proves nothing.
    let g = gbnf::parse(&fixture("chess.gbnf")).unwrap();
    assert!(Recognizer::accepts(&g, "1. e4 e5\n2. Nf3 Nc6\n"));
    assert!(!Recognizer::accepts(&g, "1. e4 e5\n"));
    assert!(!Recognizer::accepts(&g, "1. e9 e5\n2. Nf3 Nc6\n"));
    let j = gbnf::parse(&fixture("json.gbnf")).unwrap();
    assert!(Recognizer::accepts(&j, "{\"a\": [1, 2.5, \"x\"]}"));
    assert!(!Recognizer::accepts(&j, "{\"a\": [1, 2.5, \"x\"]"));
    assert!(!Recognizer::accepts(&j, "[1]"));
}

#[test]
fn schema_walks_give_valid_json() {
    let tok = smol();
    let grammars = Grammars::new(&tok).unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    });
    let spec = GrammarSpec::JsonSchema(schema);
    let mut finished = 0;
    for seed in 0..16 {
        if let Some(out) = walk(&tok, &grammars, &spec, seed, 200) {
            let v: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
            let age = v["age"].as_i64().expect("age is an integer");
            assert!((0..=120).contains(&age), "{out}");
            assert!(v["name"].as_str().unwrap().chars().count() <= 8, "{out}");
            let tags = v["tags"].as_array().unwrap();
            assert!(
                tags.len() <= 3 && tags.iter().all(|t| t == "a" || t == "b"),
                "{out}"
            );
            assert_eq!(v.as_object().unwrap().len(), 3, "{out}");
            finished += 1;
        }
    }
    assert!(finished >= 8, "only {finished} of 16 walks ended");
}

#[test]
fn bad_grammars_get_errors_that_say_where() {
    let tok = smol();
    let grammars = Grammars::new(&tok).unwrap();
    let cases = [
        ("root ::= foo", "`foo`, which is not defined"),
        ("rot ::= \"a\"", "no `root` rule"),
        ("root ::= \"a", "unterminated literal"),
        ("root ::= [a-", "unterminated character class"),
        ("root ::= (\"a\"", "expected `)`"),
        ("root := \"a\"", "expected `::=`"),
        ("root ::= \"a\"{3,1}", "maximum is below the minimum"),
        ("root ::= \"a\"{99999999}", "larger than"),
        ("root ::= \"\\q\"", "unknown escape"),
        ("root ::= [z-a]", "reversed"),
    ];
    for (text, want) in cases {
        let err = grammars
            .compile(&GrammarSpec::Gbnf(text.into()))
            .expect_err(text)
            .to_string();
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(err.contains("line "), "{text:?}: {err}");
    }
    let deep = format!("root ::= {}\"a\"{}", "(".repeat(500), ")".repeat(500));
    let err = grammars
        .compile(&GrammarSpec::Gbnf(deep))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nest deeper"), "{err}");
}

#[test]
fn unsupported_schema_features_are_named() {
    let tok = smol();
    let grammars = Grammars::new(&tok).unwrap();
    let cases = [
        (
            serde_json::json!({"type": "object", "dependentSchemas": {"a": {}}}),
            "dependentSchemas",
        ),
        (
            serde_json::json!({"type": "string", "format": "ipv7"}),
            "ipv7",
        ),
        (serde_json::json!([1, 2]), "must be an object"),
        (
            serde_json::json!({"type": "string", "maxLenght": 3}),
            "`maxLenght` is not supported",
        ),
        (
            serde_json::json!({"properties": {"a": {"x-guidance": {}}}}),
            "x-guidance",
        ),
        (serde_json::json!({"$ref": "#/$defs/missing"}), "missing"),
    ];
    for (schema, want) in cases {
        let err = grammars
            .compile(&GrammarSpec::JsonSchema(schema.clone()))
            .expect_err(&schema.to_string())
            .to_string();
        assert!(err.contains(want), "{schema}: {err}");
    }
}
