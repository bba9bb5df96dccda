//! llama.cpp's string concatenation with a missing value.
//!
//! llama.cpp renders chat templates with its own Jinja engine, where `+`
//! between a string and an undefined variable or `none` gives the string
//! (the missing side counts as ""; its runtime.cpp calls it a workaround
//! for templates written against engines that allowed it). minijinja, like
//! Python's Jinja, refuses `"text" + undefined`. Templates rely on it:
//! firefunction-v2's adds `functions`, a variable llama.cpp does not give,
//! to its system prompt, and renders on llama-server.
//!
//! minijinja has no hook on operators, so the template's source is
//! rewritten before it is compiled: each operand of every `+` is wrapped as
//! `(operand)|llama_operand`, a filter that turns undefined and none into
//! "" and passes anything else through. Numbers, lists and strings add as
//! before; `none + 1` and `undefined + [..]` are still errors (as in
//! llama.cpp). Where the two differ: `none + none` gives "" here and is an
//! error in llama.cpp (no real template relies on either). The rewrite
//! uses the spans of minijinja's own parse, so operands are exactly what
//! minijinja parsed; the original source stays the template's `source()`.
//! Checked on the 66 templates of llama.cpp's models/templates (a system
//! and a user message: each renders the same text as without the rewrite,
//! and firefunction-v2's now renders), and the 39 built-in ones still match
//! their llama-server goldens. Should a rewrite ever fail to compile,
//! `ChatTemplate` compiles the source as given instead.

use crate::cycles::{children, exprs, statements};
use minijinja::machinery::ast::{Expr, Stmt};
use minijinja::value::Value;

/// The filter each operand of `+` goes through.
pub(crate) const FILTER: &str = "llama_operand";

/// Undefined and none as "", anything else unchanged.
pub(crate) fn operand(v: Value) -> Value {
    if v.is_undefined() || v.is_none() {
        Value::from("")
    } else {
        v
    }
}

/// `source` with every operand of `+` wrapped (see the module doc);
/// unchanged when there is no `+` (or when it does not parse: minijinja
/// then reports the error on the original).
pub(crate) fn rewrite(source: &str, ast: &Stmt<'_>) -> String {
    let mut all = Vec::new();
    statements(ast, &mut all);
    // (byte offset, is an opening): closings sort first at one offset.
    let mut marks: Vec<(usize, bool)> = Vec::new();
    for s in all {
        for e in exprs(s) {
            adds(e, &mut marks);
        }
    }
    if marks.is_empty() {
        return source.to_string();
    }
    marks.sort();
    let close = format!(")|{FILTER}");
    let mut out = String::with_capacity(source.len() + marks.len() * close.len());
    let mut at = 0;
    for (offset, open) in marks {
        let offset = offset.min(source.len());
        if offset < at || !source.is_char_boundary(offset) {
            // Spans come from this very source; a mark out of order would
            // be a parser quirk: leave the source as it is.
            return source.to_string();
        }
        out.push_str(&source[at..offset]);
        out.push_str(if open { "(" } else { &close });
        at = offset;
    }
    out.push_str(&source[at..]);
    out
}

/// The marks around both operands of each `+` inside `e`.
fn adds(e: &Expr<'_>, marks: &mut Vec<(usize, bool)>) {
    if let Expr::BinOp(b) = e {
        if matches!(b.op, minijinja::machinery::ast::BinOpKind::Add) {
            for side in [&b.left, &b.right] {
                let (start, end) = extent(side);
                marks.push((start, true));
                marks.push((end, false));
            }
        }
    }
    for c in children(e) {
        adds(c, marks);
    }
}

/// The bytes an expression covers. minijinja's span of a compound
/// expression starts at its operator (`.strip()` of `m.strip()`, `upper` of
/// `s|upper`), so the extent is the union over the expression and
/// everything inside it.
fn extent(e: &Expr<'_>) -> (usize, usize) {
    let span = e.span();
    let mut start = span.start_offset as usize;
    let mut end = span.end_offset as usize;
    for c in children(e) {
        let (s, t) = extent(c);
        start = start.min(s);
        end = end.max(t);
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, ctx: Value) -> Result<String, minijinja::Error> {
        let ast = minijinja::machinery::parse(src, "t", Default::default(), Default::default())
            .expect("parses");
        let mut env = minijinja::Environment::new();
        env.add_filter(FILTER, operand);
        let src = rewrite(src, &ast);
        env.add_template_owned("t", src)?;
        env.get_template("t")?.render(ctx)
    }

    #[test]
    fn a_missing_side_of_a_string_sum_is_empty() {
        let ctx = minijinja::context! { s => "a", n => Value::from(()) };
        assert_eq!(render("{{ s + missing + s }}", ctx.clone()).unwrap(), "aa");
        assert_eq!(
            render("{{ n + 'b' }}|{{ 'c' + n }}", ctx.clone()).unwrap(),
            "b|c"
        );
        assert_eq!(
            render(
                "{% set x = (s + missing) + ('-' + s) %}{{ x }}",
                ctx.clone()
            )
            .unwrap(),
            "a-a"
        );
        assert_eq!(render("{{ (s|upper) + missing }}", ctx).unwrap(), "A");
    }

    #[test]
    fn numbers_and_lists_add_as_before() {
        let ctx = minijinja::context! { l => vec![1, 2] };
        assert_eq!(render("{{ 1 + 2 * 3 }}", ctx.clone()).unwrap(), "7");
        assert_eq!(
            render("{{ (l + [3]) | length }}", ctx.clone()).unwrap(),
            "3"
        );
        assert_eq!(
            render("{{ [1] + l if true else 0 }}", ctx.clone()).unwrap(),
            "[1, 1, 2]"
        );
        // Still errors, as in llama.cpp.
        assert!(render("{{ missing + 1 }}", ctx.clone()).is_err());
        assert!(render("{{ none + l }}", ctx).is_err());
    }

    #[test]
    fn no_plus_leaves_the_source_alone() {
        let src = "{% for m in messages %}{{ m.content ~ '!' }}{% endfor %}";
        let ast = minijinja::machinery::parse(src, "t", Default::default(), Default::default())
            .expect("parses");
        assert_eq!(rewrite(src, &ast), src);
    }
}
