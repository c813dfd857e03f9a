"""Helpers for the training-stack tests: tiny run arguments on the built-in data."""

from __future__ import annotations

from pathlib import Path

import pytest

# A model and budget small enough for seconds per run on 2 CPU cores: 9 frames, 32 channels, one block pair,
# 2 heads of 16 (the smallest head the fused kernels take); short validation/evaluation crops.
TINY_MODEL = ["--set", "model.num_frame=9", "--set", "model.embed_dim_ratio=32", "--set", "model.depth=1",
              "--set", "model.num_heads=2", "--set", "model.drop_path_rate=0.0"]  # fmt: skip
# One thread: tiny models gain nothing from more, and the CI machine's cores are shared with other tests.
TINY_EVAL = ["--set", "val.max_frames=18", "--set", "eval.max_frames=18", "--no-progress", "--threads", "1"]


def tiny_args(out: Path, *extra: str) -> list[str]:
    """Command line of a tiny run writing to ``out``."""
    return ["--out", str(out), *TINY_MODEL, *TINY_EVAL, *extra]


@pytest.fixture(autouse=True)
def restore_threads():
    """Runs set torch's thread count (--threads); give the next test the count it had."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
