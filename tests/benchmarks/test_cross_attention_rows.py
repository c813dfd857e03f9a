"""The cross-attention op (HoT's frame recovery) in the benchmark tools: its gpu_check parity row run on tiny shapes,
and its modelled FLOPs and bytes (fused and FlashAttention-2 peer) counted by hand, like the other attention rows."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fastmixste.kernels import cross_attention

from benchmarks import cuda_counting, fused_ops, gpu_checks, machine, proxies


def test_gpu_check_finds_the_cross_op_at_hots_full_scale() -> None:
    case = next(c for c in fused_ops.discover().cases if c.op == "cross_attention")
    (q, k, v, H), _ = case.make_inputs(torch.device("meta"), torch.bfloat16, None)
    assert (q.shape, k.shape, v.shape, H) == ((1, 243, 1, 512), (128, 81, 17, 512), (128, 81, 17, 512), 8)
    assert case.programs_for(torch.bfloat16) > fused_ops.GRID_YZ_LIMIT


@pytest.mark.slow  # interpreted parity, as test_gpu_check's rows of the other ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_gpu_check_parity_row_runs_on_the_real_kernels(dtype: torch.dtype) -> None:
    """The parity step on a tiny HoT-like shape: the references run one batch element at a time, and the broadcast
    q's reference gradient is summed over those chunks before it is compared."""
    case = next(c for c in fused_ops.discover().cases if c.op == "cross_attention")
    inputs = fused_ops.cross_inputs(2, 17, 9, C=32, H=2)
    tiny = dataclasses.replace(case, make_inputs=inputs, ref_chunk=1, programs=None)
    res = gpu_checks.kernel_parity(tiny, dtype, machine.Device())
    assert res["passed"], res["failures"]
    assert set(res["max_abs_error_fused"]) == {"out", "dq", "dk", "dv"}


def test_fused_cross_issued_flops_counted_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # GPU launch plans
    meta = {"device": "meta", "dtype": torch.bfloat16}
    # 100 queries over 40 keys, 2 x 3 (batch, joint) x 2 heads = 12 sequences, D = 64 (bf16 tiles: forward and dQ
    # 64 x 64, dK/dV 64 query x 32 key rows). Forward: 2 query blocks x 1 key block, 2 matmuls of 64 x 64 x 64.
    q, k = torch.empty(1, 100, 1, 128, **meta), torch.empty(2, 40, 3, 128, **meta)
    fwd = cuda_counting._fused_issued_flops("fastmixste.cross_attention.default", (q, k, k, 2, 0.125))
    assert fwd == 12 * 2 * 2 * 2 * 64 * 64 * 64
    # Backward: dQ 2 x 1 tile pairs x 3 matmuls of 64 x 64; dK/dV 2 key blocks x 2 query blocks x 4 of 64 x 32.
    g = torch.empty(2, 100, 3, 128, **meta)
    lse = torch.empty(2, 3, 2, 100, device="meta")
    args = (g, q, k, k, g, lse, 2, 0.125)
    bwd = cuda_counting._fused_issued_flops("fastmixste.cross_attention_backward.default", args)
    assert bwd == 12 * 2 * (2 * 3 * 64 * 64 + 4 * 4 * 64 * 32) * 64


def test_fa2_peer_pads_queries_and_keys_separately() -> None:
    # HoT's recovery through SDPA: 243 queries (two 128-row tiles) over 81 keys (one 128-column tile).
    q, k = torch.empty(6, 2, 243, 64, device="meta"), torch.empty(6, 2, 81, 64, device="meta")
    fwd = cuda_counting._fa2_records("aten._scaled_dot_product_flash_attention.default", (q, k, k))
    assert fwd[89]["issued_flops"] == 12 * 2 * 2 * 256 * 128 * 64
    bwd = cuda_counting._fa2_records("aten._scaled_dot_product_flash_attention_backward.default", (q, q, k, k, q, q))
    # sm_89: 64-row query tiles (243 -> 256) x 128-column key tiles (81 -> 128), 5 matmuls
    assert bwd[89]["issued_flops"] == 12 * 5 * 2 * 256 * 128 * 64


def test_cross_backward_bytes_and_launches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counted backward adds what its kernels move beyond reading each input and writing each gradient once:
    the dK/dV kernel's second reads, the delta rows, and a broadcast q's fp32 per-chunk dQ sums and their total."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # GPU launch plans: 6 sequences share q, one per chunk
    meta = {"device": "meta", "dtype": torch.bfloat16, "requires_grad": True}
    q = torch.empty(1, 100, 1, 128, **meta)
    k, v = (torch.empty(2, 40, 3, 128, **meta) for _ in range(2))
    counter = cuda_counting.CudaCounter(proxies.LAUNCHES)
    with counter:
        cross_attention(q, k, v, 2).backward(torch.empty(2, 100, 3, 128, device="meta", dtype=torch.bfloat16))
    (rec,) = [r for r in counter.records if r.op == "fastmixste.cross_attention_backward.default"]
    q_b, kv_b, o_b, lse_b = 100 * 128 * 2, 2 * 40 * 3 * 128 * 2, 2 * 100 * 3 * 128 * 2, 2 * 3 * 2 * 100 * 4
    once = o_b + q_b + 2 * kv_b + o_b + lse_b  # dO, q, k, v, o, lse
    again = q_b + 2 * kv_b + o_b + lse_b + lse_b  # dK/dV kernel: q, k, v, dO, lse, delta
    sums = 6 * 100 * 128 * 4 + 100 * 128 * 4  # six fp32 chunk sums read by their total, the total read by the cast
    assert rec.bytes_read == once + again + sums
    assert rec.bytes_written == q_b + 2 * kv_b + lse_b + sums  # dq, dk, dv, delta, the sums
    assert rec.launches == 4 and rec.kernel_class == "flash_bwd"
