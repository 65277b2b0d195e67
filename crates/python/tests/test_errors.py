"""Bad input is a Python exception naming the problem, never a crash."""

import numpy as np
import pytest

import mixtral
from conftest import TINY_F32


def test_a_missing_model_is_a_model_files_error(tmp_path):
    with pytest.raises(mixtral.ModelFilesError, match="no-such-model"):
        mixtral.Engine(str(tmp_path / "no-such-model"))
    assert issubclass(mixtral.ModelFilesError, mixtral.MixtralError)


def test_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(mixtral.ModelFilesError, match="config.json"):
        mixtral.Engine(str(tmp_path))


@pytest.mark.parametrize(
    "kwargs",
    [{"device": "tpu"}, {"precision": "fp4"}, {"kv_dtype": "int3"}, {"threads": 0}, {"quantize": "q1"}],
)
def test_bad_load_options(kwargs):
    with pytest.raises(mixtral.InvalidInputError):
        mixtral.Engine(str(TINY_F32), **kwargs)


def test_a_token_past_the_vocabulary(tiny_f32):
    with pytest.raises(mixtral.InvalidInputError, match="1024"):
        tiny_f32.logits([1, 5, 1024])
    with pytest.raises(mixtral.InvalidInputError, match="out of range"):
        tiny_f32.generate([1, 99999], max_tokens=2)
    with pytest.raises(TypeError):
        tiny_f32.logits([1, -5])


def test_an_empty_prompt(tiny_f32):
    with pytest.raises(mixtral.InvalidInputError):
        tiny_f32.logits([])


def test_text_without_a_tokenizer(tiny_f32):
    with pytest.raises(mixtral.ModelFilesError, match="no tokenizer"):
        tiny_f32.generate("hello", max_tokens=2)


def test_bad_sampling_parameters(tiny_f32):
    with pytest.raises(mixtral.InvalidInputError):
        tiny_f32.generate([1, 2], temperature=-1.0)
    with pytest.raises(mixtral.InvalidInputError):
        tiny_f32.generate([1, 2], top_p=7.0)
    with pytest.raises(TypeError, match="unexpected keyword argument `temprature`"):
        tiny_f32.generate([1, 2], temprature=0.5)
    with pytest.raises(TypeError, match="max_tokens"):
        tiny_f32.generate([1, 2], max_tokens="many")


def test_bad_interventions(tiny_f32):
    with pytest.raises(mixtral.InvalidInputError):
        tiny_f32.logits([1, 2], interventions=[mixtral.Ablate(7, 0)])
    with pytest.raises(mixtral.InvalidInputError):
        tiny_f32.logits([1, 2], interventions=[mixtral.TopK(9)])
    with pytest.raises(TypeError, match="Ablate"):
        tiny_f32.logits([1, 2], interventions=["ablate 3"])
    with pytest.raises(TypeError, match="on_router"):
        tiny_f32.logits([1, 2], on_router=3)


def test_a_hook_returning_the_wrong_shape(tiny_f32):
    with pytest.raises(mixtral.InvalidInputError, match=r"shape \[2, 2\]; expected \[3, 8\]"):
        tiny_f32.logits([1, 2, 3], on_router=lambda layer, x: np.zeros((2, 2)))
    with pytest.raises(mixtral.InvalidInputError, match="returned str"):
        tiny_f32.logits([1, 2, 3], on_router=lambda layer, x: "no")


def test_a_hook_that_raises_raises_its_exception(tiny_f32):
    class Mine(Exception):
        pass

    def hook(layer, x):
        if layer == 1:
            raise Mine("from the hook")

    with pytest.raises(Mine, match="from the hook"):
        tiny_f32.logits([1, 2, 3], on_router=hook)
    with pytest.raises(Mine):
        tiny_f32.generate([1, 2, 3], max_tokens=4, on_router=hook)
    # The engine is fine afterwards.
    assert tiny_f32.logits([1, 2, 3])["logits"].shape == (3, 1024)


def test_bad_messages(tiny_f32):
    with pytest.raises(mixtral.InvalidInputError, match="role"):
        tiny_f32.chat([{"role": "wizard", "content": "x"}])
    with pytest.raises(TypeError):
        tiny_f32.chat(["hello"])
    with pytest.raises(mixtral.InvalidInputError, match="content"):
        tiny_f32.chat([{"role": "user"}])


def test_bad_prompt_type(tiny_f32):
    with pytest.raises(TypeError, match="prompt"):
        tiny_f32.generate(3.5)


def test_a_hook_that_changes_the_arrays_dtype_in_place(tiny_f32):
    def hook(layer, x):
        x.dtype = np.float64  # reinterprets the buffer: half as many elements

    with pytest.raises(mixtral.InvalidInputError, match=r"expected \[3, 8\]"):
        tiny_f32.logits([1, 2, 3], on_router=hook)


def test_a_hook_cannot_call_the_engine(tiny_f32):
    def hook(layer, x):
        tiny_f32.logits([1, 2])

    with pytest.raises(RuntimeError, match="inside its own on_router hook"):
        tiny_f32.logits([1, 2, 3], on_router=hook)


def test_argument_errors_keep_their_class(tiny_f32):
    with pytest.raises(OverflowError, match="seed"):
        tiny_f32.generate([1, 2], seed=-1)
