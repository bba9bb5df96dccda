//! GBNF, llama.cpp's grammar syntax, parsed into a small AST and written
//! out as llguidance's Lark dialect.
//!
//! No crate reads GBNF, so this is ours. It follows llama.cpp's
//! `llama-grammar.cpp` parser: a rule is `name ::= alternatives`, a newline
//! ends a rule except inside parentheses or after `|`/`::=`, `#` starts a
//! comment; elements are `"literals"`, `[character classes]` (with `^`
//! negation and ranges), `.` (any character), rule names, `( groups )`,
//! `<special-token>`s, and the repetitions `* + ? {m} {m,} {m,n}`.
//!
//! Translation: a rule whose body uses only literals, classes and other such
//! rules (and no recursion) becomes a Lark *terminal* (an UPPERCASE name, one
//! lexeme matched by a regex) when that cannot change the language (see
//! [`crate::lexemes`]), everything else a Lark *rule*. That split is what
//! keeps llguidance fast: per-character work happens in its lexer, not in
//! the Earley parser. `root` becomes Lark's `start`.

use std::collections::HashMap;
use std::fmt::Write;

/// Grammars larger than this are refused before parsing.
pub const MAX_GRAMMAR_BYTES: usize = 1 << 20;
/// Deeper nesting of parentheses than this is refused (the parser recurses).
const MAX_NESTING: usize = 64;
/// Upper bound of `{m,n}` repetition counts (llama.cpp expands them into
/// copies; llguidance does not, but an absurd count is still an error).
const MAX_REPEAT: u32 = 10_000;

/// A syntax error, with the 1-based line and column where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GbnfError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::error::Error for GbnfError {}

impl std::fmt::Display for GbnfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GBNF grammar, line {} column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// One element of a sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Exact characters (may be empty: `""`).
    Literal(String),
    /// A character class: `negated` flips it; ranges are inclusive.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `.`: any one character.
    Any,
    /// A reference to a rule by name.
    Rule(String),
    /// `<...>` (a special token by name, or `<[id]>`); `negated` (`!<...>`)
    /// matches any one token but that one.
    Token { text: String, negated: bool },
    /// Alternatives of sequences (a parenthesised group, or a rule body).
    Alt(Vec<Vec<Node>>),
    /// `node{min,max}`; `max` None is unbounded.
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

/// A parsed grammar: rules in the order they were first defined.
#[derive(Debug, Clone)]
pub struct Grammar {
    pub rules: Vec<(String, Node)>,
}

impl Grammar {
    /// The body of rule `name`.
    pub fn rule(&self, name: &str) -> Option<&Node> {
        self.rules.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }
}

/// Parses GBNF text. Checks what llama.cpp checks: syntax, that every
/// referenced rule is defined, and that `root` exists.
pub fn parse(text: &str) -> Result<Grammar, GbnfError> {
    if text.len() > MAX_GRAMMAR_BYTES {
        return Err(GbnfError {
            line: 1,
            column: 1,
            message: format!(
                "the grammar is {} bytes; the limit is {MAX_GRAMMAR_BYTES}",
                text.len()
            ),
        });
    }
    let mut p = Parser {
        src: text,
        chars: text.char_indices().collect(),
        pos: 0,
        depth: 0,
    };
    let mut rules: Vec<(String, Node)> = Vec::new();
    p.skip_space(true);
    while !p.at_end() {
        let (name, body) = p.rule()?;
        // llama.cpp lets a later definition add alternatives to a rule.
        match rules.iter_mut().find(|(n, _)| *n == name) {
            Some((_, Node::Alt(alts))) => {
                if let Node::Alt(more) = body {
                    alts.extend(more);
                }
            }
            _ => rules.push((name, body)),
        }
        p.skip_space(true);
    }
    let g = Grammar { rules };
    let defined: HashMap<&str, ()> = g.rules.iter().map(|(n, _)| (n.as_str(), ())).collect();
    for (name, body) in &g.rules {
        let mut missing = None;
        visit_refs(body, &mut |r| {
            if missing.is_none() && !defined.contains_key(r) {
                missing = Some(r.to_string());
            }
        });
        if let Some(r) = missing {
            return Err(p.error_at_end(format!(
                "rule `{name}` refers to `{r}`, which is not defined"
            )));
        }
    }
    if !defined.contains_key("root") {
        return Err(
            p.error_at_end("the grammar has no `root` rule (generation starts there)".into())
        );
    }
    Ok(g)
}

