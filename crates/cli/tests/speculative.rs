//! Issue 14, item 3: speculative decoding gives exactly the output of
//! decoding without it (token ids, text, log-probabilities and finish
//! reason), at temperature 0 and with a seed at 0.8 and 1.5, with
//! penalties, a grammar, stop strings, at the context limit (stopping and
//! shifting), with quantized KV caches, and with several sequences batched
//! together as in the server. Every comparison also checks that drafts were
//! made and some accepted, so a run that never speculated cannot pass.
//!
//! The draft model in these tests is the default model itself (the tests
//! need no second file); the benchmarks use a requantized copy.

mod common;

use common::chat::chat;
use cria_engine::{
    Done, Engine, EngineConfig, Event, FinishReason, GenerateParams, Request, SpecKind, SpecParams,
    Speculation,
};
use cria_model::{KvType, KvTypes};
use cria_sampler::SamplerConfig;

/// Input-grounded prompts: the answer copies from the input, so n-gram
/// drafts are accepted often.
const TASKS: [&str; 3] = [
    "Rewrite this text, correcting the spelling: The quick brown fox jumpd over the lazy dog. \
     The dog, being lazy, did not respnd to the fox, and kept sleeping in the warm afternoon sun \
     while the fox ran circles around the farmyard.",
    "Rename the variable `x` to `total` in this code and return the whole code:\n\
     fn sum(values: &[i32]) -> i32 {\n    let mut x = 0;\n    for v in values {\n        x += v;\n    }\n    x\n}",
    "List every city named in this text, one per line: Anna flew from Paris to Berlin, took a \
     train to Vienna and then to Prague, and finally drove to Munich before flying home to Paris.",
];

fn prompt(task: &str) -> Vec<u32> {
    chat().prompt(task)
}

#[derive(Clone, Copy)]
enum Mode {
    Off,
    Ngram,
    Draft,
}

fn engine(mode: Mode, slots: usize, n_ctx: usize, kv: KvTypes, threads: usize) -> Engine {
    engine_rows(mode, slots, n_ctx, kv, threads, 0)
}

fn engine_rows(
    mode: Mode,
    slots: usize,
    n_ctx: usize,
    kv: KvTypes,
    threads: usize,
    max_rows: usize,
) -> Engine {
    let f = chat();
    let spec = |kind, draft| {
        Some(Speculation {
            params: SpecParams {
                kind,
                draft_max: 8,
                draft_min: 0,
            },
            draft,
            max_rows,
        })
    };
    let spec = match mode {
        Mode::Off => None,
        Mode::Ngram => spec(SpecKind::Ngram, None),
        Mode::Draft => spec(
            SpecKind::DraftModel(common::default_model()),
            Some(f.model.clone()),
        ),
    };
    let config = EngineConfig {
        slots,
        max_queue: 16,
        step_tokens: 256,
        spec,
        ..EngineConfig::single(n_ctx, kv, threads)
    };
    Engine::start(f.model.clone(), f.tok.clone(), config).unwrap()
}

/// What a request produced: ids, text, log-probabilities, and the summary.
#[derive(Debug)]
struct Output {
    ids: Vec<u32>,
    text: String,
    logprobs: Vec<u32>,
    done: Done,
}

fn submit(
    engine: &Engine,
    prompt: Vec<u32>,
    params: GenerateParams,
) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let req = Request {
        logprobs: Some(2),
        ..Request::new(prompt, params, tx)
    };
    engine.submit(req).map_err(|e| format!("{e:?}")).unwrap();
    rx
}

