"""Shared checks for the fused attention kernels: what they support and whether they can run here."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import torch

#: Head dimensions the fused kernels are compiled for (tl.dot needs K >= 16 and a power of two).
SUPPORTED_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)
#: Element types the fused kernels accept.
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_active() -> bool:
    """True when TRITON_INTERPRET=1: kernels then run on the CPU, one program after another."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_unavailable_reasons(device: torch.device | str, dtype: torch.dtype) -> list[str]:
    """Reasons the fused kernels cannot run on ``device`` in ``dtype``; empty when they can.

    CUDA runs compiled kernels. On the CPU they run only in the Triton interpreter
    (TRITON_INTERPRET=1), which computes bf16 arithmetic wrongly without saying so: refused.
    """
    device = torch.device(device)
    reasons: list[str] = []
    if not triton_installed():
        reasons.append("triton is not installed (pip install triton; Linux only)")
    if dtype not in SUPPORTED_DTYPES:
        reasons.append(f"dtype {dtype} is not supported (expected one of float32, float16, bfloat16)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reasons.append("CUDA device requested but torch.cuda.is_available() is False")
    elif device.type == "cpu":
        if not interpreter_active():
            reasons.append(
                "device is cpu: the Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 to run them "
                "(slowly) in the Triton interpreter"
            )
        elif dtype == torch.bfloat16:
            reasons.append("the Triton interpreter computes bfloat16 arithmetic incorrectly; use float32/float16")
    elif device.type != "meta":
        reasons.append(f"device type {device.type!r} is not supported (expected cuda, or cpu with TRITON_INTERPRET=1)")
    return reasons


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensor's (no-op off CUDA)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def check_qkv(qkv: torch.Tensor, num_heads: int, op: str) -> tuple[int, int, int, int, int]:
    """Validate a (B, T, N, 3*C) qkv tensor before launch; returns (B, T, N, H, D).

    Raises ValueError/TypeError that say what was expected and what came.
    """
    if not isinstance(qkv, torch.Tensor):
        raise TypeError(f"{op}: qkv must be a torch.Tensor, got {type(qkv).__name__}")
    if qkv.dim() != 4:
        raise ValueError(f"{op}: qkv must be 4-D (B, T, N, 3*C), got shape {tuple(qkv.shape)}")
    if qkv.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{op}: qkv dtype must be float32, float16 or bfloat16, got {qkv.dtype}")
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"{op}: num_heads must be a positive int, got {num_heads!r}")
    B, T, N, C3 = qkv.shape
    if C3 % (3 * num_heads) != 0:
        raise ValueError(
            f"{op}: last dim of qkv must be 3 * num_heads * head_dim; got {C3} with num_heads={num_heads}"
        )
    D = C3 // (3 * num_heads)
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"{op}: head_dim must be one of {SUPPORTED_HEAD_DIMS}, got {D} (= {C3} / (3 * {num_heads}))")
    if qkv.stride(-1) != 1:
        raise ValueError(f"{op}: qkv must be contiguous in its last dim, got strides {qkv.stride()}")
    return B, T, N, num_heads, D


@dataclass(frozen=True)
class KernelCase:
    """One kernel configuration a launcher can pick, for ahead-of-time compilation by ``kernels.report``.

    ``signature`` maps every argument of ``fn`` to a Triton type string ("*fp16", "i32", "fp32", "constexpr");
    ``constexprs`` gives the value of each constexpr argument.
    """

    name: str
    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    dtype: str
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
