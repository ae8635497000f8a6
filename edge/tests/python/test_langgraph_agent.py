"""A LangGraph ReAct agent (langchain-openai's ChatOpenAI pointed at the edge) runs its
tool-calling loop through Tollgate.

Run by edge/tests/openai_sdk.rs, which passes TOLLGATE_BASE_URL (the edge's OpenAI base URL)
and TOLLGATE_KEY. The fake upstream calls the first tool it is offered when the last message is
the user's, and answers "The tool said: …" after a tool result.
"""

import os
import sys

try:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent
except ImportError as e:
    print(f"LangGraph is not installed ({e}): run scripts/test", file=sys.stderr)
    sys.exit(2)

calls = []


@tool
def get_weather(location: str) -> str:
    """The weather in a location."""
    calls.append(location)
    return f"sunny in {location}"


model = ChatOpenAI(
    base_url=os.environ["TOLLGATE_BASE_URL"],
    api_key=os.environ["TOLLGATE_KEY"],
    model="gpt-test",
    max_retries=0,
)
agent = create_react_agent(model, [get_weather])
result = agent.invoke({"messages": [("user", "What is the weather in Paris?")]})
messages = result["messages"]
assert calls == ["Paris"], calls
kinds = [m.type for m in messages]
assert kinds == ["human", "ai", "tool", "ai"], kinds
assert messages[1].tool_calls[0]["name"] == "get_weather", messages[1]
assert messages[-1].content == "The tool said: sunny in Paris", messages[-1].content
print("ok: the agent called its tool through the edge and answered from the result", flush=True)
