"""Fused cross-attention (Tq queries over Tk keys along T, per batch, joint and head; HoT's frame recovery): parity of
the output and of every gradient, broadcast queries, strided inputs, errors, registration and the compile cases.

On a CPU the kernels run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1), which executes
programs one after another and computes fp32 dots exactly; bf16 and full-scale shapes need a GPU.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from fastmixste.kernels import _common
from fastmixste.kernels.cross import cross_attention, cross_attention_ref, unsupported_reasons

from .conftest import CUDA, DEVICE, FP32_ATOL, assert_close, assert_within_twice_eager, needs_gpu

# The module itself: the package attribute of the same name is the function.
xa = importlib.import_module("fastmixste.kernels.cross")
ta = importlib.import_module("fastmixste.kernels.temporal")


def make_inputs(
    B: int, TQ: int, TK: int, N: int, H: int, D: int, q_shape: tuple[int, int] | None = None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-scale q (Bq, Tq, Nq, C) (``q_shape`` = (Bq, Nq), default (B, N)), k, v (B, Tk, N, C), a gradient of o."""
    Bq, Nq = (B, N) if q_shape is None else q_shape
    C = H * D
    q = torch.randn(Bq, TQ, Nq, C, device=DEVICE).to(dtype)
    k, v = (torch.randn(B, TK, N, C, device=DEVICE).to(dtype) for _ in range(2))
    return q, k, v, torch.randn(B, TQ, N, C, device=DEVICE).to(dtype)


