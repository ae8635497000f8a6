"""Anthropic's Python SDK against a Tollgate edge's Messages API: plain, streaming, a tool-use
round trip (plain and streamed), count_tokens, and errors, on models served by different
provider kinds.

Run by edge/tests/anthropic_surface.rs, which passes:
  TOLLGATE_BASE_URL   the edge's root URL (the SDK adds /v1/messages)
  TOLLGATE_KEY        a virtual key allowed every model
  TOLLGATE_MODELS     model=answer pairs, comma-separated: each model is served by a different
                      provider kind, and answers that text
Plain asserts; one line per check; exit status 0 when all pass.
"""

import os

import sdk_check
from sdk_check import TOOL_DESCRIPTION, TOOL_INPUT, TOOL_NAME, TOOL_PARAMETERS, check, models, require

anthropic = require("anthropic")

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
KEY = os.environ["TOLLGATE_KEY"]
MODELS = models()
TOOLS = [{"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_PARAMETERS}]
QUESTION = [{"role": "user", "content": "Say hello to the gateway"}]

client = anthropic.Anthropic(base_url=BASE_URL, api_key=KEY, max_retries=0)
def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


def plain(model, answer):
    message = client.messages.create(
        model=model,
        max_tokens=64,
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=QUESTION,
    )
    assert message.type == "message" and message.role == "assistant", message
    assert text_of(message) == answer, message
    assert message.stop_reason == "end_turn", message
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage
    check(f"messages.create {model}")


def streaming(model, answer):
    with client.messages.stream(model=model, max_tokens=64, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == answer, text
    assert final.stop_reason == "end_turn", final
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0, final.usage
    check(f"messages.stream {model}")


def tool_round_trip(model):
    first = client.messages.create(model=model, max_tokens=64, tools=TOOLS, messages=QUESTION)
    assert first.stop_reason == "tool_use", first
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].input == TOOL_INPUT, first
    messages = QUESTION + [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "clear skies"}],
        },
    ]
    second = client.messages.create(model=model, max_tokens=64, tools=TOOLS, messages=messages)
    assert text_of(second).startswith("The tool said:") and "clear skies" in text_of(second), second
    check(f"tool use round trip {model}")

    with client.messages.stream(model=model, max_tokens=64, tools=TOOLS, messages=QUESTION) as stream:
        final = stream.get_final_message()
    uses = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use" and uses[0].input == TOOL_INPUT, final
    check(f"streamed tool use {model}")


def count_tokens(model):
    counted = client.messages.count_tokens(model=model, messages=QUESTION, tools=TOOLS)
    assert counted.input_tokens > 0, counted
    check(f"messages.count_tokens {model}")


for model, answer in MODELS.items():
    plain(model, answer)
    streaming(model, answer)
    tool_round_trip(model)
    count_tokens(model)

model, answer = next(iter(MODELS.items()))
bearer = anthropic.Anthropic(base_url=BASE_URL, auth_token=KEY, max_retries=0)
assert text_of(bearer.messages.create(model=model, max_tokens=64, messages=QUESTION)) == answer
check("a bearer token (auth_token) is accepted")

try:
    client.messages.create(model="no-such-model", max_tokens=64, messages=QUESTION)
    raise AssertionError("an unknown model was answered")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
check("an unknown model is a not_found_error")

try:
    anthropic.Anthropic(base_url=BASE_URL, api_key="tg-wrong", max_retries=0).messages.create(
        model=model, max_tokens=64, messages=QUESTION
    )
    raise AssertionError("a wrong key was accepted")
except anthropic.AuthenticationError as e:
    assert e.body["type"] == "error" and e.body["error"]["type"] == "authentication_error", e.body
check("a wrong key is an authentication_error")

try:
    client.messages.create(
        model=model, max_tokens=64, messages=QUESTION, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    raise AssertionError("extended thinking was accepted")
except anthropic.BadRequestError as e:
    assert "thinking" in e.body["error"]["message"], e.body
check("what the gateway cannot translate is an invalid_request_error naming it")

print(f"{sdk_check.passed} checks passed")
