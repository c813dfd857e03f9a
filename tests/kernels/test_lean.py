"""Recompute "lean" on the fused path: backward kernels that rebuild the forward's h / g, the composites of
fastmixste.model.fused (LayerNorm -> Linear, bias + GELU -> Linear) that keep neither, and the fused model under lean.

Kernels run in the Triton interpreter on a CPU (fp32 and fp16). Sizes as in test_block.py: C never a power of two,
row counts not multiples of the tiles, several tiles per backward program.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from fastmixste.kernels import block as blk
from fastmixste.kernels.block import residual_layernorm, residual_layernorm_ref
from fastmixste.kernels.gelu import bias_gelu, bias_gelu_ref

from fastmixste import MixSTE
from fastmixste.model.fused import gelu_linear, norm_linear

from .conftest import DEVICE, max_err
from .test_block import KEEP, _inputs, _mask
from .test_model_fused import OpCounter, forward_backward

DTYPES = [torch.float32, torch.float16]
# (B, T, N, C): 105 rows against 16-row tiles (C = 96: a 128-wide tile), 30 rows against 64-row tiles (C = 24).
SHAPES = [pytest.param((3, 5, 7, 96), marks=pytest.mark.slow), (2, 3, 5, 24)]  # the large shape in the full run only
# (two norms, DropPath mask kind, y given)
VARIANTS = [(False, "frame", True), (True, "joint", True), (True, None, False), (False, None, False)]


def _split(tensors, two: bool, has_y: bool):
    r, rest = tensors[0], tensors[1:]
    y, rest = (rest[0], rest[1:]) if has_y else (None, rest)
    w1, b1 = rest[0], rest[1]
    w2, b2 = (rest[2], rest[3]) if two else (None, None)
    return r, y, w1, b1, w2, b2


# ----------------------------------------------------------------------------------------------------------------
# The backward kernels' rebuilt outputs
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}T{}N{}C{}".format(*s))
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"two{int(v[0])}-{v[1]}-y{int(v[2])}")
def test_norm_backward_rebuilds_the_forward_h(dtype, shape, variant):
    """write_h: the backward's h is bitwise the forward's and matches float64; every other output is unchanged."""
    two, kind, has_y = variant
    B, T, N, C = shape
    r, y, w1, b1, w2, b2 = _split(_inputs(shape, two, has_y, dtype), two, has_y)
    mask = _mask(kind, B, T, N, dtype)
    res, h = residual_layernorm(r, y, mask, KEEP, w1, b1, w2, b2, h_dtype=dtype)
    m = blk._expand_mask(mask, r.shape)
    # The op's arguments as its autograd saves them (kernels/block.py, _norm_setup_context / _norm_backward).
    x = r if two else res
    add_y = two and has_y
    y_arg = y if add_y else (x if has_y else None)
    grads = (torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE).to(dtype))
    args = (*grads, x, y_arg, m, KEEP, w1, b1, w2, 1e-6, add_y, r.dtype, dtype)
    bwd = torch.ops.fastmixste.residual_layernorm_backward
    plain = bwd(*args)
    rebuilt = bwd(*args, b2, True)
    assert plain[6].numel() == 0
    assert rebuilt[6].dtype == dtype and torch.equal(rebuilt[6], h), "rebuilt h differs from the forward's"
    for i, (a, b) in enumerate(zip(plain[:6], rebuilt[:6])):
        assert torch.equal(a, b), f"output {i} changed when h is written too"
    ref = residual_layernorm_ref(
        r.double(), None if y is None else y.double(), None if mask is None else mask.double(), KEEP, w1.double(),
        b1.double(), None if w2 is None else w2.double(), None if b2 is None else b2.double(), h_dtype=torch.float64,
    )[1]  # fmt: skip
    torch.testing.assert_close(rebuilt[6], ref.to(dtype), msg=lambda s: f"h vs float64: {s}")


def test_norm_backward_write_h_with_two_norms_needs_b2():
    r, y, w1, b1, w2, _ = _split(_inputs((1, 2, 3, 24), True, True), True, True)
    g = torch.randn(1, 2, 3, 24, device=DEVICE)
    with pytest.raises(ValueError, match="write_h with two norms needs b2"):
        torch.ops.fastmixste.residual_layernorm_backward(
            g, g, r, y, None, 1.0, w1, b1, w2, 1e-6, True, torch.float32, torch.float32, None, True
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(5, 7, 40), (3, 7, 200)], ids=str)
def test_gelu_backward_rebuilds_the_forward_g(dtype, shape):
    """write_g: the backward's g is bitwise bias_gelu's output and matches float64; du and db are unchanged."""
    u = (2 * torch.randn(shape, device=DEVICE)).to(dtype)
    b = torch.randn(shape[-1], device=DEVICE).to(dtype)
    grad = torch.randn(shape, device=DEVICE).to(dtype)
    g = bias_gelu(u, b)
    du, db, none = torch.ops.fastmixste.bias_gelu_backward(grad, u, b)
    du2, db2, g2 = torch.ops.fastmixste.bias_gelu_backward(grad, u, b, True)
    assert none.numel() == 0
    assert g2.dtype == dtype and torch.equal(g2, g), "rebuilt g differs from the forward's"
    assert torch.equal(du2, du) and torch.equal(db2, db)
    torch.testing.assert_close(g2, bias_gelu_ref(u.double(), b.double()).to(dtype))


def test_backward_ops_with_rebuild_pass_opcheck():
    B, T, N, C = 1, 3, 5, 24
    r, y = torch.randn(B, T, N, C, device=DEVICE), torch.randn(B, T, N, C, device=DEVICE)
    w1, b1, w2, b2 = (torch.randn(C, device=DEVICE) for _ in range(4))
    g = torch.randn(B, T, N, C, device=DEVICE)
    args = (g, g.half(), r, y, None, 1.0, w1, b1, w2, 1e-6, True, torch.float32, torch.float32, b2, True)
    torch.library.opcheck(torch.ops.fastmixste.residual_layernorm_backward.default, args)
    u, b = torch.randn(3, 5, 40, device=DEVICE), torch.randn(40, device=DEVICE)
    torch.library.opcheck(torch.ops.fastmixste.bias_gelu_backward.default, (torch.randn_like(u), u, b, True))


# ----------------------------------------------------------------------------------------------------------------
# The composites
# ----------------------------------------------------------------------------------------------------------------


def _linear_params(out_features: int, in_features: int, dtype: torch.dtype, bias: bool = True):
    w = (torch.randn(out_features, in_features, device=DEVICE) * in_features**-0.5).to(dtype)
    return w, ((0.1 * torch.randn(out_features, device=DEVICE)).to(dtype) if bias else None)


def _grads_of(fn, tensors, upstream):
    """Outputs and the gradient of every tensor input (None stays None) of ``fn(*tensors)``."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in tensors]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    torch.autograd.backward(outs, [u.to(o.dtype) for o, u in zip(outs, upstream)])
    return [o.detach() for o in outs] + [None if t is None else t.grad for t in leaves]


