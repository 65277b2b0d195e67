"""Generation: the CLI's tokens, streaming, chat, sessions, batches, tokenizing."""

import json

import pytest

import mixtral
from conftest import TINY_BF16, cli


@pytest.mark.parametrize(
    "kwargs,flags",
    [
        ({"temperature": 0.0}, ["--temperature", "0"]),
        ({"temperature": 0.8, "top_p": 0.9, "seed": 7}, ["--temperature", "0.8", "--top-p", "0.9", "--seed", "7"]),
        ({"temperature": 1.2, "top_k": 40, "seed": 3}, ["--temperature", "1.2", "--top-k", "40", "--seed", "3"]),
    ],
)
def test_generate_gives_the_cli_tokens(tiny_bf16, kwargs, flags):
    prompt = "The capital of France is"
    ours = tiny_bf16.generate(prompt, max_tokens=24, ignore_eos=True, **kwargs)
    theirs = json.loads(
        cli(
            "generate", "--model", str(TINY_BF16), "--threads", "1", "--prompt", prompt,
            "--max-new-tokens", "24", "--ignore-eos", "--json", *flags,
        )
    )
    assert ours.token_ids == theirs["ids"]
    assert ours.text == theirs["text"]
    assert ours.finish_reason == theirs["finish_reason"] == "length"
    assert ours.usage["prompt_tokens"] == theirs["prompt_tokens"]
    assert ours.usage["completion_tokens"] == 24


def test_streaming_gives_the_same_tokens_and_text(tiny_bf16):
    done = tiny_bf16.generate("Hello", max_tokens=16, temperature=0.7, seed=11, ignore_eos=True)
    stream = tiny_bf16.generate(
        "Hello", max_tokens=16, temperature=0.7, seed=11, ignore_eos=True, stream=True
    )
    assert stream.finish_reason is None
    events = list(stream)
    assert [e.id for e in events] == done.token_ids
    assert "".join(e.text for e in events) == done.text
    assert stream.finish_reason == "length"
    assert stream.usage["completion_tokens"] == 16


def test_stop_strings_and_token_ids(tiny_bf16):
    free = tiny_bf16.generate("Hello", max_tokens=12, temperature=0.0, ignore_eos=True)
    stopped = tiny_bf16.generate(
        "Hello", max_tokens=12, temperature=0.0, ignore_eos=True, stop_token_ids=[free.token_ids[3]]
    )
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(free.token_ids[3]) + 1]
    assert stopped.finish_reason == "stop"


def test_chat_uses_the_instruct_format_like_the_cli(tiny_bf16, tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    ours = tiny_bf16.chat(messages, max_tokens=8, temperature=0.0, ignore_eos=True)
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(messages))
    theirs = json.loads(
        cli(
            "generate", "--model", str(TINY_BF16), "--threads", "1", "--chat", str(path),
            "--max-new-tokens", "8", "--ignore-eos", "--temperature", "0", "--json",
        )
    )
    assert ours.token_ids == theirs["ids"]


def test_a_session_reuses_its_cache(tiny_bf16):
    session = tiny_bf16.session()
    chat = [{"role": "user", "content": "Hello there"}]
    first = session.chat(chat, max_tokens=4, temperature=0.0, ignore_eos=True)
    assert first.usage["cached_tokens"] == 0
    chat += [{"role": "assistant", "content": first.text.strip() or "ok"}, {"role": "user", "content": "Again"}]
    second = session.chat(chat, max_tokens=4, temperature=0.0, ignore_eos=True)
    assert second.usage["cached_tokens"] > 0
    # Same tokens as a fresh generation.
    fresh = tiny_bf16.chat(chat, max_tokens=4, temperature=0.0, ignore_eos=True)
    assert second.token_ids == fresh.token_ids
    # The session holds the conversation and the answer's tokens run through the model.
    assert len(session.ids) == second.usage["prompt_tokens"] + len(second.token_ids) - 1


def test_a_batch_gives_each_request_its_tokens():
    # Batch invariance: the same bits alone and batched, so no near-tie can flip a token.
    engine = mixtral.Engine(str(TINY_BF16), threads=1, batch_invariant=True)
    batch = engine.batch(max_batch=4)
    alone = engine.generate("One", max_tokens=8, temperature=0.0, ignore_eos=True)
    batched = batch.generate("One", max_tokens=8, temperature=0.0, ignore_eos=True)
    assert batched.token_ids == alone.token_ids
    assert batched.finish_reason == "length"
    assert [e.id for e in batch.generate("One", max_tokens=8, temperature=0.0, ignore_eos=True, stream=True)] == alone.token_ids
    with pytest.raises(mixtral.InvalidInputError, match="not batched"):
        batch.generate("One", interventions=[mixtral.TopK(1)])
    assert batch.generate("One", max_tokens=1, interventions=[]).token_ids == alone.token_ids[:1]
    # A stream keeps its batch alive.
    stream = engine.batch().generate("One", max_tokens=8, temperature=0.0, ignore_eos=True, stream=True)
    assert [e.id for e in stream] == alone.token_ids


