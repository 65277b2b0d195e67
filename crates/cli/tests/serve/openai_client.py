"""Drives `mixtral serve` with the official `openai` Python client.

Usage: openai_client.py BASE_URL EXPECTED_JSON
EXPECTED_JSON holds what `mixtral generate --json` printed for the same prompts (greedy):
{"model": name, "chat": {"messages": [...], "max_tokens": n, "text": "..."},
 "completion": {"prompt": "...", "max_tokens": n, "text": "..."}}
Prints one line per check; exits non-zero on the first failure.
"""

import json
import sys

import openai

base, expected_path = sys.argv[1], sys.argv[2]
exp = json.load(open(expected_path))
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


models = client.models.list()
check([m.id for m in models.data] == [exp["model"]], f"models.list names {exp['model']}")

chat = exp["chat"]
r = client.chat.completions.create(
    model=exp["model"], messages=chat["messages"], max_tokens=chat["max_tokens"], temperature=0
)
check(r.object == "chat.completion", "chat object")
check(r.choices[0].message.role == "assistant", "chat role")
check(r.choices[0].message.content == chat["text"], f"chat text equals generate: {r.choices[0].message.content!r}")
check(r.choices[0].finish_reason == chat["finish_reason"], "chat finish_reason")
check(r.usage.prompt_tokens == chat["prompt_tokens"], "chat usage.prompt_tokens")
check(r.usage.completion_tokens == chat["generated"], "chat usage.completion_tokens")
check(r.usage.total_tokens == chat["prompt_tokens"] + chat["generated"], "chat usage.total_tokens")

stream = client.chat.completions.create(
    model=exp["model"],
    messages=chat["messages"],
    max_tokens=chat["max_tokens"],
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
text, finish, usage, roles = "", None, None, []
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        text += c.delta.content or ""
        finish = c.finish_reason or finish
check(roles == ["assistant"], "chat stream: the first delta names the role")
check(text == chat["text"], "chat stream: the deltas add up to generate's text")
check(finish == chat["finish_reason"], "chat stream finish_reason")
check(usage is not None and usage.completion_tokens == chat["generated"], "chat stream usage chunk")

comp = exp["completion"]
r = client.completions.create(
    model=exp["model"], prompt=comp["prompt"], max_tokens=comp["max_tokens"], temperature=0
)
check(r.choices[0].text == comp["text"], f"completion text equals generate: {r.choices[0].text!r}")
check(r.usage.completion_tokens == comp["generated"], "completion usage")
text = "".join(
    c.choices[0].text
    for c in client.completions.create(
        model=exp["model"], prompt=comp["prompt"], max_tokens=comp["max_tokens"], temperature=0, stream=True
    )
    if c.choices
)
check(text == comp["text"], "completion stream adds up to generate's text")

# Seeded sampling repeats exactly.
def sampled(seed):
    r = client.chat.completions.create(
        model=exp["model"], messages=chat["messages"], max_tokens=12, temperature=0.9, top_p=0.95, seed=seed
    )
    return r.choices[0].message.content

a, b = sampled(7), sampled(7)
check(a == b and len(a) > 0, "the same seed gives the same sample")

r = client.chat.completions.create(
    model=exp["model"], messages=chat["messages"], max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
)
content = r.choices[0].logprobs.content
check(len(content) == r.usage.completion_tokens, "one logprob per token")
check(all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content), "three alternatives per token")
check(all(abs(t.logprob - t.top_logprobs[0].logprob) < 1e-6 for t in content), "greedy picks the top alternative")

r = client.chat.completions.create(
    model=exp["model"], messages=chat["messages"], max_tokens=50, temperature=0, stop=[chat["text"][3:6]]
)
check(r.choices[0].finish_reason == "stop" and chat["text"][3:6] not in r.choices[0].message.content, "a stop string ends the answer, unprinted")

try:
    client.chat.completions.create(model=exp["model"], messages=[{"role": "wizard", "content": "hi"}])
    check(False, "an unknown role is refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and e.body["param"] == "messages[0].role", "an unknown role is a 400 naming the field")

try:
    client.chat.completions.create(model=exp["model"], messages=chat["messages"], max_tokens=10**9)
    check(False, "max_tokens out of range is refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and e.body["param"] == "max_tokens", "max_tokens out of range is a 400")

print(f"{checks} checks passed")
