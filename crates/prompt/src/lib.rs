//! Chat prompts: the model's `tokenizer.chat_template` (Jinja) rendered
//! with minijinja, as Hugging Face's transformers renders it, so prompts
//! match what the model was trained on, then tokenized. `cria run`,
//! `cria chat` and the server all render through this crate; the engine
//! and the model only ever see token ids.
//!
//! A template comes from the model file or the command line, so it is
//! untrusted: rendering runs within the bounds of [`Limits`] (instructions,
//! output bytes, recursion, wall time); `limits.rs` says what each stops.
#![forbid(unsafe_code)]

pub mod builtin;
mod concat;
mod cycles;
mod grow;
mod limits;

use cria_tokenizer::Tokenizer;
use minijinja::{context, Environment, Error as JinjaError, ErrorKind as JinjaErrorKind};
use serde::Serialize;
use std::sync::Arc;

pub use cria_alloc::ThreadCounted;
pub use grow::{LIVE_PER_OUTPUT, MAX_ITEMS};
pub use limits::{Limits, MAX_RANGE, MAX_SOURCE_BYTES};

/// Why a template could not be loaded or rendered; the message says what
/// was wrong and, through `source`, what minijinja or the file system said.
#[derive(Debug)]
pub struct TemplateError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TemplateError {
    fn new(message: impl Into<String>) -> TemplateError {
        TemplateError {
            message: message.into(),
            source: None,
        }
    }

    fn with(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> TemplateError {
        TemplateError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message and its causes on one line, for HTTP replies.
    pub fn full_message(&self) -> String {
        let mut s = self.message.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TemplateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

type Result<T> = std::result::Result<T, TemplateError>;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant's tool calls, as OpenAI's `tool_calls` with each
    /// `function.arguments` parsed into an object (what tool-aware
    /// templates iterate over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// A tool result's `tool_call_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// An assistant's earlier reasoning (llama.cpp's name; reasoning
    /// templates such as Qwen3's print it in their thinking block).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
            tool_calls: None,
            tool_call_id: None,
            reasoning_content: None,
        }
    }
}

/// A chat template ready to render; cheap to share across threads (each
/// render runs on a helper thread that holds its own reference).
pub struct ChatTemplate {
    inner: Arc<Inner>,
}

struct Inner {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
    limits: Limits,
    /// `enable_thinking` in the template's context (llama.cpp's name:
    /// reasoning templates open or close their thinking block with it).
    enable_thinking: bool,
}

impl ChatTemplate {
    /// The template given on the command line if any (see
    /// [`ChatTemplate::resolve`]), else the model's own. A model without
    /// one is an error: no silent fallback format.
    pub fn load(
        metadata: &cria_gguf::Metadata,
        tok: &Tokenizer,
        override_file: Option<&std::path::Path>,
    ) -> Result<ChatTemplate> {
        let source =
            match override_file {
                Some(p) => ChatTemplate::resolve(p)?,
                None => match metadata.try_str("tokenizer.chat_template") {
                    Ok(Some(s)) => s.to_string(),
                    Ok(None) => return Err(TemplateError::new(
                        "this model has no chat template (tokenizer.chat_template); pass one with \
                         --chat-template FILE, or use `cria run --raw` to continue plain text",
                    )),
                    Err(e) => {
                        return Err(TemplateError::with(
                            "cannot read tokenizer.chat_template",
                            e,
                        ))
                    }
                },
            };
        let token_text =
            |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
        ChatTemplate::new(source, token_text(tok.bos()), token_text(tok.eos()))
    }

    /// The Jinja source `--chat-template` names: a file if one is there,
    /// else one of llama.cpp's built-in names ([`builtin::NAMES`]), else
    /// the text itself if it is Jinja (has `{{` or `{%`, as llama-server
    /// takes a template on its command line). Anything else is an error
    /// that lists the names.
    pub fn resolve(given: &std::path::Path) -> Result<String> {
        match std::fs::read_to_string(given) {
            Ok(s) => return Ok(s),
            Err(e) if given.exists() => {
                return Err(TemplateError::with(
                    format!("cannot read chat template {}", given.display()),
                    e,
                ))
            }
            Err(_) => {}
        }
        let text = given.to_string_lossy();
        if let Some(s) = builtin::source(&text) {
            return Ok(s);
        }
        if text.contains("{{") || text.contains("{%") {
            return Ok(text.into_owned());
        }
        Err(TemplateError::new(format!(
            "no file {text:?}, and not a built-in template name: give a Jinja file, Jinja text, \
             or one of {}",
            builtin::NAMES.join(", ")
        )))
    }

    pub fn new(source: String, bos: String, eos: String) -> Result<ChatTemplate> {
        ChatTemplate::with_limits(source, bos, eos, Limits::default())
    }

