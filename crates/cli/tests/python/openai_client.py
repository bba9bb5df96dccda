"""The official `openai` Python client against a running `cria serve`.

Run by crates/cli/tests/serve_openai.rs with CRIA_URL set to the server's
address; exits non-zero (an assertion) on any failure.
"""

import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["CRIA_URL"] + "/v1", api_key=os.environ.get("CRIA_KEY", "none"))

models = client.models.list()
model = models.data[0].id
assert model, models

# Chat, whole.
r = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "You are terse."},
              {"role": "user", "content": "What is 2 + 2?"}],
    max_tokens=16, temperature=0, seed=1,
)
assert r.object == "chat.completion", r
text = r.choices[0].message.content
assert isinstance(text, str) and text.strip(), r
assert r.choices[0].finish_reason in ("stop", "length"), r
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage

# Chat, streamed: same greedy text.
parts, finish, usage = [], None, None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "You are terse."},
              {"role": "user", "content": "What is 2 + 2?"}],
    max_tokens=16, temperature=0, seed=1, stream=True,
    stream_options={"include_usage": True},
):
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
assert "".join(parts) == text, ("".join(parts), text)
assert finish == r.choices[0].finish_reason
assert usage and usage.completion_tokens == r.usage.completion_tokens, usage

# Logprobs.
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Say yes."}],
    max_tokens=3, temperature=0, logprobs=True, top_logprobs=2,
)
lp = r.choices[0].logprobs.content
assert lp and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in lp), lp

# Completions, whole and streamed.
c = client.completions.create(model=model, prompt="The sky is", max_tokens=8, temperature=0)
assert c.choices[0].text, c
streamed = "".join(
    ch.choices[0].text for ch in client.completions.create(
        model=model, prompt="The sky is", max_tokens=8, temperature=0, stream=True)
    if ch.choices)
assert streamed == c.choices[0].text, (streamed, c.choices[0].text)

# Errors surface as the client's exception types.
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], n=17)
    raise AssertionError("n=17 accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "n", e.body
try:
    OpenAI(base_url=client.base_url, api_key="wrong").models.list()
    if os.environ.get("CRIA_KEY"):
        raise AssertionError("wrong key accepted")
except openai.AuthenticationError:
    pass

print("openai client: all checks passed")
