"""Test setup: run the Triton kernels in the interpreter when no GPU is present, skip ``gpu`` tests there, seed
every RNG, and keep the built-in data in a folder of the test session (never the user's cache)."""

import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

# Must be set before any kernel module is imported: @triton.jit picks interpreter or compiler at decoration time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed python, numpy and torch so every test sees the same random inputs."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (seeds code that still uses the legacy global RNG)
    torch.manual_seed(0)
    return 0


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$FASTMIXSTE_CACHE points at a folder of this session for every test and every command a test starts, so
    nothing reads or writes the user's ~/.cache/fastmixste (or a cache the environment names)."""
    root = tmp_path_factory.mktemp("fastmixste-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTMIXSTE_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def builtin_dir(session_cache: Path) -> Path:
    """The full built-in dataset, generated once per session in the session's cache (a few seconds)."""
    from fastmixste.data.builtin import builtin_data_dir

    return builtin_data_dir(session_cache)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test marked ``gpu`` is skipped, with the reason, on a machine without CUDA (one rule, no per-test skip)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (compiled kernels, bf16, large grids, torch.compile on GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
