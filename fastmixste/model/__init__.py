"""The model core: MixSTE and its blocks, attention dispatch, configuration, checkpoints, activation recompute
and the fused (Triton) block path. Depends on torch, ``fastmixste.kernels`` and ``fastmixste.io``."""

from .mixste import Block, DropPath, MixSTE, Mlp, box_normalize

__all__ = ["Block", "DropPath", "MixSTE", "Mlp", "box_normalize"]