    /// Like [`ChatTemplate::new`], with other bounds than the defaults.
    pub fn with_limits(
        source: String,
        bos: String,
        eos: String,
        limits: Limits,
    ) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // transformers renders chat templates with trim_blocks and
        // lstrip_blocks (its ImmutableSandboxedEnvironment), and so does
        // llama.cpp: templates written with a newline after each block tag
        // (TinyLlama's, Zephyr's) rely on it.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        limits::install(&mut env, &limits);
        // Python string methods (.strip(), .startswith(), ...) that HF
        // templates use, and the bounds on what operators, filters and
        // methods build (grow.rs).
        grow::install(&mut env);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, JinjaError> {
                Err(JinjaError::new(JinjaErrorKind::InvalidOperation, msg))
            },
        );
        // llama.cpp's trim, for the built-in templates (builtin.rs).
        env.add_filter("llama_trim", builtin::llama_trim);
        // Today's date as the template asks for it (Python's strftime
        // directives; templates print the date in the system prompt).
        env.add_function(
            "strftime_now",
            |fmt: String| -> std::result::Result<String, JinjaError> {
                strftime(&fmt, now_secs())
                    .map_err(|e| JinjaError::new(JinjaErrorKind::InvalidOperation, e))
            },
        );
        if source.len() > limits::MAX_SOURCE_BYTES {
            return Err(TemplateError::new(format!(
                "the chat template is {} bytes; templates may have at most {}",
                source.len(),
                limits::MAX_SOURCE_BYTES
            )));
        }
        // A template that does not parse is reported by minijinja below.
        let compiled = match minijinja::machinery::parse(
            &source,
            "chat",
            Default::default(),
            Default::default(),
        ) {
            Ok(ast) => {
                cycles::check(&ast).map_err(|attr| {
                    TemplateError::new(format!(
                        "the chat template stores a namespace into the namespace attribute \
                         {attr}: a reference cycle minijinja can neither print nor free; refused"
                    ))
                })?;
                // Every `+`, `~` and `*` checked (grow.rs), with llama.cpp's
                // `"text" + undefined` (concat.rs).
                grow::rewrite(&source, &ast).ok_or_else(|| {
                    TemplateError::new(
                        "the chat template could not be prepared for bounded rendering \
                         (a parser quirk): give another template with --chat-template",
                    )
                })?
            }
            Err(_) => source.clone(),
        };
        // A template that does not parse fails here with minijinja's own
        // error; the rewrite keeps minijinja's own parse, so it compiles
        // whenever the source does.
        env.add_template_owned("chat", compiled)
            .map_err(|e| TemplateError::with("the chat template is not valid Jinja", e))?;
        Ok(ChatTemplate {
            inner: Arc::new(Inner {
                env,
                source,
                bos,
                eos,
                limits,
                enable_thinking: true,
            }),
        })
    }

    /// The same template with `enable_thinking` set for every render
    /// (true unless changed, as llama.cpp's default `--reasoning auto`;
    /// false closes the thinking block of templates that read it).
    pub fn with_thinking(self, on: bool) -> Result<ChatTemplate> {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.enable_thinking = on;
                inner
            }
            Err(shared) => {
                let fresh = ChatTemplate::with_limits(
                    shared.source.clone(),
                    shared.bos.clone(),
                    shared.eos.clone(),
                    shared.limits.clone(),
                )?;
                return fresh.with_thinking(on);
            }
        };
        Ok(ChatTemplate {
            inner: Arc::new(inner),
        })
    }

    /// Renders the conversation; `add_generation_prompt` opens the
    /// assistant's turn. Runs on a helper thread and waits at most
    /// `Limits::time`; fuel makes sure an abandoned render ends too.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// [`ChatTemplate::render`] with OpenAI's `tools` list in the template's
    /// `tools` variable (tool-aware templates describe them to the model).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let inner = Arc::clone(&self.inner);
        let messages = messages.to_vec();
        let tools = tools.cloned();
        let time = inner.limits.time;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("chat-template".into())
            .stack_size(limits::STACK_BYTES)
            .spawn(move || {
                let _ =
                    tx.send(inner.render_here(&messages, tools.as_ref(), add_generation_prompt));
            })
            .map_err(|e| TemplateError::with("cannot start the chat template thread", e))?;
        // The render stops itself at `time` (grow.rs checks the clock at
        // every operator and filter it bounds) and reports it; the grace
        // covers that last step, so the caller stops waiting on its own
        // only for a render stuck where no check runs.
        match rx.recv_timeout(time + limits::DEADLINE_GRACE) {
            Ok(r) => {
                // It has sent its result and is ending: wait, so that no
                // render outlives its call unless it ran out of time.
                let _ = thread.join();
                r
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(TemplateError::new(format!(
                "the chat template did not finish rendering within {:?}",
                time + limits::DEADLINE_GRACE
            ))),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(TemplateError::new(
                "the chat template thread stopped without a result",
            )),
        }
    }
}

