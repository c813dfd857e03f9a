"""Fused block kernels (residual + DropPath + LayerNorm(s), bias + GELU) against float64 and eager references.

On the CPU the kernels run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1): fp32 and fp16
only, tiny shapes. C is never a power of two here (24, 40, 96) and the row counts are not multiples of the tiles
(2048 // next_pow2(C) rows, at most 64: 64, 32, 16 rows here; 16 rows for GELU), so masking bugs in columns and rows
both show; the backward runs at most 4 programs in the interpreter, so 7 tiles make programs loop over several.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fastmixste.kernels import _common
from fastmixste.kernels import block as blk
from fastmixste.kernels import gelu as gelu_mod
from fastmixste.kernels.block import residual_layernorm, residual_layernorm_ref, unsupported_reasons
from fastmixste.kernels.gelu import bias_gelu, bias_gelu_ref

from .conftest import CUDA, DEVICE, assert_close, assert_within_twice_eager

KEEP = 0.6

# (B, T, N, C): rows B*T*N = 30, 21, 105 against 64/32/16-row tiles (C = 24, 40, 96; 32/64/128-wide tiles).
SHAPES = [(2, 3, 5, 24), (1, 7, 3, 40), pytest.param((3, 5, 7, 96), marks=pytest.mark.slow)]  # large: full run only
# (two norms, DropPath mask "frame" / "joint" / None, y given)
VARIANTS = [
    (False, None, True),
    (False, "frame", True),
    (True, "joint", True),
    (True, None, True),
    (False, None, False),
    (True, "frame", True),
]


def _mask(kind: str | None, B: int, T: int, N: int, dtype: torch.dtype) -> torch.Tensor | None:
    """The DropPath draw as model.mixste.DropPath makes it: (B, T, 1, 1) per frame, (B, 1, N, 1) per joint."""
    if kind is None:
        return None
    shape = (B, T, 1, 1) if kind == "frame" else (B, 1, N, 1)
    m = (KEEP + torch.rand(shape, dtype=torch.float64, device=DEVICE)).floor_()
    m.view(-1)[0] = 0.0  # at least one dropped and one kept group, whatever the seed
    m.view(-1)[-1] = 1.0
    return m.to(dtype)


def _inputs(shape, two: bool, has_y: bool, dtype=torch.float32):
    B, T, N, C = shape
    r = torch.randn(B, T, N, C, device=DEVICE, dtype=torch.float64)
    y = torch.randn(B, T, N, C, device=DEVICE, dtype=torch.float64) if has_y else None
    params = []
    for _ in range(2 if two else 1):  # LayerNorm weight near 1, bias near 0, as trained ones are
        params += [1 + 0.3 * torch.randn(C, device=DEVICE, dtype=torch.float64), 0.2 * torch.randn(C, device=DEVICE)]
    tensors = [r] + ([y] if has_y else []) + params
    return [t.to(dtype) for t in tensors]


def _run(fn, tensors, has_y, two, mask, grads, h_dtype):
    """Forward + backward of ``fn`` on leaf copies; returns [res, h, grad of every input]."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    r = leaves[0]
    y = leaves[1] if has_y else None
    p = leaves[2:] if has_y else leaves[1:]
    w2, b2 = (p[2], p[3]) if two else (None, None)
    res, h = fn(r, y, mask, KEEP, p[0], p[1], w2, b2, 1e-6, h_dtype)
    g_res, g_h = grads
    torch.autograd.backward([res, h], [g_res.to(res.dtype), g_h.to(h.dtype)])
    return [res.detach(), h.detach()] + [t.grad for t in leaves]


def _names(has_y: bool, two: bool) -> list[str]:
    return ["res", "h", "dr"] + (["dy"] if has_y else []) + ["dw1", "db1"] + (["dw2", "db2"] if two else [])


# ----------------------------------------------------------------------------------------------------------------
# residual + DropPath + LayerNorm(s)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}N{}C{}".format(*s))
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"two{int(v[0])}-{v[1]}-y{int(v[2])}")
def test_residual_layernorm_fp32_matches_float64(shape, variant):
    two, kind, has_y = variant
    B, T, N, C = shape
    tensors = _inputs(shape, two, has_y)
    mask = _mask(kind, B, T, N, torch.float64)
    grads = (torch.randn(B, T, N, C, device=DEVICE), torch.randn(B, T, N, C, device=DEVICE))
    ref = _run(residual_layernorm_ref, tensors, has_y, two, mask, grads, torch.float64)
    f32 = [t.float() for t in tensors]
    got = _run(residual_layernorm, f32, has_y, two, None if mask is None else mask.float(), grads, torch.float32)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    for name, g, r in zip(_names(has_y, two), got, ref):
        assert_close(g, r, 1e-4, name)