fn visit_refs<'a>(node: &'a Node, f: &mut impl FnMut(&'a str)) {
    match node {
        Node::Rule(r) => f(r),
        Node::Alt(alts) => alts.iter().flatten().for_each(|n| visit_refs(n, f)),
        Node::Repeat { node, .. } => visit_refs(node, f),
        Node::Literal(_) | Node::Class { .. } | Node::Any | Node::Token { .. } => {}
    }
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).map(|&(_, c)| c)
    }

    fn error(&self, message: impl Into<String>) -> GbnfError {
        let byte = self.chars.get(self.pos).map_or(self.src.len(), |&(b, _)| b);
        let before = &self.src[..byte];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        GbnfError {
            line,
            column,
            message: message.into(),
        }
    }

    fn error_at_end(&self, message: String) -> GbnfError {
        GbnfError {
            line: self.src.matches('\n').count() + 1,
            column: 1,
            message,
        }
    }

    /// Skips blanks and comments; newlines only when `newlines`.
    fn skip_space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn is_word(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-'
    }

    fn name(&mut self) -> Result<String, GbnfError> {
        let start = self.pos;
        while self.peek().is_some_and(Self::is_word) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error(match self.peek() {
                Some(c) => format!("expected a rule name, found `{c}`"),
                None => "expected a rule name, found the end".into(),
            }));
        }
        Ok(self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect())
    }

    fn rule(&mut self) -> Result<(String, Node), GbnfError> {
        let name = self.name()?;
        self.skip_space(false);
        if !(self.peek() == Some(':')
            && self.peek_at(1) == Some(':')
            && self.peek_at(2) == Some('='))
        {
            return Err(self.error(format!("expected `::=` after rule name `{name}`")));
        }
        self.pos += 3;
        self.skip_space(true);
        let body = self.alternatives(false)?;
        match self.peek() {
            None | Some('\n') | Some('\r') => Ok((name, body)),
            Some(c) => Err(self.error(format!(
                "expected the end of rule `{name}` (a newline), found `{c}`"
            ))),
        }
    }

    fn alternatives(&mut self, nested: bool) -> Result<Node, GbnfError> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.skip_space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(Node::Alt(alts))
    }

    fn sequence(&mut self, nested: bool) -> Result<Vec<Node>, GbnfError> {
        let mut seq = Vec::new();
        loop {
            let node = match self.peek() {
                Some('"') => self.literal()?,
                Some('[') => self.class()?,
                Some('.') => {
                    self.pos += 1;
                    Node::Any
                }
                Some('(') => {
                    if self.depth >= MAX_NESTING {
                        return Err(self
                            .error(format!("parentheses nest deeper than {MAX_NESTING} levels")));
                    }
                    self.pos += 1;
                    self.depth += 1;
                    self.skip_space(true);
                    let inner = self.alternatives(true)?;
                    self.depth -= 1;
                    if self.peek() != Some(')') {
                        return Err(self.error("expected `)` to close a group"));
                    }
                    self.pos += 1;
                    inner
                }
                Some('<') => self.token(false)?,
                Some('!') if self.peek_at(1) == Some('<') => {
                    self.pos += 1;
                    self.token(true)?
                }
                Some(c) if Self::is_word(c) => Node::Rule(self.name()?),
                _ => break,
            };
            self.skip_space(nested);
            let node = self.repetition(node)?;
            seq.push(node);
            self.skip_space(nested);
        }
        Ok(seq)
    }

    fn repetition(&mut self, node: Node) -> Result<Node, GbnfError> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.pos += 1;
                self.skip_space(true);
                let min = self.int()?;
                self.skip_space(true);
                let max = match self.peek() {
                    Some('}') => Some(min),
                    Some(',') => {
                        self.pos += 1;
                        self.skip_space(true);
                        let max = if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                            Some(self.int()?)
                        } else {
                            None
                        };
                        self.skip_space(true);
                        if self.peek() != Some('}') {
                            return Err(self.error("expected `}` to close a repetition"));
                        }
                        max
                    }
                    _ => return Err(self.error("expected `,` or `}` in a repetition")),
                };
                if max.is_some_and(|m| m < min) {
                    return Err(self.error(format!(
                        "repetition {{{min},{}}}: the maximum is below the minimum",
                        max.unwrap_or(0)
                    )));
                }
                (min, max)
            }
            _ => return Ok(node),
        };
        self.pos += 1;
        Ok(Node::Repeat {
            node: Box::new(node),
            min,
            max,
        })
    }

    fn int(&mut self) -> Result<u32, GbnfError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT => Ok(n),
            Ok(_) | Err(_) if !digits.is_empty() => Err(self.error(format!(
                "repetition count {digits} is larger than {MAX_REPEAT}"
            ))),
            _ => Err(self.error("expected a number")),
        }
    }

    /// One possibly escaped character inside a literal or class.
    fn char(&mut self) -> Result<char, GbnfError> {
        let Some(c) = self.peek() else {
            return Err(self.error("unexpected end of grammar inside a literal or class"));
        };
        self.pos += 1;
        if c != '\\' {
            return Ok(c);
        }
        let Some(e) = self.peek() else {
            return Err(self.error("unexpected end of grammar after `\\`"));
        };
        self.pos += 1;
        let hex = |p: &mut Self, n: usize| -> Result<char, GbnfError> {
            let mut v: u32 = 0;
            for _ in 0..n {
                let d = p
                    .peek()
                    .and_then(|c| c.to_digit(16))
                    .ok_or_else(|| p.error(format!("expected {n} hex digits after `\\{e}`")))?;
                v = v * 16 + d;
                p.pos += 1;
            }
            char::from_u32(v).ok_or_else(|| {
                p.error(format!("\\{e} escape {v:#x} is not a Unicode scalar value"))
            })
        };
        match e {
            'x' => hex(self, 2),
            'u' => hex(self, 4),
            'U' => hex(self, 8),
            't' => Ok('\t'),
            'r' => Ok('\r'),
            'n' => Ok('\n'),
            '\\' | '"' | '[' | ']' | '-' => Ok(e),
            other => Err(self.error(format!("unknown escape `\\{other}`"))),
        }
    }

    fn literal(&mut self) -> Result<Node, GbnfError> {
        self.pos += 1; // "
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated literal (missing `\"`)")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(Node::Literal(s));
                }
                Some(_) => s.push(self.char()?),
            }
        }
    }

    fn class(&mut self) -> Result<Node, GbnfError> {
        self.pos += 1; // [
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated character class (missing `]`)")),
                Some(']') => {
                    self.pos += 1;
                    return Ok(Node::Class { negated, ranges });
                }
                Some(_) => {
                    let lo = self.char()?;
                    let hi =
                        if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                            self.pos += 1;
                            self.char()?
                        } else {
                            lo
                        };
                    if hi < lo {
                        return Err(
                            self.error(format!("character range {lo:?}-{hi:?} is reversed"))
                        );
                    }
                    ranges.push((lo, hi));
                }
            }
        }
    }

    fn token(&mut self, negated: bool) -> Result<Node, GbnfError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == '>' {
                let text: String = self.chars[start..self.pos]
                    .iter()
                    .map(|&(_, c)| c)
                    .collect();
                return Ok(Node::Token { text, negated });
            }
            if c == '\n' || self.pos - start > 256 {
                break;
            }
        }
        self.pos = start;
        Err(self.error("unterminated special token (expected `<name>`)"))
    }
}