def run(fn, q, k, v, H: int, grad: torch.Tensor, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """[o, dq, dk, dv] of ``fn(q, k, v, H)`` backpropagating ``grad``, on fresh leaves (cast to ``dtype`` if given)."""
    leaves = [(t.detach().clone() if dtype is None else t.detach().to(dtype)).requires_grad_() for t in (q, k, v)]
    o = fn(*leaves, H)
    o.backward(grad if dtype is None else grad.to(dtype))
    return [o.detach()] + [t.grad for t in leaves]


def assert_matches_float64(q, k, v, H: int, grad: torch.Tensor, what: str, atol: float = FP32_ATOL) -> None:
    got = run(cross_attention, q, k, v, H, grad)
    want = run(cross_attention_ref, q, k, v, H, grad, torch.float64)
    assert got[0].shape == want[0].shape and got[1].shape == q.shape
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert_close(g, w, atol, f"{name} {what}")


# Mixed lengths around the tile edges (16, 17, 31) and one (Tq = 1); HoT's 243 <- 81 at reduced width and heads.
# The broadcast q of HoT (one query set for every batch element and joint) and an unbroadcast one.
@pytest.mark.parametrize(
    ("TQ", "TK", "B", "N", "H", "q_shape"),
    [
        (17, 31, 2, 3, 2, (1, 1)),
        (1, 16, 2, 3, 2, None),
        (31, 1, 2, 3, 2, (1, 1)),
        (16, 17, 2, 5, 2, (2, 1)),
        (243, 81, 1, 3, 2, (1, 1)),
    ],
)
def test_fp32_matches_float64_reference(TQ, TK, B, N, H, q_shape) -> None:
    q, k, v, grad = make_inputs(B, TQ, TK, N, H, 16, q_shape)
    assert_matches_float64(q, k, v, H, grad, f"Tq={TQ} Tk={TK} q {tuple(q.shape)}")


@pytest.mark.slow
@pytest.mark.parametrize("TQ", [1, 16, 17, 31, 81, 243])
@pytest.mark.parametrize("TK", [1, 16, 17, 31, 81, 243])
def test_every_length_pair(TQ: int, TK: int) -> None:
    """Every (Tq, Tk) of {1, 16, 17, 31, 81, 243}^2, odd N, broadcast over batch and joints."""
    q, k, v, grad = make_inputs(2, TQ, TK, 3, 2, 16, (1, 1))
    assert_matches_float64(q, k, v, 2, grad, f"Tq={TQ} Tk={TK}")


@pytest.mark.slow
@pytest.mark.parametrize("D", [16, 32, 64, 128])
def test_every_head_dim(D: int) -> None:
    q, k, v, grad = make_inputs(2, 19, 23, 3, 2, D, (1, 1))
    assert_matches_float64(q, k, v, 2, grad, f"D={D}")


@pytest.mark.parametrize("q_shape", [(1, 1), (1, 5), (3, 1), (3, 5)], ids=lambda s: f"q{s[0]}x{s[1]}")
def test_broadcast_query_gradient_is_summed_in_the_kernel(q_shape, monkeypatch: pytest.MonkeyPatch) -> None:
    """A q of size 1 in dim 0 and/or 2 gets its gradient in its own shape, summed in the kernels: no buffer of the
    full (B, Tq, N, C) query shape is ever allocated for it. Odd N, several chunks with a ragged last one."""
    B, TQ, TK, N, H, D = 3, 20, 9, 5, 2, 16
    shapes: list[tuple[int, ...]] = []
    nan_buffer = _common.new_buffer

    def recording_buffer(shape, like, dtype=None):
        shapes.append(tuple(shape))
        return nan_buffer(shape, like, dtype)

    monkeypatch.setattr(_common, "new_buffer", recording_buffer)
    q, k, v, grad = make_inputs(B, TQ, TK, N, H, D, q_shape)
    # Twice the programs of one chunk: two chunks, the second shorter (R = 15, 3 or 5 sequences per query set).
    one_chunk = ta.attention_plan(B * N * H, TQ, TK, D, q.dtype, True, QS=q_shape[0] * q_shape[1] * H)[0][1][0]
    monkeypatch.setattr(xa, "DQ_PROGRAMS", 2 * one_chunk)
    red = xa.reduction(tuple(q.shape), tuple(k.shape), H, q.dtype)
    if q_shape == (B, N):
        assert red is None
    else:
        assert red.chunks > 1 and red.R % red.CHUNK != 0, red  # a ragged last chunk
    assert_matches_float64(q, k, v, H, grad, f"q {tuple(q.shape)}")
    if q_shape != (B, N):
        assert (B, TQ, N, H * D) in shapes  # o
        assert shapes.count((B, TQ, N, H * D)) == 1, shapes  # ... and no full-shaped dq
        assert (red.chunks, *q.shape) in shapes


@pytest.mark.parametrize("chunked", [False, True])
def test_one_sequence_per_program(chunked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """G = 1, the GPU's program layout (the interpreter otherwise stacks several sequences per program)."""
    monkeypatch.setattr(ta, "_seqs_per_program", lambda S, rows: 1)
    if chunked:  # 2 query sets x 1 query block x 2 chunks of 3 of the 6 sequences (else 6 chunks of 1)
        monkeypatch.setattr(xa, "DQ_PROGRAMS", 4)
    q, k, v, grad = make_inputs(2, 33, 40, 3, 2, 16, (1, 1))
    assert_matches_float64(q, k, v, 2, grad, f"G=1 chunked={chunked}")


def test_expanded_query_is_read_in_place_and_its_gradient_summed_by_autograd() -> None:
    """HoT's x_token.expand(B, Tq, N, C): stride 0 over B and N, read without a copy; expand's backward sums dq."""
    B, TQ, TK, N, H, D = 2, 17, 12, 3, 2, 16
    token = torch.randn(1, TQ, 1, H * D, device=DEVICE, requires_grad=True)
    _, k, v, grad = make_inputs(B, TQ, TK, N, H, D)
    q = token.expand(B, TQ, N, H * D)
    assert q.stride(0) == q.stride(2) == 0
    cross_attention(q, k, v, H).backward(grad)
    want = run(cross_attention_ref, token.detach(), k, v, H, grad, torch.float64)
    assert_close(token.grad, want[1], FP32_ATOL, "d token through expand")


def test_packed_kv_slices_and_strided_views() -> None:
    """k and v as the two column halves of one (B, Tk, N, 2C) GEMM output, q as a slice of a wider tensor, and a
    (B, N, Tq, C) gradient storage seen as (B, Tq, N, C): every stride honoured."""
    B, TQ, TK, N, H, D = 2, 19, 21, 3, 2, 16
    C = H * D
    kv = torch.randn(B, TK, N, 2 * C, device=DEVICE, requires_grad=True)
    wide_q = torch.randn(1, TQ, 1, C + 32, device=DEVICE)
    q = wide_q[..., :C].detach().requires_grad_()
    grad = torch.randn(B, N, TQ, C, device=DEVICE).transpose(1, 2)
    o = cross_attention(q, kv[..., :C], kv[..., C:], H)
    o.backward(grad)
    q64, kv64 = q.detach().double().requires_grad_(), kv.detach().double().requires_grad_()
    o_ref = cross_attention_ref(q64, kv64[..., :C], kv64[..., C:], H)
    o_ref.backward(grad.double())
    assert_close(o.detach(), o_ref, FP32_ATOL, "o of views")
    assert_close(q.grad, q64.grad, FP32_ATOL, "dq of a sliced q")
    assert_close(kv.grad, kv64.grad, FP32_ATOL, "d packed kv")


def test_sum_backward_sends_a_stride_zero_gradient() -> None:
    q, k, v, _ = make_inputs(2, 18, 7, 3, 2, 16, (1, 1))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    cross_attention(*leaves, 2).sum().backward()
    want = run(cross_attention_ref, q, k, v, 2, torch.ones(2, 18, 3, 32, device=DEVICE), torch.float64)
    for name, leaf, w in zip(("dq", "dk", "dv"), leaves, want[1:]):
        assert_close(leaf.grad, w, FP32_ATOL, f"{name} from .sum()")


@pytest.mark.parametrize("q_shape", [None, (1, 1)], ids=["full", "broadcast"])
def test_fp16_error_within_twice_eager(q_shape) -> None:
    """fp16 kernels (fp32 accumulation, fp32 sums of a broadcast dq) are at most 2x as far from float64 as eager."""
    H = 2
    q, k, v, grad = make_inputs(2, 40, 27, 3, H, 32, q_shape, torch.float16)
    fused = run(cross_attention, q, k, v, H, grad)
    eager = run(cross_attention_ref, q, k, v, H, grad, torch.float16)
    ref = run(cross_attention_ref, q, k, v, H, grad, torch.float64)
    assert all(t.dtype == torch.float16 for t in fused)
    for name, got, e, r in zip(("o", "dq", "dk", "dv"), fused, eager, ref):
        assert_within_twice_eager(got, e, r, f"{name} fp16")


def test_large_scores_stay_finite() -> None:
    """Scores of +-hundreds: the online softmax must not overflow, and masked tail keys must not leak in."""
    q, k, v, grad = make_inputs(1, 37, 21, 1, 1, 16, (1, 1))
    got = run(cross_attention, q * 8, k * 8, v, 1, grad)
    want = run(cross_attention_ref, q * 8, k * 8, v, 1, grad, torch.float64)
    assert all(torch.isfinite(t).all() for t in got)
    assert_close(got[0], want[0], 1e-3, "o with large scores")
    for name, g, w in zip(("dq", "dk", "dv"), got[1:], want[1:]):
        # Gradients scale with |q|, |k| (~8) and 1/sqrt(D): compare relative to their magnitude.
        assert_close(g, w, 1e-4 * w.abs().max().item(), f"{name} with large scores")


def test_explicit_scale_and_lse() -> None:
    B, TQ, TK, N, H, D = 1, 30, 11, 2, 2, 16
    q, k, v, _ = make_inputs(B, TQ, TK, N, H, D, (1, 1))
    o = cross_attention(q, k, v, H, scale=0.3)
    assert_close(o, cross_attention_ref(q.double(), k.double(), v.double(), H, scale=0.3), FP32_ATOL, "o, scale 0.3")
    _, lse = torch.ops.fastmixste.cross_attention(q, k, v, H, 0.3)
    qh = q.double().expand(B, TQ, N, H * D).reshape(B, TQ, N, H, D).permute(0, 2, 3, 1, 4)
    kh = k.double().reshape(B, TK, N, H, D).permute(0, 2, 3, 1, 4)
    lse_ref = torch.logsumexp(qh @ kh.transpose(-2, -1) * 0.3, dim=-1)  # (B, N, H, Tq)
    assert lse.shape == (B, N, H, TQ) and lse.dtype == torch.float32
    assert_close(lse, lse_ref, FP32_ATOL, "lse")


# ---------------------------------------------------------------------------------------------------------------
# Errors, empty input, refusals
# ---------------------------------------------------------------------------------------------------------------

_Q, _KV = (1, 5, 1, 32), (2, 7, 3, 32)


@pytest.mark.parametrize(
    ("q", "k", "v", "heads", "error", "match"),
    [
        (torch.zeros(5, 1, 32), torch.zeros(_KV), torch.zeros(_KV), 2, ValueError, "q must be 4-D"),
        (torch.zeros(_Q), torch.zeros(_KV), torch.zeros(2, 7, 3, 16), 2, ValueError, "v must have k's shape"),
        (torch.zeros(_Q), torch.zeros(_KV), torch.zeros(2, 8, 3, 32), 2, ValueError, "v must have k's shape"),
        (torch.zeros(2, 5, 2, 32), torch.zeros(_KV), torch.zeros(_KV), 2, ValueError, "size 1 in dim 0 and/or 2"),
        (torch.zeros(3, 5, 3, 32), torch.zeros(_KV), torch.zeros(_KV), 2, ValueError, "size 1 in dim 0 and/or 2"),
        (torch.zeros(1, 5, 1, 48), torch.zeros(_KV), torch.zeros(_KV), 2, ValueError, "with k's B=2, N=3, C=32"),
        (torch.zeros(_Q), torch.zeros(_KV), torch.zeros(_KV), 3, ValueError, "num_heads \\* head_dim"),
        (torch.zeros(_Q), torch.zeros(_KV), torch.zeros(_KV), 0, ValueError, "positive int"),
        (torch.zeros(_Q), torch.zeros(2, 7, 3, 48), torch.zeros(2, 7, 3, 48), 2, ValueError, "C=48"),
        (torch.zeros(1, 5, 1, 96), torch.zeros(2, 7, 3, 96), torch.zeros(2, 7, 3, 96), 2, ValueError,
         "head_dim must be one of"),
        (torch.zeros(_Q).half(), torch.zeros(_KV), torch.zeros(_KV), 2, TypeError, "share one dtype"),
        (torch.zeros(_Q).double(), torch.zeros(_KV).double(), torch.zeros(_KV).double(), 2, TypeError,
         "float32, float16 or bfloat16"),
        (torch.zeros(1, 5, 1, 64)[..., ::2], torch.zeros(_KV), torch.zeros(_KV), 2, ValueError,
         "q must be contiguous in its last dim"),
        (torch.zeros(_Q), torch.zeros(_KV), "v", 2, TypeError, "v must be a torch.Tensor"),
    ],
)  # fmt: skip
def test_clear_errors(q, k, v, heads, error, match) -> None:
    to = (lambda t: t.to(DEVICE) if isinstance(t, torch.Tensor) else t)
    with pytest.raises(error, match=match):
        cross_attention(to(q), to(k), to(v), heads)
    assert unsupported_reasons(to(q), to(k), to(v), heads)


@pytest.mark.parametrize(("B", "TQ", "TK", "N"), [(0, 5, 7, 3), (2, 0, 7, 3), (2, 5, 7, 0), (2, 5, 0, 3)], ids=str)
def test_empty_input_and_no_keys(B: int, TQ: int, TK: int, N: int) -> None:
    """A size-0 B, Tq or N: empty output and gradients, no launch. Tk = 0: zeros and zero gradients, like eager."""
    q = torch.randn(1, TQ, 1, 32, device=DEVICE, requires_grad=True)
    k = torch.randn(B, TK, N, 32, device=DEVICE, requires_grad=True)
    v = torch.randn(B, TK, N, 32, device=DEVICE, requires_grad=True)
    o = cross_attention(q, k, v, 2)
    assert o.shape == (B, TQ, N, 32)
    assert torch.equal(o, cross_attention_ref(q.detach(), k.detach(), v.detach(), 2))
    o.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
    assert not q.grad.any()


@pytest.mark.skipif(CUDA, reason="checks the CPU refusals")
def test_cpu_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v = torch.zeros(_Q), torch.zeros(_KV), torch.zeros(_KV)
    with pytest.raises(RuntimeError, match="interpreter computes bfloat16"):
        cross_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 2)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="need a CUDA GPU, or TRITON_INTERPRET=1"):
        cross_attention(q, k, v, 2)
    assert any("TRITON_INTERPRET=1" in r for r in unsupported_reasons(q, k, v, 2))