@pytest.mark.parametrize("variant", [(False, "frame", True), (True, "joint", True)], ids=str)
def test_residual_layernorm_fp16_error_at_most_twice_eager(variant):
    """fp16 in, as a .half() model runs: fused (fp32 residual, fp16 h) vs the eager fp16 block ops, against float64."""
    two, kind, has_y = variant
    shape = (2, 3, 5, 40)
    B, T, N, C = shape
    tensors = _inputs(shape, two, has_y, torch.float16)  # values representable in fp16
    mask = _mask(kind, B, T, N, torch.float16)
    grads = (torch.randn(B, T, N, C, device=DEVICE).half(), torch.randn(B, T, N, C, device=DEVICE).half())

    def eager_fp16(r, y, m, keep, w1, b1, w2, b2, eps, h_dtype):
        # What MixSTE's eager block does in fp16: x + drop_path(y) (y.div(keep) * mask), then nn.LayerNorm(s).
        s = r + y.div(keep) * m
        a = F.layer_norm(s, (C,), w1, b1, eps)
        return (s, a) if w2 is None else (a, F.layer_norm(a, (C,), w2, b2, eps))

    ref = _run(residual_layernorm_ref, [t.double() for t in tensors], has_y, two, mask.double(), grads, torch.float64)
    eager = _run(eager_fp16, tensors, has_y, two, mask, grads, torch.float16)
    got = _run(residual_layernorm, tensors, has_y, two, mask, grads, torch.float16)
    assert got[1].dtype == torch.float16 and got[0].dtype == torch.float32
    for name, g, e, r in zip(_names(has_y, two), got, eager, ref):
        assert_within_twice_eager(g, e, r, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_residual_layernorm_writes_every_element(dtype):
    """Every output and partial-sum buffer starts NaN-filled (conftest's nan_buffers): an unwritten row, column or
    program shows up."""
    assert torch.isnan(_common.new_buffer((2,), torch.zeros(1, device=DEVICE))).all()
    shape = (3, 5, 7, 96)  # 105 rows: 6 full 16-row tiles and a partial one, over 4 backward programs
    B, T, N, C = shape
    tensors = _inputs(shape, True, True, dtype)
    mask = _mask("frame", B, T, N, dtype)
    grads = (torch.randn(B, T, N, C, device=DEVICE), torch.randn(B, T, N, C, device=DEVICE))
    ref = _run(residual_layernorm_ref, [t.double() for t in tensors], True, True, mask.double(), grads, torch.float64)
    got = _run(residual_layernorm, tensors, True, True, mask, grads, dtype)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    for name, g, r in zip(_names(True, True), got, ref):
        assert_close(g, r, tol, name)


def test_residual_layernorm_broadcast_y_and_stride0_grads():
    """y as a positional embedding expanded over B and N, grads as .sum()'s stride-0 expands and as a strided view."""
    B, T, N, C = 2, 5, 3, 24
    r = torch.randn(B, T, N, C, device=DEVICE)
    pos = torch.randn(1, T, 1, C, device=DEVICE)
    w1, b1 = 1 + 0.3 * torch.randn(C, device=DEVICE), 0.1 * torch.randn(C, device=DEVICE)

    def run(fn, dtype, grad_h=None):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (r, pos, w1, b1)]
        res, h = fn(leaves[0], leaves[1].expand(B, T, N, C), None, 1.0, leaves[2], leaves[3], None, None, 1e-6, dtype)
        if grad_h is None:
            (res.sum() + h.sum()).backward()  # both gradients arrive as stride-0 expands
        else:
            torch.autograd.backward([h], [grad_h.to(dtype)])
        return [res.detach(), h.detach()] + [t.grad for t in leaves]

    names = ["res", "h", "dr", "dpos", "dw1", "db1"]
    for name, g, ref in zip(names, run(residual_layernorm, torch.float32), run(residual_layernorm_ref, torch.float64)):
        assert_close(g, ref, 1e-4, name)
    strided = torch.randn(B, N, T, C, device=DEVICE).transpose(1, 2)  # (B, T, N, C), strided on T and N
    got = run(residual_layernorm, torch.float32, strided)
    ref = run(residual_layernorm_ref, torch.float64, strided)
    for name, g, rr in zip(names[2:], got[2:], ref[2:]):
        assert_close(g, rr, 1e-4, f"{name} (strided grad)")


