"""Structured outputs from `mixtral serve` through the official `openai` client, checked with
`jsonschema`. The served model has random weights: only real constrained decoding makes its
answers parse and validate.

Usage: structured_outputs.py BASE_URL MODEL
Prints one line per check; exits non-zero on the first failure.
"""

import json
import re
import sys
from typing import Annotated, List, Literal, Optional

import jsonschema
import openai
import pydantic

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
checks = 0
messages = [{"role": "user", "content": "Describe a person as JSON."}]


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "colour": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "zip": {"type": "integer"},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "colour", "address"],
    "additionalProperties": False,
}

# json_schema: 20 of 20 answers parse and validate.
valid = 0
for seed in range(20):
    r = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=1.0,
        seed=seed,
        max_tokens=400,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": SCHEMA, "strict": True},
        },
    )
    text = r.choices[0].message.content
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
        valid += 1
    except Exception as e:  # noqa: BLE001 (any failure counts)
        print(f"seed {seed}: {e}: {text!r} ({r.choices[0].finish_reason})", flush=True)
check(valid == 20, f"json_schema: {valid} of 20 answers validate")

# The same, streamed: the deltas join to a valid answer.
stream = client.chat.completions.create(
    model=model,
    messages=messages,
    temperature=1.0,
    seed=7,
    max_tokens=400,
    stream=True,
    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
)
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
jsonschema.validate(json.loads(text), SCHEMA)
check(True, "json_schema streamed: the deltas join to a valid answer")


# The SDK's parse helper (what LangChain's with_structured_output uses): a Pydantic model's
# strict schema in, a parsed object out.
class Address(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=10)
    zip: Optional[int]


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    colour: Literal["red", "green", "blue"]
    tags: List[Annotated[str, pydantic.StringConstraints(max_length=6)]] = pydantic.Field(max_length=3)
    address: Address


for seed in range(3):
    r = client.chat.completions.parse(
        model=model, messages=messages, temperature=1.0, seed=seed, max_tokens=400, response_format=Person
    )
    check(isinstance(r.choices[0].message.parsed, Person), f"parse() gives a Person (seed {seed})")

# json_object: every answer that ended on its own is an object (keys are unbounded, so a random
# model may run out of tokens inside one), and some end.
ended = 0
for seed in range(8):
    r = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=1.0,
        seed=seed,
        max_tokens=1500,
        response_format={"type": "json_object"},
    )
    if r.choices[0].finish_reason == "stop":
        check(isinstance(json.loads(r.choices[0].message.content), dict), f"json_object (seed {seed})")
        ended += 1
check(ended > 0, f"json_object: {ended} of 8 ended within 1500 tokens")

# vLLM's guided fields, through extra_body, on both endpoints.
for seed in range(5):
    r = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=1.0,
        seed=seed,
        max_tokens=50,
        extra_body={"guided_regex": r"[0-9]{3}-[a-z]{2,4}"},
    )
    text = r.choices[0].message.content
    check(re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", text) is not None, f"guided_regex: {text!r}")
    choices = ["positive", "negative", "neutral (n/a)"]
    r = client.completions.create(
        model=model,
        prompt="Sentiment:",
        temperature=1.0,
        seed=seed,
        max_tokens=20,
        extra_body={"guided_choice": choices},
    )
    check(r.choices[0].text in choices, f"guided_choice on completions: {r.choices[0].text!r}")
    r = client.completions.create(
        model=model,
        prompt="List:",
        temperature=1.0,
        seed=seed,
        max_tokens=40,
        extra_body={"guided_grammar": 'start: item ("," item)*\nitem: "a" | "b"'},
    )
    text = r.choices[0].text
    check(all(i in ("a", "b") for i in text.split(",")), f"guided_grammar: {text!r}")

# Bad constraints are 400s naming their field.
for kwargs, param in [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"extra_body": {"guided_regex": "(unclosed"}}, "guided_regex"),
    ({"extra_body": {"guided_regex": "a", "guided_choice": ["a"]}}, "guided_choice"),
    ({"response_format": {"type": "json_object", "extra": 1}}, "response_format"),
]:
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=5, **kwargs)
        check(False, f"{kwargs} refused")
    except openai.BadRequestError as e:
        check(e.body.get("param") == param, f"{kwargs} is a 400 naming {param}: {e.body.get('message')!r}")

print(f"{checks} checks passed", flush=True)
