"""LangChain against `mixtral serve`, as a new user would drive it: `bind_tools` with a named
tool, `with_structured_output` (both its json_schema and function_calling methods), and a
whole tool loop (call, the tool's result, the answer). The served model has random weights:
only the server's constraints make its calls and objects valid.

Usage: langchain_tools.py BASE_URL MODEL
Prints one line per check; exits non-zero on the first failure.
"""

import sys
from typing import Annotated, Literal

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

base, model = sys.argv[1], sys.argv[2]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


Small = Annotated[int, Field(ge=-1000, le=1000)]


@tool
def add(a: Small, b: Small) -> int:
    """Adds a and b."""
    return a + b


class Person(BaseModel):
    name: str = Field(max_length=10)
    colour: Literal["red", "green"]


def llm(seed):
    return ChatOpenAI(
        base_url=base + "/v1", api_key="unused", model=model, temperature=1.0,
        max_tokens=200, max_retries=0, seed=seed, timeout=120,
    )


ask = [HumanMessage("What is 2 + 3?")]
for seed in range(3):
    msg = llm(seed).bind_tools([add], tool_choice="add").invoke(ask)
    calls = msg.tool_calls
    ok = (
        len(calls) == 1
        and calls[0]["name"] == "add"
        and set(calls[0]["args"]) == {"a", "b"}
        and all(isinstance(v, int) and -1000 <= v <= 1000 for v in calls[0]["args"].values())
        and not msg.invalid_tool_calls
    )
    check(ok, f"bind_tools(tool_choice='add'), seed {seed}: {calls}")

for method in ("json_schema", "function_calling"):
    person = llm(5).with_structured_output(Person, method=method).invoke("Describe a person")
    check(isinstance(person, Person), f"with_structured_output({method}): {person!r}")

# The loop: the AI message with its calls goes back with each tool's result.
call = llm(1).bind_tools([add], tool_choice="required").invoke(ask)
results = [ToolMessage(str(add.invoke(c["args"])), tool_call_id=c["id"]) for c in call.tool_calls]
answer = llm(2).bind_tools([add]).invoke(ask + [call] + results)
check(
    isinstance(answer, AIMessage) and len(results) >= 1
    and answer.response_metadata["finish_reason"] in ("stop", "length", "tool_calls"),
    f"tool loop: {len(results)} result(s) read back, answer {answer.response_metadata['finish_reason']}",
)

print(f"{checks} checks passed")
