"""Mixtral inference from Rust: generation, router logits, hidden states and interventions.

Every method releases the GIL while it computes, and Ctrl-C (KeyboardInterrupt) stops it
within one layer. Arrays are NumPy arrays that own the engine's buffers (no copy).
"""

from os import PathLike
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

Prompt = Union[str, Sequence[int]]
"""A str (encoded with BOS first) or token ids (used as given)."""

class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str

RouterHook = Union[
    Callable[[int, npt.NDArray[np.float32]], Optional[npt.ArrayLike]],
    Callable[[int, npt.NDArray[np.float32], npt.NDArray[np.uint64]], Optional[npt.ArrayLike]],
]
"""`on_router(layer, logits)` or `on_router(layer, logits, positions)`: `logits` is the
layer's `[T, E]` float32 router logits (after the named interventions, before the softmax),
a copy; `positions` (given to a function that takes three arguments) the rows' absolute
positions in the sequence. Edit `logits` in place and return None, or return a new
`[T, E]` array; set an expert's logit to -inf to remove it. Called once per layer per
forward call: `logits()` runs the tokens in one call; `generate()` the prompt in calls of
128 tokens (only those not cached in a session), then one row per generated token. The hook
must not call the engine (RuntimeError). Cost per call: the GIL taken from the engine's thread, two copies of
T x E floats and the Python call; measured at 19 us per call with a no-op hook (T = 4,
E = 8, a 2-core Xeon), next to the milliseconds a Mixtral-8x7B layer takes per decoded token
on a CPU."""

class Ablate:
    """Remove expert `expert` of layer `layer` (its router logit becomes -inf)."""
    layer: int
    expert: int
    def __init__(self, layer: int, expert: int) -> None: ...

class AblateExpert:
    """Remove expert `expert` in every layer."""
    expert: int
    def __init__(self, expert: int) -> None: ...

class Force:
    """Route the tokens at absolute `positions` of layer `layer` to exactly `experts` (in
    that order, as many as experts per token), weighted by the softmax of their logits."""
    layer: int
    positions: List[int]
    experts: List[int]
    def __init__(self, layer: int, positions: Sequence[int], experts: Sequence[int]) -> None: ...

class TopK:
    """Route every token to `k` experts (1 ... E) instead of the model's number."""
    k: int
    def __init__(self, k: int) -> None: ...

Intervention = Union[Ablate, AblateExpert, Force, TopK]

class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    prefill_seconds: float
    decode_seconds: float

class TokenEvent:
    """One generated token."""
    id: int
    text: str
    """Text safe to print now (empty while a multi-byte character or a possible stop string
    is held back)."""
    logprob: float
    top_logprobs: List[Tuple[int, float]]

class Completion:
    """A finished generation."""
    text: str
    token_ids: List[int]
    logprobs: List[float]
    finish_reason: Literal["stop", "length", "interrupted"]
    @property
    def usage(self) -> Usage: ...

class Stream(Iterator[TokenEvent]):
    """Tokens as they are computed. `finish_reason` and `usage` are set once it is
    exhausted. `cancel()` (from any thread), dropping it, or Ctrl-C while it waits stops the
    generation. Errors (bad parameters, a hook's exception) are raised by the iteration."""
    def __iter__(self) -> "Stream": ...
    def __next__(self) -> TokenEvent: ...
    @property
    def finish_reason(self) -> Optional[str]: ...
    @property
    def usage(self) -> Optional[Usage]: ...
    def cancel(self) -> None:
        """Stops the generation: it ends after the current token (finish_reason
        "interrupted"), or, while the prompt is computed, iteration raises CancelledError."""

class Outputs(TypedDict, total=False):
    logits: npt.NDArray[np.float32]
    """`[T, V]`."""
    router_logits: npt.NDArray[np.float32]
    """`[L, T, E]`, after the interventions, before the softmax."""
    hidden_states: npt.NDArray[np.float32]
    """`[L+2, T, D]`: 0 the embeddings, l+1 after layer l, L+1 after the final RMSNorm."""
    routing: npt.NDArray[np.uint32]
    """`[L, T, K]` expert ids, most probable first."""
    routing_weights: npt.NDArray[np.float32]
    """`[L, T, K]` their weights (renormalised)."""