/// Writes `g` as an llguidance Lark grammar (see the module docs).
/// `token_id` resolves a special token's name (`<|eot_id|>`) to its id; it
/// is needed only for negated tokens (`!<...>`), which Lark spells by id.
pub fn to_lark(g: &Grammar, token_id: &dyn Fn(&str) -> Option<u32>) -> Result<String, GbnfError> {
    let index: HashMap<&str, usize> = g
        .rules
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let terminal = crate::lexemes::terminal_rules(g);
    let names: Vec<String> = g
        .rules
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            let clean: String = n
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            if n == "root" {
                "start".to_string()
            } else if terminal[i] {
                format!("T{i}_{}", clean.to_ascii_uppercase())
            } else {
                format!("r{i}_{}", clean.to_ascii_lowercase())
            }
        })
        .collect();
    let mut out = String::from("%llguidance {}\n");
    let cx = Cx {
        index: &index,
        names: &names,
        token_id,
    };
    for (i, (_, body)) in g.rules.iter().enumerate() {
        let _ = write!(out, "{}: ", names[i]);
        write_node(&mut out, body, &cx, true)?;
        out.push('\n');
    }
    Ok(out)
}

struct Cx<'a> {
    index: &'a HashMap<&'a str, usize>,
    names: &'a [String],
    token_id: &'a dyn Fn(&str) -> Option<u32>,
}

