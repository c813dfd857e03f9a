"""Test setup: run the Triton kernels in the interpreter when no GPU is present, and seed every RNG."""

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
