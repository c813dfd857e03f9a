"""Fixtures for the deployment tests: a tiny MixSTE and its checkpoint, and a stand-in model for long streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastmixste import MixSTE, MixSTEConfig, save_checkpoint
from tests import models


def tiny_mixste(**overrides) -> MixSTE:
    """The tests' tiny MixSTE at width 16 on the sdpa path (the path exports take)."""
    return models.tiny_mixste(**{"embed_dim_ratio": 16, "attn_backend": "sdpa", **overrides})


@pytest.fixture
def tiny_model() -> MixSTE:
    return tiny_mixste()


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny_mixste())
    return path


class FrameMean(nn.Module):
    """A stand-in lifter with a known output: every frame's 3D is (x, y, mean of the window's x) — cheap enough for
    streams of thousands of frames, and it depends on the whole window (so a wrong window shows)."""

    def __init__(self, num_frame: int = 9) -> None:
        super().__init__()
        self.config = MixSTEConfig(num_frame=num_frame, embed_dim_ratio=8, depth=1, num_heads=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, 17, 2) -> (B, F, 17, 3)."""
        m = x[..., :1].mean(dim=(1, 2), keepdim=True).expand(*x.shape[:3], 1)
        return torch.cat([x, m], dim=-1)


@pytest.fixture(autouse=True)
def one_thread():
    """Small passes: one thread (a second one spinning on a shared machine makes each pass far slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_out(path) -> dict[str, np.ndarray]:
    """Every array of an npz (a streaming output)."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def interrupted_stream(frames, out, **kwargs) -> tuple[dict[str, np.ndarray], list[str]]:
    """``run_stream(FrameMean(9), frames, out, ...)`` over frames that send a signal mid-way: it must stop with
    KeyboardInterrupt -> (the npz written, the notes the interrupt hooks left for the user)."""
    from fastmixste.deploy.stream import run_stream
    from fastmixste.io import cli

    with pytest.raises(KeyboardInterrupt):
        run_stream(FrameMean(9), frames, out, **kwargs)
    try:
        notes = cli._run_interrupt_hooks()
    finally:
        cli._interrupt_hooks.clear()
    return read_out(out), notes
