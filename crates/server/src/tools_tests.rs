use super::*;

fn reading(format: Format) -> Reading {
    Reading {
        format,
        names: vec!["get_weather".into(), "add".into()],
    }
}

#[test]
fn formats_from_templates() {
    assert_eq!(Format::of("{{ '<tool_call>' }}"), Format::Hermes);
    assert_eq!(Format::of("{{ '<|python_tag|>' }}"), Format::Llama3);
    assert_eq!(Format::of("[TOOL_CALLS]"), Format::Mistral);
    assert_eq!(Format::of("<|im_start|>"), Format::Generic);
}

#[test]
fn replies_become_calls_only_in_the_formats_shape() {
    let (t, c) = read_reply(
        &reading(Format::Generic),
        r#"{"tool_calls": [{"name": "add", "arguments": {"a": 1}}]}"#,
    );
    assert_eq!(t, None);
    assert_eq!(
        c,
        vec![Call {
            name: "add".into(),
            arguments: r#"{"a":1}"#.into()
        }]
    );
    let (t, c) = read_reply(&reading(Format::Generic), r#"{"response": "hi {there}"}"#);
    assert_eq!((t.as_deref(), c.len()), (Some("hi {there}"), 0));
    let (t, c) = read_reply(
        &reading(Format::Hermes),
        "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
    );
    assert_eq!((t.as_deref(), c.len()), (Some("Sure."), 1));
    let (t, c) = read_reply(
        &reading(Format::Llama3),
        r#"<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}"#,
    );
    assert_eq!((t, c[0].name.as_str()), (None, "get_weather"));
    let (t, c) = read_reply(
        &reading(Format::Mistral),
        r#"[{"name": "add", "arguments": {"a": 1, "b": 2}}]"#,
    );
    assert_eq!((t, c.len()), (None, 1));
    // Text that merely contains braces, or a call of an unknown tool, or
    // a call embedded in prose, is text.
    for (f, s) in [
        (Format::Llama3, r#"Use {"name": "get_weather"} like this."#),
        (Format::Llama3, r#"{"name": "rm_rf", "parameters": {}}"#),
        (Format::Llama3, r#"{"name": "add", "parameters": "x"}"#),
        (Format::Mistral, r#"The list is [{"name": "add"}]"#),
        (Format::Hermes, "I would write <tool_call> tags here."),
        (Format::Hermes, "<tool_call>{not json}</tool_call>"),
        (
            Format::Generic,
            r#"{"tool_calls": [{"name": "nope", "arguments": {}}]}"#,
        ),
    ] {
        let (t, c) = read_reply(&reading(f), s);
        assert!(c.is_empty(), "{f:?} {s}");
        assert_eq!(t.as_deref(), Some(s));
    }
}

#[test]
fn request_fields_are_checked() {
    let tool = json!([{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]);
    let t = parse(Some(&tool), Some(&json!("required")), None)
        .unwrap()
        .unwrap();
    assert_eq!((t.choice.clone(), t.parallel), (Choice::Required, true));
    let named = json!({"type": "function", "function": {"name": "add"}});
    assert_eq!(
        parse(Some(&tool), Some(&named), Some(&json!(false)))
            .unwrap()
            .unwrap()
            .choice,
        Choice::Named("add".into())
    );
    for (tools, choice, param) in [
        (json!([{"type": "retrieval"}]), json!(null), "tools[0].type"),
        (
            json!([{"type": "function", "function": {"name": "a b"}}]),
            json!(null),
            "tools[0].function.name",
        ),
        (
            json!([{"type": "function", "function": {"name": "a", "parameters": 3}}]),
            json!(null),
            "tools[0].function.parameters",
        ),
        (
            tool.clone(),
            json!({"type": "function", "function": {"name": "sub"}}),
            "tool_choice.function.name",
        ),
        (tool.clone(), json!("sometimes"), "tool_choice"),
        (json!("add"), json!(null), "tools"),
    ] {
        let e = parse(Some(&tools), Some(&choice), None).expect_err(&tools.to_string());
        assert_eq!(e.param.as_deref(), Some(param), "{}", e.message);
    }
    assert!(parse(None, Some(&json!("required")), None).is_err());
    assert!(parse(None, Some(&json!("auto")), None).unwrap().is_none());
}

#[test]
fn ids_are_unique() {
    let a = call_id("chatcmpl-1", 0);
    let b = call_id("chatcmpl-1", 1);
    assert_ne!(a, b);
    assert!(a.starts_with("call_") && a.len() == 29, "{a}");
}
