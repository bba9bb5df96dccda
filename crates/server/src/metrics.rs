//! Prometheus metrics, written as text by hand (a few counters and two
//! histograms do not need a metrics crate).

use crate::guard::Tenant;
use cria_engine::EngineStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A histogram of seconds with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: Vec<AtomicU64>,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cum += c.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cum}");
    }
}

/// Counters are labelled with the tenant's id (never its key); tenant 0 is
/// a server without keys, or a request refused before its key was known.
pub struct Metrics {
    /// (endpoint, status, tenant) -> count
    requests: Mutex<BTreeMap<(String, u16, Tenant), u64>>,
    pub ttft: Histogram,
    pub token_latency: Histogram,
    /// tenant -> (prompt tokens, cached ones included; completion tokens)
    /// of answered requests.
    tokens: Mutex<BTreeMap<Tenant, (u64, u64)>>,
    /// Answered requests: tokens after the first, and the microseconds
    /// they took (the effective generation rate, speculation included).
    gen_tokens: AtomicU64,
    gen_us: AtomicU64,
    /// Answered requests, all tenants: llama-server's counters.
    done: Mutex<DoneTotals>,
}

/// Sums over answered requests, for llama-server's metric names.
#[derive(Default)]
struct DoneTotals {
    cached: u64,
    predicted: u64,
    prompt_secs: f64,
    predicted_secs: f64,
    /// The longest sequence (prompt + completion), tokens.
    longest: u64,
}

