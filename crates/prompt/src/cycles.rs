//! A static check that a template cannot store a namespace into a
//! namespace attribute.
//!
//! `{% set ns.me = ns %}` (or `ns.s = (ns, 1)`, or through a list or an
//! alias) makes a reference cycle, and printing or concatenating a value
//! that holds one recurses without end in minijinja's formatting: the
//! render thread overflows its stack and the process aborts (found by the
//! `chat_template` fuzz target). minijinja has no hook on `set`, so the
//! check runs on the parsed template, before it is accepted.
//!
//! The analysis is a conservative taint over names: a name is a *plain
//! namespace* when bound only to `namespace(...)` of values without
//! namespaces (or to another plain namespace), and *deep* when bound to
//! anything that may hold a namespace (a list with one, a loop variable
//! over such a list, a namespace made with one, a macro parameter when any
//! call passes one). An attribute of a plain namespace holds no namespace,
//! since every `set ns.attr = value` whose value may hold one is refused.
//! Real chat templates keep strings, numbers and lists of messages in
//! their namespaces and pass.

use minijinja::machinery::ast::{CallArg, Expr, Stmt};
use std::collections::BTreeSet;

#[derive(Default)]
struct Names<'a> {
    /// Names bound only to plain namespaces.
    plain: BTreeSet<&'a str>,
    /// Names that may hold a namespace anywhere inside.
    deep: BTreeSet<&'a str>,
}

impl<'a> Names<'a> {
    /// Whether evaluating `e` may give a value that holds a namespace.
    fn tainted(&self, e: &Expr<'a>) -> bool {
        match e {
            Expr::Var(v) => {
                v.id == "namespace" || self.plain.contains(v.id) || self.deep.contains(v.id)
            }
            Expr::Const(_) => false,
            Expr::GetAttr(g) => self.is_plain(&g.expr).not_then(|| self.tainted(&g.expr)),
            Expr::GetItem(g) => {
                self.is_plain(&g.expr).not_then(|| self.tainted(&g.expr))
                    || self.tainted(&g.subscript_expr)
            }
            Expr::Call(c) => is_namespace_call(e) || self.tainted(&c.expr) || self.args(&c.args),
            Expr::Slice(s) => {
                self.tainted(&s.expr)
                    || [&s.start, &s.stop, &s.step]
                        .iter()
                        .any(|x| x.as_ref().is_some_and(|x| self.tainted(x)))
            }
            Expr::UnaryOp(u) => self.tainted(&u.expr),
            Expr::BinOp(b) => self.tainted(&b.left) || self.tainted(&b.right),
            Expr::Compare(c) => {
                self.tainted(&c.expr) || c.ops.iter().any(|o| self.tainted(&o.expr))
            }
            Expr::IfExpr(i) => {
                self.tainted(&i.test_expr)
                    || self.tainted(&i.true_expr)
                    || i.false_expr.as_ref().is_some_and(|x| self.tainted(x))
            }
            Expr::Filter(f) => {
                f.expr.as_ref().is_some_and(|x| self.tainted(x)) || self.args(&f.args)
            }
            Expr::Test(t) => self.tainted(&t.expr) || self.args(&t.args),
            Expr::List(l) => l.items.iter().any(|x| self.tainted(x)),
            Expr::Map(m) => m.keys.iter().chain(&m.values).any(|x| self.tainted(x)),
        }
    }

