"""Test setup: run the Triton kernels in the interpreter when no GPU is present, skip ``gpu`` tests there, and seed
every RNG."""

import os
import random

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test marked ``gpu`` is skipped, with the reason, on a machine without CUDA (one rule, no per-test skip)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (compiled kernels, bf16, large grids, torch.compile on GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