def test_residual_layernorm_matches_model_droppath_draw():
    """Same seed, same torch.rand call as model.mixste.DropPath: the fused op reproduces the eager block add."""
    from fastmixste.model.mixste import DropPath

    B, T, N, C = 4, 4, 5, 24
    r, y = torch.randn(B, T, N, C, device=DEVICE), torch.randn(B, T, N, C, device=DEVICE)
    w, b = torch.ones(C, device=DEVICE), torch.zeros(C, device=DEVICE)
    for axis in ("spatial", "temporal"):
        dp = DropPath(0.5, axis).train()
        torch.manual_seed(3)
        s_eager = r + dp(y)
        torch.manual_seed(3)
        mask = dp.draw_mask(y)
        assert mask is not None and mask.shape == ((B, T, 1, 1) if axis == "spatial" else (B, 1, N, 1))
        res, _ = residual_layernorm(r, y, mask, 1 - dp.drop_prob, w, b)
        assert_close(res, s_eager, 1e-6, f"s ({axis})")
        assert 0 < int(mask.sum()) < mask.numel(), "the draw should drop some groups and keep others"


def test_residual_layernorm_errors_and_refusal(monkeypatch):
    r = torch.randn(1, 2, 3, 8)
    w = torch.ones(8)
    with pytest.raises(ValueError, match="4-D"):
        residual_layernorm(r[0], None, None, 1.0, w, w)
    with pytest.raises(ValueError, match=r"w1 must have shape \(8,\)"):
        residual_layernorm(r, None, None, 1.0, torch.ones(7), w)
    with pytest.raises(ValueError, match="mask must broadcast"):
        residual_layernorm(r, r, torch.ones(2, 2, 1, 1), 0.5, w, w)
    with pytest.raises(ValueError, match="at most 2048 channels"):
        residual_layernorm(
            torch.empty(1, 1, 1, 3000, device="meta"), None, None, 1.0, *[torch.empty(3000, device="meta")] * 2
        )
    with pytest.raises(ValueError, match=r"keep \(1 - drop_prob\) must be in \(0, 1\]"):
        residual_layernorm(r, r, torch.ones(1, 2, 1, 1), 0.0, w, w)
    assert unsupported_reasons(torch.empty(2, 3, 17, 512, device="meta"), torch.bfloat16) == []
    assert any("2048" in m for m in unsupported_reasons(torch.empty(1, 1, 1, 4096, device="meta")))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not CUDA:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            residual_layernorm(r, None, None, 1.0, w, w)
        assert any("TRITON_INTERPRET=1" in m for m in unsupported_reasons(r))