def _norm_linear_case(two: bool, kind: str | None, dtype: torch.dtype, bias: bool = True):
    shape = (3, 5, 7, 40)
    B, T, N, C = shape
    r, y, w1, b1, w2, b2 = _split(_inputs(shape, two, True, dtype), two, True)
    W, bW = _linear_params(72, C, dtype, bias)
    mask = _mask(kind, B, T, N, dtype)
    upstream = (torch.randn(shape, device=DEVICE), torch.randn(B, T, N, 72, device=DEVICE))
    return [r, y, w1, b1, w2, b2, W, bW], mask, upstream


def _norm_then_linear(mask, norm, linear_dtype=None):
    """The unfused composition: ``norm`` (the fused op or a reference) then F.linear, keeping h."""

    def fn(r, y, w1, b1, w2, b2, W, bW):
        h_dtype = W.dtype if linear_dtype is None else linear_dtype
        res, h = norm(r, y, mask, KEEP, w1, b1, w2, b2, 1e-6, h_dtype)
        return res, F.linear(h, W.to(h.dtype), None if bW is None else bW.to(h.dtype))

    return fn


def _lean(mask, h_dtype=None):
    def fn(r, y, w1, b1, w2, b2, W, bW):
        h = W.dtype if h_dtype is None else h_dtype
        return norm_linear(r, y, mask, KEEP, w1, b1, w2, b2, 1e-6, h, weight=W, bias=bW)

    return fn


