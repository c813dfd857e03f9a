"""Small models shared by the test folders (a fixture per folder picks its sizes and backend)."""

from __future__ import annotations

import torch

from fastmixste import MixSTE

#: The smallest MixSTE that exercises every part: 9 frames, one block pair, two heads (head_dim 16).
TINY = {"num_frame": 9, "embed_dim_ratio": 32, "depth": 1, "num_heads": 2, "drop_path_rate": 0.0}


def tiny_mixste(**overrides: object) -> MixSTE:
    """A seeded tiny MixSTE in eval mode (eager backend unless ``attn_backend`` is given)."""
    torch.manual_seed(0)
    return MixSTE(**{**TINY, "attn_backend": "eager", **overrides}).eval()