fn collect(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Output {
    let (mut ids, mut text, mut logprobs) = (Vec::new(), String::new(), Vec::new());
    loop {
        match rx.blocking_recv() {
            Some(Event::Token(t)) => {
                ids.push(t.id);
                text.push_str(&t.text);
                logprobs.push(t.logprob.unwrap().to_bits());
            }
            Some(Event::Done(d)) => {
                text.push_str(&d.text);
                return Output {
                    ids,
                    text,
                    logprobs,
                    done: d,
                };
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
}

fn run(engine: &Engine, prompt: Vec<u32>, params: GenerateParams) -> Output {
    collect(submit(engine, prompt, params))
}

fn params(temp: f32, seed: u64, n: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(n),
        stop: Vec::new(),
        ignore_eos: false,
        constraint: None,
        sampler: SamplerConfig {
            temperature: temp,
            seed,
            ..SamplerConfig::default()
        },
    }
}

/// The same output; `what` names the case.
fn same(base: &Output, spec: &Output, what: &str) {
    assert_eq!(base.ids, spec.ids, "{what}: token ids differ");
    assert_eq!(base.text, spec.text, "{what}: text differs");
    assert_eq!(base.logprobs, spec.logprobs, "{what}: logprobs differ");
    assert_eq!(base.done.finish, spec.done.finish, "{what}: finish differs");
    assert_eq!(
        base.done.completion_tokens, spec.done.completion_tokens,
        "{what}"
    );
    assert!(base.done.spec.is_none(), "{what}: speculation when off");
}

/// Sums of drafted and accepted tokens over `outs`.
fn totals<'a>(outs: impl IntoIterator<Item = &'a Output>) -> (usize, usize) {
    outs.into_iter()
        .map(|o| o.done.spec.expect("a speculative run reports its counts"))
        .fold((0, 0), |(d, a), s| (d + s.drafted, a + s.accepted))
}

#[test]
fn temperatures_seeds_and_penalties_match_without_speculation() {
    let kv = KvType::F16.into();
    let (off, ngram, draft) = (
        engine(Mode::Off, 1, 1024, kv, 2),
        engine(Mode::Ngram, 1, 1024, kv, 2),
        engine(Mode::Draft, 1, 1024, kv, 2),
    );
    let mut outs = Vec::new();
    for (t, task) in TASKS.iter().enumerate() {
        for (temp, seed) in [(0.0, 1), (0.8, 7), (1.5, 42)] {
            let mut p = params(temp, seed, 48);
            if t == 2 {
                // Penalties keep state per accepted token.
                p.sampler.repeat_penalty = 1.3;
                p.sampler.presence_penalty = 0.2;
            }
            let base = run(&off, prompt(task), p.clone());
            for (name, e) in [("ngram", &ngram), ("draft", &draft)] {
                let o = run(e, prompt(task), p.clone());
                same(
                    &base,
                    &o,
                    &format!("task {t}, temp {temp}, seed {seed}, {name}"),
                );
                outs.push((name, o));
            }
        }
    }
    for name in ["ngram", "draft"] {
        let (d, a) = totals(outs.iter().filter(|o| o.0 == name).map(|o| &o.1));
        assert!(d > 0 && a > 0, "{name}: drafted {d}, accepted {a}");
        // Not everything: sampling at 1.5 rejects some drafts, so the
        // rejection path ran too.
        assert!(a < d, "{name}: drafted {d}, accepted {a}");
    }
}

#[test]
fn grammar_and_stop_strings_match_without_speculation() {
    let f = chat();
    let kv = KvType::F16.into();
    let (off, ngram) = (
        engine(Mode::Off, 1, 1024, kv, 1),
        engine(Mode::Ngram, 1, 1024, kv, 1),
    );
    let grammars = cria_grammar::Grammars::new(&f.tok).unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"cities": {"type": "array", "items": {"type": "string"}}},
        "required": ["cities"]
    });
    let mut outs = Vec::new();
    for (temp, seed) in [(0.0, 3), (0.8, 5), (1.5, 9)] {
        let mut p = params(temp, seed, 64);
        p.constraint = Some(
            grammars
                .compile(&cria_grammar::GrammarSpec::JsonSchema(schema.clone()))
                .unwrap(),
        );
        let task = format!("{} Answer in JSON.", TASKS[2]);
        let base = run(&off, prompt(&task), p.clone());
        let o = run(&ngram, prompt(&task), p);
        same(&base, &o, &format!("schema, temp {temp}"));
        assert!(base.text.starts_with('{'), "{:?}", base.text);
        outs.push(o);
    }
    // Stop strings: one that ends the answer inside a copied run (so a
    // stop falls inside an accepted draft), one that never appears.
    for (task, stop) in [(TASKS[0], "afternoon"), (TASKS[1], "zzz-never")] {
        for (temp, seed) in [(0.0, 1), (0.8, 2)] {
            let mut p = params(temp, seed, 64);
            p.stop = vec![stop.to_string(), "\n\n\n".to_string()];
            let base = run(&off, prompt(task), p.clone());
            let o = run(&ngram, prompt(task), p);
            same(&base, &o, &format!("stop {stop:?}, temp {temp}"));
            assert!(!o.text.contains(stop));
            outs.push(o);
        }
    }
    let (d, a) = totals(&outs);
    assert!(d > 0 && a > 0, "drafted {d}, accepted {a}");
}

