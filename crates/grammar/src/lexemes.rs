//! Which GBNF rules may become Lark terminals without changing the language.
//!
//! llguidance's lexer is greedy: a terminal keeps consuming characters as
//! long as it can. GBNF is matched character by character with no such
//! rule, so `num ::= [0-9]+ ws` with `ws ::= [ \t\n]*`, followed by `"\n"`,
//! is fine in llama.cpp but, as a greedy terminal, swallows the newline the
//! grammar needs next and can never end. A rule is therefore made a terminal
//! only when no complete match of it can be extended by a character that
//! may follow it in the grammar. That is decided exactly: the rule's body
//! (rules it uses inlined) becomes a Glushkov automaton, determinized on the
//! fly, and every accepting state is checked for a transition on the
//! rule's FOLLOW set. Too large an automaton counts as unsafe (the rule stays
//! a parser rule, which is always correct, only slower).

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::gbnf::{Grammar, Node};

/// Automata larger than this are not analysed (the rule stays a rule).
const MAX_POSITIONS: usize = 4096;
const MAX_STATES: usize = 2048;
const MAX_CHAR: u32 = 0x10FFFF;

/// A set of characters as sorted, disjoint, inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq)]
struct CharSet(Vec<(u32, u32)>);

impl CharSet {
    fn range(lo: u32, hi: u32) -> CharSet {
        CharSet(vec![(lo, hi)])
    }

    fn all() -> CharSet {
        CharSet::range(0, MAX_CHAR)
    }

    fn of_class(negated: bool, ranges: &[(char, char)]) -> CharSet {
        let mut s = CharSet::default();
        for &(lo, hi) in ranges {
            s.add(&CharSet::range(lo as u32, hi as u32));
        }
        if negated {
            s.complement()
        } else {
            s
        }
    }

    fn add(&mut self, other: &CharSet) {
        let mut all: Vec<(u32, u32)> = self.0.iter().chain(&other.0).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(all.len());
        for (lo, hi) in all {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        self.0 = out;
    }

    fn complement(&self) -> CharSet {
        let mut out = Vec::new();
        let mut next = 0u32;
        for &(lo, hi) in &self.0 {
            if lo > next {
                out.push((next, lo - 1));
            }
            next = hi.saturating_add(1);
        }
        if next <= MAX_CHAR {
            out.push((next, MAX_CHAR));
        }
        CharSet(out)
    }

    fn contains(&self, c: u32) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= c && c <= hi)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// FIRST sets and nullability of every rule, by fixpoint.
struct Sets<'g> {
    g: &'g Grammar,
    first: HashMap<&'g str, CharSet>,
    nullable: HashMap<&'g str, bool>,
}

impl<'g> Sets<'g> {
    fn new(g: &'g Grammar) -> Sets<'g> {
        let mut s = Sets {
            g,
            first: g
                .rules
                .iter()
                .map(|(n, _)| (n.as_str(), CharSet::default()))
                .collect(),
            nullable: g.rules.iter().map(|(n, _)| (n.as_str(), false)).collect(),
        };
        loop {
            let mut changed = false;
            for (name, body) in &g.rules {
                let (f, n) = (s.first_of(body), s.nullable_of(body));
                if f != s.first[name.as_str()] || n != s.nullable[name.as_str()] {
                    s.first.insert(name, f);
                    s.nullable.insert(name, n);
                    changed = true;
                }
            }
            if !changed {
                return s;
            }
        }
    }

    fn nullable_of(&self, node: &Node) -> bool {
        match node {
            Node::Literal(s) => s.is_empty(),
            Node::Class { .. } | Node::Any | Node::Token { .. } => false,
            Node::Rule(r) => self.nullable[r.as_str()],
            Node::Alt(alts) => alts
                .iter()
                .any(|seq| seq.iter().all(|n| self.nullable_of(n))),
            Node::Repeat { node, min, .. } => *min == 0 || self.nullable_of(node),
        }
    }

    fn first_of(&self, node: &Node) -> CharSet {
        match node {
            Node::Literal(s) => s
                .chars()
                .next()
                .map_or_else(CharSet::default, |c| CharSet::range(c as u32, c as u32)),
            Node::Class { negated, ranges } => CharSet::of_class(*negated, ranges),
            Node::Any => CharSet::all(),
            Node::Token { .. } => CharSet::default(),
            Node::Rule(r) => self.first[r.as_str()].clone(),
            Node::Alt(alts) => {
                let mut out = CharSet::default();
                for seq in alts {
                    out.add(&self.first_of_seq(seq));
                }
                out
            }
            Node::Repeat { node, max, .. } => {
                if *max == Some(0) {
                    CharSet::default()
                } else {
                    self.first_of(node)
                }
            }
        }
    }

    fn first_of_seq(&self, seq: &[Node]) -> CharSet {
        let mut out = CharSet::default();
        for n in seq {
            out.add(&self.first_of(n));
            if !self.nullable_of(n) {
                break;
            }
        }
        out
    }

    /// FOLLOW of every rule: the characters that can come right after it.
    fn follow(&self) -> HashMap<&'g str, CharSet> {
        let mut follow: HashMap<&str, CharSet> = self
            .g
            .rules
            .iter()
            .map(|(n, _)| (n.as_str(), CharSet::default()))
            .collect();
        loop {
            let before = follow.clone();
            for (name, body) in &self.g.rules {
                let ctx = follow[name.as_str()].clone();
                self.walk_follow(body, &ctx, &mut follow);
            }
            if before == follow {
                return follow;
            }
        }
    }

