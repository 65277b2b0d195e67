"""Shared helpers: the repository's fixtures, a safetensors reader, the CLI."""

import json
import os
import pathlib
import struct
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
TINY_F32 = FIXTURES / "models" / "tiny-f32"
TINY_BF16 = FIXTURES / "models" / "tiny-bf16"
RESEARCH = FIXTURES / "research"

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """The tensors of a safetensors file as NumPy arrays (the format is a u64 header length,
    a JSON header, then the raw little-endian data)."""
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
    return out


def cli(*args):
    """Runs the `mixtral` CLI (built by cargo in the README's test profile, or the binary
    MIXTRAL_CLI names) and returns its stdout."""
    binary = os.environ.get("MIXTRAL_CLI")
    if binary:
        cmd = [binary, *args]
    else:
        cmd = [
            "cargo", "run", "-q", "--profile", "release-test", "-p", "mixtral-cli", "--", *args,
        ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_close(actual, expected, rel=1e-4, what=""):
    """Within `rel` × max |expected| everywhere (the fixtures' README tolerance)."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = float(np.max(np.abs(expected)))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel} × {scale:.3g}"


@pytest.fixture(scope="session")
def tiny_f32():
    import mixtral

    return mixtral.Engine(str(TINY_F32), threads=1)


@pytest.fixture(scope="session")
def tiny_bf16():
    import mixtral

    return mixtral.Engine(str(TINY_BF16), threads=1)