#[test]
fn context_limit_and_quantized_caches_match_without_speculation() {
    let p0 = prompt(TASKS[1]);
    let n_ctx = p0.len() + 40;
    let mut outs = Vec::new();
    for kv in [
        KvTypes::from(KvType::F16),
        KvTypes::from(KvType::Q8_0),
        KvTypes {
            k: KvType::Q8_0,
            v: KvType::Q4_0,
        },
    ] {
        // Generation runs into the end of the context (ignore_eos keeps it
        // going): drafts must stop at the last position.
        for (temp, seed) in [(0.0, 1), (0.8, 4)] {
            let mut p = params(temp, seed, 1000);
            p.ignore_eos = true;
            p.max_tokens = None;
            let base = run(&engine(Mode::Off, 1, n_ctx, kv, 2), p0.clone(), p.clone());
            let o = run(&engine(Mode::Ngram, 1, n_ctx, kv, 2), p0.clone(), p);
            same(&base, &o, &format!("{kv}, context limit, temp {temp}"));
            assert_eq!(o.done.finish, FinishReason::ContextFull);
            outs.push(o);
        }
    }
    // Context shift: the cache fills, is shifted, and generation goes on.
    for mode in [Mode::Ngram, Mode::Draft] {
        let mk = |m| {
            let f = chat();
            let config = EngineConfig {
                overflow: cria_engine::ContextOverflow::Shift,
                ..engine(m, 1, n_ctx, KvType::Q8_0.into(), 2).config().clone()
            };
            Engine::start(f.model.clone(), f.tok.clone(), config).unwrap()
        };
        let mut p = params(0.0, 1, 120);
        p.ignore_eos = true;
        let base = run(&mk(Mode::Off), p0.clone(), p.clone());
        let o = run(&mk(mode), p0.clone(), p);
        same(&base, &o, "context shift");
        assert!(o.done.overflow.is_some(), "no shift happened");
        outs.push(o);
    }
    let (d, a) = totals(&outs);
    assert!(d > 0 && a > 0, "drafted {d}, accepted {a}");
}

#[test]
fn batched_sequences_match_and_saturated_batches_do_not_speculate() {
    let kv = KvType::F16.into();
    let off = engine(Mode::Off, 1, 1024, kv, 2);
    let cases: Vec<(Vec<u32>, GenerateParams)> = (0..6)
        .map(|i| {
            let temp = [0.0, 0.8, 1.5][i % 3];
            (prompt(TASKS[i % 3]), params(temp, 100 + i as u64, 40))
        })
        .collect();
    let base: Vec<Output> = cases
        .iter()
        .map(|(pr, p)| run(&off, pr.clone(), p.clone()))
        .collect();
    // Four slots decode together (each sequence drafts on its own, up to
    // 32 rows a step); then eight slots with the default cap of 4 rows per
    // thread, which the batch fills: no drafts while all eight decode.
    for (mode, slots, max_rows) in [
        (Mode::Ngram, 4, 32),
        (Mode::Draft, 4, 32),
        (Mode::Ngram, 8, 0),
    ] {
        let e = engine_rows(mode, slots, 1024, kv, 2, max_rows);
        let rxs: Vec<_> = cases
            .iter()
            .map(|(pr, p)| submit(&e, pr.clone(), p.clone()))
            .collect();
        let outs: Vec<Output> = rxs.into_iter().map(collect).collect();
        for (i, (b, o)) in base.iter().zip(&outs).enumerate() {
            same(b, o, &format!("{slots} slots, request {i}"));
        }
        let stats = e.stats();
        let drafted = stats
            .spec_drafted
            .load(std::sync::atomic::Ordering::Relaxed);
        let off_steps = stats
            .spec_off_steps
            .load(std::sync::atomic::Ordering::Relaxed);
        if slots == 4 {
            assert!(drafted > 0, "{slots} slots: nothing drafted");
        } else {
            // 6 requests in 8 slots with 8 rows a step: 6 decode rows leave
            // 2 for drafts, 0 per sequence: every step with all six
            // decoding is counted as off.
            assert!(off_steps > 0, "{slots} slots: speculation never backed off");
        }
    }
}

