"""Fixtures for the evaluation tests: a tiny MixSTE, stand-in models with known outputs, small H36M-like data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastmixste import MixSTE, MixSTEConfig
from fastmixste.data.h36m import Sequence
from tests.models import tiny_mixste


@pytest.fixture
def tiny_model() -> MixSTE:
    return tiny_mixste()


class PerFrameModel(nn.Module):
    """Output depends on each joint of each frame only (no context), so any windowing must give the same result
    as applying it to the whole sequence at once."""

    def __init__(self, num_frame: int = 9, in_chans: int = 2) -> None:
        super().__init__()
        self.config = MixSTEConfig(num_frame=num_frame, embed_dim_ratio=32, num_heads=2, in_chans=in_chans)
        self.lin = nn.Linear(in_chans, 3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.3, -0.2], [0.1, 0.5], [-0.4, 0.25]])[:, :in_chans])
            self.lin.bias.copy_(torch.tensor([0.05, -0.1, 0.2]))

    def per_frame(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x)) + 0.1 * x[..., :1] ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.config.num_frame:
            raise ValueError(f"{x.shape[1]} frames > num_frame {self.config.num_frame}")
        return self.per_frame(x)


class WindowProbe(nn.Module):
    """Output channel 0 = input channel 0 (the caller puts the frame index there), channel 1 = position of the
    frame inside its window, channel 2 = window start (frame index of position 0)."""

    def __init__(self, num_frame: int) -> None:
        super().__init__()
        self.config = MixSTEConfig(num_frame=num_frame, embed_dim_ratio=32, num_heads=2)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, j, _ = x.shape
        pos = torch.arange(f, dtype=x.dtype).view(1, f, 1).expand(b, f, j)
        return torch.stack([x[..., 0], pos, x[:, :1, :, 0].expand(b, f, j)], dim=-1)


def make_sequences(lengths_by_action: dict[str, list[int]], seed: int = 0, subject: str = "S9") -> list[Sequence]:
    """Random-walk 2D/3D sequences (2D normalised screen coords, 3D root-relative metres, root zero)."""
    rng = np.random.default_rng(seed)
    out = []
    for action, lengths in lengths_by_action.items():
        for c, n in enumerate(lengths):
            p3 = (rng.standard_normal((1, 17, 3)) * 0.3 + np.cumsum(rng.standard_normal((n, 17, 3)) * 0.01, 0))
            p3 = (p3 - p3[:, :1]).astype(np.float32)
            p2 = (rng.uniform(-0.8, 0.8, (1, 17, 2)) + np.cumsum(rng.standard_normal((n, 17, 2)) * 0.01, 0))
            out.append(Sequence(subject, action, c % 4, p2.astype(np.float32), p3, p3.copy(), 1000, 1002,
                                np.zeros(9, np.float32)))
    return out


@pytest.fixture
def sequences() -> list[Sequence]:
    return make_sequences({"Walking": [23, 5], "Walking 1": [18], "Eating": [9, 30], "Photo": [11]})
