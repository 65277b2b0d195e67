"""Time to first token of the last turn of a conversation, with and without the scheduler's
prefix cache, in paired rounds (docs/performance.md, "Prefix caching").

    python crates/python/examples/multi_turn_ttft.py --model /work/models/bench-1b --threads 2
"""

import argparse
import random
import statistics

import mixtral


def conversation(batch, seed, turns, turn_tokens, vocab):
    """Each turn: `turn_tokens` new random ids after the previous prompt and its answer."""
    rng = random.Random(seed)
    ids, ttft = [1], []
    for _ in range(turns):
        ids += [rng.randrange(3, vocab) for _ in range(turn_tokens)]
        done = batch.generate(ids, max_tokens=16, temperature=0.0, ignore_eos=True)
        ttft.append(done.usage["prefill_seconds"])
        ids += done.token_ids
    return ttft, len(ids)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--turn-tokens", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    engine = mixtral.Engine(a.model, threads=a.threads, precision=a.precision)
    vocab = engine.config["vocab_size"]
    last = {True: [], False: []}
    for r in range(a.rounds):
        for on in (True, False) if r % 2 == 0 else (False, True):
            batch = engine.batch(prefix_caching=on)
            ttft, n = conversation(batch, 100 + r, a.turns, a.turn_tokens, vocab)
            last[on].append(ttft[-1])
            turns = ", ".join(f"{t * 1e3:.0f}" for t in ttft)
            print(f"round {r + 1} cache {'on ' if on else 'off'}: turn TTFTs [{turns}] ms ({n} ids)")
            del batch
    ratios = [off / on for on, off in zip(last[True], last[False])]
    print(f"last-turn TTFT, off / on: median {statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
