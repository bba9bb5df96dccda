//! llama.cpp's built-in chat templates by name (`--chat-template llama3`,
//! as llama-server and llama-cli take them): each is written here as a
//! Jinja template that renders exactly what llama.cpp's hand-written C++
//! formatter (`llm_chat_apply_template` in its src/llama-chat.cpp) writes
//! for that name, so that the one rendering path (minijinja, with the
//! bounds of [`crate::Limits`]) serves them too. The unit tests compare
//! every name with llama.cpp's own output (tests/fixtures/README.md).
//!
//! Like llama.cpp's formatter, these see only each message's role and text
//! (no tools); `llama_trim` trims what C's `isspace` calls space, as
//! llama.cpp's `trim` does.

/// The names, in llama.cpp's order (its `LLM_CHAT_TEMPLATES`), that cria
/// knows; the others of llama.cpp's list are refused with this list.
pub const NAMES: &[&str] = &[
    "chatml",
    "llama2",
    "llama2-sys",
    "llama2-sys-bos",
    "llama2-sys-strip",
    "mistral-v1",
    "mistral-v3",
    "mistral-v3-tekken",
    "mistral-v7",
    "mistral-v7-tekken",
    "phi3",
    "phi4",
    "falcon3",
    "zephyr",
    "monarch",
    "gemma",
    "orion",
    "openchat",
    "vicuna",
    "vicuna-orca",
    "deepseek",
    "deepseek2",
    "deepseek3",
    "command-r",
    "llama3",
    "chatglm3",
    "chatglm4",
    "glmedge",
    "minicpm",
    "exaone3",
    "granite",
    "granite-4.0",
    "granite-4.1",
    "gigachat",
    "megrez",
    "yandex",
    "bailing",
    "bailing-think",
    "llama4",
];

/// llama.cpp's llama2 family: `[INST]` turns, the system prompt in
/// `<<SYS>>` or (plain llama2) as a line of the first turn.
const LLAMA2: &str = "{% set ns = namespace(inside=true) %}[INST] {% for m in messages %}\
{% set c = @CONTENT@ %}\
{% if not ns.inside %}{% set ns.inside = true %}@REOPEN@{% endif %}\
{% if m.role == 'system' %}@SYSTEM@\
{% elif m.role == 'user' %}{{ c }} [/INST]\
{% else %}{{ c }}</s>{% set ns.inside = false %}{% endif %}{% endfor %}";

/// Mistral v1/v3/v3-tekken: `@L@` leads `[INST]` and `[/INST]`, `@T@`
/// follows `[INST]` and leads the answer.
const MISTRAL: &str = "{% set ns = namespace(inside=false) %}{% for m in messages %}\
{% if not ns.inside %}@L@[INST]@T@{% set ns.inside = true %}{% endif %}\
{% if m.role == 'system' %}{{ m.content }}\n\n\
{% elif m.role == 'user' %}{{ m.content }}@L@[/INST]\
{% else %}@T@{{ @ANSWER@ }}</s>{% set ns.inside = false %}{% endif %}{% endfor %}";

const MISTRAL_V7: &str = "{% for m in messages %}\
{% if m.role == 'system' %}[SYSTEM_PROMPT]@S@{{ m.content }}[/SYSTEM_PROMPT]\
{% elif m.role == 'user' %}[INST]@S@{{ m.content }}[/INST]\
{% else %}@S@{{ m.content }}</s>{% endif %}{% endfor %}";

/// Every message as PRE role MID content POST, then GEN if asked.
fn each(pre: &str, mid: &str, post: &str, generation: &str) -> String {
    format!(
        "{{% for m in messages %}}{pre}{{{{ m.role }}}}{mid}{{{{ m.content }}}}{post}{{% endfor %}}\
         {{% if add_generation_prompt %}}{generation}{{% endif %}}"
    )
}

/// Messages by role (system, user, assistant; other roles are left out,
/// as llama.cpp does for these), each `{{ c }}` being the content
/// (trimmed if `trim`), then GEN if asked.
fn by_role(trim: bool, system: &str, user: &str, assistant: &str, generation: &str) -> String {
    let c = if trim {
        "m.content|llama_trim"
    } else {
        "m.content"
    };
    let body = |s: &str| s.replace("{{ c }}", &format!("{{{{ {c} }}}}"));
    format!(
        "{{% for m in messages %}}{{% if m.role == 'system' %}}{}{{% elif m.role == 'user' %}}{}\
         {{% elif m.role == 'assistant' %}}{}{{% endif %}}{{% endfor %}}\
         {{% if add_generation_prompt %}}{generation}{{% endif %}}",
        body(system),
        body(user),
        body(assistant)
    )
}