fn write_node(out: &mut String, node: &Node, cx: &Cx, top: bool) -> Result<(), GbnfError> {
    match node {
        Node::Literal(s) => write_literal(out, s),
        Node::Class { negated, ranges } => {
            out.push_str("/[");
            if *negated {
                out.push('^');
            }
            for &(lo, hi) in ranges {
                push_class_char(out, lo);
                if hi != lo {
                    out.push('-');
                    push_class_char(out, hi);
                }
            }
            if ranges.is_empty() {
                // `[]` matches nothing and `[^]` anything.
                out.push_str(if *negated { "\\x{0}-\\x{10FFFF}" } else { "" });
            }
            out.push_str("]/");
            if ranges.is_empty() && !*negated {
                // An empty class can never match; say so in a way the
                // regex syntax accepts.
                out.truncate(out.len() - 4);
                out.push_str("/[a&&b]/");
            }
        }
        Node::Any => out.push_str("/(?s:.)/"),
        Node::Rule(r) => out.push_str(&cx.names[cx.index[r.as_str()]]),
        Node::Token { text, negated } => {
            if !*negated {
                out.push_str(text);
            } else {
                let inner = &text[1..text.len() - 1];
                let id = match inner.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                    Some(num) => num.parse::<u32>().ok(),
                    None => (cx.token_id)(text),
                };
                let Some(id) = id else {
                    return Err(GbnfError {
                        line: 1,
                        column: 1,
                        message: format!("`!{text}`: the vocabulary has no such token"),
                    });
                };
                let _ = write!(out, "<[^{id}]>");
            }
        }
        Node::Alt(alts) => {
            if !top {
                out.push('(');
            }
            for (k, seq) in alts.iter().enumerate() {
                if k > 0 {
                    out.push_str(" | ");
                }
                if seq.is_empty() {
                    out.push_str("\"\"");
                }
                for (j, n) in seq.iter().enumerate() {
                    if j > 0 {
                        out.push(' ');
                    }
                    write_node(out, n, cx, false)?;
                }
            }
            if !top {
                out.push(')');
            }
        }
        Node::Repeat { node, min, max } => {
            out.push('(');
            write_node(out, node, cx, false)?;
            out.push(')');
            match (min, max) {
                (0, None) => out.push('*'),
                (1, None) => out.push('+'),
                (0, Some(1)) => out.push('?'),
                (m, None) => {
                    let _ = write!(out, "{{{m},}}");
                }
                (m, Some(n)) => {
                    let _ = write!(out, "{{{m},{n}}}");
                }
            }
        }
    }
    Ok(())
}

/// A Lark string literal: llguidance reads it as a JSON string.
fn write_literal(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

/// One character inside a regex class: letters and digits as themselves,
/// everything else as `\x{..}` (which also keeps `/` out of the Lark regex).
fn push_class_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:x}}}", c as u32);
    }
}
