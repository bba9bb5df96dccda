//! Bounds on the values a template builds, before it builds them.
//!
//! limits.rs bounds what a render prints. A template can also build values
//! it never prints, and some operations grow them geometrically: a string
//! doubled by `~` or `+` in a loop (`{% set ns.x = ns.x ~ ns.x %}`, 2^40
//! bytes in 40 steps), `replace` with a long replacement, a list doubled by
//! `+` (minijinja keeps it lazy, so the cost comes when it is joined), a
//! list nested into itself (`{% set ns.l = [ns.l, ns.l] %}`, exponential
//! only when turned into text), `batch(10**12, x)`, `indent(10**12)`. Any
//! of them exhausts memory, and a failed allocation aborts the process: a
//! malicious model file could kill the server. minijinja has no hook on its
//! operators or on memory, so:
//!
//! - the template's source is rewritten (which also gives llama.cpp's `+`,
//!   concat.rs) so that
//!   the two operands of every `+`, `~` and `*` pass through two filters:
//!   the left one is set aside, and the right one checks what the
//!   operation would build from both before minijinja performs it;
//! - the built-in filters and Python methods that can build more than
//!   they are given (`replace`, `join`, `indent`, `format`, `tojson`,
//!   `pprint`, `string`, `list`, `chain`, `batch`, `slice`, `escape`,
//!   and `.replace`, `.format`, `.join`) are wrapped: the size of
//!   the result is computed first, and the original runs only when it is
//!   within bounds; `debug()` is refused;
//! - the size of a value as text is measured by writing it into a counter
//!   that stops at the bound, so a value whose text would be exponential
//!   costs no more than the bound to measure;
//! - comparing, sorting or searching a list nested into itself visits
//!   every path, exponentially many, in native code that no fuel stops
//!   (24 levels ran for minutes, and the render thread, abandoned at the
//!   caller's deadline, went on): the operands of `==`, `!=`, `<`, `<=`,
//!   `>`, `>=` and `in`, the comparison tests (`is eq(...)`, `is in(...)`)
//!   and the filters that compare (`sort`, `unique`, `min`, `max`,
//!   `groupby`, `dictsort`, `select`, `reject`, `selectattr`,
//!   `rejectattr`) are walked first, up to [`MAX_NODES`] items.
//!
//! The bounds, per render: no single value larger than the output bound
//! (limits.rs: 1 MiB plus 4 bytes per byte of message text), no list
//! longer than [`MAX_ITEMS`], at most [`LIVE_PER_OUTPUT`] times the output
//! bound of memory held by the render's thread when a value is about to
//! grow (cria-alloc; a template that rebuilds its whole prompt once per
//! message, as Reka-Edge's does, holds only a few copies at a time), and
//! at most [`WORK_PER_OUTPUT`] times the output bound of bytes measured,
//! so the checks themselves cannot be made to run for long. Every refusal
//! is an error that says which bound was hit. Every check also ends a
//! render that has run past the time its caller waits (limits.rs), so an
//! abandoned render stops there rather than when its fuel runs out.

use crate::cycles::{children, exprs, statements};
use minijinja::machinery::ast::{BinOpKind, Expr, Stmt};
use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};
use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::time::Instant;

/// Most items of one list a template may build.
pub const MAX_ITEMS: usize = 100_000;

/// Memory the render's thread may hold, as a multiple of its output
/// bound.
pub const LIVE_PER_OUTPUT: usize = 16;

/// Bytes the checks may measure in a render, as a multiple of its output
/// bound.
pub const WORK_PER_OUTPUT: usize = 256;

/// Bytes counted for one item of a list.
const ITEM_BYTES: usize = 16;

thread_local! {
    /// Left operands waiting for their right side (innermost last).
    static LEFT: RefCell<Vec<Value>> = const { RefCell::new(Vec::new()) };
    /// (live bytes of this thread at the start, bytes measured, output
    /// bound) of this render.
    static BUDGET: Cell<(isize, usize, usize)> = const { Cell::new((0, 0, usize::MAX)) };
}