def test_meta_full_scale_shapes() -> None:
    """HoT at full scale: one (1, 243, 1, 512) query set over 81 kept frames of 128 x 17 sequences, 8 heads."""
    meta = {"device": "meta", "dtype": torch.bfloat16, "requires_grad": True}
    q = torch.empty(1, 243, 1, 512, **meta)
    k, v = (torch.empty(128, 81, 17, 512, **meta) for _ in range(2))
    assert unsupported_reasons(q, k, v, 8) == []
    o = cross_attention(q, k, v, 8)
    assert o.shape == (128, 243, 17, 512) and o.dtype == torch.bfloat16 and o.device.type == "meta"
    o.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape


# ---------------------------------------------------------------------------------------------------------------
# Registration: opcheck, export and fake tracing, compile, FLOPs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q_shape", [None, (1, 1)], ids=["full", "broadcast"])
def test_opcheck(q_shape) -> None:
    # Every opcheck utility (the default), AOT dispatch included: a custom_op runs them under the interpreter too.
    B, TQ, TK, N, H = 1, 19, 13, 2, 2
    q, k, v, grad = make_inputs(B, TQ, TK, N, H, 16, q_shape)
    inputs = [t.requires_grad_() for t in (q, k, v)]
    torch.library.opcheck(torch.ops.fastmixste.cross_attention.default, (*inputs, H, 0.25))
    o, lse = torch.ops.fastmixste.cross_attention(q.detach(), k.detach(), v.detach(), H, 0.25)
    for g in (grad, torch.ones((), device=DEVICE).expand(grad.shape)):
        args = (g, q.detach(), k.detach(), v.detach(), o, lse, H, 0.25)
        torch.library.opcheck(torch.ops.fastmixste.cross_attention_backward.default, args)


