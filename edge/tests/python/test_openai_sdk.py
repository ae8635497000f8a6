"""The official OpenAI Python SDK against a Tollgate edge.

Run by edge/tests/openai_sdk.rs, which starts a control plane, an edge and a fake OpenAI
upstream, and passes:
  TOLLGATE_BASE_URL        the edge's OpenAI base URL, e.g. http://127.0.0.1:PORT/v1
  TOLLGATE_KEY             a virtual key allowed every model
  TOLLGATE_UPSTREAM_SECRET the upstream's API key, which no answer may reveal
Models: gpt-test and embed-test (answered by the fake), fail-500, fail-429, fail-400 and
cut-stream (failing on command). Plain asserts; one line per check; exit status 0 when all pass.
"""

import json
import os

import sdk_check
from sdk_check import check, require

openai = require("openai")

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
KEY = os.environ["TOLLGATE_KEY"]
UPSTREAM_SECRET = os.environ.get("TOLLGATE_UPSTREAM_SECRET", "sk-upstream-123")

# What the fake upstream answers (test-support/src/openai_upstream.rs).
ANSWER = "Hello from the fake upstream."
QUESTION = [{"role": "user", "content": "Say hello to the gateway"}]
PROMPT_TOKENS = 5 + 3
COMPLETION_TOKENS = 5

client = openai.OpenAI(base_url=BASE_URL, api_key=KEY)
strict = openai.OpenAI(base_url=BASE_URL, api_key=KEY, max_retries=0)
def no_secret(what, text):
    assert UPSTREAM_SECRET not in text, f"{what} reveals the upstream API key: {text}"


def raises(error_type, call):
    """Runs `call`, which must raise `error_type`; returns the error."""
    try:
        call()
    except error_type as e:
        if isinstance(e, openai.APIStatusError):
            no_secret(type(e).__name__, e.response.text)
        no_secret(type(e).__name__, str(e))
        return e
    except Exception as e:  # noqa: BLE001 - report what was raised instead
        raise AssertionError(f"expected {error_type.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {error_type.__name__}, nothing was raised")


def chat_error(error_type, model):
    """Asks `model` without retries, which must raise `error_type`; returns the error."""
    return raises(
        error_type, lambda: strict.chat.completions.create(model=model, messages=QUESTION)
    )


# --- chat completion ---------------------------------------------------------------------------
raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=QUESTION)
for header in ("x-request-id", "x-tollgate-deployment", "x-tollgate-cost-usd"):
    assert raw.headers.get(header), f"missing response header {header}"
response = raw.parse()
no_secret("chat completion", response.model_dump_json())
assert response.object == "chat.completion", response
assert response.choices[0].message.role == "assistant"
assert response.choices[0].message.content == ANSWER, response.choices[0].message
assert response.choices[0].finish_reason == "stop"
assert response.usage.prompt_tokens == PROMPT_TOKENS, response.usage
assert response.usage.completion_tokens == COMPLETION_TOKENS, response.usage
assert response.usage.total_tokens == PROMPT_TOKENS + COMPLETION_TOKENS, response.usage
assert response.usage.prompt_tokens_details.cached_tokens == 0, response.usage
check("chat completion: content and usage")

# --- pass-through parameters -------------------------------------------------------------------
response = client.chat.completions.create(
    model="gpt-test",
    messages=QUESTION,
    n=2,
    stop=["\n\n"],
    logprobs=False,
    user="sdk-test-user",
    response_format={"type": "json_object"},
)
assert len(response.choices) == 2, response.choices
assert [c.index for c in response.choices] == [0, 1]
assert isinstance(json.loads(response.choices[0].message.content), dict), response.choices[0]
check("chat completion: n, stop, logprobs, user and response_format pass through")

# --- streaming with usage ----------------------------------------------------------------------
chunks = list(
    client.chat.completions.create(
        model="gpt-test", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
)
for chunk in chunks:
    no_secret("stream chunk", chunk.model_dump_json())
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == ANSWER, text
assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
last = chunks[-1]
assert last.choices == [], last
assert last.usage is not None, last
assert last.usage.prompt_tokens == PROMPT_TOKENS, last.usage
assert last.usage.completion_tokens == COMPLETION_TOKENS, last.usage
assert all(c.usage is None for c in chunks[:-1]), "usage before the last chunk"
assert chunks[-2].choices[0].finish_reason == "stop", chunks[-2]
check(f"streaming with include_usage: {len(chunks)} chunks, usage last with no choices")

# --- streaming without usage -------------------------------------------------------------------
chunks = list(client.chat.completions.create(model="gpt-test", messages=QUESTION, stream=True))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == ANSWER, text
assert all(c.usage is None for c in chunks), [c for c in chunks if c.usage is not None]
assert all(c.choices for c in chunks), "a chunk without choices was relayed"
assert chunks[-1].choices[0].finish_reason == "stop", chunks[-1]
check(f"streaming without include_usage: {len(chunks)} chunks, none with usage")

# --- tool calls --------------------------------------------------------------------------------
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    }
]
messages = [{"role": "user", "content": "What is the weather in Paris?"}]
response = client.chat.completions.create(model="gpt-test", messages=messages, tools=tools)
choice = response.choices[0]
assert choice.finish_reason == "tool_calls", choice
assert choice.message.content is None, choice.message
call = choice.message.tool_calls[0]
assert call.type == "function" and call.function.name == "get_weather", call
assert json.loads(call.function.arguments) == {"location": "Paris"}, call.function.arguments
check("tool calls: the model asks for get_weather")