thread_local! {
    /// When the caller stops waiting for this render.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Resets the per-render state of this thread for a render whose output
/// bound is `max_output` and whose caller waits until `deadline` (`None`:
/// no deadline).
pub(crate) fn start_render(max_output: usize, deadline: Option<Instant>) {
    LEFT.with(|l| l.borrow_mut().clear());
    let live = cria_alloc::live().unwrap_or(0);
    BUDGET.with(|b| b.set((live, 0, max_output)));
    DEADLINE.with(|d| d.set(deadline));
}

/// Ends a render that has outlived its caller's wait. Every check here
/// runs it, so a template that keeps operators or filters busy (a
/// megabyte string extended a byte at a time, a million times: each step
/// copies it) stops at the deadline instead of running on, abandoned,
/// until its fuel is spent.
fn on_time() -> Result<(), Error> {
    match DEADLINE.with(Cell::get) {
        Some(d) if Instant::now() > d => {
            Err(refuse("the template ran past its time limit".to_string()))
        }
        _ => Ok(()),
    }
}

fn refuse(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// The output bound of this render (no single value may be larger).
fn bound() -> usize {
    BUDGET.with(|b| b.get().2)
}

/// Admits a value of `bytes` built by `what`, or refuses it.
fn admit(bytes: usize, what: &str) -> Result<(), Error> {
    on_time()?;
    let (start, _, max) = BUDGET.with(Cell::get);
    if bytes > max {
        return Err(refuse(format!(
            "{what} would build a value of {bytes} bytes or more; \
             the bound for this render is {max}"
        )));
    }
    if let Some(now) = cria_alloc::live() {
        let held = now.saturating_sub(start).max(0) as usize;
        let all = max.saturating_mul(LIVE_PER_OUTPUT);
        if held.saturating_add(bytes) > all {
            return Err(refuse(format!(
                "{what}: the template holds {held} bytes of values and would need \
                 {bytes} more; at most {all} ({LIVE_PER_OUTPUT} x its output bound) \
                 are allowed"
            )));
        }
    }
    Ok(())
}

/// Admits a list of `items` items built by `what`.
fn admit_items(items: usize, what: &str) -> Result<(), Error> {
    if items > MAX_ITEMS {
        return Err(refuse(format!(
            "{what} would build a list of {items} items or more; at most {MAX_ITEMS} are allowed"
        )));
    }
    admit(items.saturating_mul(ITEM_BYTES), what)
}

/// Counts `bytes` of measuring against the render's work budget.
fn charge(bytes: usize) -> Result<(), Error> {
    on_time()?;
    let (start, work, max) = BUDGET.with(Cell::get);
    let work = work.saturating_add(bytes);
    let all = max.saturating_mul(WORK_PER_OUTPUT);
    if work > all {
        return Err(refuse(format!(
            "the template's values took more than {all} bytes of checking \
             ({WORK_PER_OUTPUT} x its output bound)"
        )));
    }
    BUDGET.with(|b| b.set((start, work, max)));
    Ok(())
}

/// A `fmt::Write` that counts bytes (and those of `special`) and fails past
/// `limit`.
struct Counter {
    n: usize,
    special: usize,
    limit: usize,
}

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.n = self.n.saturating_add(s.len());
        self.special += s.bytes().filter(|b| b"<>&'".contains(b)).count();
        if self.n > self.limit {
            return Err(std::fmt::Error);
        }
        Ok(())
    }
}

impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let s = String::from_utf8_lossy(b);
        std::fmt::Write::write_str(self, &s).map_err(|_| std::io::Error::other("too long"))?;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How the size of a value is measured.
#[derive(Clone, Copy)]
enum Form {
    /// As minijinja prints it (`Display`).
    Text,
    /// As `pprint` writes it (`{:#?}`).
    Debug,
    /// As JSON, pretty with this indent or compact, plus the bytes that
    /// `tojson` escapes (each becomes 6).
    Json(Option<usize>),
}