def test_export_and_fake_tracing_see_the_op() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    class Recovery(torch.nn.Module):
        def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return cross_attention(q, kv[..., :512], kv[..., 512:], 8)

    with FakeTensorMode():
        args = (torch.empty(1, 243, 1, 512, device=DEVICE), torch.empty(4, 81, 17, 1024, device=DEVICE))
        ep = torch.export.export(Recovery(), args)
    assert "fastmixste.cross_attention.default" in [str(n.target) for n in ep.graph.nodes]

    def fwd_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        return torch.autograd.grad(cross_attention(*leaves, 8).sum(), leaves)

    q, k = torch.empty(1, 27, 1, 512, device=DEVICE), torch.empty(2, 9, 17, 512, device=DEVICE)
    gm = make_fx(fwd_bwd, tracing_mode="fake")(q, k, k)
    targets = {str(n.target) for n in gm.graph.nodes}
    assert {"fastmixste.cross_attention.default", "fastmixste.cross_attention_backward.default"} <= targets


def test_compile_fullgraph_runs_the_op() -> None:
    """torch.compile(fullgraph=True) of forward and backward runs the kernels through the op, even interpreted."""
    H = 2
    q, k, v, grad = make_inputs(2, 19, 11, 3, H, 16, (1, 1))
    compiled = torch.compile(lambda q, k, v: cross_attention(q, k, v, H) * 2, backend="aot_eager", fullgraph=True)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o = compiled(*leaves)
    o.backward(grad)
    want = run(cross_attention_ref, q, k, v, 2, 2 * grad, torch.float64)
    assert_close(o.detach(), 2 * want[0], 2 * FP32_ATOL, "o compiled")
    for name, leaf, w in zip(("dq", "dk", "dv"), leaves, want[1:]):
        assert_close(leaf.grad, w, 2 * FP32_ATOL, f"{name} compiled")