def test_tokenize_and_detokenize_round_trip(tiny_bf16):
    ids = tiny_bf16.tokenize("Bonjour le monde")
    assert ids[0] == tiny_bf16.config["bos_token_id"]
    assert tiny_bf16.tokenize("Bonjour le monde", add_bos=False) == ids[1:]
    assert tiny_bf16.detokenize(ids) == "Bonjour le monde"


def test_config_and_properties(tiny_bf16):
    c = tiny_bf16.config
    assert (c["num_local_experts"], c["num_experts_per_tok"], c["num_hidden_layers"]) == (8, 2, 2)
    assert tiny_bf16.device == "cpu"
    assert tiny_bf16.threads == 1
    assert tiny_bf16.eos_token_ids == [2]
    assert "tiny-bf16" in repr(tiny_bf16)


def test_a_batch_with_prefix_caching_reuses_a_conversation(tiny_bf16):
    batch = tiny_bf16.batch(prefix_caching=True)
    first = list(range(1, 131))
    one = batch.generate(first, max_tokens=4, temperature=0.0, ignore_eos=True)
    assert one.usage["cached_tokens"] == 0
    second = first + one.token_ids + list(range(500, 520))
    two = batch.generate(second, max_tokens=4, temperature=0.0, ignore_eos=True)
    # The whole 64-token pages of what the first turn computed: its prompt and all but
    # its last generated token.
    assert two.usage["cached_tokens"] == (len(first) + len(one.token_ids) - 1) // 64 * 64
    assert two.usage["cached_tokens"] == 128
    alone = tiny_bf16.batch(prefix_caching=False).generate(
        second, max_tokens=4, temperature=0.0, ignore_eos=True
    )
    assert alone.usage["cached_tokens"] == 0
    assert alone.token_ids == two.token_ids
    salted = batch.generate(second, max_tokens=4, temperature=0.0, ignore_eos=True, cache_salt="t1")
    assert salted.usage["cached_tokens"] == 0
    assert salted.token_ids == two.token_ids
    with pytest.raises(mixtral.InvalidInputError, match="cache_salt"):
        batch.generate(second, max_tokens=4, cache_salt="")
    m = batch.metrics
    assert m["prefix_caching"]
    assert (m["prefix_cache_queries"], m["prefix_cache_hits"]) == (3, 1)
    assert m["prefix_cache_tokens"] == two.usage["cached_tokens"]


def test_constraints_hold_on_a_random_model(tiny_bf16):
    # Only constrained decoding makes random weights write these.
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}, "ok": {"type": "boolean"}},
        "required": ["n", "ok"],
        "additionalProperties": False,
    }
    for seed in range(4):
        done = tiny_bf16.generate("JSON:", json_schema=schema, temperature=1.0, seed=seed, max_tokens=200)
        value = json.loads(done.text)
        assert set(value) == {"n", "ok"} and 0 <= value["n"] <= 9 and isinstance(value["ok"], bool)
        assert done.finish_reason == "stop"
        text = tiny_bf16.generate("Code:", regex=r"[A-Z]{2}[0-9]{2}", temperature=1.0, seed=seed).text
        assert len(text) == 4 and text[:2].isupper() and text[2:].isdigit(), text
        text = tiny_bf16.chat(
            [{"role": "user", "content": "Pick"}], choice=["left", "right"], temperature=1.0, seed=seed
        ).text
        assert text in ("left", "right")
    streamed = "".join(
        e.text for e in tiny_bf16.generate("JSON:", json_schema=json.dumps(schema), seed=1, temperature=1.0, stream=True)
    )
    json.loads(streamed)


def test_bad_constraints_are_invalid_input(tiny_bf16):
    with pytest.raises(mixtral.InvalidInputError, match="output constraint"):
        tiny_bf16.generate("x", regex="(unclosed")
    with pytest.raises(mixtral.InvalidInputError, match="one of"):
        tiny_bf16.generate("x", regex="a", choice=["a"])
    with pytest.raises(TypeError):
        tiny_bf16.generate("x", choice="not a list")