class Engine:
    """A loaded model: weights (memory-mapped), tokenizer, worker threads, defaults.

    Calls from several Python threads on one engine take turns, one forward pass at a time;
    for many generations at once use `batch()`.
    """

    def __init__(
        self,
        model: Union[str, "PathLike[str]"],
        *,
        device: str = "cpu",
        precision: Literal["auto", "f32", "bf16", "int8"] = "auto",
        threads: Optional[int] = None,
        kv_dtype: Optional[Literal["f32", "f16", "bf16"]] = None,
        quantize: Optional[Literal["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q5_k", "q4_k"]] = None,
        batch_invariant: bool = False,
        prefault: bool = True,
        chat_format: Literal["auto", "mistral", "template"] = "auto",
        repack: Optional[bool] = None,
    ) -> None:
        """Loads a Hugging Face or Mistral directory, a `.gguf` file, a `.safetensors` file
        with its config beside it, or a Hugging Face repo id (as the CLI's `--model`).
        `device`: "cpu", "cuda" or "cuda:N". `repack`: the CLI's `--repack` (None: auto).
        Defaults as the CLI's."""
    @overload
    def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        min_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        stop_token_ids: Optional[Sequence[int]] = None,
        ignore_eos: bool = False,
        top_logprobs: int = 0,
        json_schema: Union[Dict[str, Any], str, None] = None,
        regex: Optional[str] = None,
        choice: Optional[Sequence[str]] = None,
        grammar: Optional[str] = None,
        cache_salt: Optional[str] = None,
        interventions: Optional[Sequence[Intervention]] = None,
        on_router: Optional[RouterHook] = None,
        stream: Literal[False] = False,
    ) -> Completion:
        """Generates after `prompt`. Unset sampling options come from the model's
        generation_config.json (as the CLI's); the same seed gives the CLI's tokens.
        Interventions and `on_router` apply to the prompt and to every generated token.
        At most one of `json_schema` (a JSON Schema), `regex`, `choice` (a list of strings) and
        `grammar` (llguidance's Lark syntax) constrains the output: every token is masked by
        it (structured outputs); a bad one raises InvalidInputError. In a `batch()`,
        `cache_salt` (1 to 256 bytes) shares cached prefixes only with requests of the same
        salt."""
    @overload
    def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        min_p: Optional[float] = None,
        repetition_penalty: Optional[float] = None,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        stop_token_ids: Optional[Sequence[int]] = None,
        ignore_eos: bool = False,
        top_logprobs: int = 0,
        json_schema: Union[Dict[str, Any], str, None] = None,
        regex: Optional[str] = None,
        choice: Optional[Sequence[str]] = None,
        grammar: Optional[str] = None,
        cache_salt: Optional[str] = None,
        interventions: Optional[Sequence[Intervention]] = None,
        on_router: Optional[RouterHook] = None,
        stream: Literal[True],
    ) -> Stream: ...
    @overload
    def generate(self, prompt: Prompt, *, stream: bool, **kwargs) -> Union[Completion, Stream]: ...
    def chat(self, messages: Sequence[Message], **kwargs) -> Union[Completion, Stream]:
        """The assistant's answer to `messages`, rendered with the model's chat format;
        keyword arguments as `generate`'s."""
    def tokenize(self, text: str, *, add_bos: bool = True) -> List[int]: ...
    def detokenize(self, ids: Sequence[int]) -> str: ...
    def logits(
        self,
        tokens: Prompt,
        *,
        router_logits: bool = False,
        hidden_states: bool = False,
        routing: bool = False,
        interventions: Optional[Sequence[Intervention]] = None,
        on_router: Optional[RouterHook] = None,
    ) -> Outputs:
        """Logits at every position of `tokens` (a fresh sequence) and what is asked to be
        recorded, under the interventions. Matches transformers' f32 forward to ~1e-6 of the
        logits' range on f32 weights."""
    def session(self) -> "Session":
        """An empty session, for multi-turn reuse of the KV cache."""
    def batch(
        self,
        *,
        max_batch: int = 16,
        kv_memory: Optional[int] = None,
        max_queue: int = 256,
        prefill_chunk: int = 128,
        prefix_caching: Optional[bool] = None,
        reserve_max_tokens: bool = False,
    ) -> "Batch":
        """A batch scheduler over this engine, for generations from many threads at once."""
    @property
    def config(self) -> Dict[str, object]:
        """The architecture, as config.json names it."""
    @property
    def device(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def eos_token_ids(self) -> List[int]: ...

class Session:
    """One conversation's KV cache across generations, one at a time: a second one while a
    stream is running raises BusyError (a cancelled or dropped stream's is waited for)."""
    def generate(self, prompt: Prompt, **kwargs) -> Union[Completion, Stream]:
        """As `Engine.generate`, reusing the cached prefix."""
    def chat(self, messages: Sequence[Message], **kwargs) -> Union[Completion, Stream]:
        """As `Engine.chat`: send the whole conversation each turn; only the new turn is
        computed."""
    @property
    def ids(self) -> List[int]: ...

class Batch:
    """A batch scheduler: `generate` and `chat` from many threads, run together in every
    step (without interventions)."""
    def generate(self, prompt: Prompt, **kwargs) -> Union[Completion, Stream]: ...
    def chat(self, messages: Sequence[Message], **kwargs) -> Union[Completion, Stream]: ...
    @property
    def metrics(self) -> Dict[str, int]: ...

class MixtralError(Exception):
    """Every error the engine raises."""

class ModelFilesError(MixtralError):
    """The model files: missing, unreadable, malformed, not a Mixtral checkpoint."""

class InvalidInputError(MixtralError):
    """A request's input or parameters."""

class BusyError(MixtralError):
    """No room now: a batch's queue is full, or a session is in use."""

class CancelledError(MixtralError):
    """Stopped on request."""

class DeviceError(MixtralError):
    """The GPU or its driver."""

class InternalError(MixtralError):
    """The engine itself."""
