"""Tool calls from `mixtral serve` through the official `openai` client, checked with
`jsonschema`. The served model has random weights and a v1 vocabulary (Mixtral-8x7B's, no
tool tokens): only the constraint `tool_choice` puts on the output makes its calls parse and
validate, and the agent loop (call, result, answer) only works if the server reads back what
it wrote.

Usage: tool_calls.py BASE_URL MODEL
Prints one line per check; exits non-zero on the first failure.
"""

import json
import sys

import jsonschema
import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "b": {"type": "integer", "minimum": -1000, "maximum": 1000},
    },
    "required": ["a", "b"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
TOOLS = [
    {"type": "function", "function": {"name": n, "description": f"The {n} tool", "parameters": s}}
    for n, s in SCHEMAS.items()
]
ASK = [{"role": "user", "content": "What is 2 + 3, and the weather in Paris?"}]


def valid_calls(calls):
    """Every call names a tool and its arguments validate against that tool's schema."""
    for c in calls:
        if c.type != "function" or c.function.name not in SCHEMAS or not c.id:
            return False
        try:
            jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
        except (ValueError, jsonschema.ValidationError):
            return False
    return True


# A named function: one call to it, whose arguments validate, every time.
for seed in range(5):
    r = client.chat.completions.create(
        model=model, messages=ASK, tools=TOOLS, temperature=1.0, seed=seed, max_tokens=200,
        tool_choice={"type": "function", "function": {"name": "add"}},
    )
    m, choice = r.choices[0].message, r.choices[0]
    ok = (
        choice.finish_reason == "tool_calls"
        and m.content is None
        and m.tool_calls is not None
        and len(m.tool_calls) == 1
        and m.tool_calls[0].function.name == "add"
        and valid_calls(m.tool_calls)
    )
    check(ok, f"named function, seed {seed}: {choice.finish_reason} {m.tool_calls}")

# `required`, one call per turn: a call to either tool, valid.
for seed in range(5):
    r = client.chat.completions.create(
        model=model, messages=ASK, tools=TOOLS, temperature=1.0, seed=seed, max_tokens=200,
        tool_choice="required", parallel_tool_calls=False,
    )
    calls = r.choices[0].message.tool_calls or []
    check(len(calls) == 1 and valid_calls(calls), f"required, seed {seed}: {calls}")

# Streamed: the deltas join, as the client's helpers join them, into valid calls.
stream = client.chat.completions.create(
    model=model, messages=ASK, tools=TOOLS, temperature=1.0, seed=7, max_tokens=200,
    tool_choice="required", stream=True,
)
joined, finish, content = {}, None, ""
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    content += delta.content or ""
    for d in delta.tool_calls or []:
        slot = joined.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
        slot["id"] += d.id or ""
        slot["name"] += (d.function.name or "") if d.function else ""
        slot["arguments"] += (d.function.arguments or "") if d.function else ""
    finish = chunk.choices[0].finish_reason or finish
ok = finish == "tool_calls" and content == "" and len(joined) >= 1
for slot in joined.values():
    ok = ok and slot["name"] in SCHEMAS and bool(slot["id"])
    try:
        jsonschema.validate(json.loads(slot["arguments"]), SCHEMAS[slot["name"]])
    except (KeyError, ValueError, jsonschema.ValidationError):
        ok = False
check(ok, f"streamed calls join and validate: {finish} {joined}")

# The loop: the call as the SDK hands it back (content None), the tool's result, the answer.
r = client.chat.completions.create(
    model=model, messages=ASK, tools=TOOLS, temperature=0, max_tokens=200,
    tool_choice={"type": "function", "function": {"name": "add"}},
)
call = r.choices[0].message
first_prompt = r.usage.prompt_tokens
history = ASK + [call.model_dump(exclude_none=False)]
history[-1]["content"] = None
history.append({"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "5"})
r = client.chat.completions.create(
    model=model, messages=history, tools=TOOLS, temperature=0, max_tokens=8,
)
check(
    r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    and r.usage.prompt_tokens > first_prompt,
    f"loop: the call and its result are read back ({first_prompt} -> {r.usage.prompt_tokens} "
    f"prompt tokens, {r.choices[0].finish_reason})",
)
history += [
    {"role": "assistant", "content": r.choices[0].message.content or "Five."},
    {"role": "user", "content": "Thanks. And 4 + 4?"},
]
r = client.chat.completions.create(
    model=model, messages=history, tools=TOOLS, tool_choice="required", max_tokens=200,
    temperature=1.0, seed=3, parallel_tool_calls=False,
)
check(valid_calls(r.choices[0].message.tool_calls or []) and r.choices[0].message.tool_calls,
      f"loop: the next turn calls again: {r.choices[0]}")

# `none`: tools are offered but never called; the answer is text.
r = client.chat.completions.create(
    model=model, messages=ASK, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=4,
)
check(r.choices[0].message.tool_calls is None and r.choices[0].finish_reason != "tool_calls",
      "tool_choice none answers in text")

# What cannot be served is a 400 naming the field.
for kwargs, param in [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
]:
    try:
        client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, max_tokens=4, **kwargs)
        check(False, f"{param} refused")
    except openai.BadRequestError as e:
        check(e.body.get("param") == param, f"400 names {param}: {e.body}")

print(f"{checks} checks passed")
