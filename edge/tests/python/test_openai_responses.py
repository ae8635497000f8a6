"""The official OpenAI Python SDK's Responses API (`client.responses.create`) against a Tollgate
edge: plain, streaming, and a function-call round trip, plain and streamed.

Run by edge/tests/openai_sdk.rs, which passes:
  TOLLGATE_BASE_URL   the edge's OpenAI base URL, e.g. http://127.0.0.1:PORT/v1
  TOLLGATE_KEY        a virtual key allowed every model
  TOLLGATE_MODELS     model=answer pairs, comma-separated
Plain asserts; one line per check; exit status 0 when all pass.
"""

import json
import os

import sdk_check
from sdk_check import TOOL_DESCRIPTION, TOOL_INPUT, TOOL_NAME, TOOL_PARAMETERS, check, models, require

openai = require("openai")

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
KEY = os.environ["TOLLGATE_KEY"]
MODELS = models()
TOOLS = [{"type": "function", "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": TOOL_PARAMETERS}]

client = openai.OpenAI(base_url=BASE_URL, api_key=KEY, max_retries=0)
for model, answer in MODELS.items():
    response = client.responses.create(
        model=model, instructions="Be brief.", input="Say hello to the gateway", store=False
    )
    assert response.object == "response" and response.status == "completed", response
    assert response.output_text == answer, response
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0, response.usage
    check(f"responses.create {model}")

    events = list(client.responses.create(model=model, input="Say hello to the gateway", stream=True))
    kinds = [e.type for e in events]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert text == answer and events[-1].response.output_text == answer, (text, events[-1])
    assert events[-1].response.usage.output_tokens > 0, events[-1].response
    check(f"responses.create(stream=True) {model}")

    question = [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}]
    first = client.responses.create(model=model, input=question, tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather", first
    assert json.loads(calls[0].arguments) == TOOL_INPUT, calls
    follow_up = question + [
        {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name, "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "clear skies"},
    ]
    second = client.responses.create(model=model, input=follow_up, tools=TOOLS)
    assert second.output_text.startswith("The tool said:") and "clear skies" in second.output_text, second
    check(f"function-call round trip {model}")

    with client.responses.stream(model=model, input=question, tools=TOOLS) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1 and json.loads(calls[0].arguments) == TOOL_INPUT, final
    check(f"streamed function call {model}")

try:
    client.responses.create(model=next(iter(MODELS)), input="hi", previous_response_id="resp_123")
    raise AssertionError("previous_response_id was accepted")
except openai.BadRequestError as e:
    assert "previous_response_id" in e.message, e
check("previous_response_id is refused with a message saying why")

print(f"{sdk_check.passed} checks passed")