@pytest.mark.parametrize("variant", [(False, "frame", True), (True, "joint", False)], ids=str)
def test_norm_linear_fp32_matches_float64_and_the_unfused_path(variant):
    two, kind, bias = variant
    tensors, mask, upstream = _norm_linear_case(two, kind, torch.float32, bias)
    got = _grads_of(_lean(mask), tensors, upstream)
    ref = _grads_of(_norm_then_linear(None if mask is None else mask.double(), residual_layernorm_ref),
                    [None if t is None else t.double() for t in tensors], upstream)  # fmt: skip
    unfused = _grads_of(_norm_then_linear(mask, residual_layernorm), tensors, upstream)
    names = ["res", "out", "dr", "dy", "dw1", "db1", "dw2", "db2", "dW", "dbias"]
    for name, g, r, u in zip(names, got, ref, unfused):
        assert (g is None) == (r is None), name
        if g is None:
            continue
        scale = max(1.0, r.abs().max().item())
        assert max_err(g, r) <= 1e-5 * scale, f"{name}: {max_err(g, r):.3g} from float64 (scale {scale:.3g})"
        # the same kernels and GEMMs as residual_layernorm + F.linear, h rebuilt instead of kept (bitwise on a CPU)
        assert max_err(g, u) <= 1e-6 * scale, f"{name}: {max_err(g, u):.3g} from the unfused fp32 path"


def test_norm_linear_fp16_error_at_most_twice_eager():
    """A .half() model's block: fp16 parameters and activations. Eager: the fp16 LayerNorm and Linear ops."""
    tensors, mask, upstream = _norm_linear_case(True, "frame", torch.float16)
    C = tensors[0].shape[-1]

    def eager_fp16(r, y, m, keep, w1, b1, w2, b2, eps, h_dtype):
        a = F.layer_norm(r + y.div(keep) * m, (C,), w1, b1, eps)
        return a, F.layer_norm(a, (C,), w2, b2, eps)

    got = _grads_of(_lean(mask), tensors, upstream)
    eager = _grads_of(_norm_then_linear(mask, eager_fp16), tensors, upstream)
    ref = _grads_of(_norm_then_linear(mask.double(), residual_layernorm_ref), [t.double() for t in tensors], upstream)
    names = ["res", "out", "dr", "dy", "dw1", "db1", "dw2", "db2", "dW", "dbias"]
    for name, g, e, r in zip(names, got, eager, ref):
        assert g.dtype == (torch.float32 if name == "res" else torch.float16), name
        err_f, err_e = max_err(g, r), max_err(e, r)
        assert err_f <= 2 * err_e, f"{name}: fused fp16 error {err_f:.3g} > 2 x eager fp16 error {err_e:.3g}"


def test_norm_linear_under_autocast_matches_the_unfused_path():
    """fp32 parameters under fp16 autocast (what train.run does with bf16 on a GPU): the Linear runs in fp16, the
    gradients come back fp32, equal to those of residual_layernorm + F.linear under the same autocast."""
    tensors, mask, upstream = _norm_linear_case(True, "joint", torch.float32)
    with torch.autocast(DEVICE, dtype=torch.float16):
        got = _grads_of(_lean(mask, torch.float16), tensors, upstream)
        want = _grads_of(_norm_then_linear(mask, residual_layernorm, torch.float16), tensors, upstream)
    assert got[1].dtype == torch.float16
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype, (i, g.dtype, w.dtype)
        if i >= 2:
            assert g.dtype == torch.float32, i  # the parameters' and inputs' own dtype
        # The same kernels and GEMM calls on the same values: bitwise on a CPU (measured); cuBLAS may pick another
        # algorithm for a transposed product, an fp16 rounding step apart.
        atol = 0.0 if DEVICE == "cpu" else 1e-3 * max(1.0, w.abs().max().item())
        assert max_err(g, w) <= atol, f"output {i}: {max_err(g, w):.3g} from the unfused path"


def _gelu_case(dtype: torch.dtype):
    u = (2 * torch.randn(5, 7, 48, device=DEVICE)).to(dtype)
    b = torch.randn(48, device=DEVICE).to(dtype)
    W, bW = _linear_params(24, 48, dtype)
    return [u, b, W, bW], (torch.randn(5, 7, 24, device=DEVICE),)