    fn args(&self, args: &[CallArg<'a>]) -> bool {
        args.iter().any(|a| match a {
            CallArg::Pos(x)
            | CallArg::Kwarg(_, x)
            | CallArg::PosSplat(x)
            | CallArg::KwargSplat(x) => self.tainted(x),
        })
    }

    /// A variable known to be a plain namespace.
    fn is_plain(&self, e: &Expr<'a>) -> bool {
        matches!(e, Expr::Var(v) if self.plain.contains(v.id) && !self.deep.contains(v.id))
    }

    /// Records that the names of `target` are bound to `value`; true if
    /// that changed anything.
    fn bind(&mut self, target: &Expr<'a>, value: &Expr<'a>) -> bool {
        let plain = match value {
            Expr::Call(c) if is_namespace_call(value) => !self.args(&c.args),
            v => self.is_plain(v),
        };
        let deep = !plain && self.tainted(value);
        let mut changed = false;
        for name in target_names(target) {
            if plain {
                changed |= self.plain.insert(name);
            } else if deep {
                changed |= self.deep.insert(name);
            }
        }
        changed
    }
}

trait NotThen {
    fn not_then(self, f: impl FnOnce() -> bool) -> bool;
}

impl NotThen for bool {
    /// `false` if `self`, else `f()`.
    fn not_then(self, f: impl FnOnce() -> bool) -> bool {
        !self && f()
    }
}

fn is_namespace_call(e: &Expr<'_>) -> bool {
    matches!(e, Expr::Call(c) if matches!(&c.expr, Expr::Var(v) if v.id == "namespace"))
}

/// The variable names an assignment target binds (`x`, `a, b`).
fn target_names<'a>(t: &Expr<'a>) -> Vec<&'a str> {
    match t {
        Expr::Var(v) => vec![v.id],
        Expr::List(l) => l.items.iter().flat_map(target_names).collect(),
        _ => Vec::new(),
    }
}

/// Every statement of the template, depth first.
pub(crate) fn statements<'s, 'a>(s: &'s Stmt<'a>, out: &mut Vec<&'s Stmt<'a>>) {
    out.push(s);
    let mut all = |body: &'s [Stmt<'a>]| body.iter().for_each(|c| statements(c, out));
    match s {
        Stmt::Template(t) => all(&t.children),
        Stmt::ForLoop(f) => {
            all(&f.body);
            all(&f.else_body);
        }
        Stmt::IfCond(i) => {
            all(&i.true_body);
            all(&i.false_body);
        }
        Stmt::WithBlock(w) => all(&w.body),
        Stmt::SetBlock(b) => all(&b.body),
        Stmt::AutoEscape(a) => all(&a.body),
        Stmt::FilterBlock(f) => all(&f.body),
        Stmt::Block(b) => all(&b.body),
        Stmt::Macro(m) => all(&m.body),
        Stmt::CallBlock(c) => all(&c.macro_decl.body),
        _ => {}
    }
}

/// Calls anywhere in an expression (to see what macros may receive). A
/// filter's or test's arguments are collected as a list, not searched for
/// calls inside them.
fn calls<'s, 'a>(e: &'s Expr<'a>, out: &mut Vec<&'s [CallArg<'a>]>) {
    let inner = match e {
        Expr::Call(c) => {
            out.push(&c.args);
            children(e)
        }
        Expr::Filter(f) => {
            out.push(&f.args);
            f.expr.iter().collect()
        }
        Expr::Test(t) => {
            out.push(&t.args);
            vec![&t.expr]
        }
        _ => children(e),
    };
    inner.into_iter().for_each(|c| calls(c, out));
}

