//! Bounds on rendering an untrusted chat template.
//!
//! minijinja executes a template as bytecode; what can go wrong and what
//! stops it:
//!
//! - endless work (`{% for i in range(100000) %}{% for j in range(100000) %}`):
//!   fuel, one unit per instruction ([`Limits::fuel`]); the render then
//!   fails, so a thread abandoned by the deadline also ends;
//! - huge output: the output is written into a [`CappedWriter`] that fails
//!   past [`Limits::max_output`];
//! - huge values built in captures (`{% set x %}{{ x }}{{ x }}{% endset %}`,
//!   macro calls, `caller()`): every value the template prints, into the
//!   output or into a capture, goes through our formatter, which counts the
//!   bytes of the whole render against 8 × the output bound and refuses any
//!   single value larger than the output bound;
//! - single operations: minijinja itself refuses `range` of more than
//!   100 000 items and a string repeated past 100 MB (`'a' * 10**10`); we
//!   replace `range` by one capped at [`MAX_RANGE`] items;
//! - recursion (recursive macros): minijinja's recursion limit, lowered to
//!   [`Limits::recursion`]; the helper thread gets a stack sized for it;
//! - wall time: the render stops itself at [`Limits::time`] (at its next
//!   bounded operation, grow.rs), and the caller waits at most 250 ms
//!   longer.
//!
//! - memory kept after the render: a namespace stored into itself
//!   (`{% set ns.me = ns %}`) is a reference cycle minijinja never frees,
//!   so every render would leak what it holds. Our `namespace` records the
//!   namespaces a render creates and [`break_cycles`] empties them after
//!   it (found by the `chat_template` fuzz target);
//! - a namespace stored into a namespace attribute, which minijinja's
//!   formatting recurses through until the stack overflows: refused when
//!   the template is loaded (`cycles.rs`).
//!
//! - values built without being printed (a string doubled by `~` in a
//!   loop, `replace` with a long replacement, a list nested into itself):
//!   grow.rs checks every operator, and every filter and method that can
//!   build more than it is given, before minijinja runs it.

use minijinja::{Environment, Error, ErrorKind, Value};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest template source accepted (real ones are under 16 KiB).
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Most items of one `range(...)`.
pub const MAX_RANGE: usize = 10_000;

/// How much longer than [`Limits::time`] the caller waits, so that a
/// render that stops itself at its deadline is the one to report it.
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// Stack of the render thread: minijinja's recursion uses a few KiB of
/// native stack per level.
pub(crate) const STACK_BYTES: usize = 16 << 20;

/// How much one render may do.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Instructions per render. Real templates use ~100 per message.
    pub fuel: u64,
    /// Output bytes allowed whatever the input.
    pub output_base: usize,
    /// Output bytes allowed per byte of message text (templates repeat
    /// or decorate content, never more than a few times).
    pub output_per_input_byte: usize,
    /// Nesting of macro calls, includes and the like.
    pub recursion: usize,
    /// How long `render` waits for the helper thread.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel: 5_000_000,
            output_base: 1 << 20,
            output_per_input_byte: 4,
            recursion: 100,
            time: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The output bound for `input` bytes of message text.
    pub fn max_output(&self, input: usize) -> usize {
        self.output_base
            .saturating_add(input.saturating_mul(self.output_per_input_byte))
    }
}

thread_local! {
    /// (bytes printed so far in this render, output bound of this render).
    static PRINTED: Cell<(usize, usize)> = const { Cell::new((0, usize::MAX)) };
}

thread_local! {
    /// The namespaces created by the render running on this thread.
    static NAMESPACES: RefCell<Vec<Value>> = const { RefCell::new(Vec::new()) };
}

/// Resets the per-render state of this thread for a new render.
pub(crate) fn start_render(max_output: usize) {
    PRINTED.with(|p| p.set((0, max_output)));
    NAMESPACES.with(|n| n.borrow_mut().clear());
}

