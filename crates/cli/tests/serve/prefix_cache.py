"""Prefix caching through the official `openai` client: a growing conversation sent to a
server with the prefix cache and to one without (both batch-invariant, so their answers
must be equal bit for bit). From the second request on, the cached server reports in
`usage.prompt_tokens_details.cached_tokens` every whole 64-token page of the conversation
so far, and computes only the rest: its `mixtral_prompt_tokens_total` grows by the prompt
less the cached tokens, which is the new turn and what is left of the last partial page.

Usage: prefix_cache.py HOT_URL COLD_URL MODEL
Prints one line per check; exits non-zero on the first failure.
"""

import sys
import urllib.request

import openai

hot_url, cold_url, model = sys.argv[1], sys.argv[2], sys.argv[3]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


def metric(url, name):
    body = urllib.request.urlopen(url + "/metrics", timeout=60).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


hot, cold = (
    openai.OpenAI(base_url=u + "/v1", api_key="unused", max_retries=0, timeout=120)
    for u in (hot_url, cold_url)
)
story = "Tell me about the lighthouse keeper and the ships that pass by at night. " * 6
messages = [{"role": "user", "content": story}]
previous_prompt = 0
for turn, follow_up in enumerate(["And then?", "Who was on the last ship?", None]):
    before = metric(hot_url, "mixtral_prompt_tokens_total")
    kwargs = dict(model=model, messages=messages, max_tokens=12, temperature=0)
    got = hot.chat.completions.create(**kwargs)
    want = cold.chat.completions.create(**kwargs)
    answer = got.choices[0].message.content
    check(answer == want.choices[0].message.content, f"request {turn + 1}: the cold server's answer")
    usage = got.usage
    cached = usage.prompt_tokens_details.cached_tokens
    computed = metric(hot_url, "mixtral_prompt_tokens_total") - before
    check(computed == usage.prompt_tokens - cached, f"request {turn + 1}: computed {computed:.0f} = prompt {usage.prompt_tokens} - cached {cached}")
    if turn == 0:
        check(cached == 0, "the first request computes everything")
    else:
        # The previous prompt is a prefix of this one (its answer may re-tokenize
        # differently, so only the prompt is certain): all its whole pages are reused.
        check(cached >= previous_prompt // 64 * 64 and cached % 64 == 0, f"request {turn + 1}: {cached} cached tokens, whole pages of at least the previous prompt")
        check(usage.prompt_tokens - cached < (usage.prompt_tokens - previous_prompt) + 64, f"request {turn + 1}: only the new turn and the rest of a page computed")
    previous_prompt = usage.prompt_tokens
    if follow_up is None:
        break
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": follow_up}]
print(f"{checks} checks passed")