#[test]
fn draft_vocabulary_is_checked() {
    let dir = common::fixture("crates/tokenizer/tests/fixtures");
    let open = |name: &str| {
        let f = cria_gguf::GgufFile::open(dir.join(name)).unwrap();
        cria_tokenizer::Tokenizer::from_gguf(f.metadata()).unwrap()
    };
    let (smol, llama) = (
        open("ggml-vocab-smollm2.gguf"),
        open("ggml-vocab-llama-bpe.gguf"),
    );
    assert_eq!(cria_engine::check_vocab(&smol, &smol), Ok(()));
    let e = cria_engine::check_vocab(&smol, &llama).unwrap_err();
    assert!(e.contains("49152") && e.contains("128256"), "{e}");
}

/// The default model with token `id`'s text replaced by `text`, written to
/// `path` (a draft model whose vocabulary differs in one token).
fn model_with_token(path: &std::path::Path, id: usize, text: &str) {
    let src = cria_gguf::GgufFile::open(common::default_model()).unwrap();
    let mut w = cria_gguf::GgufWriter::new();
    for (k, v) in src.metadata().iter() {
        let v = match (k, v) {
            ("tokenizer.ggml.tokens", cria_gguf::Value::Array(cria_gguf::Array::String(t))) => {
                let mut t = t.clone();
                t[id] = text.to_string();
                cria_gguf::Value::Array(cria_gguf::Array::String(t))
            }
            _ => v.clone(),
        };
        w.add_metadata(k, v);
    }
    for info in src.tensors() {
        w.add_tensor(&info.name, info.ty, &info.dims, src.tensor_data(info))
            .unwrap();
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    w.write_to(&mut f).unwrap();
}

#[test]
fn cli_flags_summary_and_draft_vocabulary_errors() {
    let model = common::default_model();
    let run = |extra: &[&str]| {
        common::cria()
            .args(["run", "-t", "1", "-n", "40", "--temp", "0", "-m"])
            .arg(&model)
            .args(extra)
            .arg(TASKS[1])
            .output()
            .unwrap()
    };
    let base = run(&[]);
    assert!(base.status.success(), "{}", common::stderr(&base));
    for extra in [
        &["--spec-type", "ngram"][..],
        &[
            "--spec-type",
            "ngram",
            "--draft-max",
            "4",
            "--draft-min",
            "2",
        ],
    ] {
        let o = run(extra);
        assert!(o.status.success(), "{}", common::stderr(&o));
        assert_eq!(common::stdout(&base), common::stdout(&o), "{extra:?}");
        let err = common::stderr(&o);
        assert!(
            err.contains("speculative: ") && err.contains("accepted ("),
            "{err}"
        );
    }
    // -md with llama.cpp's spelling: the same model as its own draft.
    let o = run(&["-md", model.to_str().unwrap()]);
    assert_eq!(common::stdout(&base), common::stdout(&o));
    common::assert_clean_error(
        &run(&["--draft-max", "4"]),
        "--draft-max and --draft-min need --spec-type ngram or -md FILE",
    );
    common::assert_clean_error(
        &run(&[
            "--spec-type",
            "ngram",
            "--draft-max",
            "2",
            "--draft-min",
            "3",
        ]),
        "--draft-min 3 is larger than --draft-max 2",
    );
    // Parsed by clap (its usual two-line form).
    let o = run(&["--spec-type", "medusa"]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("unknown speculation type \"medusa\": use ngram"));
    common::assert_clean_error(
        &run(&["--spec-type", "ngram", "-md", model.to_str().unwrap()]),
        "choose one kind of speculative decoding",
    );
    common::assert_clean_error(
        &run(&["--spec-type", "draft-simple"]),
        "needs a draft model: give -md FILE",
    );
    // A draft whose token 1000 differs: refused, naming the token.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-vocab.gguf");
    model_with_token(&other, 1000, "<cria-test-token>");
    let o = run(&["-md", other.to_str().unwrap()]);
    common::assert_clean_error(&o, "cannot draft for this model: token 1000 is");
    assert!(common::stderr(&o).contains("<cria-test-token>"));
}

#[test]
fn server_batches_speculative_sequences_and_reports_metrics() {
    use common::server::Server;
    let body = |task: &str, temp: f64, seed: u64| {
        serde_json::json!({
            "messages": [{"role": "user", "content": task}],
            "max_tokens": 40, "temperature": temp, "seed": seed,
        })
    };
    let cases = [(TASKS[0], 0.0, 1), (TASKS[1], 0.8, 2), (TASKS[2], 1.5, 3)];
    let plain = Server::start(&["--parallel", "1"]);
    let want: Vec<String> = cases
        .iter()
        .map(|&(t, temp, seed)| {
            plain
                .post("/v1/chat/completions", &body(t, temp, seed))
                .json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // Three requests at once in three slots: -t 1 gives 4 rows a step, so
    // speculation runs while one or two decode and backs off at three.
    let spec = Server::start(&[
        "--parallel",
        "3",
        "--spec-type",
        "ngram",
        "--draft-max",
        "8",
    ]);
    let got: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|&(t, temp, seed)| {
                let spec = &spec;
                s.spawn(move || {
                    spec.post("/v1/chat/completions", &body(t, temp, seed))
                        .json()["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(want, got);
    // One more alone: it speculates.
    let alone = spec
        .post("/v1/chat/completions", &body(TASKS[1], 0.0, 9))
        .json();
    let plain_alone = plain
        .post("/v1/chat/completions", &body(TASKS[1], 0.0, 9))
        .json();
    assert_eq!(
        alone["choices"][0]["message"]["content"],
        plain_alone["choices"][0]["message"]["content"]
    );
    let drafted = spec.metric("cria_spec_draft_tokens_total");
    let accepted = spec.metric("cria_spec_accepted_tokens_total");
    assert!(drafted > 0.0 && accepted > 0.0, "{drafted} {accepted}");
    let ratio = spec.metric("cria_spec_acceptance_ratio");
    assert!((ratio - accepted / drafted).abs() < 1e-6, "{ratio}");
    assert!(spec.metric("cria_effective_tokens_per_second") > 0.0);
    assert_eq!(plain.metric("cria_spec_draft_tokens_total"), 0.0);
}

/// Issue 16: the probabilities after the sampler chain
/// (`post_sampling_probs`) are the same with speculation, to the bit: a
/// draft row's pick runs the same chain on the same logits.
#[test]
fn post_sampling_probabilities_match_without_speculation() {
    let kv = KvType::F16.into();
    let (off, ngram) = (
        engine(Mode::Off, 1, 1024, kv, 1),
        engine(Mode::Ngram, 1, 1024, kv, 1),
    );
    let probs = |e: &Engine, p: GenerateParams| {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let req = Request {
            logprobs: Some(5),
            post_sampling_probs: true,
            ..Request::new(prompt(TASKS[0]), p, tx)
        };
        e.submit(req).map_err(|e| format!("{e:?}")).unwrap();
        let mut out = Vec::new();
        loop {
            match rx.blocking_recv() {
                Some(Event::Token(t)) => {
                    assert!(t.logprob.is_none() && t.top_logprobs.is_empty());
                    let top: Vec<(u32, u32)> = t
                        .top_probs
                        .iter()
                        .map(|&(id, p)| (id, p.to_bits()))
                        .collect();
                    out.push((t.id, t.prob.unwrap().to_bits(), top));
                }
                Some(Event::Done(d)) => return (out, d),
                other => panic!("unexpected event {other:?}"),
            }
        }
    };
    for (temp, seed) in [(0.0, 1), (1.0, 42)] {
        let (base, _) = probs(&off, params(temp, seed, 48));
        let (spec, done) = probs(&ngram, params(temp, seed, 48));
        assert_eq!(base, spec, "temp {temp}");
        let s = done.spec.expect("a speculative run reports its counts");
        assert!(s.accepted > 0, "temp {temp}: nothing accepted");
        assert!(base.iter().all(|(_, p, top)| *p > 0
            && !top.is_empty()
            && top.iter().all(|&(_, q)| f32::from_bits(q) > 0.0)));
    }
}
