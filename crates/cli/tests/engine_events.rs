//! Issue 16, the engine's side of llama-server's `/slots` and
//! `return_progress`: a request leaves the busy count before its last event
//! is sent (a client that reads `/slots` as soon as it has its reply sees
//! the slot idle), and prompt progress comes per step on the request's own
//! event channel, before the first token.

mod common;

use common::chat::chat;

use cria_engine::{
    Done, Engine, EngineConfig, Event, FinishReason, GenerateParams, PromptProgress, Request,
};
use cria_model::KvType;
use cria_sampler::SamplerConfig;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

fn chat_prompt(text: &str) -> Vec<u32> {
    chat().prompt(text)
}

fn engine(step_tokens: usize) -> Arc<Engine> {
    let f = chat();
    let config = EngineConfig {
        step_tokens,
        max_queue: 4,
        ..EngineConfig::single(512, KvType::F16, 2)
    };
    Arc::new(Engine::start(f.model.clone(), f.tok.clone(), config).unwrap())
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(max_tokens),
        stop: vec![],
        ignore_eos: false,
        constraint: None,
        sampler: SamplerConfig::greedy(),
    }
}

/// A waker that records the engine's busy count at the moment it is woken,
/// which is inside the engine thread's `send` of the event that wakes it.
struct Witness {
    engine: Arc<Engine>,
    seen: Mutex<Option<usize>>,
    waiter: std::thread::Thread,
}

impl Wake for Witness {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let active = self.engine.stats().active.load(Ordering::SeqCst);
        *self.seen.lock().unwrap() = Some(active);
        self.waiter.unpark();
    }
}

/// Receives a request's events; returns its summary and, when the `Done`
/// was the event that woke a registered waker, the busy count at the
/// moment it was sent.
fn watch_done(engine: &Arc<Engine>, mut rx: UnboundedReceiver<Event>) -> (Done, Option<usize>) {
    let witness = Arc::new(Witness {
        engine: engine.clone(),
        seen: Mutex::new(None),
        waiter: std::thread::current(),
    });
    let waker = Waker::from(witness.clone());
    let mut cx = Context::from_waker(&waker);
    // Whether the waker is registered and nothing was received since.
    let mut armed = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "no Done in 300 s");
        match rx.poll_recv(&mut cx) {
            Poll::Pending => {
                if !armed {
                    *witness.seen.lock().unwrap() = None;
                    armed = true;
                }
                std::thread::park_timeout(Duration::from_millis(50));
            }
            Poll::Ready(Some(Event::Done(d))) => {
                if !armed {
                    return (d, None);
                }
                // The sender wakes right after the event is visible: wait
                // for it to have recorded the count.
                let until = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Some(n) = *witness.seen.lock().unwrap() {
                        return (d, Some(n));
                    }
                    assert!(Instant::now() < until, "the Done's send never woke us");
                    std::thread::park_timeout(Duration::from_millis(10));
                }
            }
            Poll::Ready(Some(Event::Error(e))) => panic!("{e}"),
            Poll::Ready(Some(_)) => armed = false,
            Poll::Ready(None) => panic!("the engine closed the channel without a Done"),
        }
    }
}

/// Before the fix the scheduler recounted its busy slots after each step,
/// after the step had sent the `Done`s of the requests it finished: the
/// count read at the `Done`'s send (which wakes the client) still held the
/// finished request, and `/slots` read right after a reply could show the
/// slot busy (llama.cpp's test_metrics_slots_idle_after_completion).
#[test]
fn a_request_is_no_longer_busy_when_its_done_is_sent() {
    let engine = engine(256);
    // A greedy reply that ends with the end-of-generation token: its Done
    // comes a forward pass after its last token, so the waiting thread has
    // registered its waker by then.
    let prompt = chat_prompt("Answer with one word: is the sky blue?");
    let mut witnessed = 0;
    for _ in 0..5 {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        engine
            .submit(Request::new(prompt.clone(), greedy(64), tx))
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        let (done, active) = watch_done(&engine, rx);
        assert_eq!(done.finish, FinishReason::EndOfGeneration);
        assert!(done.completion_tokens >= 1);
        if let Some(n) = active {
            assert_eq!(
                n, 0,
                "the slot was still counted busy when its Done went out"
            );
            witnessed += 1;
        }
        assert_eq!(engine.stats().active.load(Ordering::SeqCst), 0);
    }
    assert!(
        witnessed > 0,
        "no Done was caught at its send: the test proved nothing"
    );
}

fn progress_then_first_token(rx: &mut UnboundedReceiver<Event>) -> (Vec<PromptProgress>, bool) {
    let mut reports = Vec::new();
    loop {
        match rx.blocking_recv() {
            Some(Event::Progress(p)) => reports.push(p),
            Some(Event::Token(_)) => return (reports, true),
            Some(Event::Done(_)) => return (reports, false),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn drain(mut rx: UnboundedReceiver<Event>) {
    while let Some(e) = rx.blocking_recv() {
        assert!(!matches!(e, Event::Progress(_)), "progress after a token");
        if matches!(e, Event::Done(_)) {
            return;
        }
    }
}

/// llama-server's `return_progress`: one report when the request takes its
/// slot (processed == cache), one after every step that evaluated some of
/// the prompt, the last with everything processed; all before the first
/// token; none for a request that does not ask.
#[test]
fn prompt_progress_comes_per_step_before_the_first_token() {
    let step = 16;
    let engine = engine(step);
    let prompt = chat_prompt(
        "Please write a short poem about the sea, the wind, the sand and the sky, in four lines.",
    );
    let total = prompt.len();
    assert!(
        total > 2 * step,
        "the prompt must take several steps ({total})"
    );
    let ask = |prompt: Vec<u32>, progress: bool| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let req = Request {
            progress,
            ..Request::new(prompt, greedy(4), tx)
        };
        engine.submit(req).map_err(|e| format!("{e:?}")).unwrap();
        rx
    };

    let mut rx = ask(prompt.clone(), true);
    let (reports, token) = progress_then_first_token(&mut rx);
    assert!(token);
    drain(rx);
    let processed: Vec<usize> = reports.iter().map(|p| p.processed).collect();
    let mut want: Vec<usize> = (0..total).step_by(step).collect();
    want.push(total);
    assert_eq!(
        processed, want,
        "one report at admission, then one per step"
    );
    assert!(reports.iter().all(|p| p.total == total && p.cache == 0));
    assert_eq!(reports[0].elapsed, Duration::ZERO);
    assert!(reports.windows(2).all(|w| w[0].elapsed <= w[1].elapsed));

    // The same prompt again: all but its last token are in the slot's cache.
    let mut rx = ask(prompt.clone(), true);
    let (reports, _) = progress_then_first_token(&mut rx);
    drain(rx);
    let seen: Vec<(usize, usize)> = reports.iter().map(|p| (p.cache, p.processed)).collect();
    assert_eq!(seen, vec![(total - 1, total - 1), (total - 1, total)]);

    // Not asked: no report.
    let mut rx = ask(prompt, false);
    let (reports, token) = progress_then_first_token(&mut rx);
    assert!(reports.is_empty() && token);
    drain(rx);
}
