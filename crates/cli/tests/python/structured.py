"""Structured output against a running `cria serve` (issue 13).

Run by crates/cli/tests/structured.rs with CRIA_URL set. For every schema
of a corpus that covers the supported keywords, several seeds at
temperature 1.5: a reply that ends ("stop") must parse and validate with
the `jsonschema` library plus strict format checks; a reply cut by
max_tokens must say "length". Then GBNF through llama.cpp's `grammar`
field, the cut-off case, determinism with a cached prefix and with
unconstrained traffic in the same batch, and the `openai` client's
`parse()` with a Pydantic model. Exits non-zero on any failure.
"""

import datetime
import json
import os
import re
import sys
import threading
import uuid

import jsonschema
import openai
import pydantic
from openai import OpenAI

URL = os.environ["CRIA_URL"]
SEEDS = int(os.environ.get("CRIA_STRUCTURED_SEEDS", "4"))
client = OpenAI(base_url=URL + "/v1", api_key="none")
model = client.models.list().data[0].id

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "format": "email"},
        },
        "required": ["name", "age", "email"],
        "additionalProperties": False,
    },
    "event": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "time"},
            "created": {"type": "string", "format": "date-time"},
        },
        "required": ["id", "day", "at", "created"],
        "additionalProperties": False,
    },
    "inventory": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {"$ref": "#/$defs/item"},
            },
            "status": {"enum": ["open", "closed", "café", "日本"]},
            "version": {"const": 2},
        },
        "required": ["items", "status", "version"],
        "additionalProperties": False,
        "$defs": {
            "item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                },
                "required": ["sku", "qty"],
                "additionalProperties": False,
            }
        },
    },
    "shapes": {
        "type": "object",
        "properties": {
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "circle"}, "r": {"type": "number", "minimum": 0}},
                        "required": ["kind", "r"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "square"}, "side": {"type": "integer"}},
                        "required": ["kind", "side"],
                        "additionalProperties": False,
                    },
                ]
            },
            "point": {
                "type": "array",
                "prefixItems": [{"type": "number"}, {"type": "number"}],
                "items": False,
            },
            "note": {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}]},
        },
        "required": ["shape", "point", "note"],
        "additionalProperties": False,
    },
    "allof": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer", "minimum": -5, "maximum": 5}}, "required": ["b"]},
        ],
        "additionalProperties": False,
        "properties": {"a": {"type": "boolean"}, "b": {"type": "integer"}},
    },
    "list": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 2, "maxItems": 4},
}

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIME = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?([zZ]|[+-]\d{2}:\d{2})$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def check_formats(schema_name, v):
    """Formats checked strictly here, whatever jsonschema's checker knows."""
    if schema_name == "person":
        assert EMAIL.match(v["email"]), v
    if schema_name == "event":
        uuid.UUID(v["id"])
        assert DATE.match(v["day"]), v
        datetime.date.fromisoformat(v["day"])
        assert TIME.match(v["at"]), v
        datetime.datetime.fromisoformat(v["created"].replace("z", "+00:00").replace("Z", "+00:00"))


def ask(schema_name, schema, seed, max_tokens=300):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Give me one {schema_name} as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema, "strict": True}},
        temperature=1.5,
        seed=seed,
        max_tokens=max_tokens,
    )
    return r.choices[0]


finished = cut = 0
for name, schema in SCHEMAS.items():
    jsonschema.Draft202012Validator.check_schema(schema)
    for seed in range(SEEDS):
        c = ask(name, schema, seed)
        text = c.message.content
        if c.finish_reason == "length":
            cut += 1
            continue
        assert c.finish_reason == "stop", (name, seed, c)
        try:
            v = json.loads(text)
        except ValueError as e:
            sys.exit(f"{name} seed {seed}: not JSON: {text!r}: {e}")
        jsonschema.validate(v, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        check_formats(name, v)
        finished += 1
total = len(SCHEMAS) * SEEDS
print(f"schemas: {finished} of {total} replies complete and valid, {cut} cut by max_tokens")
assert finished >= total * 3 // 4, "too many replies were cut off"

# json_object: any JSON object.
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Describe a cat."}],
    response_format={"type": "json_object"}, temperature=1.0, seed=5, max_tokens=200,
)
if r.choices[0].finish_reason == "stop":
    assert isinstance(json.loads(r.choices[0].message.content), dict), r

# A cut-off reply says "length" and is not a complete object.
long_schema = {"type": "object", "properties": {"essay": {"type": "string", "minLength": 200}}, "required": ["essay"]}
c = ask("essay", long_schema, 1, max_tokens=8)
assert c.finish_reason == "length", c
try:
    json.loads(c.message.content)
    sys.exit(f"a cut reply parsed as complete JSON: {c.message.content!r}")
