//! An optional observer of every matrix product's input, for tools that
//! study activations (`cria imatrix` sums their squares per column).
//!
//! Process-wide and off by default: while none is set, the forward pass
//! pays one relaxed atomic load per matrix product. The observer sees the
//! weight's name and its input `x`, `(n, cols)` row-major, before the
//! product; it runs on the forward pass's thread, so it should be quick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// `f(weight name, x, cols)`.
pub type MatmulObserver = Arc<dyn Fn(&str, &[f32], usize) + Send + Sync>;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static OBSERVER: RwLock<Option<MatmulObserver>> = RwLock::new(None);

/// Sets (or, with `None`, removes) the observer of matrix-product inputs.
pub fn set_matmul_observer(f: Option<MatmulObserver>) {
    let on = f.is_some();
    if let Ok(mut slot) = OBSERVER.write() {
        *slot = f;
    }
    ACTIVE.store(on, Ordering::Release);
}

#[inline]
pub(crate) fn notify(name: &str, x: &[f32], cols: usize) {
    if ACTIVE.load(Ordering::Relaxed) {
        notify_slow(name, x, cols);
    }
}

#[cold]
fn notify_slow(name: &str, x: &[f32], cols: usize) {
    let f = OBSERVER.read().ok().and_then(|g| g.clone());
    if let Some(f) = f {
        f(name, x, cols);
    }
}