impl Inner {
    fn render_here(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let started = std::time::Instant::now();
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::with("the chat template is missing", e))?;
        let input: usize = messages
            .iter()
            .map(|m| {
                m.role.len()
                    + m.content.len()
                    + m.reasoning_content.as_ref().map_or(0, String::len)
                    + m.tool_calls.as_ref().map_or(0, |t| t.to_string().len())
            })
            .sum::<usize>()
            + tools.map_or(0, |t| t.to_string().len());
        let max_output = self.limits.max_output(input);
        limits::start_render(max_output);
        grow::start_render(max_output, Some(started + self.limits.time));
        let mut out = limits::CappedWriter::new(max_output);
        let rendered = t.render_captured_to(
            context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos,
                eos_token => self.eos,
                enable_thinking => self.enable_thinking,
                // As llama.cpp gives them (Llama 3.x and firefunction
                // templates print them): today, two ways.
                date_string => strftime("%d %b %Y", now_secs()).unwrap_or_default(),
                datetime => strftime("%b %d %Y", now_secs()).unwrap_or_default(),
            },
            &mut out,
        );
        let rendered = rendered.map(drop);
        limits::break_cycles(&self.env);
        if out.overflowed() {
            return Err(TemplateError::new(format!(
                "the chat template's output exceeds {max_output} bytes"
            )));
        }
        rendered.map_err(|e| TemplateError::with("the chat template failed to render", e))?;
        out.into_string()
            .map_err(|e| TemplateError::with("the chat template wrote invalid UTF-8", e))
    }
}