def test_flop_formula_matches_eager_forward() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    B, TQ, TK, N, H, D = 2, 17, 9, 3, 2, 16
    q, k, v, grad = make_inputs(B, TQ, TK, N, H, D, (1, 1))
    with FlopCounterMode(display=False) as eager:
        cross_attention_ref(q, k, v, H)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    with FlopCounterMode(display=False) as fused:
        o = cross_attention(*leaves, H)
    assert fused.get_total_flops() == eager.get_total_flops() == 4 * B * N * H * TQ * TK * D
    with FlopCounterMode(display=False) as bwd:
        o.backward(grad)
    assert bwd.get_total_flops() == 10 * B * N * H * TQ * TK * D  # five Tq x Tk x D matmuls, SDPA's count


# ---------------------------------------------------------------------------------------------------------------
# Launch plans and ahead-of-time compile cases
# ---------------------------------------------------------------------------------------------------------------


def test_full_scale_plan_and_report_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU (G = 1), HoT's shape runs 64-row query tiles over 81 keys; the broadcast dQ kernel runs about
    DQ_PROGRAMS programs writing fp32 chunk sums (bf16 inputs); every configuration is a report case."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q_shape, kv_shape = (1, 243, 1, 512), (128, 81, 17, 512)
    red = xa.reduction(q_shape, kv_shape, 8, torch.bfloat16)
    assert red.R == 128 * 17 and red.NQ == 1 and red.RN == 17
    assert red.chunks * red.CHUNK >= red.R > (red.chunks - 1) * red.CHUNK
    plan = xa.launch_plan(q_shape, kv_shape, 8, torch.bfloat16, backward=True)
    (dq_cfg, dq_grid), (dkdv_cfg, dkdv_grid) = plan
    assert dict(dq_cfg.constexprs)["REDUCE"] and dict(dq_cfg.ptr_types)["dq_ptr"] == "fp32"
    # 8 query sets x 4 query blocks x chunks: within a factor 2 of the target
    assert dq_grid == (8 * 4 * red.chunks,) and xa.DQ_PROGRAMS / 2 <= dq_grid[0] <= xa.DQ_PROGRAMS
    assert dkdv_grid == (128 * 17 * 8 * 3,)  # 81 keys in 32-row key tiles (the bf16 D = 64 dK/dV cap)
    cases = {(c.name, c.dtype, tuple(c.constexprs.items()), c.num_warps, tuple(c.extra["ptr_types"]))
             for c in xa.report_cases()}  # fmt: skip
    for backward in (False, True):
        for cfg, _ in xa.launch_plan(q_shape, kv_shape, 8, torch.bfloat16, backward):
            assert (cfg.name, "bf16", cfg.constexprs, cfg.num_warps, cfg.ptr_types) in cases
    for case in xa.report_cases():
        assert list(case.signature) == list(case.fn.arg_names), case.label


