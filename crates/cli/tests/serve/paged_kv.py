"""Paged KV through the official `openai` client: a server whose KV budget holds two
sequences at their longest serves 16 concurrent clients to completion, each getting exactly
the tokens a server running one request at a time gives (both servers batch-invariant, so
"exactly" is bit for bit), and preemption happened (its /metrics counter).

Usage: paged_kv.py TIGHT_URL ALONE_URL MODEL PROMPT_TOKENS MAX_TOKENS
Prints one line per check; exits non-zero on the first failure.
"""

import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai

tight_url, alone_url, model = sys.argv[1], sys.argv[2], sys.argv[3]
prompt_tokens, max_tokens = int(sys.argv[4]), int(sys.argv[5])
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)


def metric(url, name):
    body = urllib.request.urlopen(url + "/metrics", timeout=60).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


# Sixteen distinct prompts of token ids (BOS, then ids of the tiny vocabulary).
prompts = [[1] + [3 + (i * 131 + j * 7) % 900 for j in range(prompt_tokens - 1)] for i in range(16)]


def complete(c, prompt):
    r = c.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    return r.choices[0].text, r.usage.completion_tokens, r.choices[0].finish_reason


alone = [complete(client(alone_url), p) for p in prompts]
check(all(n == max_tokens for _, n, _ in alone), "each alone answer has max_tokens tokens")

tight = client(tight_url)
with ThreadPoolExecutor(max_workers=16) as pool:
    together = list(pool.map(lambda p: complete(tight, p), prompts))

for i, (got, want) in enumerate(zip(together, alone)):
    check(got == want, f"client {i}: the alone answer, {got[1]} tokens, {got[2]}")

def settles(name, want):
    """The scheduler counts a step's ends, and frees their blocks, just after sending their
    last events: a client can have its answer a moment before the gauges show it."""
    deadline = time.monotonic() + 30
    while metric(tight_url, name) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return metric(tight_url, name) == want


preemptions = metric(tight_url, "mixtral_preemptions_total")
check(preemptions > 0, f"preempted {preemptions:.0f} times")
check(settles("mixtral_requests_finished_total", 16), "sixteen requests finished")
check(settles("mixtral_kv_blocks_used", 0), "every block back once done")
print(f"{checks} checks passed")