    fn walk_follow(&self, node: &'g Node, ctx: &CharSet, follow: &mut HashMap<&'g str, CharSet>) {
        match node {
            Node::Rule(r) => follow.get_mut(r.as_str()).expect("defined").add(ctx),
            Node::Alt(alts) => {
                for seq in alts {
                    for (i, n) in seq.iter().enumerate() {
                        let rest = &seq[i + 1..];
                        let mut after = self.first_of_seq(rest);
                        if rest.iter().all(|n| self.nullable_of(n)) {
                            after.add(ctx);
                        }
                        self.walk_follow(n, &after, follow);
                    }
                }
            }
            Node::Repeat {
                node: inner, max, ..
            } => {
                let mut after = ctx.clone();
                if *max != Some(1) {
                    after.add(&self.first_of(inner));
                }
                self.walk_follow(inner, &after, follow);
            }
            Node::Literal(_) | Node::Class { .. } | Node::Any | Node::Token { .. } => {}
        }
    }
}

/// A Glushkov automaton: one position per character slot.
struct Glushkov {
    class: Vec<CharSet>,
    follow: Vec<BTreeSet<usize>>,
}

/// (nullable, first positions, last positions) of a subexpression.
type Frag = (bool, BTreeSet<usize>, BTreeSet<usize>);

impl Glushkov {
    fn pos(&mut self, set: CharSet) -> Option<usize> {
        if self.class.len() >= MAX_POSITIONS {
            return None;
        }
        self.class.push(set);
        self.follow.push(BTreeSet::new());
        Some(self.class.len() - 1)
    }

    fn link(&mut self, from: &BTreeSet<usize>, to: &BTreeSet<usize>) {
        for &f in from {
            self.follow[f].extend(to.iter().copied());
        }
    }

    fn seq(&mut self, a: Frag, b: Frag) -> Frag {
        self.link(&a.2, &b.1);
        let first = if a.0 {
            a.1.union(&b.1).copied().collect()
        } else {
            a.1
        };
        let last = if b.0 {
            a.2.union(&b.2).copied().collect()
        } else {
            b.2
        };
        (a.0 && b.0, first, last)
    }

    fn build(&mut self, g: &Grammar, node: &Node, depth: usize) -> Option<Frag> {
        if depth > 64 {
            return None;
        }
        let single = |s: &mut Self, set: CharSet| -> Option<Frag> {
            let p = s.pos(set)?;
            Some((false, [p].into(), [p].into()))
        };
        match node {
            Node::Literal(text) => {
                let mut frag: Frag = (true, BTreeSet::new(), BTreeSet::new());
                for c in text.chars() {
                    let f = single(self, CharSet::range(c as u32, c as u32))?;
                    frag = self.seq(frag, f);
                }
                Some(frag)
            }
            Node::Class { negated, ranges } => single(self, CharSet::of_class(*negated, ranges)),
            Node::Any => single(self, CharSet::all()),
            Node::Token { .. } => None,
            Node::Rule(r) => self.build(g, g.rule(r)?, depth + 1),
            Node::Alt(alts) => {
                let mut out: Frag = (false, BTreeSet::new(), BTreeSet::new());
                for seq in alts {
                    let mut frag: Frag = (true, BTreeSet::new(), BTreeSet::new());
                    for n in seq {
                        let f = self.build(g, n, depth + 1)?;
                        frag = self.seq(frag, f);
                    }
                    out.0 |= frag.0;
                    out.1.extend(frag.1);
                    out.2.extend(frag.2);
                }
                Some(out)
            }
            Node::Repeat { node, min, max } => {
                let mut frag: Frag = (true, BTreeSet::new(), BTreeSet::new());
                for _ in 0..*min {
                    let f = self.build(g, node, depth + 1)?;
                    frag = self.seq(frag, f);
                }
                match max {
                    None => {
                        let mut f = self.build(g, node, depth + 1)?;
                        let (first, last) = (f.1.clone(), f.2.clone());
                        self.link(&last, &first);
                        f.0 = true;
                        frag = self.seq(frag, f);
                    }
                    Some(max) => {
                        for _ in *min..*max {
                            let mut f = self.build(g, node, depth + 1)?;
                            f.0 = true;
                            frag = self.seq(frag, f);
                        }
                    }
                }
                Some(frag)
            }
        }
    }
}