/// The length of `v` in `form`, or an error past the render's bound;
/// charges the work.
fn size(v: &Value, form: Form, what: &str) -> Result<usize, Error> {
    if let (Some(s), Form::Text) = (v.as_str(), form) {
        return Ok(s.len());
    }
    let limit = bound();
    let mut c = Counter {
        n: 0,
        special: 0,
        limit,
    };
    let ok = match form {
        Form::Text => write!(c, "{v}").is_ok(),
        Form::Debug => write!(c, "{v:#?}").is_ok(),
        Form::Json(None) => serde_json::to_writer(&mut c, v).is_ok(),
        Form::Json(Some(n)) => {
            let indent = vec![b' '; n.min(limit.saturating_add(1))];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&indent);
            let mut ser = serde_json::Serializer::with_formatter(&mut c, fmt);
            serde::Serialize::serialize(v, &mut ser).is_ok()
        }
    };
    charge(c.n)?;
    let n = c.n.saturating_add(c.special.saturating_mul(5));
    if !ok && c.n > limit {
        return Err(refuse(format!(
            "{what} would build a value of more than {limit} bytes; \
             the bound for this render is {limit}"
        )));
    }
    // A value that cannot be written (an error in serializing) is left to
    // the original operation to report.
    Ok(n)
}

/// The length of `v` as minijinja prints it, or an error past the
/// render's bound (for the formatter of limits.rs).
pub(crate) fn text_size(v: &Value) -> Result<usize, Error> {
    size(v, Form::Text, "printing a value")
}

/// The number of items of `v` if it is a list or other iterable (counting
/// at most `MAX_ITEMS + 1`), charging the work.
fn items(v: &Value) -> Result<Option<usize>, Error> {
    if !matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return Ok(None);
    }
    let n = match v.len() {
        Some(n) => n,
        None => match v.try_iter() {
            Ok(it) => it.take(MAX_ITEMS + 1).count(),
            Err(_) => return Ok(None),
        },
    };
    charge(n.min(MAX_ITEMS + 1).saturating_mul(ITEM_BYTES))?;
    Ok(Some(n))
}

/// Most items (at every depth, a list or map counting as one) of a value
/// compared, sorted or searched.
pub const MAX_NODES: usize = 1_000_000;

/// Refuses `v` if it holds more than [`MAX_NODES`] items in all, counting
/// every level: comparing two lists nested into themselves
/// (`{% set ns.x = [ns.x, ns.x] %}`) visits each path, exponentially many
/// (24 levels took minutes), and minijinja's comparisons are native code
/// that no fuel stops. The walk stops at the bound; its work is charged.
fn nodes(v: &Value, what: &str) -> Result<(), Error> {
    fn walk(v: &Value, left: &mut usize) -> bool {
        if !matches!(
            v.kind(),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
        ) {
            return true;
        }
        let Ok(it) = v.try_iter() else {
            return true;
        };
        let map = v.kind() == ValueKind::Map;
        for item in it {
            if *left == 0 {
                return false;
            }
            *left -= 1;
            let inner = if map {
                v.get_item(&item).unwrap_or_default()
            } else {
                item
            };
            if !walk(&inner, left) {
                return false;
            }
        }
        true
    }
    let mut left = MAX_NODES;
    let ok = walk(v, &mut left);
    charge((MAX_NODES - left).saturating_mul(ITEM_BYTES))?;
    if !ok {
        return Err(refuse(format!(
            "{what} would compare a value of more than {MAX_NODES} nested items"
        )));
    }
    Ok(())
}

/// Walks a compared operand ([`nodes`]) and passes it on.
fn cmp_operand(v: Value) -> Result<Value, Error> {
    nodes(&v, "a comparison")?;
    Ok(v)
}

