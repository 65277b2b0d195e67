"""The example a researcher runs first works on the repository's tiny model."""

import subprocess
import sys

import pytest

from conftest import ROOT, TINY_BF16

pytest.importorskip("matplotlib")


def test_expert_usage_example_draws_its_heatmap(tmp_path):
    out = tmp_path / "usage.png"
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "crates" / "python" / "examples" / "expert_usage.py"),
            "--model", str(TINY_BF16), "--out", str(out), "--threads", "1",
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "most used expert per layer" in done.stdout
    # One ablation row per expert of the tiny model.
    assert "ablating each expert of layer 1" in done.stdout
    rows = [l for l in done.stdout.splitlines() if l[:6].strip().isdigit()]
    assert len(rows) == 8
