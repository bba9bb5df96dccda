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
//! rewritten before it is compiled (grow.rs, which also bounds what the
//! operators build): each operand of every `+` goes through a filter that
//! turns undefined and none into "" ([`operand`]) and passes anything else
//! through. Numbers, lists and strings add as
//! before; `none + 1` and `undefined + [..]` are still errors (as in
//! llama.cpp). Where the two differ: `none + none` gives "" here and is an
//! error in llama.cpp (no real template relies on either). The rewrite
//! uses the spans of minijinja's own parse, so operands are exactly what
//! minijinja parsed; the original source stays the template's `source()`.
//! Checked on the 66 templates of llama.cpp's models/templates (a system
//! and a user message: each renders the same text as without the rewrite,
//! and firefunction-v2's now renders), and the 39 built-in ones still match
//! their llama-server goldens.

use crate::cycles::children;
use minijinja::machinery::ast::Expr;
use minijinja::value::Value;

/// Undefined and none as "", anything else unchanged.
pub(crate) fn operand(v: Value) -> Value {
    if v.is_undefined() || v.is_none() {
        Value::from("")
    } else {
        v
    }
}

/// The bytes an expression covers. minijinja's span of a compound
/// expression starts at its operator (`.strip()` of `m.strip()`, `upper` of
/// `s|upper`), so the extent is the union over the expression and
/// everything inside it.
pub(crate) fn extent(e: &Expr<'_>) -> (usize, usize) {
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
        crate::grow::install(&mut env);
        crate::grow::start_render(1 << 20, None);
        let src = crate::grow::rewrite(src, &ast).expect("rewrites");
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
    fn no_operator_leaves_the_source_alone() {
        let src = "{% for m in messages %}{{ m.content|trim }}{% endfor %}";
        let ast = minijinja::machinery::parse(src, "t", Default::default(), Default::default())
            .expect("parses");
        assert_eq!(crate::grow::rewrite(src, &ast).unwrap(), src);
    }
}