/// True when `body` as one greedy lexeme matches exactly what it matches in
/// GBNF given that `follow` may come next: no complete match extends on a
/// character of `follow`.
fn greedy_safe(g: &Grammar, body: &Node, follow: &CharSet) -> bool {
    let mut a = Glushkov {
        class: Vec::new(),
        follow: Vec::new(),
    };
    let Some((nullable, first, last)) = a.build(g, body, 0) else {
        return false;
    };
    // Elementary intervals: the follow set cut at every class boundary.
    let mut cuts: BTreeSet<u32> = BTreeSet::new();
    for set in a.class.iter().chain(std::iter::once(follow)) {
        for &(lo, hi) in &set.0 {
            cuts.insert(lo);
            cuts.insert(hi.saturating_add(1));
        }
    }
    let probes: Vec<u32> = cuts
        .iter()
        .copied()
        .filter(|&c| c <= MAX_CHAR && follow.contains(c))
        .collect();
    let all_probes: Vec<u32> = cuts.iter().copied().filter(|&c| c <= MAX_CHAR).collect();
    // States are sets of positions; `None` stands for the start.
    let step = |state: &[usize], start: bool, c: u32| -> Vec<usize> {
        let mut next: BTreeSet<usize> = BTreeSet::new();
        let from: Box<dyn Iterator<Item = usize>> = if start {
            Box::new(first.iter().copied())
        } else {
            Box::new(state.iter().flat_map(|&p| a.follow[p].iter().copied()))
        };
        for q in from {
            if a.class[q].contains(c) {
                next.insert(q);
            }
        }
        next.into_iter().collect()
    };
    let mut seen: BTreeSet<Vec<usize>> = BTreeSet::new();
    let mut queue: VecDeque<(Vec<usize>, bool)> = VecDeque::new();
    queue.push_back((Vec::new(), true));
    while let Some((state, start)) = queue.pop_front() {
        let accepting = if start {
            nullable
        } else {
            state.iter().any(|p| last.contains(p))
        };
        if accepting && probes.iter().any(|&c| !step(&state, start, c).is_empty()) {
            return false;
        }
        for &c in &all_probes {
            let next = step(&state, start, c);
            if !next.is_empty() && seen.insert(next.clone()) {
                if seen.len() > MAX_STATES {
                    return false;
                }
                queue.push_back((next, false));
            }
        }
    }
    true
}

/// For each rule (in grammar order): true when it becomes a Lark terminal.
/// Structural candidates (only characters and other terminals, no tokens,
/// no recursion, not `root`) that pass [`greedy_safe`].
pub(crate) fn terminal_rules(g: &Grammar) -> Vec<bool> {
    let index: HashMap<&str, usize> = g
        .rules
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let sets = Sets::new(g);
    let follow = sets.follow();
    let mut unsafe_rules = vec![false; g.rules.len()];
    for (i, (name, body)) in g.rules.iter().enumerate() {
        let f = &follow[name.as_str()];
        if !f.is_empty() {
            unsafe_rules[i] = !greedy_safe(g, body, f);
        }
    }
    let mut terminal = vec![false; g.rules.len()];
    loop {
        let mut changed = false;
        for (i, (name, body)) in g.rules.iter().enumerate() {
            if !terminal[i]
                && !unsafe_rules[i]
                && name != "root"
                && only_chars(body, &index, &terminal)
            {
                terminal[i] = true;
                changed = true;
            }
        }
        if !changed {
            return terminal;
        }
    }
}

fn only_chars(node: &Node, index: &HashMap<&str, usize>, terminal: &[bool]) -> bool {
    match node {
        Node::Literal(_) | Node::Class { .. } | Node::Any => true,
        Node::Token { .. } => false,
        Node::Rule(r) => index.get(r.as_str()).is_some_and(|&i| terminal[i]),
        Node::Alt(alts) => alts
            .iter()
            .flatten()
            .all(|n| only_chars(n, index, terminal)),
        Node::Repeat { node, .. } => only_chars(node, index, terminal),
    }
}