def _gelu_then_linear(gelu):
    return lambda u, b, W, bW: F.linear(gelu(u, b), W.to(u.dtype), bW.to(u.dtype))


def test_gelu_linear_fp32_matches_float64_and_the_unfused_path():
    tensors, upstream = _gelu_case(torch.float32)
    got = _grads_of(gelu_linear, tensors, upstream)
    ref = _grads_of(_gelu_then_linear(bias_gelu_ref), [t.double() for t in tensors], upstream)
    unfused = _grads_of(_gelu_then_linear(bias_gelu), tensors, upstream)
    for name, g, r, u in zip(["out", "du", "db", "dW", "dbias"], got, ref, unfused):
        scale = max(1.0, r.abs().max().item())
        assert max_err(g, r) <= 1e-5 * scale, f"{name}: {max_err(g, r):.3g} from float64"
        assert max_err(g, u) <= 1e-6 * scale, f"{name}: {max_err(g, u):.3g} from the unfused fp32 path"


def test_gelu_linear_fp16_error_at_most_twice_eager():
    tensors, upstream = _gelu_case(torch.float16)
    got = _grads_of(gelu_linear, tensors, upstream)
    eager = _grads_of(_gelu_then_linear(bias_gelu_ref), tensors, upstream)
    ref = _grads_of(_gelu_then_linear(bias_gelu_ref), [t.double() for t in tensors], upstream)
    for name, g, e, r in zip(["out", "du", "db", "dW", "dbias"], got, eager, ref):
        assert g.dtype == torch.float16, name
        err_f, err_e = max_err(g, r), max_err(e, r)
        assert err_f <= 2 * err_e, f"{name}: fused fp16 error {err_f:.3g} > 2 x eager fp16 error {err_e:.3g}"


def test_composites_refuse_mismatched_linears():
    r = torch.randn(1, 2, 3, 24, device=DEVICE)
    w = torch.ones(24, device=DEVICE)
    with pytest.raises(ValueError, match=r"weight must be \(out_features, 24\)"):
        norm_linear(r, None, None, 1.0, w, w, weight=torch.ones(8, 16))
    with pytest.raises(ValueError, match=r"bias must be \(8,\)"):
        norm_linear(r, None, None, 1.0, w, w, weight=torch.ones(8, 24), bias=torch.ones(3))
    with pytest.raises(ValueError, match=r"weight must be \(out_features, 24\)"):
        gelu_linear(r, w, torch.ones(8, 16), None)


# ----------------------------------------------------------------------------------------------------------------
# The fused model under lean
# ----------------------------------------------------------------------------------------------------------------

SMALL = dict(num_frame=9, num_joints=17, in_chans=2, embed_dim_ratio=64, depth=2, num_heads=4, drop_path_rate=0.2)


def test_lean_model_drops_exactly_h_and_g_and_replays_nothing():
    """Meta device, fp32: lean keeps the bytes of none less, per block, the two LayerNorm outputs that feed the qkv
    and fc1 Linears (B*T*N*C each) and the GELU output (B*T*N*hidden); the forward ops run once (no replay) and
    the backward runs the rebuilding variants."""
    from fastmixste.perf.memory import retained_bytes

    B, T, N, C, hidden = 2, 9, 17, SMALL["embed_dim_ratio"], 2 * SMALL["embed_dim_ratio"]
    base = MixSTE(**SMALL, attn_backend="triton").to("meta").train()
    lean = copy.deepcopy(base).set_recompute("lean")
    x = torch.empty(B, T, N, 2, device="meta")
    kept, counts = [], []
    for model in (base, lean):
        kept.append(retained_bytes(lambda m=model: m(x)))
        with OpCounter() as ops:
            model(x).sum().backward()
        counts.append(ops.counts)
    blocks = 2 * SMALL["depth"]
    assert kept[0] - kept[1] == blocks * (2 * B * T * N * C + B * T * N * hidden) * 4, kept
    for op in ("residual_layernorm", "bias_gelu", "residual_layernorm_backward", "bias_gelu_backward",
               "spatial_attention", "temporal_attention"):  # fmt: skip
        assert counts[1].get(f"fastmixste.{op}") == counts[0].get(f"fastmixste.{op}"), op
    # the same GEMMs: mm/addmm/matmul-family calls may be grouped differently, their FLOPs are not
    assert counts[1].get("aten.native_layer_norm") == counts[0].get("aten.native_layer_norm") == 1


