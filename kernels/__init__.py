"""Fused Triton kernels for MixSTE, installed as ``fastmixste.kernels``; depends on torch and triton only.

``spatial_attention`` attends over the N joints of each frame, ``temporal_attention`` over the T frames of
each joint; both read q, k, v straight out of the qkv Linear's (B, T, N, 3*C) output and write (B, T, N, C).
``cross_attention`` attends Tq queries (HoT's learnable recovery tokens, broadcastable) over Tk frames of each
joint: q (B, Tq, N, C), k and v (B, Tk, N, C) -> (B, Tq, N, C).
Their eager references (``reference.py``) and the support checks (``_common.py``) import no triton, so the eager
backend runs where triton is not installed; the op modules import triton when first used.
"""

from ._common import (
    SUPPORTED_DTYPES,
    SUPPORTED_HEAD_DIMS,
    interpreter_active,
    triton_installed,
    triton_unavailable_reasons,
)
from .reference import (
    attention_ref,
    bias_gelu_ref,
    cross_attention_ref,
    residual_layernorm_ref,
    spatial_attention_ref,
    temporal_attention_ref,
)

#: The attention cores of the MixSTE blocks (qkv in, attention output out), in the order dispatch asks them.
ATTENTION_CORE_OPS: tuple[str, ...] = ("spatial", "temporal")
#: Every op module, in the order the AOT report compiles them. A new op module is added here.
OP_MODULES: tuple[str, ...] = (*ATTENTION_CORE_OPS, "block", "gelu", "cross")

__all__ = [
    "ATTENTION_CORE_OPS",
    "OP_MODULES",
    "SUPPORTED_DTYPES",
    "SUPPORTED_HEAD_DIMS",
    "attention_ref",
    "bias_gelu",
    "bias_gelu_ref",
    "cross_attention",
    "cross_attention_ref",
    "interpreter_active",
    "residual_layernorm",
    "residual_layernorm_ref",
    "spatial_attention",
    "spatial_attention_ref",
    "temporal_attention",
    "temporal_attention_ref",
    "triton_installed",
    "triton_unavailable_reasons",
]


def __getattr__(name: str):
    # Imported lazily: importing triton costs ~1 s and is not needed by the eager/sdpa paths.
    if name == "spatial_attention":
        from .spatial import spatial_attention as fn
    elif name == "temporal_attention":
        from .temporal import temporal_attention as fn
    elif name == "cross_attention":
        from .cross import cross_attention as fn
    elif name == "residual_layernorm":
        from .block import residual_layernorm as fn
    elif name == "bias_gelu":
        from .gelu import bias_gelu as fn
    else:
        raise AttributeError(f"module 'fastmixste.kernels' has no attribute {name!r}")
    return fn
