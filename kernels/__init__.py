"""Fused Triton attention kernels for MixSTE, installed as ``fastmixste.kernels``.

``spatial_attention`` attends over the N joints of each frame, ``temporal_attention`` over the T frames of
each joint; both read q, k, v straight out of the qkv Linear's (B, T, N, 3*C) output and write (B, T, N, C).
"""

from ._common import (
    SUPPORTED_DTYPES,
    SUPPORTED_HEAD_DIMS,
    interpreter_active,
    triton_installed,
    triton_unavailable_reasons,
)

__all__ = [
    "SUPPORTED_DTYPES",
    "SUPPORTED_HEAD_DIMS",
    "interpreter_active",
    "triton_installed",
    "triton_unavailable_reasons",
    "spatial_attention",
    "temporal_attention",
]


def __getattr__(name: str):
    # Imported lazily: importing triton costs ~1 s and is not needed by the eager/sdpa paths.
    if name == "spatial_attention":
        from .spatial import spatial_attention as fn
    elif name == "temporal_attention":
        from .temporal import temporal_attention as fn
    else:
        raise AttributeError(f"module 'fastmixste.kernels' has no attribute {name!r}")
    return fn
