//! Chat templates are untrusted input (issue 10): real templates render as
//! they always did, hostile ones end quickly with an error that says which
//! bound they hit.

use cria_prompt::{ChatTemplate, Limits, Message, ThreadCounted, MAX_RANGE, MAX_SOURCE_BYTES};
use minijinja::{context, Environment};
use std::time::{Duration, Instant};

/// As in the `cria` binary: the bound on what a render holds needs it.
#[global_allocator]
static ALLOC: ThreadCounted = ThreadCounted;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
    message['content'].strip() + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|im_start|>assistant\\n' }}{% endif %}";

/// tokenizer.chat_template of SmolLM2-135M-Instruct (the default model).
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
    {{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}\
    {% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}\
    {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Meta-Llama-3-8B-Instruct.
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}\
    {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}\
    {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}\
    {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/// Mistral-7B-Instruct-v0.1.
const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}\
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
    {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}\
    {% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}\
    {% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}\
    {% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

fn conversation() -> Vec<Message> {
    vec![
        Message::new("user", "  What is 2+2? "),
        Message::new("assistant", "4"),
        Message::new("user", "And \u{e9}t\u{e9} {{ not a tag }} <|im_end|>?"),
    ]
}

fn template(src: &str) -> ChatTemplate {
    ChatTemplate::new(src.into(), "<s>".into(), "</s>".into()).unwrap()
}

/// The same template rendered by a plain minijinja environment, as this
/// crate did before it had bounds.
fn unbounded(src: &str, messages: &[Message], add: bool) -> String {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_template("t", src).unwrap();
    env.get_template("t")
        .unwrap()
        .render(context! {
            messages => messages,
            add_generation_prompt => add,
            bos_token => "<s>",
            eos_token => "</s>",
        })
        .unwrap()
}

#[test]
fn real_templates_render_as_without_bounds() {
    let msgs = conversation();
    for (name, src) in [
        ("chatml", CHATML),
        ("smollm2", SMOLLM2),
        ("llama3", LLAMA3),
        ("mistral", MISTRAL),
    ] {
        for add in [false, true] {
            let got = template(src).render(&msgs, add).unwrap();
            assert_eq!(got, unbounded(src, &msgs, add), "{name} add={add}");
        }
    }
    // And the bytes themselves, for two formats.
    let m = [Message::new("user", "Hi")];
    assert_eq!(
        template(LLAMA3).render(&m, true).unwrap(),
        "<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        template(MISTRAL).render(&m, true).unwrap(),
        "<s>[INST] Hi [/INST]"
    );
}

#[test]
fn a_long_conversation_fits_the_bounds() {
    // 2000 turns of 1 KiB: 2 MiB in, more than the 1 MiB base bound out.
    let msgs: Vec<Message> = (0..2000)
        .map(|i| Message::new(["user", "assistant"][i % 2], &"w".repeat(1024)))
        .collect();
    let out = template(SMOLLM2).render(&msgs, true).unwrap();
    assert_eq!(out, unbounded(SMOLLM2, &msgs, true));
    assert!(out.len() > 2 << 20);
}

/// Renders `src` with default limits and no messages; returns the error
/// message and how long it took.
fn fails(src: &str) -> (String, Duration) {
    let t = Instant::now();
    let r = template(src).render(&[], true);
    let took = t.elapsed();
    match r {
        Ok(out) => panic!("rendered {} bytes", out.len()),
        Err(e) => (e.full_message(), took),
    }
}

fn assert_fails_with(src: &str, needle: &str) {
    let (msg, took) = fails(src);
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    assert!(
        msg.starts_with("the chat template"),
        "the message should say what failed: {msg}"
    );
    assert!(took < Duration::from_secs(5), "{needle}: took {took:?}");
}

#[test]
fn endless_loops_run_out_of_fuel() {
    assert_fails_with(
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "engine ran out of fuel",
    );
}

#[test]
fn huge_output_is_cut_off() {
    assert_fails_with(
        "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}",
        "the chat template's output exceeds 1048576 bytes",
    );
}

#[test]
fn single_huge_operations_are_refused() {
    assert_fails_with(
        "{{ 'a' * 10**10 }}",
        "`*` of a string would build a value of 10000000000 bytes or more; \
         the bound for this render is 1048576",
    );
    assert_fails_with(
        "{% for i in range(10**9) %}{% endfor %}",
        &format!("range() of 1000000000 items; at most {MAX_RANGE} are allowed"),
    );
    assert_fails_with(
        "{% for i in range(0, 10**9, 7) %}{% endfor %}",
        "range() of 142857143 items",
    );
    // A range within the bound still works, and like Python's.
    let t = template("{{ range(3)|list }} {{ range(10, 0, -4)|list }}");
    assert_eq!(t.render(&[], false).unwrap(), "[0, 1, 2] [10, 6, 2]");
}

#[test]
fn doubling_through_captures_is_refused_when_printed() {
    // Each pass prints the value twice into a capture: the value doubles
    // until one print is larger than the output bound.
    assert_fails_with(
        "{% set ns = namespace(x='x') %}{% for i in range(64) %}\
         {% set y %}{{ ns.x }}{{ ns.x }}{% endset %}{% set ns.x = y %}{% endfor %}",
        "exceeds the output bound of 1048576",
    );
    // Doubling with `~` is refused before the value is built (grow.rs):
    // 2^21 bytes, in the 21st step.
    assert_fails_with(
        "{% set ns = namespace(x='x') %}{% for i in range(21) %}\
         {% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}",
        "`~` would build a value of 2097152 bytes or more",
    );
}

#[test]
fn deep_recursion_is_refused() {
    assert_fails_with(
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "recursion limit exceeded",
    );
}

#[test]
fn raise_exception_reaches_the_caller() {
    let msgs = [Message::new("system", "x")];
    let e = template(MISTRAL).render(&msgs, true).unwrap_err();
    let msg = e.full_message();
    assert!(
        msg.starts_with("the chat template failed to render: ")
            && msg.contains("Conversation roles must alternate"),
        "{msg}"
    );
}

#[test]
fn the_caller_waits_at_most_the_deadline() {
    // Empty loops touch none of the checks that stop a render at its
    // deadline; with fuel for billions of steps the caller gives up first
    // (250 ms after the deadline, for a render's own last step).
    let limits = Limits {
        time: Duration::from_millis(1),
        fuel: 1 << 40,
        ..Limits::default()
    };
    let src = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}";
    let t = ChatTemplate::with_limits(src.into(), String::new(), String::new(), limits).unwrap();
    let start = Instant::now();
    let e = t.render(&[], true).unwrap_err();
    assert_eq!(
        e.full_message(),
        "the chat template did not finish rendering within 251ms"
    );
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[test]
fn oversized_sources_are_refused() {
    let src = "x".repeat(MAX_SOURCE_BYTES + 1);
    let e = ChatTemplate::new(src, String::new(), String::new())
        .err()
        .expect("accepted");
    assert_eq!(
        e.to_string(),
        format!(
            "the chat template is {} bytes; templates may have at most {MAX_SOURCE_BYTES}",
            MAX_SOURCE_BYTES + 1
        )
    );
}

#[test]
fn chat_template_is_send_and_sync() {
    fn shared<T: Send + Sync + 'static>(_: &T) {}
    let t = template(CHATML);
    shared(&t);
    // And renders from several threads at once.
    std::thread::scope(|s| {
        for i in 0..4 {
            let t = &t;
            s.spawn(move || {
                let m = [Message::new("user", &i.to_string())];
                let out = t.render(&m, false).unwrap();
                assert_eq!(out, format!("<|im_start|>user\n{i}<|im_end|>\n"));
            });
        }
    });
}

/// Found by the chat_template fuzz target: a namespace stored into itself,
/// then printed or concatenated, recursed in minijinja's formatting until
/// the stack overflowed and the process aborted. Such templates are
/// refused when loaded, whichever way the namespace gets in.
#[test]
fn namespaces_stored_into_namespaces_are_refused() {
    let crash = "{% macro m(x, n) %}{% if n > 1 %}{{ m(x ~ x, n - 1) }}{% else %}{{ x }}{% endif %}{% endmacro %}\
        {% set ns = namespace(s='') %}{% for i in range(2) %}{% set ns.s = ns,s ~ i %}{% endfor %}{{ m(ns.s, 7) }}";
    for (src, attr) in [
        (crash, "ns.s"),
        (
            "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
            "ns.me",
        ),
        (
            "{% set ns = namespace() %}{% set y = ns %}{% set ns.me = y %}",
            "ns.me",
        ),
        (
            "{% set ns = namespace() %}{% set l = [1, ns] %}{% set ns.l = l %}",
            "ns.l",
        ),
        (
            "{% set a = namespace() %}{% set b = namespace(inner=a) %}{% set a.x = b.inner %}",
            "a.x",
        ),
        (
            "{% set a = namespace() %}{% for n in [a] %}{% set a.x = n %}{% endfor %}",
            "a.x",
        ),
        (
            "{% set a = namespace() %}{% macro f(v) %}{% set a.x = v %}{% endmacro %}{{ f(a) }}",
            "a.x",
        ),
        (
            "{% set a = namespace() %}{% set a.x = namespace() %}",
            "a.x",
        ),
        (
            "{% set a = namespace() %}{% set a.x = {'k': a}['k'] %}",
            "a.x",
        ),
    ] {
        let e = ChatTemplate::new(src.into(), String::new(), String::new())
            .err()
            .unwrap_or_else(|| panic!("accepted: {src}"));
        assert_eq!(
            e.to_string(),
            format!(
                "the chat template stores a namespace into the namespace attribute {attr}: \
                 a reference cycle minijinja can neither print nor free; refused"
            ),
            "{src}"
        );
    }
}

#[test]
fn namespaces_of_plain_values_are_fine() {
    let src = "{% set ns = namespace(system='', n=0, found=false, parts=[]) %}\
        {% for m in messages %}{% if m.role == 'system' %}{% set ns.system = m.content %}{% endif %}\
        {% set ns.n = ns.n + 1 %}{% set ns.found = true %}{% set ns.parts = ns.parts + [m.content] %}\
        {% set other = namespace(copy=ns.system) %}{% set ns.system = other.copy ~ '!' %}{% endfor %}\
        {{ ns.system }} {{ ns.n }} {{ ns.found }} {{ ns.parts|join(',') }}";
    let msgs = [
        Message::new("system", "be kind"),
        Message::new("user", "hi"),
    ];
    assert_eq!(
        template(src).render(&msgs, false).unwrap(),
        "be kind!! 2 True be kind,hi"
    );
}

/// Values that grow geometrically without being printed: each would need
/// terabytes (a failed allocation aborts the process) and is refused
/// before it is built, quickly, with the bound it hit (grow.rs).
#[test]
fn values_built_without_printing_are_refused() {
    let doubling = |init: &str, step: &str, end: &str| {
        format!(
            "{{% set ns = namespace(x={init}) %}}{{% for i in range(64) %}}\
             {{% set ns.x = {step} %}}{{% endfor %}}{end}"
        )
    };
    // Two equal lists, each nested into itself 64 times.
    let nested2 = |end: &str| {
        format!(
            "{{% set ns = namespace(x=[1], y=[1]) %}}{{% for i in range(64) %}}\
             {{% set ns.x = [ns.x, ns.x] %}}{{% set ns.y = [ns.y, ns.y] %}}{{% endfor %}}\
             {{{{ {end} }}}}"
        )
    };
    let cases = [
        // Strings doubled by each operator, never printed.
        (
            doubling("'0123456789'", "ns.x ~ ns.x", "{{ ns.x|length }}"),
            "`~` would build",
        ),
        (
            doubling("'0123456789'", "ns.x + ns.x", "done"),
            "`+` of two strings would build",
        ),
        (
            doubling("'0123456789'", "ns.x * 2", "done"),
            "`*` of a string would build",
        ),
        (
            doubling("'ab'", "ns.x|replace('a', ns.x)", "done"),
            "the `replace` filter would build",
        ),
        (
            doubling("'ab'", "ns.x.replace('', 'xyz')", "done"),
            "the `.replace()` method would build",
        ),
        (
            doubling("'ab'", "[ns.x, ns.x]|join", "done"),
            "the `join` filter would build",
        ),
        (
            doubling("'ab'", "ns.x.join(['1', '2', '3'])", "done"),
            "the `.join()` method would build",
        ),
        (
            doubling("'ab'", "ns.x|tojson|tojson", "done"),
            "the `tojson` filter would build",
        ),
        // A list doubled lazily, then turned into text.
        (
            doubling("[1]", "ns.x + ns.x", "{{ ns.x|join }}"),
            "`+` of two lists would build a list of",
        ),
        (
            doubling("[1]", "ns.x * 3", "{{ ns.x|join }}"),
            "`*` of a list would build a list of",
        ),
        (
            doubling("[1]", "ns.x|chain(ns.x)", "{{ ns.x|list }}"),
            "the `chain` filter would build a list of",
        ),
        // A list nested into itself: small in memory, exponential as text.
        (
            doubling("[1]", "[ns.x, ns.x]", "{{ ns.x|string|length }}"),
            "the `string` filter would build",
        ),
        (
            doubling("[1]", "[ns.x, ns.x]", "{{ ns.x|tojson|length }}"),
            "the `tojson` filter would build",
        ),
        (
            doubling("[1]", "[ns.x, ns.x]", "{{ ns.x|pprint|length }}"),
            "the `pprint` filter would build",
        ),
        (
            doubling("[1]", "[ns.x, ns.x]", "{{ (ns.x ~ '')|length }}"),
            "`~` would build",
        ),
        (
            doubling("[1]", "[ns.x, ns.x]", "{% set y %}{{ ns.x }}{% endset %}"),
            "printing a value would build",
        ),
        (
            doubling("[1]", "[ns.x, ns.x]", "{{ [ns.x]|join|length }}"),
            "the `join` filter would build",
        ),
        // One step, huge.
        (
            "{{ 'a\nb'|indent(10**12) }}".into(),
            "the `indent` filter would build",
        ),
        (
            "{{ [1]|batch(10**12, 0)|length }}".into(),
            "the `batch` filter would build a list of",
        ),
        (
            "{{ [1]|slice(10**12)|length }}".into(),
            "the `slice` filter would build a list of",
        ),
        (
            "{{ '%999999999999s'|format('a') }}".into(),
            "the `format` filter would build",
        ),
        (
            "{{ '{:>999999999999}'.format('a') }}".into(),
            "the `.format()` method would build",
        ),
        (
            "{{ debug() }}".into(),
            "debug() is not available in chat templates",
        ),
        // Self-nested lists compared: exponential time in native code.
        (
            nested2("ns.x == ns.y"),
            "a comparison would compare a value of more than",
        ),
        (
            nested2("ns.x in [ns.y]"),
            "a comparison would compare a value of more than",
        ),
        (
            nested2("[ns.x, ns.y]|unique|list|length"),
            "the `unique` filter would compare",
        ),
        (
            nested2("[ns.x, ns.y]|sort|length"),
            "the `sort` filter would compare",
        ),
        (nested2("ns.x is eq(ns.y)"), "the `eq` test would compare"),
        (
            nested2("[ns.x]|selectattr('0', 'eq', ns.y)|list"),
            "the `selectattr` filter would compare",
        ),
        // Many distinct values, each within the bound: the render's total.
        (
            "{% set ns = namespace(l=[], s='x' * 1000000) %}{% for i in range(10000) %}\
             {% set ns.l = ns.l + [ns.s ~ i] %}{% endfor %}{{ ns.l|length }}"
                .into(),
            "the template holds",
        ),
    ];
    for (src, needle) in cases {
        let (msg, took) = fails(&src);
        assert!(msg.contains(needle), "{src}\n{msg:?} lacks {needle:?}");
        assert!(took < Duration::from_secs(5), "{src}: took {took:?}");
    }
}

/// What real templates do with the operators and filters above still
/// works: a prompt rebuilt once per message of a long conversation (2 000
/// messages: quadratic, about 200 MB copied in all, a few copies held at a
/// time), tool lists as JSON, joins.
#[test]
fn growing_within_bounds_still_renders() {
    let src = "{% set ns = namespace(p='') %}{% for m in messages %}\
               {% set ns.p = ns.p + m.role ~ ': ' + m.content + '\n' %}{% endfor %}\
               {{ ns.p|length }} {{ messages|map(attribute='role')|join(',')|length }} \
               {{ messages[:2]|tojson(indent=2)|length }} {{ '%s-%s'|format('a', 'b') }}";
    let messages: Vec<Message> = (0..2000)
        .map(|i| {
            Message::new(
                if i % 2 == 0 { "user" } else { "assistant" },
                "a short message",
            )
        })
        .collect();
    let out = template(src).render(&messages, false).unwrap();
    assert_eq!(out, unbounded(src, &messages, false));
    let per = "assistant: a short message\n".len() + "user: a short message\n".len();
    assert!(out.starts_with(&format!("{} ", 1000 * per)), "{out}");
}

/// A template that keeps its operators busy past the deadline (a string
/// near the output bound extended one byte at a time: each step copies
/// it) stops itself at the deadline and says so; before, the caller gave
/// up and the render thread ran on, abandoned, until its fuel was spent.
#[test]
fn a_busy_render_stops_at_the_deadline() {
    let src = "{% set ns = namespace(x='x' * 1000000) %}{% for i in range(10000) %}\
               {% for j in range(100) %}{% set ns.x = ns.x[1:] ~ 'y' %}{% endfor %}{% endfor %}";
    let limits = Limits {
        time: Duration::from_millis(300),
        ..Limits::default()
    };
    let t = ChatTemplate::with_limits(src.into(), "".into(), "".into(), limits).unwrap();
    let started = Instant::now();
    let err = t.render(&[], false).unwrap_err().full_message();
    assert!(
        err.contains("the template ran past its time limit"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
