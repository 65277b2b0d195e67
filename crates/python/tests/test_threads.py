"""The GIL is released while the engine computes, and Ctrl-C stops it.

The two timing tests compare runs of the same work in one process, best of three, with a
wide margin (1.6× where the ideal is 1×): they check that two Python threads overlap at
all, which a held GIL would forbid (2×), not how fast either is."""

import os
import signal
import threading
import time

import pytest

import mixtral
from conftest import TINY_BF16

PROMPT = list(range(3, 3 + 1500))


def best_of(n, f):
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def together(*jobs):
    threads = [threading.Thread(target=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def test_python_runs_while_the_engine_computes(tiny_bf16):
    # No timing: a Python thread counts while the main thread is inside one long generate,
    # and the router hook reads the count at every layer. With the GIL held through the call
    # the count could not move until it returned.
    count = [0]
    done = threading.Event()

    def counter():
        while not done.is_set():
            count[0] += 1

    seen = []
    thread = threading.Thread(target=counter)
    thread.start()
    try:
        tiny_bf16.generate(
            PROMPT, max_tokens=32, ignore_eos=True, on_router=lambda layer, x: seen.append(count[0])
        )
    finally:
        done.set()
        thread.join()
    moved = sum(1 for a, b in zip(seen, seen[1:]) if b > a)
    assert moved > len(seen) // 2, seen


@pytest.mark.skipif(cores() < 2, reason="needs two cores to overlap")
def test_two_threads_on_two_engines_overlap():
    a = mixtral.Engine(str(TINY_BF16), threads=1)
    b = mixtral.Engine(str(TINY_BF16), threads=1)

    def run(engine):
        return lambda: engine.generate(PROMPT, max_tokens=32, ignore_eos=True)

    run(a)(), run(b)()  # warm
    one = best_of(3, run(a))
    two = best_of(3, lambda: together(run(a), run(b)))
    assert two < 1.6 * one, f"two threads took {two:.3f}s, one {one:.3f}s"


def test_threads_sharing_a_batch_each_get_their_own_tokens():
    # (No timing here: on the tiny model a step costs its per-row sampling over 32,000
    # logits, not weight reads, so batching saves nothing measurable.)
    engine = mixtral.Engine(str(TINY_BF16), threads=1, batch_invariant=True)
    batch = engine.batch(max_batch=4)
    prompts = [[1, 415, 5565], [1, 22557], [1, 3, 4, 5, 6], [1, 851]]
    alone = [engine.generate(p, max_tokens=24, ignore_eos=True).token_ids for p in prompts]
    got = [None] * len(prompts)

    def run(i):
        return lambda: got.__setitem__(i, batch.generate(prompts[i], max_tokens=24, ignore_eos=True).token_ids)

    together(*(run(i) for i in range(len(prompts))))
    assert got == alone
    assert batch.metrics["requests_total"] == len(prompts)


class interrupt_after:
    """Sends this process SIGINT after `seconds`, unless the block has ended first."""

    def __init__(self, seconds):
        self.timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))

    def __enter__(self):
        # Python's own Ctrl-C handler, for the block: a process started in the background
        # by a non-interactive shell (nohup, `&`) inherits SIGINT ignored, and Python then
        # never raises KeyboardInterrupt at all.
        self.previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.start = time.perf_counter()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.elapsed = time.perf_counter() - self.start
        signal.signal(signal.SIGINT, self.previous)


main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals"
)


@main_thread_only
def test_ctrl_c_stops_a_long_prefill_within_a_second(tiny_bf16):
    # 20,000 tokens: about half a minute of prefill on one thread.
    long_prompt = [3 + i % 30000 for i in range(20_000)]
    with interrupt_after(0.5) as t, pytest.raises(KeyboardInterrupt):
        tiny_bf16.generate(long_prompt, max_tokens=1)
    assert t.elapsed < 1.5, f"KeyboardInterrupt came {t.elapsed - 0.5:.2f}s after SIGINT"
    # The engine is usable afterwards.
    assert len(tiny_bf16.generate([1, 2, 3], max_tokens=2, ignore_eos=True).token_ids) == 2


@main_thread_only
def test_ctrl_c_stops_decoding(tiny_bf16):
    session = tiny_bf16.session()
    with interrupt_after(0.3) as t, pytest.raises(KeyboardInterrupt):
        session.generate([1, 2, 3], max_tokens=1_000_000, ignore_eos=True)
    assert t.elapsed < 1.3
    # The generation really stopped: its session is free at once.
    stopped_at = len(session.ids)
    time.sleep(0.2)
    assert len(session.ids) == stopped_at < 1_000_000


@main_thread_only
def test_ctrl_c_stops_a_stream(tiny_bf16):
    session = tiny_bf16.session()
    stream = session.generate([1, 2, 3], max_tokens=1_000_000, ignore_eos=True, stream=True)
    with interrupt_after(0.3) as t, pytest.raises(KeyboardInterrupt):
        for _ in stream:
            pass
    assert t.elapsed < 1.3
    session.generate([1, 2, 3], max_tokens=2)  # free again


@main_thread_only
def test_ctrl_c_stops_logits_between_layers(tiny_bf16):
    # Two layers of 0.5 s each (the hook's): stopped before the second.
    with interrupt_after(0.2) as t, pytest.raises(KeyboardInterrupt):
        tiny_bf16.logits(list(range(1, 65)), on_router=lambda layer, x: time.sleep(0.5))
    assert t.elapsed < 1.3


def test_cancel_from_another_thread(tiny_bf16):
    stream = tiny_bf16.generate([1, 2, 3], max_tokens=1_000_000, ignore_eos=True, stream=True)
    threading.Timer(0.2, stream.cancel).start()
    n = sum(1 for _ in stream)
    assert 0 < n < 1_000_000
    assert stream.finish_reason == "interrupted"


def test_a_dropped_stream_frees_its_session(tiny_bf16):
    session = tiny_bf16.session()
    stream = session.generate([1, 2, 3], max_tokens=1_000_000, ignore_eos=True, stream=True)
    next(stream)
    del stream
    # The next generation waits for the cancelled one to give the session back.
    assert len(session.generate([1, 2, 3, 4], max_tokens=2, ignore_eos=True).token_ids) == 2


def test_a_running_stream_keeps_its_session_busy(tiny_bf16):
    session = tiny_bf16.session()
    stream = session.generate([1, 2, 3], max_tokens=1_000_000, ignore_eos=True, stream=True)
    next(stream)
    with pytest.raises(mixtral.BusyError, match="in use"):
        session.generate([1, 2], max_tokens=1)
    stream.cancel()
    list(stream)
