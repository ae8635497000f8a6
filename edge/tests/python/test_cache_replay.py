"""A cached answer replayed as a stream, read by the official OpenAI Python SDK.

Run by edge/tests/response_cache.rs, which starts a control plane, an edge with a cache policy
on model gpt-test and a fake OpenAI upstream, and passes:
  TOLLGATE_BASE_URL  the edge's OpenAI base URL, e.g. http://127.0.0.1:PORT/v1
  TOLLGATE_KEY       a virtual key allowed gpt-test
Plain asserts; one line per check; exit status 0 when all pass.
"""

import os
import sys

try:
    import openai
except ImportError:
    print("the `openai` Python SDK is not installed: run scripts/test", file=sys.stderr)
    sys.exit(2)

# What the fake upstream answers (test-support/src/openai_upstream.rs).
ANSWER = "Hello from the fake upstream."
QUESTION = [{"role": "user", "content": "Say hello to the cache"}]

client = openai.OpenAI(base_url=os.environ["TOLLGATE_BASE_URL"], api_key=os.environ["TOLLGATE_KEY"])

raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=QUESTION)
assert raw.headers.get("x-tollgate-cache") == "miss", raw.headers
first = raw.parse()
assert first.choices[0].message.content == ANSWER, first
print("ok: the first answer is a miss", flush=True)

raw = client.chat.completions.with_raw_response.create(
    model="gpt-test",
    messages=QUESTION,
    stream=True,
    stream_options={"include_usage": True},
)
assert raw.headers.get("x-tollgate-cache") == "hit", raw.headers
assert raw.headers.get("x-tollgate-cost-usd") == "0.000000", raw.headers
chunks = list(raw.parse())
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == ANSWER, text
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
assert finishes == ["stop"], finishes
assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == first.usage.total_tokens, chunks[-1]
assert all(c.usage is None for c in chunks[:-1]), chunks
assert all(c.id == first.id for c in chunks), "the replay carries the cached answer's id"
print("ok: the streamed hit replays the answer, its finish and its usage", flush=True)

raw = client.chat.completions.with_raw_response.create(
    model="gpt-test", messages=QUESTION, extra_headers={"cache-control": "no-cache"}
)
assert raw.headers.get("x-tollgate-cache") == "bypass", raw.headers
print("ok: no-cache goes upstream", flush=True)