/// Tokenizes a rendered chat prompt: special tokens are parsed, and BOS is
/// added only if the vocabulary wants it and the template did not already
/// write it.
pub fn tokenize_prompt(tok: &Tokenizer, rendered: &str) -> Result<Vec<u32>> {
    let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
    let template_wrote_bos = !bos_text.is_empty() && rendered.starts_with(bos_text);
    let add = tok.add_bos() && !template_wrote_bos;
    tok.encode(rendered, add, true)
        .map_err(|e| TemplateError::with("cannot tokenize the rendered chat prompt", e))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Python's `strftime` for a Unix time in UTC, with the directives chat
/// templates use: `%d %e %m %y %Y %b %B %a %A %j %H %I %M %S %p %%`.
/// Another directive is an error naming it (not printed as is).
/// Hand-written: a dozen lines of calendar arithmetic (days-from-civil,
/// proleptic Gregorian) instead of a date crate for one function.
fn strftime(fmt: &str, secs: i64) -> std::result::Result<String, String> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const BEFORE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = BEFORE[(m - 1) as usize] + d + i64::from(leap && m > 2);
    // 1 Jan 1970 was a Thursday.
    let wday = (days + 4).rem_euclid(7) as usize;
    let month = MONTHS[(m - 1) as usize];
    let (h, min, sec) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('Y') => out.push_str(&y.to_string()),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('I') => out.push_str(&format!("{:02}", (h + 11) % 12 + 1)),
            Some('M') => out.push_str(&format!("{min:02}")),
            Some('S') => out.push_str(&format!("{sec:02}")),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(format!(
                    "strftime_now: the directive %{other} is not supported (supported: \
                     %d %e %m %y %Y %b %B %a %A %j %H %I %M %S %p %%)"
                ))
            }
            None => return Err("strftime_now: the format ends with a lone %".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
        message['content'].strip() + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}\
        {{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn renders_chatml() {
        let t = ChatTemplate::new(CHATML.into(), "<s>".into(), "</s>".into()).unwrap();
        let out = t.render(&[Message::new("user", " hi ")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn block_tags_trim_their_line_as_transformers_does() {
        // Zephyr's (TinyLlama's) template: a newline after every block tag
        // and indented tags, which trim_blocks and lstrip_blocks remove.
        let src = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n\
            {{ '<|user|>\n' + message['content'] + eos_token }}\n    {% endif %}\n\
            {% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n\
            {% endfor %}";
        let t = ChatTemplate::new(src.into(), "<s>".into(), "</s>".into()).unwrap();
        let out = t.render(&[Message::new("user", "hi")], true).unwrap();
        // What transformers' apply_chat_template renders.
        assert_eq!(out, "<|user|>\nhi</s>\n<|assistant|>\n");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let src = "{{ raise_exception('only user and assistant roles') }}";
        let t = ChatTemplate::new(src.into(), String::new(), String::new()).unwrap();
        let e = t.render(&[], true).unwrap_err().full_message();
        assert!(e.contains("only user and assistant roles"), "{e}");
    }

    #[test]
    fn chat_template_is_a_file_a_name_or_jinja_text() {
        use std::path::Path;
        let dir = std::env::temp_dir().join(format!("cria-prompt-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.jinja");
        std::fs::write(&file, CHATML).unwrap();
        assert_eq!(ChatTemplate::resolve(&file).unwrap(), CHATML);
        assert_eq!(
            ChatTemplate::resolve(Path::new("llama3")).unwrap(),
            builtin::source("llama3").unwrap()
        );
        assert_eq!(
            ChatTemplate::resolve(Path::new("{{ messages[0].content }}")).unwrap(),
            "{{ messages[0].content }}"
        );
        let e = ChatTemplate::resolve(Path::new("llama-3"))
            .unwrap_err()
            .full_message();
        assert!(
            e.contains("\"llama-3\"") && e.contains("chatml, llama2,"),
            "{e}"
        );
        // A folder is there but cannot be read as a template.
        let e = ChatTemplate::resolve(&dir).unwrap_err().full_message();
        assert!(e.contains("cannot read chat template"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates() {
        assert_eq!(strftime("%d %b %Y", 0).unwrap(), "01 Jan 1970");
        assert_eq!(strftime("%d %b %Y", 1_795_737_600).unwrap(), "27 Nov 2026");
        // 29 Feb 2024 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(
            strftime("%A %a %B %b %e|%d/%m/%y %j %H:%M:%S %I%p %%", t).unwrap(),
            "Thursday Thu February Feb 29|29/02/24 060 13:05:09 01PM %"
        );
        assert_eq!(strftime("%b %d %Y", t).unwrap(), "Feb 29 2024");
        assert!(strftime("%Z", t).unwrap_err().contains("%Z"));
        assert!(strftime("50%", t).is_err());
    }

    #[test]
    fn thinking_is_on_unless_turned_off() {
        let src = "{% if enable_thinking %}on{% else %}off{% endif %}";
        let t = ChatTemplate::new(src.into(), String::new(), String::new()).unwrap();
        assert_eq!(t.render(&[], true).unwrap(), "on");
        let t = t.with_thinking(false).unwrap();
        assert_eq!(t.render(&[], true).unwrap(), "off");
        assert_eq!(
            t.with_thinking(true).unwrap().render(&[], true).unwrap(),
            "on"
        );
    }

    #[test]
    fn templates_see_todays_date() {
        let src = "{{ date_string }}|{{ datetime }}|{{ strftime_now('%Y') }}";
        let t = ChatTemplate::new(src.into(), String::new(), String::new()).unwrap();
        let out = t.render(&[], false).unwrap();
        let now = now_secs();
        let want = format!(
            "{}|{}|{}",
            strftime("%d %b %Y", now).unwrap(),
            strftime("%b %d %Y", now).unwrap(),
            strftime("%Y", now).unwrap()
        );
        assert_eq!(out, want);
    }
}

#[cfg(test)]
mod tool_tests {
    use super::*;

    /// A Hermes-style template sees `tools`, an assistant's `tool_calls`
    /// (arguments as an object) and a tool result's `tool_call_id`.
    #[test]
    fn tools_and_calls_reach_the_template() {
        let src = "{%- if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}\
            {% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}\
            <tool_call>{{ c.function.name }} {{ c.function.arguments.city }}</tool_call>{% endfor %}\
            {% else %}{{ m.content }}{% if m.tool_call_id %} ({{ m.tool_call_id }}){% endif %}{% endif %}<|im_end|>\n{% endfor %}";
        let t = ChatTemplate::new(src.into(), String::new(), String::new()).unwrap();
        let mut call = Message::new("assistant", "");
        call.tool_calls = Some(serde_json::json!([
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
        ]));
        let mut result = Message::new("tool", "18C");
        result.tool_call_id = Some("call_1".into());
        let msgs = [Message::new("user", "Weather?"), call, result];
        let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather"}}]);
        let out = t.render_with_tools(&msgs, Some(&tools), false).unwrap();
        assert!(
            out.contains(r#"Tools: [{"function":{"name":"get_weather"},"type":"function"}]"#)
                || out.contains("\"name\":\"get_weather\""),
            "{out}"
        );
        assert!(
            out.contains("<tool_call>get_weather Oslo</tool_call>"),
            "{out}"
        );
        assert!(out.contains("18C (call_1)"), "{out}");
        // Without tools the same template renders no tool block.
        let plain = t.render(&msgs[..1], false).unwrap();
        assert!(!plain.contains("Tools:"), "{plain}");
    }
}
