"""Shared tools of the kernel tests: NaN-prefilled buffers, verbose comparisons, parity helpers, the GPU marker.

On a CPU the kernels run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1): fp32 and fp16
only (the interpreter computes bf16 wrongly). Tests that need a GPU carry ``@needs_gpu``, which is the ``gpu``
marker: tests/conftest.py skips every ``gpu`` test with its reason on a machine without CUDA, and
``pytest -m gpu`` selects them all.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from fastmixste.kernels import _common

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
#: The one mark of a GPU-only test (skipped with a reason on CPU, selected by ``pytest -m gpu``).
needs_gpu = pytest.mark.gpu

#: Parity bound for fp32 against a float64 reference on unit-scale inputs.
FP32_ATOL = 1e-4


@pytest.fixture(autouse=True)
def nan_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every buffer a launcher of any op allocates starts as NaN, so a row or slice a kernel forgets fails."""

    def nan_buffer(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.full(tuple(shape), float("nan"), device=like.device, dtype=like.dtype if dtype is None else dtype)

    monkeypatch.setattr(_common, "new_buffer", nan_buffer)


def make_qkv(B: int, T: int, N: int, H: int, D: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unit-scale (B, T, N, 3*H*D) qkv on the test device."""
    return torch.randn(B, T, N, 3 * H * D, device=DEVICE).to(dtype)


def make_grad(qkv: torch.Tensor, H: int) -> torch.Tensor:
    """A random (B, T, N, C) gradient of the attention output, in qkv's dtype."""
    B, T, N, C3 = qkv.shape
    return torch.randn(B, T, N, C3 // 3, device=qkv.device).to(qkv.dtype)


def run_op(
    fn: Callable[..., torch.Tensor], qkv: torch.Tensor, H: int, grad: torch.Tensor, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, dqkv) of ``fn(qkv, H)`` backpropagating ``grad``, on a fresh leaf (cast to ``dtype`` if given)."""
    x = qkv.detach().clone() if dtype is None else qkv.detach().to(dtype)
    x.requires_grad_()
    o = fn(x, H)
    o.backward(grad if dtype is None else grad.to(dtype))
    return o.detach(), x.grad


def max_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute difference (in float64); fails on NaN, which marks an unwritten element."""
    assert not torch.isnan(got).any(), f"{int(torch.isnan(got).sum())} NaN elements (unwritten rows?)"
    return (got.double() - want.double()).abs().max().item()


def assert_close(got: torch.Tensor, want: torch.Tensor, atol: float, what: str) -> None:
    """Max-abs-error check that reports a shape difference, NaNs and the first mismatches (index, got, want)."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    nan = torch.isnan(got)
    assert not nan.any(), f"{what}: NaN at {nan.nonzero()[:5].tolist()} (unwritten?)"
    err = (got.double() - want.double()).abs()
    if err.numel() and not (err <= atol).all():
        bad = (~(err <= atol)).nonzero()[:5].tolist()
        pairs = ", ".join(f"{tuple(i)}: got {got[tuple(i)].item():.6g} want {want[tuple(i)].item():.6g}" for i in bad)
        raise AssertionError(f"{what}: max abs error {err.max().item():.3g} > {atol}; first mismatches {pairs}")


def assert_within_twice_eager(
    fused: torch.Tensor, eager: torch.Tensor, ref: torch.Tensor, what: str, factor: float = 2.0
) -> None:
    """A low-precision fused result is at most ``factor`` x as far from the float64 ``ref`` as eager's."""
    err, err_eager = max_err(fused, ref), max_err(eager, ref)
    assert err <= factor * err_eager, f"{what}: fused error {err:.3g} > {factor} x eager error {err_eager:.3g}"