messages.append(choice.message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": call.id, "content": "22 degrees and sunny"})
response = client.chat.completions.create(model="gpt-test", messages=messages, tools=tools)
assert response.choices[0].finish_reason == "stop", response.choices[0]
assert "22 degrees and sunny" in response.choices[0].message.content, response.choices[0]
check("tool calls: the tool result goes back and text comes out")

stream = client.chat.completions.create(
    model="gpt-test", messages=messages[:1], tools=tools, stream=True
)
arguments, name, finish = "", None, None
for chunk in stream:
    for delta_call in chunk.choices[0].delta.tool_calls or []:
        assert delta_call.index == 0, delta_call
        name = delta_call.function.name or name
        arguments += delta_call.function.arguments or ""
    finish = chunk.choices[0].finish_reason or finish
assert (name, finish) == ("get_weather", "tool_calls"), (name, finish)
assert json.loads(arguments) == {"location": "Paris"}, arguments
check("tool calls: streamed as deltas")

# --- embeddings --------------------------------------------------------------------------------
inputs = ["the first text", "a second one", "third"]
response = client.embeddings.create(model="embed-test", input=inputs)  # base64 on the wire
no_secret("embeddings", response.model_dump_json())
assert len(response.data) == len(inputs), response.data
for i, item in enumerate(response.data):
    assert item.index == i, item
    assert item.embedding == [i + j / 8 for j in range(8)], item.embedding
assert response.usage.prompt_tokens == 7, response.usage
check("embeddings: one decoded vector per input")

response = client.embeddings.create(model="embed-test", input="just one", encoding_format="float")
assert len(response.data) == 1 and response.data[0].embedding == [j / 8 for j in range(8)]
check("embeddings: a single input as floats")

# --- models ------------------------------------------------------------------------------------
ids = [model.id for model in client.models.list()]
assert "gpt-test" in ids and "embed-test" in ids, ids
check(f"models.list: {ids}")

# --- errors ------------------------------------------------------------------------------------
wrong = openai.OpenAI(base_url=BASE_URL, api_key="tg-not-a-real-key", max_retries=0)
e = raises(openai.AuthenticationError, lambda: wrong.models.list())
assert e.status_code == 401 and e.code == "invalid_api_key", (e.status_code, e.code)
e = raises(
    openai.AuthenticationError,
    lambda: wrong.chat.completions.create(model="gpt-test", messages=QUESTION),
)
assert e.status_code == 401 and e.code == "invalid_api_key", (e.status_code, e.code)
check("a wrong key: AuthenticationError, invalid_api_key")

e = chat_error(openai.NotFoundError, "no-such-model")
assert e.code == "model_not_found", e.code
check("an unknown model: NotFoundError, model_not_found")

e = chat_error(openai.RateLimitError, "fail-429")
assert e.status_code == 429, e.status_code
assert e.response.headers.get("retry-after") == "7", dict(e.response.headers)
check("an upstream 429: RateLimitError with retry-after")

e = chat_error(openai.InternalServerError, "fail-500")
assert e.status_code == 502 and e.code == "upstream_error", (e.status_code, e.code)
check("an upstream 500: InternalServerError, 502 upstream_error")

e = chat_error(openai.BadRequestError, "fail-400")
assert e.status_code == 400 and "bad things in request" in e.message, e.message
check("an upstream 400: BadRequestError with the upstream's message")

e = raises(
    openai.BadRequestError,
    lambda: strict.embeddings.create(model="fail-400", input="x"),
)
check("an upstream 400 on embeddings: BadRequestError")


def read_cut_stream():
    return list(
        strict.chat.completions.create(model="cut-stream", messages=QUESTION, stream=True)
    )


e = raises(openai.APIError, read_cut_stream)
assert not isinstance(e, openai.APIStatusError), e
check(f"a stream cut by the upstream: APIError ({e.message})")

print(f"{sdk_check.passed} passed, 0 failed")