/// The operators whose operands are checked.
#[derive(Clone, Copy)]
enum Op {
    /// `+` (with llama.cpp's missing operand as "", concat.rs).
    Add,
    /// `~`.
    Cat,
    /// `*`.
    Mul,
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`: both sides only walked
    /// ([`nodes`]), nothing set aside.
    Cmp,
}

impl Op {
    fn of(k: &BinOpKind) -> Option<Op> {
        match k {
            BinOpKind::Add => Some(Op::Add),
            BinOpKind::Concat => Some(Op::Cat),
            BinOpKind::Mul => Some(Op::Mul),
            BinOpKind::Eq
            | BinOpKind::Ne
            | BinOpKind::Lt
            | BinOpKind::Lte
            | BinOpKind::Gt
            | BinOpKind::Gte
            | BinOpKind::In => Some(Op::Cmp),
            _ => None,
        }
    }

    /// The filters the left and the right operand go through.
    fn filters(self) -> (&'static str, &'static str) {
        match self {
            Op::Add => ("cria_add_l", "cria_add_r"),
            Op::Cat => ("cria_cat_l", "cria_cat_r"),
            Op::Mul => ("cria_mul_l", "cria_mul_r"),
            Op::Cmp => ("cria_nodes", "cria_nodes"),
        }
    }
}

/// Sets a left operand aside and passes it on.
fn left(v: Value) -> Value {
    LEFT.with(|l| l.borrow_mut().push(v.clone()));
    v
}

/// The left operand set aside for this right one (`""` if there is none,
/// which only a parser quirk could cause: the check then sees one side).
fn take_left() -> Value {
    LEFT.with(|l| l.borrow_mut().pop())
        .unwrap_or_else(|| Value::from(""))
}

fn add_l(v: Value) -> Value {
    left(crate::concat::operand(v))
}

/// Checks `l + r` before minijinja adds them.
fn add_r(r: Value) -> Result<Value, Error> {
    let r = crate::concat::operand(r);
    let l = take_left();
    if let (Some(a), Some(b)) = (l.as_str(), r.as_str()) {
        admit(a.len().saturating_add(b.len()), "`+` of two strings")?;
    } else if let (Some(a), Some(b)) = (items(&l)?, items(&r)?) {
        admit_items(a.saturating_add(b), "`+` of two lists")?;
    } else {
        on_time()?;
    }
    Ok(r)
}

fn cat_l(v: Value) -> Value {
    left(v)
}

/// Checks `l ~ r` before minijinja joins them as text.
fn cat_r(r: Value) -> Result<Value, Error> {
    let l = take_left();
    let n = size(&l, Form::Text, "`~`")?.saturating_add(size(&r, Form::Text, "`~`")?);
    admit(n, "`~`")?;
    Ok(r)
}

fn mul_l(v: Value) -> Value {
    left(v)
}

/// Checks `l * r` (a string or a list repeated) before minijinja repeats.
fn mul_r(r: Value) -> Result<Value, Error> {
    let l = take_left();
    for (x, n) in [(&l, &r), (&r, &l)] {
        let Some(n) = n.as_usize() else { continue };
        if let Some(s) = x.as_str() {
            admit(s.len().saturating_mul(n), "`*` of a string")?;
        } else if let Some(k) = items(x)? {
            admit_items(k.saturating_mul(n), "`*` of a list")?;
        }
    }
    Ok(r)
}

/// `source` with the operands of every `+`, `~` and `*` passed through
/// the checking filters (`source` itself when there is none); `None` if
/// the parse's spans are out of order, which would be a parser quirk.
pub(crate) fn rewrite(source: &str, ast: &Stmt<'_>) -> Option<String> {
    let mut all = Vec::new();
    statements(ast, &mut all);
    // (byte offset, closing-filter or opening): closings sort first at one
    // offset (an operand ending where the next begins).
    let mut marks: Vec<(usize, Option<&'static str>)> = Vec::new();
    for s in all {
        for e in exprs(s) {
            operands(e, &mut marks);
        }
    }
    if marks.is_empty() {
        return Some(source.to_string());
    }
    marks.sort_by_key(|&(at, f)| (at, f.is_none()));
    let mut out = String::with_capacity(source.len() + marks.len() * 14);
    let mut at = 0;
    for (offset, filter) in marks {
        let offset = offset.min(source.len());
        if offset < at || !source.is_char_boundary(offset) {
            return None;
        }
        out.push_str(&source[at..offset]);
        match filter {
            None => out.push('('),
            Some(f) => {
                out.push_str(")|");
                out.push_str(f);
            }
        }
        at = offset;
    }
    out.push_str(&source[at..]);
    Some(out)
}

/// The marks around both operands of each checked operator inside `e`.
fn operands(e: &Expr<'_>, marks: &mut Vec<(usize, Option<&'static str>)>) {
    if let Expr::BinOp(b) = e {
        if let Some(op) = Op::of(&b.op) {
            let (l, r) = op.filters();
            for (side, f) in [(&b.left, l), (&b.right, r)] {
                let (start, end) = crate::concat::extent(side);
                marks.push((start, None));
                marks.push((end, Some(f)));
            }
        }
    }
    for c in children(e) {
        operands(c, marks);
    }
}

/// The filters, methods and functions minijinja has built in, to run
/// after their checks.
fn original(name: &str) -> Value {
    use minijinja::filters as f;
    match name {
        "replace" => Value::from_function(f::replace),
        "join" => Value::from_function(f::join),
        "indent" => Value::from_function(f::indent),
        "format" => Value::from_function(f::format),
        "tojson" => Value::from_function(f::tojson),
        "pprint" => Value::from_function(f::pprint),
        "string" => Value::from_function(f::string),
        "list" => Value::from_function(f::list),
        "chain" => Value::from_function(f::chain),
        "batch" => Value::from_function(f::batch),
        "slice" => Value::from_function(f::slice),
        "sort" => Value::from_function(f::sort),
        "unique" => Value::from_function(f::unique),
        "min" => Value::from_function(f::min),
        "max" => Value::from_function(f::max),
        "groupby" => Value::from_function(f::groupby),
        "dictsort" => Value::from_function(f::dictsort),
        "select" => Value::from_function(f::select),
        "reject" => Value::from_function(f::reject),
        "selectattr" => Value::from_function(f::selectattr),
        "rejectattr" => Value::from_function(f::rejectattr),
        _ => Value::from_function(f::escape),
    }
}

/// The largest integer written in `s` (widths and precisions of a format
/// string), saturating.
fn largest_number(s: &str) -> usize {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().unwrap_or(usize::MAX))
        .max()
        .unwrap_or(0)
}

/// An argument passed by name (the trailing keyword arguments), if any.
fn kwarg(args: &[Value], name: &str) -> Option<Value> {
    let last = args.last()?;
    if !last.is_kwargs() {
        return None;
    }
    last.get_attr(name).ok().filter(|v| !v.is_undefined())
}

/// What filter `name` would build from `args` (the piped value first),
/// checked against the bounds.
fn check_filter(name: &str, args: &[Value]) -> Result<(), Error> {
    let v = args.first().cloned().unwrap_or(Value::UNDEFINED);
    let what = format!("the `{name}` filter");
    match name {
        "sort" | "unique" | "min" | "max" | "groupby" | "dictsort" | "select" | "reject"
        | "selectattr" | "rejectattr" => args.iter().try_for_each(|a| nodes(a, &what)),
        "replace" => check_replace(&v, args.get(1), args.get(2), &what),
        "join" => check_join(&v, args.get(1), &what),
        "indent" => {
            let text = size(&v, Form::Text, &what)?;
            let width = match args.get(1).filter(|a| !a.is_kwargs()) {
                Some(w) => w.clone(),
                None => kwarg(args, "width").unwrap_or(Value::from(4)),
            };
            let width = match width.as_str() {
                Some(s) => s.len(),
                None => width.as_usize().unwrap_or(usize::MAX),
            };
            let lines = v.as_str().map_or(1, |s| s.matches('\n').count() + 1);
            admit(text.saturating_add(lines.saturating_mul(width)), &what)
        }
        "format" => check_format(&v, &args[1.min(args.len())..], &what),
        "tojson" => {
            let indent = args
                .get(1)
                .filter(|a| !a.is_kwargs())
                .cloned()
                .or_else(|| kwarg(args, "indent"))
                .and_then(|i| i.as_usize());
            admit(size(&v, Form::Json(indent), &what)?, &what)
        }
        "pprint" => admit(size(&v, Form::Debug, &what)?, &what),
        "string" => admit(size(&v, Form::Text, &what)?, &what),
        "escape" | "e" => admit(size(&v, Form::Text, &what)?.saturating_mul(6), &what),
        "list" => match items(&v)? {
            Some(n) => admit_items(n, &what),
            None => admit_items(size(&v, Form::Text, &what)?, &what),
        },
        "chain" => {
            let mut n = 0usize;
            for a in args.iter().filter(|a| !a.is_kwargs()) {
                n = n.saturating_add(items(a)?.unwrap_or(0));
            }
            admit_items(n, &what)
        }
        // `batch(count, fill)` pads the last batch to `count` items;
        // `slice(count, fill)` makes `count` slices.
        _ => {
            let count = args.get(1).and_then(Value::as_usize).unwrap_or(0);
            let n = items(&v)?.unwrap_or(0);
            admit_items(n.saturating_add(count), &what)
        }
    }
}

fn check_replace(
    v: &Value,
    from: Option<&Value>,
    to: Option<&Value>,
    what: &str,
) -> Result<(), Error> {
    let (Some(s), Some(from), Some(to)) = (v.as_str(), from, to) else {
        // Not strings: minijinja converts or refuses; measure as text.
        let n = size(v, Form::Text, what)?;
        let f = from.map_or(Ok(0), |f| size(f, Form::Text, what))?;
        let t = to.map_or(Ok(0), |t| size(t, Form::Text, what))?;
        let hits = n.checked_div(f).unwrap_or(n + 1);
        return admit(n.saturating_add(hits.saturating_mul(t)), what);
    };
    let (from, to) = (from.to_string(), to.to_string());
    charge(s.len())?;
    let hits = if from.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(from.as_str()).count()
    };
    let grown = hits.saturating_mul(to.len().saturating_sub(from.len()));
    admit(s.len().saturating_add(grown), what)
}

fn check_join(v: &Value, sep: Option<&Value>, what: &str) -> Result<(), Error> {
    let sep = match sep.filter(|s| !s.is_kwargs()) {
        Some(s) => size(s, Form::Text, what)?,
        None => 0,
    };
    let Ok(it) = v.try_iter() else {
        return Ok(());
    };
    let mut n = 0usize;
    for (i, item) in it.enumerate() {
        if i > MAX_ITEMS {
            return admit_items(i, what);
        }
        n = n
            .saturating_add(size(&item, Form::Text, what)?)
            .saturating_add(sep);
        if n > bound() {
            break;
        }
    }
    admit(n, what)
}

fn check_format(fmt: &Value, args: &[Value], what: &str) -> Result<(), Error> {
    let mut n = size(fmt, Form::Text, what)?;
    if let Some(s) = fmt.as_str() {
        n = n.saturating_add(largest_number(s).saturating_mul(s.matches('%').count().max(1)));
        n = n.saturating_add(largest_number(s).saturating_mul(s.matches('{').count()));
    }
    for a in args.iter() {
        n = n.saturating_add(size(a, Form::Text, what)?);
        if n > bound() {
            break;
        }
    }
    admit(n, what)
}

/// The names of the wrapped filters.
const FILTERS: [&str; 23] = [
    "replace",
    "join",
    "indent",
    "format",
    "tojson",
    "pprint",
    "string",
    "list",
    "chain",
    "batch",
    "slice",
    "escape",
    "e",
    "sort",
    "unique",
    "min",
    "max",
    "groupby",
    "dictsort",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
];

/// The comparison tests (`x is eq(y)`, `x is in(y)`), wrapped like the
/// comparison operators.
const TESTS: [&str; 16] = [
    "eq",
    "equalto",
    "==",
    "ne",
    "!=",
    "lt",
    "lessthan",
    "<",
    "le",
    "<=",
    "gt",
    "greaterthan",
    ">",
    "ge",
    ">=",
    "in",
];

/// The built-in test `name` of [`TESTS`].
fn original_test(name: &str) -> Value {
    use minijinja::tests as t;
    match name {
        "eq" | "equalto" | "==" => Value::from_function(t::is_eq),
        "ne" | "!=" => Value::from_function(t::is_ne),
        "lt" | "lessthan" | "<" => Value::from_function(t::is_lt),
        "le" | "<=" => Value::from_function(t::is_le),
        "gt" | "greaterthan" | ">" => Value::from_function(t::is_gt),
        "ge" | ">=" => Value::from_function(t::is_ge),
        _ => Value::from_function(t::is_in),
    }
}

/// Python methods through minijinja-contrib's pycompat, with `.replace`,
/// `.format` and `.join` checked first.
pub(crate) fn method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if value.kind() == ValueKind::String {
        let what = format!("the `.{method}()` method");
        match method {
            "replace" => check_replace(value, args.first(), args.get(1), &what)?,
            "format" => check_format(value, args, &what)?,
            "join" => {
                let sep = Some(value);
                check_join(args.first().unwrap_or(&Value::UNDEFINED), sep, &what)?
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Registers the checking filters and wrappers on `env`.
pub(crate) fn install(env: &mut Environment<'static>) {
    env.add_filter("cria_add_l", add_l);
    env.add_filter("cria_add_r", add_r);
    env.add_filter("cria_cat_l", cat_l);
    env.add_filter("cria_cat_r", cat_r);
    env.add_filter("cria_mul_l", mul_l);
    env.add_filter("cria_mul_r", mul_r);
    env.add_filter("cria_nodes", cmp_operand);
    for name in TESTS {
        let orig = original_test(name);
        env.add_test(
            name,
            move |state: &State, args: Rest<Value>| -> Result<bool, Error> {
                let what = format!("the `{name}` test");
                args.iter().try_for_each(|a| nodes(a, &what))?;
                Ok(orig.call(state, &args)?.is_true())
            },
        );
    }
    for name in FILTERS {
        let orig = original(name);
        env.add_filter(name, move |state: &State, args: Rest<Value>| {
            check_filter(name, &args)?;
            orig.call(state, &args)
        });
    }
    env.add_function("debug", |_: Rest<Value>| -> Result<Value, Error> {
        Err(refuse(
            "debug() is not available in chat templates".to_string(),
        ))
    });
    env.set_unknown_method_callback(method);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_numbers_of_format_strings() {
        assert_eq!(largest_number("%s and %10.3f"), 10);
        assert_eq!(largest_number("{:>99999999999999999999999}"), usize::MAX);
        assert_eq!(largest_number("plain"), 0);
    }

    #[test]
    fn sizes_stop_at_the_bound() {
        start_render(100, None);
        let long: Vec<Value> = (0..1000).map(Value::from).collect();
        let v = Value::from(long);
        assert!(size(&v, Form::Text, "test").is_err());
        start_render(100_000, None);
        assert_eq!(size(&Value::from(vec![1, 2]), Form::Text, "t").unwrap(), 6);
        assert_eq!(
            size(&Value::from("<a>"), Form::Json(None), "t").unwrap(),
            5 + 2 * 5
        );
    }
}
