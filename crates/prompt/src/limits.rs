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
//! - wall time: the caller waits at most [`Limits::time`].
//!
//! Not bounded: a string doubled by `~` or `+` without being printed
//! (`{% set ns.x = ns.x ~ ns.x %}` in a loop) grows in memory before any of
//! the above sees it; minijinja has no hook on its operators. Fuel bounds the
//! number of doublings only.

use minijinja::{Environment, Error, ErrorKind, Value};
use std::cell::Cell;
use std::time::Duration;

/// Longest template source accepted (real ones are under 16 KiB).
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Most items of one `range(...)`.
pub const MAX_RANGE: usize = 10_000;

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

/// Resets the printed-bytes count for a render on this thread.
pub(crate) fn start_render(max_output: usize) {
    PRINTED.with(|p| p.set((0, max_output)));
}

/// Sets fuel, recursion limit, the counting formatter and the capped
/// `range` on `env`.
pub(crate) fn install(env: &mut Environment<'static>, limits: &Limits) {
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    env.set_formatter(|out, state, value| {
        if let Some(s) = value.as_str() {
            let (printed, max) = PRINTED.with(Cell::get);
            let total = printed.saturating_add(s.len());
            if s.len() > max || total > max.saturating_mul(8) {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "printing {} more bytes after {printed} exceeds the output bound of {max}",
                        s.len()
                    ),
                ));
            }
            PRINTED.with(|p| p.set((total, max)));
        }
        minijinja::escape_formatter(out, state, value)
    });
    env.add_function("range", range);
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