@pytest.mark.slow
def test_lean_model_gradients_equal_none_with_droppath():
    """fp32 in the interpreter, drop paths on: lean's output and every parameter gradient equal none's."""
    torch.manual_seed(0)
    base = MixSTE(**{**SMALL, "depth": 1}, attn_backend="triton").to(DEVICE).train()
    lean = copy.deepcopy(base).set_recompute("lean")
    x = torch.randn(2, 9, 17, 2, device=DEVICE)
    target = torch.randn(2, 9, 17, 3, device=DEVICE)
    torch.manual_seed(11)
    out_a, grads_a = forward_backward(base, x, target)
    torch.manual_seed(11)
    out_b, grads_b = forward_backward(lean, x, target)
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)  # the same forward kernels on the same inputs
    for name, g in grads_a.items():
        err = (grads_b[name] - g).abs().max().item()
        assert err <= 1e-6 * g.abs().max().item() + 1e-12, f"{name}: lean gradient differs by {err:.3g}"


@pytest.mark.slow
def test_lean_model_compiles_with_fullgraph():
    """torch.compile(fullgraph=True) traces the lean fused model (autograd Functions around the custom ops): the
    compiled step gives the eager step's output and gradients (aot_eager: the interpreter cannot run Inductor's
    Triton code)."""
    torch.manual_seed(0)
    model = MixSTE(num_frame=9, num_joints=5, embed_dim_ratio=32, depth=1, num_heads=2, drop_path_rate=0.2,
                   attn_backend="triton", recompute="lean").to(DEVICE).train()  # fmt: skip
    x = torch.randn(2, 9, 5, 2, device=DEVICE)
    target = torch.randn(2, 9, 5, 3, device=DEVICE)
    torch.manual_seed(1)
    out_e, grads_e = forward_backward(model, x, target)
    torch.manual_seed(1)
    model.zero_grad(set_to_none=True)
    out_c = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    (out_c - target).norm(dim=-1).mean().backward()
    torch.testing.assert_close(out_c.detach(), out_e, rtol=0, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads_e[name], rtol=1e-5, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")


def test_meta_count_under_autocast_emulation_emits_bf16_gemm_inputs():
    """Counting on meta (benchmarks.proxies) under profiling.AutocastEmulation: the fused block emits its GEMM inputs
    in bf16 as it does under CUDA autocast, so no activation-sized cast runs before a Linear; outside the emulation
    the model's parameters' dtype is used."""
    from fastmixste.model.mixste import emulated_autocast_dtype
    from fastmixste.perf.profiling import AutocastEmulation

    class NormOutputs(torch.utils._python_dispatch.TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.h_dtypes: list[torch.dtype] = []
            self.casts: list[int] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.fastmixste.residual_layernorm.default:
                self.h_dtypes.append(out[1].dtype)
            elif func is torch.ops.aten._to_copy.default:
                self.casts.append(out.numel())
            return out

    model = MixSTE(**SMALL, attn_backend="triton").to("meta").train().set_recompute("lean")
    x = torch.empty(2, 9, 17, 2, device="meta")
    assert emulated_autocast_dtype() is None
    with AutocastEmulation(torch.bfloat16), NormOutputs() as seen:
        assert emulated_autocast_dtype() == torch.bfloat16
        model.forward_features(x)  # the head's Linear casts the fp32 features, under CUDA autocast too
    assert emulated_autocast_dtype() is None
    # every h feeding a GEMM is bf16; the fp32 ones are the STE0 post-norm before the temporal positions and the
    # features (the last post-norm, fp32 as eager's LayerNorm under autocast)
    assert seen.h_dtypes.count(torch.bfloat16) == len(seen.h_dtypes) - 2, seen.h_dtypes
    activation = 2 * 9 * 17 * SMALL["embed_dim_ratio"]
    assert max(seen.casts) < activation, "an activation-sized cast ran in the forward"
