"""Logits, router logits, hidden states and every intervention against the research
fixtures (transformers' outputs, tests/fixtures/research/README.md)."""

import json

import numpy as np
import pytest

import mixtral
from conftest import RESEARCH, FIXTURES, assert_close, read_safetensors

MODELS = ["tiny-f32", "tiny-variant-f32"]


def load(model):
    folder = RESEARCH / model
    return (
        json.loads((folder / "expected.json").read_text()),
        read_safetensors(folder / "expected.safetensors"),
    )


def interventions_of(spec):
    kind = spec["kind"]
    if kind == "ablate" and "expert" in spec:
        return [mixtral.AblateExpert(spec["expert"])]
    if kind == "ablate":
        return [mixtral.Ablate(layer, expert) for layer, expert in spec["pairs"]]
    if kind == "force":
        return [mixtral.Force(spec["layer"], spec["positions"], spec["experts"])]
    if kind == "top_k":
        return [mixtral.TopK(spec["k"])]
    raise AssertionError(f"unknown intervention kind {kind}")


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    model = request.param
    engine = mixtral.Engine(str(FIXTURES / "models" / model), threads=1)
    expected, tensors = load(model)
    return engine, expected["cases"][0], tensors


def test_logits_router_logits_hidden_states_match_transformers(case):
    engine, c, tensors = case
    out = engine.logits(c["input_ids"], router_logits=True, hidden_states=True, routing=True)
    c_ = engine.config
    t = len(c["input_ids"])
    assert out["logits"].shape == (t, c_["vocab_size"])
    assert out["logits"].dtype == np.float32
    assert_close(out["logits"], tensors["p0.logits"], what="logits")
    assert_close(out["router_logits"], tensors["p0.router_logits"], what="router_logits")
    assert_close(out["hidden_states"], tensors["p0.hidden"], what="hidden_states")
    layers, k = c_["num_hidden_layers"], c_["num_experts_per_tok"]
    assert out["routing"].shape == (layers, t, k)
    assert out["routing_weights"].shape == (layers, t, k)
    # The routing is the top-k of the recorded router logits, most probable first.
    top = np.argsort(-out["router_logits"], axis=-1, kind="stable")[..., :k]
    np.testing.assert_array_equal(out["routing"], top)
    np.testing.assert_allclose(out["routing_weights"].sum(-1), 1.0, rtol=1e-5)


def test_every_intervention_matches_its_fixture(case):
    engine, c, tensors = case
    for spec in c["interventions"]:
        steer = interventions_of(spec)
        out = engine.logits(c["input_ids"], interventions=steer)
        assert_close(out["logits"], tensors[spec["logits"].split()[0]], what=spec["name"])
        done = engine.generate(
            c["input_ids"],
            max_tokens=len(spec["greedy_new_tokens"]),
            temperature=0.0,
            ignore_eos=True,
            interventions=steer,
        )
        assert done.token_ids == spec["greedy_new_tokens"], spec["name"]


def test_a_hook_setting_minus_inf_equals_ablate_bit_for_bit(tiny_f32):
    ids = [1, 785, 67, 264, 123, 510, 782, 463]

    def remove_expert_3_of_layer_1(layer, logits):
        assert logits.shape == (len(ids), 8) and logits.dtype == np.float32
        if layer == 1:
            logits[:, 3] = -np.inf  # in place, returning None

    hooked = tiny_f32.logits(ids, on_router=remove_expert_3_of_layer_1, router_logits=True)
    ablated = tiny_f32.logits(ids, interventions=[mixtral.Ablate(1, 3)], router_logits=True)
    assert np.array_equal(hooked["logits"], ablated["logits"])
    assert np.array_equal(hooked["router_logits"], ablated["router_logits"])
    # The same through a returned array.
    returned = tiny_f32.logits(
        ids,
        on_router=lambda layer, x: np.where(np.arange(8) == 3, -np.inf, x) if layer == 1 else None,
    )
    assert np.array_equal(returned["logits"], ablated["logits"])
    # And it moves the logits: the hook really ran.
    plain = tiny_f32.logits(ids)
    assert not np.array_equal(plain["logits"], ablated["logits"])


def test_hook_sees_every_layer_in_order(tiny_f32):
    seen = []
    tiny_f32.logits([1, 2, 3], on_router=lambda layer, x: seen.append((layer, x.shape)))
    assert seen == [(0, (3, 8)), (1, (3, 8))]


def test_hook_applies_to_generated_tokens_too(tiny_f32):
    ids = [1, 785, 67, 264]
    plain = tiny_f32.generate(ids, max_tokens=8, temperature=0.0, ignore_eos=True)
    calls = []

    def hook(layer, x):
        calls.append(x.shape[0])
        x[:, 0] = -np.inf

    hooked = tiny_f32.generate(ids, max_tokens=8, temperature=0.0, ignore_eos=True, on_router=hook)
    ablated = tiny_f32.generate(
        ids, max_tokens=8, temperature=0.0, ignore_eos=True, interventions=[mixtral.AblateExpert(0)]
    )
    assert hooked.token_ids == ablated.token_ids
    assert hooked.token_ids != plain.token_ids or hooked.logprobs != plain.logprobs
    # The prompt in one call per layer, then one row per decoded token.
    assert calls[:2] == [4, 4] and set(calls[2:]) == {1}


def test_a_hook_with_three_parameters_gets_the_positions(tiny_f32):
    seen = []
    session = tiny_f32.session()
    session.generate([1, 2, 3, 4], max_tokens=3, ignore_eos=True,
                     on_router=lambda layer, x, positions: seen.append((layer, list(positions))))
    assert seen[:2] == [(0, [0, 1, 2, 3]), (1, [0, 1, 2, 3])]
    assert seen[2:] == [(0, [4]), (1, [4]), (0, [5]), (1, [5])]