const TTFT_BOUNDS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const TOKEN_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            ttft: Histogram::new(TTFT_BOUNDS),
            token_latency: Histogram::new(TOKEN_BOUNDS),
            tokens: Mutex::new(BTreeMap::new()),
            gen_tokens: AtomicU64::new(0),
            gen_us: AtomicU64::new(0),
            done: Mutex::new(DoneTotals::default()),
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &str, status: u16, tenant: Tenant) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((endpoint.to_string(), status, tenant)).or_insert(0) += 1;
        }
    }

    pub fn tokens(&self, tenant: Tenant, prompt: usize, completion: usize) {
        if let Ok(mut m) = self.tokens.lock() {
            let t = m.entry(tenant).or_insert((0, 0));
            t.0 += prompt as u64;
            t.1 += completion as u64;
        }
    }

    pub fn generation(&self, tokens: usize, time: Duration) {
        self.gen_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        self.gen_us
            .fetch_add(time.as_micros() as u64, Ordering::Relaxed);
    }

    /// An answered request's counts and times.
    pub fn done(&self, d: &cria_engine::Done) {
        if let Ok(mut t) = self.done.lock() {
            t.cached += d.cached_tokens as u64;
            t.predicted += d.completion_tokens as u64;
            t.prompt_secs += d.prompt_time.as_secs_f64();
            t.predicted_secs += d.generation_time.as_secs_f64();
            t.longest = t
                .longest
                .max((d.prompt_tokens + d.completion_tokens) as u64);
        }
    }

    /// llama-server's metrics (`llamacpp:` names), so its dashboards and
    /// tests read cria's: from the engine's counters and the answered
    /// requests.
    fn render_llamacpp(&self, out: &mut String, e: &EngineStats) {
        let Ok(t) = self.done.lock() else { return };
        let prompt = e.prompt_tokens.load(Ordering::Relaxed);
        let steps = e.steps.load(Ordering::Relaxed);
        let generated = e.generated_tokens.load(Ordering::Relaxed);
        let ratio = |n: f64, d: f64| if d > 0.0 { n / d } else { 0.0 };
        let counters: [(&str, &str, f64); 10] = [
            (
                "prompt_tokens_total",
                "Number of prompt tokens processed.",
                prompt as f64,
            ),
            (
                "prompt_tokens_cached_total",
                "Number of prompt tokens taken from a slot's cache.",
                t.cached as f64,
            ),
            (
                "prompt_seconds_total",
                "Prompt process time.",
                t.prompt_secs,
            ),
            (
                "tokens_predicted_total",
                "Number of generation tokens processed.",
                t.predicted as f64,
            ),
            (
                "tokens_predicted_seconds_total",
                "Predict process time.",
                t.predicted_secs,
            ),
            (
                "n_decode_total",
                "Total number of batched forward passes.",
                steps as f64,
            ),
            (
                "n_tokens_max",
                "Largest observed sequence (prompt and completion), tokens.",
                t.longest as f64,
            ),
            (
                "spec_decode_num_draft_tokens_total",
                "Draft tokens proposed (speculative decoding).",
                e.spec_drafted.load(Ordering::Relaxed) as f64,
            ),
            (
                "spec_decode_num_accepted_tokens_total",
                "Draft tokens accepted (speculative decoding).",
                e.spec_accepted.load(Ordering::Relaxed) as f64,
            ),
            (
                "spec_decode_num_drafts_total",
                "Drafts made (speculative decoding).",
                e.spec_drafts.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} counter\nllamacpp:{name} {v}");
        }
        let gauges: [(&str, &str, f64); 5] = [
            (
                "prompt_tokens_seconds",
                "Average prompt throughput in tokens/s.",
                ratio(prompt as f64, t.prompt_secs),
            ),
            (
                "predicted_tokens_seconds",
                "Average generation throughput in tokens/s.",
                ratio(t.predicted as f64, t.predicted_secs),
            ),
            (
                "requests_processing",
                "Number of requests processing.",
                e.active.load(Ordering::Relaxed) as f64,
            ),
            (
                "requests_deferred",
                "Number of requests deferred.",
                e.queued.load(Ordering::Relaxed) as f64,
            ),
            (
                "n_busy_slots_per_decode",
                "Average tokens sampled per batched forward pass.",
                ratio(generated as f64, steps as f64),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP llamacpp:{name} {help}\n# TYPE llamacpp:{name} gauge\nllamacpp:{name} {v}"
            );
        }
    }

    /// The metrics as Prometheus text; the per-tenant series of every
    /// tenant, or with `only` of that tenant alone (a tenant's key must not
    /// show what other tenants do; the totals over all tenants stay).
    pub fn render(&self, engine: Option<&EngineStats>, only: Option<Tenant>) -> String {
        let shown = |t: &Tenant| only.is_none_or(|o| o == *t);
        let mut out = String::new();
        out.push_str("# HELP cria_requests_total HTTP requests by endpoint, status and tenant.\n");
        out.push_str("# TYPE cria_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((endpoint, status, tenant), n) in m.iter().filter(|((_, _, t), _)| shown(t)) {
                let Tenant(t) = tenant;
                let _ = writeln!(
                    out,
                    "cria_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\",tenant=\"{t}\"}} {n}"
                );
            }
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        if let Ok(m) = self.tokens.lock() {
            let prompt: fn(&(u64, u64)) -> u64 = |t| t.0;
            let completion: fn(&(u64, u64)) -> u64 = |t| t.1;
            for (name, help, pick) in [
                (
                    "cria_prompt_tokens_total",
                    "Prompt tokens of answered requests (cached ones included), by tenant.",
                    prompt,
                ),
                (
                    "cria_completion_tokens_total",
                    "Tokens generated for answered requests, by tenant.",
                    completion,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (Tenant(t), v) in m.iter().filter(|(t, _)| shown(t)) {
                    let _ = writeln!(out, "{name}{{tenant=\"{t}\"}} {}", pick(v));
                }
            }
        }
        if let Some(e) = engine {
            counter(
                &mut out,
                "cria_prompt_tokens_evaluated_total",
                "Prompt tokens run through the model (not found in a slot's cache).",
                e.prompt_tokens.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "cria_generated_tokens_total",
                "Tokens sampled by the engine.",
                e.generated_tokens.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "cria_engine_steps_total",
                "Batched forward passes.",
                e.steps.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "cria_engine_panics_total",
                "Requests failed by a panic inside the engine (bugs; the engine went on).",
                e.panics.load(Ordering::Relaxed),
            );
            let (drafted, accepted) = (
                e.spec_drafted.load(Ordering::Relaxed),
                e.spec_accepted.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "cria_spec_draft_tokens_total",
                "Speculative decoding: tokens drafted (n-gram lookup or draft model).",
                drafted,
            );
            counter(
                &mut out,
                "cria_spec_accepted_tokens_total",
                "Speculative decoding: drafted tokens the model confirmed.",
                accepted,
            );
            counter(
                &mut out,
                "cria_spec_off_steps_total",
                "Steps that did not speculate because the batch already filled the cores.",
                e.spec_off_steps.load(Ordering::Relaxed),
            );
            let ratio = if drafted > 0 {
                accepted as f64 / drafted as f64
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "# HELP cria_spec_acceptance_ratio Speculative decoding: accepted / drafted tokens since start.\n\
                 # TYPE cria_spec_acceptance_ratio gauge\ncria_spec_acceptance_ratio {ratio}"
            );
            for (name, help, v) in [
                (
                    "cria_prefix_cache_restored_tokens_total",
                    "Prompt tokens restored from the prefix cache on disk (--prefix-cache).",
                    &e.prefix_restored_tokens,
                ),
                (
                    "cria_prefix_cache_written_total",
                    "Prefix cache entries written to disk.",
                    &e.prefix_written,
                ),
                (
                    "cria_prefix_cache_rejected_total",
                    "Prefix cache entries found damaged or made for something else (never used; deleted).",
                    &e.prefix_rejected,
                ),
                (
                    "cria_prefix_cache_dropped_total",
                    "Prefix cache writes dropped because the writer was behind.",
                    &e.prefix_dropped,
                ),
            ] {
                counter(&mut out, name, help, v.load(Ordering::Relaxed));
            }
            gauge(
                &mut out,
                "cria_queue_depth",
                "Requests waiting for a slot.",
                e.queued.load(Ordering::Relaxed) as u64,
            );
            gauge(
                &mut out,
                "cria_active_sequences",
                "Requests in a slot (evaluating the prompt or generating).",
                e.active.load(Ordering::Relaxed) as u64,
            );
        }
        let (gt, gus) = (
            self.gen_tokens.load(Ordering::Relaxed),
            self.gen_us.load(Ordering::Relaxed),
        );
        let rate = if gus > 0 {
            gt as f64 / (gus as f64 / 1e6)
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "# HELP cria_generation_seconds_total Generation time of answered requests (after their first token).\n\
             # TYPE cria_generation_seconds_total counter\ncria_generation_seconds_total {}\n\
             # HELP cria_effective_tokens_per_second Tokens after the first over their generation time, over answered requests since start (speculation included).\n\
             # TYPE cria_effective_tokens_per_second gauge\ncria_effective_tokens_per_second {rate:.3}",
            gus as f64 / 1e6
        );
        if let Some(e) = engine {
            self.render_llamacpp(&mut out, e);
        }
        self.ttft.write(
            &mut out,
            "cria_time_to_first_token_seconds",
            "From request accepted to first token.",
        );
        self.token_latency.write(
            &mut out,
            "cria_token_latency_seconds",
            "Time between consecutive generated tokens of a request.",
        );
        out
    }
}