def _run_y_bias(fn, tensors, yb, two, mask, grads, h_dtype):
    """Forward + backward with a y bias; returns [res, h, dr, dy, dw1, db1, (dw2, db2,) dyb]."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors + [yb]]
    r, y, *p, ybl = leaves
    w2, b2 = (p[2], p[3]) if two else (None, None)
    res, h = fn(r, y, mask, KEEP, p[0], p[1], w2, b2, 1e-6, h_dtype, y_bias=ybl)
    torch.autograd.backward([res, h], [grads[0].to(res.dtype), grads[1].to(h.dtype)])
    return [res.detach(), h.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("variant", [(False, "frame"), (True, "joint"), (True, None), (False, None)], ids=str)
def test_residual_layernorm_y_bias_matches_float64(variant):
    """The Linear's bias added in the kernel (s = r + (y + yb) / keep * mask): outputs and every gradient, the bias's
    (the column sum of dy, summed by the backward's programs) included, against float64; 7 tiles over 4 programs."""
    two, kind = variant
    shape = (3, 5, 7, 96)
    B, T, N, C = shape
    tensors = _inputs(shape, two, True)
    yb = 0.5 * torch.randn(C, device=DEVICE)
    mask = _mask(kind, B, T, N, torch.float64)
    grads = (torch.randn(B, T, N, C, device=DEVICE), torch.randn(B, T, N, C, device=DEVICE))
    ref = _run_y_bias(residual_layernorm_ref, [t.double() for t in tensors], yb.double(), two, mask, grads,
                      torch.float64)  # fmt: skip
    got = _run_y_bias(residual_layernorm, tensors, yb, two, None if mask is None else mask.float(), grads,
                      torch.float32)  # fmt: skip
    names = _names(True, two) + ["dyb"]
    for name, g, r in zip(names, got, ref, strict=True):
        assert_close(g, r, 1e-4, name)
    # The bias's gradient is the column sum of dy (what autograd's Linear backward would compute from dy).
    assert_close(got[-1], got[3].double().sum((0, 1, 2)), 1e-5, "dyb = sum of dy")


@pytest.mark.parametrize("two", [False, True], ids=["one_norm", "two_norms"])
def test_residual_layernorm_y_bias_fp16_error_at_most_twice_eager(two):
    """fp16: the fused op with the bias vs eager fp16 (the Linear's output with its bias, then the block ops)."""
    shape = (2, 3, 5, 40)
    B, T, N, C = shape
    tensors = _inputs(shape, two, True, torch.float16)
    yb = (0.5 * torch.randn(C, device=DEVICE)).half()
    mask = _mask("frame", B, T, N, torch.float16)
    grads = (torch.randn(B, T, N, C, device=DEVICE).half(), torch.randn(B, T, N, C, device=DEVICE).half())

    def eager_fp16(r, y, m, keep, w1, b1, w2, b2, eps, h_dtype, y_bias):
        s = r + (y + y_bias).div(keep) * m  # F.linear's bias, then DropPath and the residual add
        a = F.layer_norm(s, (C,), w1, b1, eps)
        return (s, a) if w2 is None else (a, F.layer_norm(a, (C,), w2, b2, eps))

    ref = _run_y_bias(residual_layernorm_ref, [t.double() for t in tensors], yb.double(), two, mask.double(), grads,
                      torch.float64)  # fmt: skip
    eager = _run_y_bias(eager_fp16, tensors, yb, two, mask, grads, torch.float16)
    got = _run_y_bias(residual_layernorm, tensors, yb, two, mask, grads, torch.float16)
    assert got[-1].dtype == torch.float16  # the bias's gradient in the bias's dtype
    for name, g, e, r in zip(_names(True, two) + ["dyb"], got, eager, ref, strict=True):
        assert_within_twice_eager(g, e, r, name)


def test_residual_layernorm_y_bias_errors():
    r, w = torch.randn(1, 2, 3, 8), torch.ones(8)
    with pytest.raises(ValueError, match="y_bias is the bias of the Linear that made y; it needs a y"):
        residual_layernorm(r, None, None, 1.0, w, w, y_bias=torch.zeros(8))
    with pytest.raises(ValueError, match=r"y_bias must be a \(8,\) float32/float16/bfloat16 tensor"):
        residual_layernorm(r, r, None, 1.0, w, w, y_bias=torch.zeros(7))


def test_unused_outputs_get_no_zero_filled_gradient(monkeypatch):
    """An output nobody reads (the res of the last post-norm, of STE0's post-norm) reaches the backward as None, not
    as an activation of zeros that a kernel would then read; the gradients equal those of explicit zeros."""
    seen = []
    norm_grads = blk.norm_grads

    def spy(ctx, saved, grad_res, grad_h, write_h=False):
        seen.append((grad_res is None, grad_h is None))
        return norm_grads(ctx, saved, grad_res, grad_h, write_h)

    monkeypatch.setattr(blk, "norm_grads", spy)
    shape = (2, 3, 5, 24)
    tensors = _inputs(shape, True, True)
    g_h = torch.randn(shape, device=DEVICE)

    def grads(use_res: bool):
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        res, h = residual_layernorm(*leaves[:2], None, 1.0, *leaves[2:])
        if use_res:
            torch.autograd.backward([res, h], [torch.zeros_like(res), g_h])
        else:
            h.backward(g_h)
        return [t.grad for t in leaves]

    unused, zeros = grads(False), grads(True)
    assert seen == [(True, False), (False, False)]
    for name, a, b in zip(["dr", "dy", "dw1", "db1", "dw2", "db2"], unused, zeros, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_residual_layernorm_opcheck():
    B, T, N, C = 1, 3, 5, 24
    r, y = torch.randn(B, T, N, C, device=DEVICE), torch.randn(B, T, N, C, device=DEVICE)
    mask = (KEEP + torch.rand(B, T, 1, 1, device=DEVICE)).floor_().expand(B, T, N, 1)[..., 0]
    w1, b1, w2, b2 = (torch.randn(C, device=DEVICE, requires_grad=True) for _ in range(4))
    op = torch.ops.fastmixste.residual_layernorm.default
    torch.library.opcheck(op, (r.requires_grad_(), y.requires_grad_(), mask, KEEP, w1, b1, w2, b2, 1e-6, torch.float16))
    torch.library.opcheck(op, (r, None, None, 1.0, w1, b1, None, None, 1e-6, torch.float32))
    yb = torch.randn(C, device=DEVICE, requires_grad=True)
    torch.library.opcheck(op, (r, y, mask, KEEP, w1, b1, w2, b2, 1e-6, torch.float32, yb))
    torch.library.opcheck(op, (r, y, None, 1.0, w1, b1, None, None, 1e-6, torch.float16, yb))
    g = torch.randn(B, T, N, C, device=DEVICE)
    bwd = torch.ops.fastmixste.residual_layernorm_backward.default
    args = (g, g, r.detach(), y.detach(), mask, KEEP, w1.detach(), b1.detach(), w2.detach(), 1e-6, True)
    torch.library.opcheck(bwd, args + (torch.float32, torch.float32))
    torch.library.opcheck(bwd, args + (torch.float32, torch.float32, None, False, yb.detach()))


def test_residual_layernorm_compile_and_export_see_the_op():
    B, T, N, C = 1, 2, 3, 24
    r = torch.randn(B, T, N, C, device=DEVICE, requires_grad=True)
    w, b = torch.ones(C, device=DEVICE), torch.zeros(C, device=DEVICE)

    def f(x):
        res, h = residual_layernorm(x, None, None, 1.0, w, b)
        return res + 2 * h

    out = torch.compile(f, backend="aot_eager", fullgraph=True)(r)
    ref_res, ref_h = residual_layernorm_ref(r.detach().double(), None, None, 1.0, w.double(), b.double())
    assert_close(out, ref_res + 2 * ref_h, 1e-4, "res + 2h")
    out.sum().backward()
    assert r.grad is not None and torch.isfinite(r.grad).all()

    class Norm(torch.nn.Module):
        def forward(self, x, y, m):
            return residual_layernorm(x, y, m, 0.5, torch.ones(C, device=x.device), torch.zeros(C, device=x.device))

    meta = torch.empty(2, 3, 4, C, device="meta")
    ep = torch.export.export(Norm(), (meta, meta, torch.empty(2, 3, 1, 1, device="meta")))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert torch.ops.fastmixste.residual_layernorm.default in targets


# ----------------------------------------------------------------------------------------------------------------
# bias + GELU
# ----------------------------------------------------------------------------------------------------------------

# (rows..., H): 35 and 21 rows against 16-row tiles; H = 40 and 200 against 128-wide column blocks.
GELU_SHAPES = [(5, 7, 40), (3, 7, 200), (1, 1, 1, 48)]


def _gelu_run(fn, u, b, grad):
    uu, bb = u.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    g = fn(uu, bb)
    g.backward(grad.to(g.dtype))
    return g.detach(), uu.grad, bb.grad


@pytest.mark.parametrize("shape", GELU_SHAPES, ids=str)
def test_bias_gelu_fp32_matches_float64(shape):
    u = 2 * torch.randn(shape, device=DEVICE)
    b = torch.randn(shape[-1], device=DEVICE)
    grad = torch.randn(shape, device=DEVICE)
    got = _gelu_run(bias_gelu, u, b, grad)
    ref = _gelu_run(bias_gelu_ref, u.double(), b.double(), grad.double())
    for name, g, r in zip(("g", "du", "db"), got, ref):
        assert_close(g, r, 1e-4, name)


def test_bias_gelu_fp16_error_at_most_twice_eager():
    shape = (5, 7, 200)
    u = (2 * torch.randn(shape, device=DEVICE)).half()
    b = torch.randn(shape[-1], device=DEVICE).half()
    grad = torch.randn(shape, device=DEVICE).half()
    ref = _gelu_run(bias_gelu_ref, u.double(), b.double(), grad.double())
    eager = _gelu_run(bias_gelu_ref, u, b, grad)
    got = _gelu_run(bias_gelu, u, b, grad)
    for name, g, e, r in zip(("g", "du", "db"), got, eager, ref):
        assert g.dtype == torch.float16
        assert_within_twice_eager(g, e, r, name)


def test_bias_gelu_writes_every_element_and_takes_stride0_grads():
    """Buffers start NaN-filled (conftest's nan_buffers): an unwritten row or column block shows up."""
    assert torch.isnan(_common.new_buffer((2,), torch.zeros(1, device=DEVICE))).all()
    shape = (3, 13, 200)  # 39 rows: a partial row tile, a partial column block
    u, b = torch.randn(shape, device=DEVICE), torch.randn(shape[-1], device=DEVICE)
    ref_u, ref_b = u.double().requires_grad_(), b.double().requires_grad_()
    ref = bias_gelu_ref(ref_u, ref_b)
    ref.sum().backward()
    uu, bb = u.clone().requires_grad_(), b.clone().requires_grad_()
    g = bias_gelu(uu, bb)
    g.sum().backward()  # stride-0 grad
    assert_close(g.detach(), ref.detach(), 1e-4, "g")
    assert_close(uu.grad, ref_u.grad, 1e-4, "du")
    assert_close(bb.grad, ref_b.grad, 1e-4, "db")


def test_bias_gelu_errors_and_opcheck():
    with pytest.raises(ValueError, match="b must be 1-D"):
        bias_gelu(torch.randn(2, 8), torch.randn(7))
    u = torch.randn(3, 5, 40, device=DEVICE, requires_grad=True)
    b = torch.randn(40, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.fastmixste.bias_gelu.default, (u, b))
    grad = torch.randn(3, 5, 40, device=DEVICE)
    torch.library.opcheck(torch.ops.fastmixste.bias_gelu_backward.default, (grad, u.detach(), b.detach()))


# ----------------------------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------------------------


def test_report_cases_cover_every_tile_the_launcher_picks():
    cases = blk.report_cases()
    picked = set()
    for C in range(1, blk.MAX_CHANNELS + 1):
        for backward in (False, True):
            ((cfg, _grid),) = blk.launch_plan((1, 1, 1, C), torch.float32, backward)
            picked.add(cfg.constexpr("BLOCK_C"))
    reported = {c.constexprs["BLOCK_C"] for c in cases if "BLOCK_C" in c.constexprs}
    assert picked == reported == set(blk.REPORT_CHANNELS)
    for c in cases:
        assert set(c.signature) == set(c.fn.arg_names)
        assert all(c.signature[k] == "constexpr" for k in c.constexprs)
        # fp32 scalars and typed pointers as the launchers pass them
        assert all(c.signature[k] == "fp32" for k in ("inv_keep", "eps", "inv_c") if k in c.signature)
        assert dict(c.extra["ptr_types"]) == {k: t[1:] for k, t in c.signature.items() if t.startswith("*")}


def test_launchers_pass_each_pointer_in_its_planned_type(monkeypatch):
    """The tensors a launcher hands to a kernel have exactly the element types of its launch configuration's
    ptr_types (the typing the AOT report compiles), for mixed dtypes (fp16 r and h, fp32 y, fp16 mask)."""
    seen = []
    real_launch = blk.launch

    def spy(cfg, grid, *args):
        ptrs = [n for n in cfg.fn.arg_names if n.endswith("_ptr")]
        got = {n: a.dtype for n, a in zip(cfg.fn.arg_names, args) if n in ptrs}
        seen.append((cfg.name, got, {n: t for n, t in cfg.ptr_types}))
        real_launch(cfg, grid, *args)

    monkeypatch.setattr(blk, "launch", spy)
    monkeypatch.setattr(gelu_mod, "launch", spy)
    B, T, N, C = 1, 3, 5, 24
    r = torch.randn(B, T, N, C, device=DEVICE).half().requires_grad_()
    y = torch.randn(B, T, N, C, device=DEVICE, requires_grad=True)
    w = torch.ones(C, device=DEVICE, dtype=torch.float16, requires_grad=True)
    mask = _mask("frame", B, T, N, torch.float16)
    res, h = residual_layernorm(r, y, mask, KEEP, w, w.detach().clone().requires_grad_(), w, w, h_dtype=torch.float16)
    (res.sum() + h.float().sum()).backward()
    u = torch.randn(4, 40, device=DEVICE).half().requires_grad_()
    bias_gelu(u, torch.zeros(40, device=DEVICE, requires_grad=True)).float().sum().backward()
    names = {name for name, _, _ in seen}
    assert names == {"_residual_norm_fwd_kernel", "_residual_norm_bwd_kernel", "_bias_gelu_fwd_kernel",
                     "_bias_gelu_bwd_kernel"}  # fmt: skip
    triton_name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    for name, got, planned in seen:
        assert {n: triton_name[d] for n, d in got.items()} == planned, name
    assert r.grad.dtype == torch.float16 and y.grad.dtype == torch.float32 and w.grad.dtype == torch.float16