/// The Jinja source of the built-in template `name`, `None` for a name
/// cria does not know.
pub fn source(name: &str) -> Option<String> {
    let llama2 = |system: &str, reopen: &str, strip: bool| {
        LLAMA2
            .replace("@SYSTEM@", system)
            .replace("@REOPEN@", reopen)
            .replace(
                "@CONTENT@",
                if strip {
                    "m.content|llama_trim"
                } else {
                    "m.content"
                },
            )
    };
    let sys_block = "<<SYS>>\n{{ c }}\n<</SYS>>\n\n";
    let mistral = |lead: &str, trail: &str, trim_answer: bool| {
        MISTRAL.replace("@L@", lead).replace("@T@", trail).replace(
            "@ANSWER@",
            if trim_answer {
                "m.content|llama_trim"
            } else {
                "m.content"
            },
        )
    };
    let granite4 = "{% for m in messages %}{% if m.role == 'assistant_tool_call' %}\
        <|start_of_role|>assistant<|end_of_role|><|tool_call|>{% else %}\
        <|start_of_role|>{{ m.role }}<|end_of_role|>{% endif %}{{ m.content }}<|end_of_text|>\n\
        {% endfor %}{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}";
    let bailing = |think: &str| {
        format!(
            "{{% for m in messages %}}<role>{{{{ 'HUMAN' if m.role == 'user' else m.role|upper }}}}</role>\
             {{{{ m.content }}}}{{% endfor %}}{{% if add_generation_prompt %}}<role>ASSISTANT</role>{think}{{% endif %}}"
        )
    };
    let s = match name {
        "chatml" => each(
            "<|im_start|>",
            "\n",
            "<|im_end|>\n",
            "<|im_start|>assistant\n",
        ),
        "llama2" => llama2("{{ c }}\n", "[INST] ", false),
        "llama2-sys" => llama2(sys_block, "[INST] ", false),
        "llama2-sys-bos" => llama2(sys_block, "<s>[INST] ", false),
        "llama2-sys-strip" => llama2(sys_block, "[INST] ", true),
        "mistral-v1" => mistral(" ", " ", false),
        "mistral-v3" => mistral("", " ", true),
        "mistral-v3-tekken" => mistral("", "", false),
        "mistral-v7" => MISTRAL_V7.replace("@S@", " "),
        "mistral-v7-tekken" => MISTRAL_V7.replace("@S@", ""),
        "phi3" => each("<|", "|>\n", "<|end|>\n", "<|assistant|>\n"),
        "phi4" => each(
            "<|im_start|>",
            "<|im_sep|>",
            "<|im_end|>",
            "<|im_start|>assistant<|im_sep|>",
        ),
        "falcon3" => each("<|", "|>\n", "\n", "<|assistant|>\n"),
        "zephyr" => each("<|", "|>\n", "<|endoftext|>\n", "<|assistant|>\n"),
        "monarch" => "{% for m in messages %}{% if not loop.first %}<s>{% endif %}{{ m.role }}\n\
            {{ m.content }}</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}"
            .into(),
        // No system turn: the system text opens the next user turn.
        "gemma" => "{% set ns = namespace(sys='') %}{% for m in messages %}\
            {% if m.role == 'system' %}{% set ns.sys = ns.sys ~ (m.content|llama_trim) %}{% else %}\
            {% set role = 'model' if m.role == 'assistant' else m.role %}<start_of_turn>{{ role }}\n\
            {% if ns.sys and role != 'model' %}{{ ns.sys }}\n\n{% set ns.sys = '' %}{% endif %}\
            {{ m.content|llama_trim }}<end_of_turn>\n{% endif %}{% endfor %}\
            {% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
            .into(),
        "orion" => "{% set ns = namespace(sys='') %}{% for m in messages %}\
            {% if m.role == 'system' %}{% set ns.sys = ns.sys ~ m.content %}\
            {% elif m.role == 'user' %}Human: {% if ns.sys %}{{ ns.sys }}\n\n{% set ns.sys = '' %}{% endif %}\
            {{ m.content }}\n\nAssistant: </s>{% else %}{{ m.content }}</s>{% endif %}{% endfor %}"
            .into(),
        "openchat" => "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}<|end_of_turn|>\
            {% else %}GPT4 Correct {{ m.role[:1]|upper }}{{ m.role[1:] }}: {{ m.content }}<|end_of_turn|>\
            {% endif %}{% endfor %}{% if add_generation_prompt %}GPT4 Correct Assistant:{% endif %}"
            .into(),
        "vicuna" => by_role(
            false,
            "{{ c }}\n\n",
            "USER: {{ c }}\n",
            "ASSISTANT: {{ c }}</s>\n",
            "ASSISTANT:",
        ),
        "vicuna-orca" => by_role(
            false,
            "SYSTEM: {{ c }}\n",
            "USER: {{ c }}\n",
            "ASSISTANT: {{ c }}</s>\n",
            "ASSISTANT:",
        ),
        "deepseek" => by_role(
            false,
            "{{ c }}",
            "### Instruction:\n{{ c }}\n",
            "### Response:\n{{ c }}\n<|EOT|>\n",
            "### Response:\n",
        ),
        "deepseek2" => by_role(
            false,
            "{{ c }}\n\n",
            "User: {{ c }}\n\n",
            "Assistant: {{ c }}<｜end▁of▁sentence｜>",
            "Assistant:",
        ),
        "deepseek3" => by_role(
            false,
            "{{ c }}\n\n",
            "<｜User｜>{{ c }}",
            "<｜Assistant｜>{{ c }}<｜end▁of▁sentence｜>",
            "<｜Assistant｜>",
        ),
        "command-r" => by_role(
            true,
            "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{ c }}<|END_OF_TURN_TOKEN|>",
            "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{ c }}<|END_OF_TURN_TOKEN|>",
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{{ c }}<|END_OF_TURN_TOKEN|>",
            "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
        ),
        "llama3" => "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n\
            {{ m.content|llama_trim }}<|eot_id|>{% endfor %}\
            {% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
            .into(),
        "chatglm3" => format!("[gMASK]sop{}", each("<|", "|>\n ", "", "<|assistant|>")),
        "chatglm4" => format!("[gMASK]<sop>{}", each("<|", "|>\n", "", "<|assistant|>\n")),
        "glmedge" => each("<|", "|>\n", "", "<|assistant|>"),
        "minicpm" => "{% for m in messages %}{% if m.role == 'user' %}<用户>{{ m.content|llama_trim }}<AI>\
            {% else %}{{ m.content|llama_trim }}{% endif %}{% endfor %}"
            .into(),
        "exaone3" => by_role(
            true,
            "[|system|]{{ c }}[|endofturn|]\n",
            "[|user|]{{ c }}\n",
            "[|assistant|]{{ c }}[|endofturn|]\n",
            "[|assistant|]",
        ),
        "granite" => "{% for m in messages %}<|start_of_role|>{{ m.role }}<|end_of_role|>\
            {% if m.role == 'assistant_tool_call' %}<|tool_call|>{% endif %}{{ m.content }}<|end_of_text|>\n\
            {% endfor %}{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
            .into(),
        "granite-4.0" | "granite-4.1" => granite4.into(),
        "gigachat" => "{% set has_sys = messages|length > 0 and messages[0].role == 'system' %}<s>\
            {% if has_sys %}{{ messages[0].content }}<|message_sep|>{% endif %}\
            {% for m in messages %}{% if not (loop.first and has_sys) %}\
            {% if m.role == 'user' %}user<|role_sep|>{{ m.content }}<|message_sep|>available functions<|role_sep|>[]<|message_sep|>\
            {% elif m.role == 'assistant' %}assistant<|role_sep|>{{ m.content }}<|message_sep|>{% endif %}\
            {% endif %}{% endfor %}{% if add_generation_prompt %}assistant<|role_sep|>{% endif %}"
            .into(),
        "megrez" => each(
            "<|role_start|>",
            "<|role_end|>",
            "<|turn_end|>",
            "<|role_start|>assistant<|role_end|>",
        ),
        "yandex" => "{% for m in messages %}{% if m.role == 'user' %} Пользователь: {{ m.content }}\n\n\
            {% elif m.role == 'assistant' %} Ассистент: {{ m.content }}\n\n{% endif %}{% endfor %}\
            {% if add_generation_prompt %} Ассистент:[SEP]{% endif %}"
            .into(),
        "bailing" => bailing(""),
        "bailing-think" => bailing("<think>"),
        "llama4" => "{% for m in messages %}<|header_start|>{{ m.role }}<|header_end|>\n\n\
            {{ m.content|llama_trim }}<|eot|>{% endfor %}\
            {% if add_generation_prompt %}<|header_start|>assistant<|header_end|>\n\n{% endif %}"
            .into(),
        _ => return None,
    };
    Some(s)
}