/// Sets every attribute of every namespace the last render on this thread
/// created to `none`, so that namespaces stored into namespaces no longer
/// keep each other alive. Every reference cycle among namespaces has an
/// edge made by `{% set ns.name = ... %}` (a namespace can hold only older
/// values when it is made, and lists and maps are immutable), and those
/// names are identifiers, which a `set` can reach.
pub(crate) fn break_cycles(env: &Environment<'static>) {
    let spaces = NAMESPACES.with(|n| std::mem::take(&mut *n.borrow_mut()));
    let mut src = String::new();
    let mut ctx = BTreeMap::new();
    for (i, ns) in spaces.into_iter().enumerate() {
        let Ok(keys) = ns.try_iter() else { continue };
        for k in keys {
            if let Some(k) = k.as_str().filter(|k| is_identifier(k)) {
                src.push_str(&format!("{{% set n{i}.{k} = none %}}"));
            }
        }
        ctx.insert(format!("n{i}"), ns);
    }
    if !src.is_empty() {
        // Cannot fail on values that are namespaces; if it did, the only
        // cost is the leak this exists to prevent.
        let _ = env.render_str(&src, ctx);
    }
}

fn is_identifier(k: &str) -> bool {
    let mut c = k.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Sets fuel, recursion limit, the counting formatter and the capped
/// `range` on `env`.
pub(crate) fn install(env: &mut Environment<'static>, limits: &Limits) {
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    env.set_formatter(|out, state, value| {
        // Strings by their length; anything else by its text, measured
        // with a counter that stops at the bound (a list nested into
        // itself would print exponentially, into a capture too).
        let len = match value.as_str() {
            Some(s) => s.len(),
            None => crate::grow::text_size(value)?,
        };
        let (printed, max) = PRINTED.with(Cell::get);
        let total = printed.saturating_add(len);
        if len > max || total > max.saturating_mul(8) {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "printing {len} more bytes after {printed} exceeds the output bound of {max}"
                ),
            ));
        }
        PRINTED.with(|p| p.set((total, max)));
        minijinja::escape_formatter(out, state, value)
    });
    env.add_function("range", range);
    env.add_function("namespace", |defaults: Option<Value>| {
        let ns = minijinja::functions::namespace(defaults)?;
        NAMESPACES.with(|n| n.borrow_mut().push(ns.clone()));
        Ok(ns)
    });
}

/// Python's `range`, refusing more than [`MAX_RANGE`] items.
fn range(lower: i64, upper: Option<i64>, step: Option<i64>) -> Result<Value, Error> {
    let (lo, hi) = match upper {
        Some(hi) => (lower, hi),
        None => (0, lower),
    };
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "range() step must not be zero",
        ));
    }
    let span = if step > 0 {
        (hi as i128 - lo as i128).max(0)
    } else {
        (lo as i128 - hi as i128).max(0)
    };
    let n = (span + step.unsigned_abs() as i128 - 1) / step.unsigned_abs() as i128;
    if n > MAX_RANGE as i128 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("range() of {n} items; at most {MAX_RANGE} are allowed"),
        ));
    }
    let items: Vec<Value> = (0..n as i64).map(|i| Value::from(lo + i * step)).collect();
    Ok(Value::from(items))
}

/// A `Write` into memory that fails once more than `cap` bytes arrive.
pub(crate) struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl CappedWriter {
    pub fn new(cap: usize) -> CappedWriter {
        CappedWriter {
            buf: Vec::new(),
            cap,
            overflowed: false,
        }
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn into_string(self) -> Result<String, std::string::FromUtf8Error> {
        String::from_utf8(self.buf)
    }
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(b.len()) > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("output bound reached"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::value::Object;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its drops.
    #[derive(Debug)]
    struct Probe(Arc<AtomicUsize>);
    impl Object for Probe {}
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Found by the chat_template fuzz target (LeakSanitizer): namespaces
    /// stored into themselves, directly or through another, kept what
    /// they held after the render. Every probe made must be dropped.
    #[test]
    fn namespace_cycles_are_broken_after_a_render() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut env = Environment::new();
        install(&mut env, &Limits::default());
        let d = Arc::clone(&dropped);
        env.add_function("probe", move || Value::from_object(Probe(Arc::clone(&d))));
        let src = "{% set a = namespace(p=probe()) %}{% set a.me = a %}\
                   {% set b = namespace(back=a, p=probe()) %}{% set a.b = b %}\
                   {% set c = namespace({'not an identifier': a}) %}{% set a.c = c %}\
                   {% set a.q = probe() %}{{ a.me.b.back.c['not an identifier'].p is defined }}";
        for round in 1..=3 {
            start_render(1 << 20);
            assert_eq!(env.render_str(src, ()).unwrap(), "True");
            break_cycles(&env);
            assert_eq!(dropped.load(Ordering::SeqCst), 3 * round);
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("a_1") && is_identifier("_x"));
        assert!(!is_identifier("") && !is_identifier("1a") && !is_identifier("a b"));
    }
}