# ---------------------------------------------------------------------------------------------------------------
# GPU only
# ---------------------------------------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_hot_shape_parity(dtype: torch.dtype) -> None:
    """HoT's recovery step at B = 8: 243 broadcast queries over 81 kept frames, 17 joints, C = 512, 8 heads."""
    q, k, v, grad = make_inputs(8, 243, 81, 17, 8, 64, (1, 1), dtype)
    fused = run(cross_attention, q, k, v, 8, grad)
    ref = run(cross_attention_ref, q, k, v, 8, grad, torch.float64)
    if dtype == torch.float32:
        for name, got, r in zip(("o", "dq", "dk", "dv"), fused, ref):
            # dq sums 136 sequences' gradients: its scale grows with them, the bound with it.
            assert_close(got, r, FP32_ATOL * max(1.0, r.abs().max().item()), f"{name} fp32")
        return
    eager = run(cross_attention_ref, q, k, v, 8, grad, dtype)
    for name, got, e, r in zip(("o", "dq", "dk", "dv"), fused, eager, ref):
        assert_within_twice_eager(got, e, r, f"{name} {dtype}")


@needs_gpu
def test_backward_is_deterministic() -> None:
    q, k, v, grad = make_inputs(16, 243, 81, 17, 8, 64, (1, 1), torch.bfloat16)
    first = run(cross_attention, q, k, v, 8, grad)[1:]
    for _ in range(3):
        again = run(cross_attention, q, k, v, 8, grad)[1:]
        assert all(torch.equal(a, b) for a, b in zip(again, first)), "gradients differ run to run"