/// C's `isspace` trim, as llama.cpp's `trim` (Jinja's `trim` also strips
/// Unicode spaces).
pub(crate) fn llama_trim(s: String) -> String {
    s.trim_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatTemplate, Message};

    /// llama.cpp's output for each name (see tests/fixtures/README.md).
    const GOLDEN: &str =
        include_str!("../../../tests/fixtures/chat-templates/llama-cpp-builtin.json");

    #[test]
    fn every_name_renders_what_llama_cpp_renders() {
        let golden: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
        let cases = golden["cases"].as_array().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for case in cases {
            let name = case["template"].as_str().unwrap();
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                .collect();
            let add = case["add_generation_prompt"].as_bool().unwrap();
            let src = source(name).unwrap_or_else(|| panic!("{name}: not built in"));
            let t = ChatTemplate::new(src, "<s>".into(), "</s>".into()).unwrap();
            let out = t.render(&messages, add).unwrap();
            assert_eq!(
                out,
                case["expected"].as_str().unwrap(),
                "{name} (add_generation_prompt {add})"
            );
            seen.insert(name.to_string());
        }
        for name in NAMES {
            assert!(seen.contains(*name), "{name} has no golden");
        }
    }

    #[test]
    fn unknown_names_have_no_source() {
        assert!(source("llama-3").is_none());
        assert!(source("").is_none());
    }

    #[test]
    fn trim_is_c_isspace() {
        assert_eq!(llama_trim(" \t\n\x0b\x0c\r a b \r\n".into()), "a b");
        // A no-break space is not C's space.
        assert_eq!(llama_trim("\u{a0}a\u{a0}".into()), "\u{a0}a\u{a0}");
    }
}