except ValueError:
    pass

# GBNF through llama.cpp's `grammar` field, on plain completions.
import urllib.request


def post(path, body):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


yesno = 'root ::= ("yes" | "no") "." [ ] [a-z]{2,8}'
for seed in range(4):
    st, r = post("/v1/completions", {"prompt": "Is the sky blue? Answer:", "grammar": yesno, "temperature": 1.5, "seed": seed, "max_tokens": 40})
    assert st == 200, r
    text = r["choices"][0]["text"]
    assert re.fullmatch(r"(yes|no)\. [a-z]{2,8}", text), text
    assert r["choices"][0]["finish_reason"] == "stop", r

# Errors name what is wrong.
st, r = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "dependentSchemas": {"a": {}}}}}})
assert st == 400 and "dependentSchemas" in r["error"]["message"], r
st, r = post("/v1/completions", {"prompt": "x", "grammar": "root ::= missing"})
assert st == 400 and "missing" in r["error"]["message"] and r["error"]["param"] == "grammar", r

# Determinism: the same constrained request gives the same bytes with its
# prompt cached, and with unconstrained requests decoding in the same batch.
schema = SCHEMAS["person"]
first = ask("person", schema, 42).message.content
again = ask("person", schema, 42).message.content
assert first == again, (first, again)
results = {}


def noise(i):
    results[f"noise{i}"] = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Tell a story number {i}."}],
        temperature=1.0, seed=i, max_tokens=60,
    ).choices[0].message.content


threads = [threading.Thread(target=noise, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
batched = ask("person", schema, 42).message.content
for t in threads:
    t.join()
assert batched == first, (batched, first)

# The openai client's parse() with a Pydantic model.


class City(pydantic.BaseModel):
    name: str
    country: str
    population: int


r = client.chat.completions.parse(
    model=model,
    messages=[{"role": "user", "content": "Describe Paris as JSON."}],
    response_format=City,
    # A seed whose reply ends: an integer may run on, and seed 3 draws
    # digits until max_tokens since the draws became llama.cpp's (issue 16).
    temperature=0.7, seed=2, max_tokens=120,
)
msg = r.choices[0].message
assert r.choices[0].finish_reason == "stop", r
assert isinstance(msg.parsed, City), msg
print("parsed:", msg.parsed)

# Tools: a two-turn round trip with the real client, whole and streamed.
weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
clock = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
question = [{"role": "user", "content": "What is the weather in Paris?"}]
for stream in (False, True):
    kw = dict(model=model, messages=question, tools=[weather, clock], temperature=0.7, seed=11, max_tokens=120,
              tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=False)
    if stream:
        calls = {}
        finish = None
        for chunk in client.chat.completions.create(stream=True, **kw):
            for ch in chunk.choices:
                finish = ch.finish_reason or finish
                for d in ch.delta.tool_calls or []:
                    c = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                    c["id"] = d.id or c["id"]
                    if d.function and d.function.name:
                        c["name"] += d.function.name
                    if d.function and d.function.arguments:
                        c["arguments"] += d.function.arguments
        assert finish == "tool_calls", finish
        assert len(calls) == 1, calls
        call = calls[0]
        call_id, name, arguments = call["id"], call["name"], call["arguments"]
    else:
        r = client.chat.completions.create(**kw)
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls", ch
        assert len(ch.message.tool_calls) == 1, ch.message
        tc = ch.message.tool_calls[0]
        call_id, name, arguments = tc.id, tc.function.name, tc.function.arguments
    assert name == "get_weather", name
    args = json.loads(arguments)
    jsonschema.validate(args, weather["function"]["parameters"])
    assert call_id and call_id.startswith("call_"), call_id
    # Turn two: the tool's result goes back; the model answers in text.
    follow = question + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temperature": 18, "sky": "clear"})},
    ]
    kw2 = dict(model=model, messages=follow, tools=[weather, clock], tool_choice="none", temperature=0, max_tokens=60)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw2) if c.choices)
    else:
        text = client.chat.completions.create(**kw2).choices[0].message.content
    assert isinstance(text, str) and text.strip(), text
    print(f"tools (stream={stream}): {name}({arguments}) -> {text[:60]!r}")

# auto: the reply is either calls or text, never text parsed as a call.
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                   tools=[weather], temperature=0.7, seed=2, max_tokens=80)
ch = r.choices[0]
if ch.finish_reason == "tool_calls":
    for tc in ch.message.tool_calls:
        jsonschema.validate(json.loads(tc.function.arguments), weather["function"]["parameters"])
else:
    assert ch.finish_reason in ("stop", "length") and not ch.message.tool_calls, ch

print("all checks passed")