/// The expressions directly inside `e`.
pub(crate) fn children<'s, 'a>(e: &'s Expr<'a>) -> Vec<&'s Expr<'a>> {
    let args = |args: &'s [CallArg<'a>]| {
        args.iter().map(|a| match a {
            CallArg::Pos(x)
            | CallArg::Kwarg(_, x)
            | CallArg::PosSplat(x)
            | CallArg::KwargSplat(x) => x,
        })
    };
    match e {
        Expr::Var(_) | Expr::Const(_) => Vec::new(),
        Expr::Call(c) => std::iter::once(&c.expr).chain(args(&c.args)).collect(),
        Expr::GetAttr(g) => vec![&g.expr],
        Expr::GetItem(g) => vec![&g.expr, &g.subscript_expr],
        Expr::Slice(s) => std::iter::once(&s.expr)
            .chain([&s.start, &s.stop, &s.step].into_iter().flatten())
            .collect(),
        Expr::UnaryOp(u) => vec![&u.expr],
        Expr::BinOp(b) => vec![&b.left, &b.right],
        Expr::Compare(c) => std::iter::once(&c.expr)
            .chain(c.ops.iter().map(|o| &o.expr))
            .collect(),
        Expr::IfExpr(i) => [&i.test_expr, &i.true_expr]
            .into_iter()
            .chain(i.false_expr.as_ref())
            .collect(),
        Expr::Filter(f) => f.expr.iter().chain(args(&f.args)).collect(),
        Expr::Test(t) => std::iter::once(&t.expr).chain(args(&t.args)).collect(),
        Expr::List(l) => l.items.iter().collect(),
        Expr::Map(m) => m.keys.iter().chain(&m.values).collect(),
    }
}

/// The expressions a statement evaluates directly.
pub(crate) fn exprs<'s, 'a>(s: &'s Stmt<'a>) -> Vec<&'s Expr<'a>> {
    match s {
        Stmt::EmitExpr(e) => vec![&e.expr],
        Stmt::ForLoop(f) => [Some(&f.iter), f.filter_expr.as_ref()]
            .into_iter()
            .flatten()
            .collect(),
        Stmt::IfCond(i) => vec![&i.expr],
        Stmt::WithBlock(w) => w.assignments.iter().map(|(_, v)| v).collect(),
        Stmt::Set(s) => vec![&s.expr],
        Stmt::SetBlock(b) => b.filter.iter().collect(),
        Stmt::FilterBlock(f) => vec![&f.filter],
        Stmt::Macro(m) => m.defaults.iter().collect(),
        Stmt::CallBlock(c) => vec![&c.call.expr],
        Stmt::Do(d) => vec![&d.call.expr],
        _ => Vec::new(),
    }
}

/// `Err(the attribute)` when the template may store a namespace into a
/// namespace attribute.
pub(crate) fn check(template: &Stmt<'_>) -> Result<(), String> {
    let mut stmts = Vec::new();
    statements(template, &mut stmts);
    let mut names = Names::default();
    // Names only grow, so this ends (at most one round per name).
    loop {
        let mut changed = false;
        let mut arg_lists = Vec::new();
        for s in &stmts {
            for e in exprs(s) {
                calls(e, &mut arg_lists);
            }
            match s {
                Stmt::CallBlock(c) => arg_lists.push(&c.call.args),
                Stmt::Do(d) => arg_lists.push(&d.call.args),
                _ => {}
            }
        }
        let macro_args_deep = arg_lists.iter().any(|a| names.args(a));
        for s in &stmts {
            match s {
                Stmt::Set(set) => changed |= names.bind(&set.target, &set.expr),
                Stmt::WithBlock(w) => {
                    for (t, v) in &w.assignments {
                        changed |= names.bind(t, v);
                    }
                }
                Stmt::ForLoop(f) if names.tainted(&f.iter) => {
                    for n in target_names(&f.target) {
                        changed |= names.deep.insert(n);
                    }
                }
                Stmt::Macro(m) if macro_args_deep => {
                    for n in m.args.iter().flat_map(target_names) {
                        changed |= names.deep.insert(n);
                    }
                }
                Stmt::CallBlock(c) if macro_args_deep => {
                    for n in c.macro_decl.args.iter().flat_map(target_names) {
                        changed |= names.deep.insert(n);
                    }
                }
                _ => {}
            }
        }
        if !changed {
            break;
        }
    }
    for s in &stmts {
        if let Stmt::Set(set) = s {
            if let Expr::GetAttr(g) = &set.target {
                if names.tainted(&set.expr) {
                    let base = match &g.expr {
                        Expr::Var(v) => v.id,
                        _ => "?",
                    };
                    return Err(format!("{base}.{}", g.name));
                }
            }
        }
    }
    Ok(())
}
