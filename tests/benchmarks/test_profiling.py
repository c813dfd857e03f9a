"""The meta-device counters and the roofline model behind the benchmark proxies, checked by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastmixste.perf import memory, profiling
from fastmixste.perf.memory import MemoryTracker
from fastmixste.perf.profiling import DeviceSpec, OpCounter, OpRecord, roofline_seconds, storage_key

F32 = 4


def _meta(*shape: int, dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype, requires_grad=grad)


def test_linear_counts_bytes_and_flops_by_hand() -> None:
    x, w, b = _meta(4, 8), _meta(16, 8), _meta(16)
    with OpCounter() as c:
        y = F.linear(x, w, b)
    assert y.shape == (4, 16)
    assert [r.op for r in c.records] == ["aten.addmm.default"]  # w.t() is a view: not counted
    (r,) = c.records
    assert r.bytes_read == (4 * 8 + 16 * 8 + 16) * F32
    assert r.bytes_written == 4 * 16 * F32
    assert r.flops == 2 * 4 * 8 * 16
    assert r.launches == 1


def test_batched_matmul_and_dtype_sizes() -> None:
    a, b = _meta(2, 3, 4, dtype=torch.bfloat16), _meta(2, 4, 5, dtype=torch.bfloat16)
    with OpCounter() as c:
        a @ b
    (r,) = c.records
    assert r.op == "aten.bmm.default"
    assert r.bytes == (2 * 3 * 4 + 2 * 4 * 5 + 2 * 3 * 5) * 2
    assert r.flops == 2 * 2 * 3 * 4 * 5


def test_views_move_nothing_and_copies_count_twice() -> None:
    x = _meta(2, 3, 4)
    with OpCounter() as c:
        v = x.view(6, 4).t().unsqueeze(0).expand(5, 4, 6)
        x.permute(2, 0, 1).transpose(0, 1)[1:].select(0, 0).detach()
        x.reshape(24)
    assert c.records == []
    with OpCounter() as c:
        x.permute(2, 0, 1).contiguous()
    (r,) = c.records
    assert (r.bytes_read, r.bytes_written) == (24 * F32, 24 * F32)
    # An expanded input is read once per distinct element.
    with OpCounter() as c:
        v + 1.0
    (r,) = c.records
    assert r.bytes_read == 24 * F32 and r.bytes_written == 5 * 24 * F32


def test_overwrite_ops_do_not_read_their_destination() -> None:
    dst, src = _meta(10), _meta(10)
    with OpCounter() as c:
        dst.copy_(src)
        dst.zero_()
        dst.add_(src)
    copy, zero, add = c.records
    assert (copy.bytes_read, copy.bytes_written) == (10 * F32, 10 * F32)
    assert (zero.bytes_read, zero.bytes_written) == (0, 10 * F32)
    assert (add.bytes_read, add.bytes_written) == (20 * F32, 10 * F32)


def test_backward_ops_are_counted_and_launch_overrides_apply() -> None:
    x, w = _meta(4, 8, grad=True), _meta(16, 8, grad=True)
    with OpCounter({"aten.mm.default": 3}) as c:
        F.linear(x, w).backward(_meta(4, 16))
    mms = [r for r in c.records if r.op == "aten.mm.default"]
    assert len(mms) == 3  # forward, grad input, grad weight
    assert all(r.flops == 2 * 4 * 8 * 16 for r in mms)
    assert c.totals()["launches"] == sum(r.launches for r in c.records) >= 9
    assert c.by_op()["aten.mm.default"]["count"] == 3


def test_roofline_is_per_op_max_summed() -> None:
    dev = DeviceSpec("toy", peak_flops=100.0, bandwidth=10.0)  # ridge 10 FLOP/byte
    mem_bound = OpRecord("a", bytes_read=30, bytes_written=20, flops=100, launches=1)  # 5 s vs 1 s
    compute_bound = OpRecord("b", bytes_read=10, bytes_written=0, flops=1000, launches=2)  # 1 s vs 10 s
    out = roofline_seconds([mem_bound, compute_bound], dev)
    assert out["memory_bound_seconds"] == pytest.approx(5.0)
    assert out["compute_bound_seconds"] == pytest.approx(10.0)
    assert out["seconds"] == pytest.approx(15.0)
    assert roofline_seconds([mem_bound, compute_bound], dev, launch_overhead_s=0.5)["seconds"] == pytest.approx(16.5)
    padded = OpRecord("c", 10, 0, flops=10, issued_flops=1000)
    assert roofline_seconds([padded], dev)["seconds"] == pytest.approx(1.0)
    assert roofline_seconds([padded], dev, padded=True)["seconds"] == pytest.approx(10.0)
    assert profiling.RTX_4090.ridge == pytest.approx(165e12 / 1008e9)


def test_storage_key_is_shared_by_views_on_meta() -> None:
    x, y = _meta(3, 4), _meta(3, 4)
    assert storage_key(x) == storage_key(x.t()) == storage_key(x[1:]) == storage_key(x.view(12))
    assert storage_key(x) != storage_key(y)


def test_saved_bytes_dedupe_by_storage_and_exclude() -> None:
    x = _meta(10, 10, grad=True)
    w = _meta(10, 10, grad=True)
    with MemoryTracker() as s:
        x.sin()  # saves x
        x.t().cos()  # saves a view of x: the same storage
    assert s.tensors_saved == 2
    assert (s.saved_count, s.saved_bytes) == (1, 100 * F32)
    with MemoryTracker(exclude=[w]) as s:
        y = x.sin()  # saves x
        z = y @ w  # saves y and w (w excluded)
        z.exp()  # saves its output
    assert s.saved_count == 3
    assert s.saved_bytes == 3 * 100 * F32
    # A saved slice keeps its whole base alive: the full storage counts.
    big = _meta(100, grad=True) * 1.0
    with MemoryTracker() as s:
        big[:10].sin()
    assert s.saved_bytes == 100 * F32


def test_sdpa_routes_to_one_flash_op_on_meta() -> None:
    from benchmarks.cuda_counting import cuda_like_attention

    q = _meta(2, 8, 17, 64, dtype=torch.bfloat16)
    with cuda_like_attention(), OpCounter() as c:
        F.scaled_dot_product_attention(q, q, q)
    assert [r.op for r in c.records] == ["aten._scaled_dot_product_flash_attention.default"]
    assert F.scaled_dot_product_attention is torch.nn.functional.scaled_dot_product_attention


def test_fused_temporal_op_counts_its_inputs_and_outputs_once() -> None:
    from fastmixste.kernels.temporal import temporal_attention

    B, T, N, H, D = 2, 27, 17, 8, 64
    qkv = _meta(B, T, N, 3 * H * D, dtype=torch.bfloat16)
    with OpCounter() as c:
        temporal_attention(qkv, H)
    (r,) = c.records
    assert r.op == "fastmixste.temporal_attention.default"
    assert r.bytes_read == B * T * N * 3 * H * D * 2
    assert r.bytes_written == B * T * N * H * D * 2 + B * N * H * T * F32  # o + fp32 log-sum-exp
    assert r.flops == 4 * B * N * H * T * T * D


def test_proxy_case_is_consistent() -> None:
    from benchmarks import proxies
    from benchmarks.cases import Shape

    train = proxies.proxy_case("spatial_attention", "eager", "train", Shape(4, 27))
    fwd = proxies.proxy_case("spatial_attention", "eager", "forward", Shape(4, 27))
    assert train["bytes"] == train["bytes_read"] + train["bytes_written"]
    assert train["saved_bytes"] > 0 and fwd["saved_bytes"] == 0
    assert train["flops"] == pytest.approx(3 * fwd["flops"], rel=0.05)  # backward = 2 x forward matmul FLOPs
    for dev, spec in profiling.DEVICES.items():
        m = train["modelled"][dev]
        assert m["seconds"] >= train["bytes"] / spec.bandwidth * 0.999
        assert m["seconds_with_launch_overhead"] > m["seconds"]


def test_report_writes_tables_plots_and_lists_losses(tmp_path) -> None:
    import json

    from benchmarks import proxies, report
    from benchmarks.cases import Shape

    rows = []
    for mode in ("forward", "train"):
        for provider in proxies.COUNTED_PROVIDERS:  # compile is modelled for the whole model only
            row = proxies.proxy_case("spatial_attention", provider, mode, Shape(2, 27))
            rows.append({**row, "full_scale": True, "gpu_timing_shape": True})
    (tmp_path / "proxies.json").write_text(json.dumps({**proxies.compute(scopes=()), "results": rows}))
    kernel_row = {
        "kernel": "_spatial_attn_fwd_kernel", "target": "sm_89 (RTX 4090)", "dtype": "bf16", "config": "D=64",
        "num_warps": 4, "registers": 96, "spill_bytes": 0, "shared_bytes": 6144, "shared_limit": 101376,
        "blocks_per_sm": 5, "occupancy": 0.42, "limited_by": "registers",
    }  # fmt: skip
    (tmp_path / "kernel_resources.json").write_text(json.dumps([kernel_row]))

    def bench(provider: str, median: float) -> dict:
        extra = {"scope": "spatial_attention", "mode": "train", "provider": provider, "B": 2, "T": 27,
                 "dtype": "bf16-autocast", "peak_memory_bytes": 1e9}  # fmt: skip
        return {"extra_info": extra, "stats": {"median": median, "rounds": 3, "data": [median] * 3}}

    run = {
        "machine_info": {
            "fastmixste": {
                "device": "NVIDIA GeForce RTX 4090",
                "date": "2026-01-01T00:00:00Z",
                "torch": "x",
                "triton": "y",
                "commit": "abc",
            }
        },  # fmt: skip
        "benchmarks": [bench("eager", 0.010), bench("triton", 0.012)],
        "fastmixste_skipped": [{"case": "spatial_attention-train-B2-T27-xformers", "reason": "not installed"}],
    }
    (tmp_path / "cuda-rtx-4090.json").write_text(json.dumps(run))
    report.build(tmp_path)
    perf = (tmp_path / "PERFORMANCE.md").read_text()
    assert "MEASURED: NVIDIA GeForce RTX 4090" in perf and "MODELLED" in perf
    assert "triton 12.00 ms vs eager 10.00 ms" in perf  # a measured loss is listed, not hidden
    assert "not installed" in perf and "_spatial_attn_fwd_kernel" in perf
    for png in ("modelled_speedup_rtx4090.png", "modelled_memory.png", "measured_cuda-rtx-4090.png",
                "modelled_vs_cuda-rtx-4090.png"):  # fmt: skip
        assert (tmp_path / png).stat().st_size > 0
    assert (tmp_path / "report.md").exists()


# ----------------------------------------------------------------------------------------------------------------
# Precision, memory and the CUDA kernels' hidden traffic
# ----------------------------------------------------------------------------------------------------------------


def test_autocast_emulation_casts_like_cuda_autocast_on_meta() -> None:
    from fastmixste.perf.profiling import AutocastEmulation

    x, w, b = _meta(4, 8, grad=True), _meta(16, 8, grad=True), _meta(16, grad=True)
    gamma = _meta(16, grad=True)
    with OpCounter() as c, AutocastEmulation(torch.bfloat16):
        y = F.linear(x, w, b)  # bf16 GEMM on bf16 casts of x, w, b
        z = F.layer_norm(y, (16,), gamma)  # fp32: y cast back up
        r = x.sum(-1, keepdim=True) + y  # fp32 + bf16 -> fp32 by promotion, no autocast rule
        w2 = F.linear(x, w)  # the cast of the parameter w is cached: no second cast
    assert (y.dtype, z.dtype, r.dtype, w2.dtype) == (torch.bfloat16, torch.float32, torch.float32, torch.bfloat16)
    casts = [rec for rec in c.records if rec.op == "aten._to_copy.default"]
    # x, w, b for the first linear; y up for layer_norm; x again (not a leaf parameter... x is a leaf: cached)
    assert [(rec.bytes_read, rec.bytes_written) for rec in casts] == [
        (32 * F32, 32 * 2), (128 * F32, 128 * 2), (16 * F32, 16 * 2), (64 * 2, 64 * F32)
    ]  # fmt: skip
    with OpCounter() as c:
        (z.sum() + r.sum() + w2.float().sum()).backward()
    back_casts = [rec for rec in c.records if rec.op == "aten._to_copy.default"]
    assert len(back_casts) >= 4  # every forward cast's backward casts its gradient back
    assert w.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown precision"):
        profiling.precision_context("tf32")


def test_live_bytes_tracker_counts_alive_storages_and_transients() -> None:
    x = _meta(100)  # exists before: not counted
    with MemoryTracker() as m:
        a = x * 2  # +400
        b = a + 1  # +400 -> 800
        del a  # -> 400
        c = b.view(10, 10)  # a view: no new storage
        m.transient(1000)  # a kernel workspace while b is alive: peak 1400
        d = c.exp()  # +400 -> 800
    assert m.peak == 1400 and m.live == 800
    del b, c, d
    assert m.live == 0


def test_linear_fit_and_max_batch_by_hand() -> None:
    from fastmixste.perf.memory import MemoryBudget, StepMemory, linear_in_batch

    fit = linear_in_batch(StepMemory(2, 2100, 5000), StepMemory(4, 4100, 9000))
    assert fit == {"saved_per_sequence": 1000, "saved_fixed": 100, "peak_per_sequence": 2000, "peak_fixed": 1000}
    with pytest.raises(ValueError, match="two different batches"):
        linear_in_batch(StepMemory(2, 1, 1), StepMemory(2, 1, 1))
    dev = DeviceSpec("toy", 1.0, 1.0, memory_bytes=11_000)
    budget = MemoryBudget(context_bytes=1000, headroom=0.1, bytes_per_parameter=20)
    assert MemoryBudget().bytes_per_parameter == 16  # weights 4 + Adam 8 + the previous step's grads 4
    # usable 9000; params 100 x 20 = 2000; fixed 1000 -> 6000 left / 2000 per sequence = 3
    assert budget.max_batch(dev, 100, 1000.0, 2000.0) == 3


def test_set_recompute_reports_missing_switch_and_refusals() -> None:
    from torch import nn

    plain = nn.Linear(2, 2)
    assert memory.set_recompute(plain, "none") is None
    assert "not available" in memory.set_recompute(plain, "lean")
    with pytest.raises(ValueError, match="unknown recompute policy"):
        memory.set_recompute(plain, "some")

    class WithSwitch(nn.Linear):
        def set_recompute(self, policy: str) -> None:
            if policy == "full":
                raise ValueError("full is refused here")
            self.policy = policy

    m = WithSwitch(2, 2)
    assert memory.set_recompute(m, "lean") is None and m.policy == "lean"
    assert "full is refused here" in memory.set_recompute(m, "full")


def test_fa2_tiles_and_workspace_per_architecture() -> None:
    from benchmarks.cuda_counting import CudaCounter, cuda_like_attention, fa2_tiles

    assert fa2_tiles(89, 101376)["bwd_m"] == 64 and fa2_tiles(90, 232448)["bwd_m"] == 128
    S, H, L, D = 3, 8, 17, 64
    q = _meta(S, H, L, D, dtype=torch.bfloat16, grad=True)
    with cuda_like_attention():
        out = F.scaled_dot_product_attention(q, q, q)
    with CudaCounter() as c:
        out.backward(_meta(S, H, L, D, dtype=torch.bfloat16))
    (bwd,) = [r for r in c.records if r.op.startswith("aten._scaled_dot_product_flash_attention_backward")]
    seq = S * H * L * D * 2
    for spec, rows in ((profiling.RTX_4090, 64), (profiling.H100, 128)):
        accum = S * H * rows * D * 4  # one kBlockM tile of fp32 rows per (sequence, head); one key block
        softmax_d = S * H * 128 * 4
        assert bwd.bytes_on(spec) == bwd.bytes + 2 * softmax_d + seq + 4 * accum
    assert bwd.bytes_on(profiling.H100) > bwd.bytes_on(profiling.RTX_4090)


def test_layer_norm_backward_is_charged_a_second_pass() -> None:
    from benchmarks.cuda_counting import CudaCounter

    M, C = 6, 16
    x, w = _meta(M, C, grad=True), _meta(C, grad=True)
    y = F.layer_norm(x, (C,), w)
    with CudaCounter() as c:
        y.backward(_meta(M, C))
    ops = [r.op for r in c.records]
    i = ops.index("aten.native_layer_norm_backward.default")
    extra = c.records[i + 1]
    assert extra.op.startswith("layer_norm_backward.dgamma_dbeta_pass")
    assert extra.bytes_read == (2 * M * C + 2 * M) * F32 and extra.launches == 1


def test_fused_temporal_backward_charges_its_second_kernels_reads() -> None:
    from fastmixste.kernels.temporal import temporal_attention

    from benchmarks.cuda_counting import CudaCounter

    B, T, N, H, D = 2, 27, 17, 8, 64
    qkv = _meta(B, T, N, 3 * H * D, dtype=torch.bfloat16, grad=True)
    out = temporal_attention(qkv, H)
    with CudaCounter() as c:
        out.backward(_meta(B, T, N, H * D, dtype=torch.bfloat16))
    (r,) = [r for r in c.records if r.op == "fastmixste.temporal_attention_backward.default"]
    qkv_b, o_b, lse_b = B * T * N * 3 * H * D * 2, B * T * N * H * D * 2, B * N * H * T * F32
    # op inputs (dO, qkv, o, lse) + the dK/dV kernel's (qkv, dO, lse, delta); outputs dqkv + delta
    assert r.bytes_read == (o_b + qkv_b + o_b + lse_b) + (qkv_b + o_b + lse_b + lse_b)
    assert r.bytes_written == qkv_b + lse_b


# ----------------------------------------------------------------------------------------------------------------
# Reading Inductor's generated code (the compile provider)
# ----------------------------------------------------------------------------------------------------------------

_INDUCTOR_SNIPPET = """
cpp_fused__to_copy_add_native_layer_norm_0 = async_compile.cpp_pybinding(['float*', 'const at::BFloat16*', 'const float*', 'float*', 'at::BFloat16*', 'float*'], r'''
#include <torch/csrc/inductor/cpp_prefix.h>
extern "C"  void  kernel(float* in_out_ptr0,
                       const at::BFloat16* in_ptr0,
                       const float* in_ptr1,
                       float* out_ptr0,
                       at::BFloat16* out_ptr1,
                       float* out_ptr2)
{
}
''')


class Runner:
    def call(self, args):
        primals_1, primals_2 = args
        assert_size_stride(primals_1, (512, ), (1, ), 'input')
        assert_size_stride(primals_2, (512, 512), (512, 1), 'input')
        buf0 = empty_strided_cpu((6, 512), (512, 1), torch.bfloat16)
        extern_kernels.mm(x, y, out=buf0)
        buf1 = empty_strided_cpu((6, 1), (1, 6), torch.float32)
        buf2 = buf1; del buf1  # reuse
        buf3 = empty_strided_cpu((2, 3, 512), (1536, 512, 1), torch.float32)
        buf4 = empty_strided_cpu((6, 512), (512, 1), torch.bfloat16)
        buf5 = empty_strided_cpu((512, ), (1, ), torch.float32)
        cpp_fused__to_copy_add_native_layer_norm_0(buf2, reinterpret_tensor(buf0, (2, 3, 512), (1536, 512, 1), 0), primals_1, buf3, buf4, buf5)
        buf6 = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default(buf4, buf4, buf4)
        buf7 = buf6[0]
        buf8 = buf6[1]
        return (buf3, primals_1, buf2, reinterpret_tensor(buf4, (6, 512), (512, 1), 0), buf4, buf7, buf8, )
"""  # noqa: E501 (the generated code's own long lines)


def test_inductor_output_code_parser_reads_roles_sizes_and_saved_buffers() -> None:
    from benchmarks import inductor_kernels as ik

    calls, saved = ik.parse_output_code_full(_INDUCTOR_SNIPPET)
    assert [(c.name, c.kind) for c in calls] == [
        ("extern_kernels.mm", "extern"),
        ("cpp_fused__to_copy_add_native_layer_norm_0", "fused"),
        ("torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default", "extern"),
    ]
    k = calls[1]
    assert [(a.role, a.numel, a.itemsize) for a in k.args] == [
        ("in_out", 6, 4), ("in", 3072, 2), ("in", 512, 4), ("out", 3072, 4), ("out", 3072, 2), ("out", 512, 4)
    ]  # fmt: skip
    assert k.bytes_read == 6 * 4 + 3072 * 2 + 512 * 4
    assert k.bytes_written == 6 * 4 + 3072 * 4 + 3072 * 2 + 512 * 4
    # returned after the output, inputs left out, one entry per buffer (buf4 twice), extern results bf16 / fp32
    assert [(a.name, a.numel, a.itemsize) for a in saved] == [
        ("buf2", 6, 4), ("buf4", 3072, 2), ("buf7", 0, 2), ("buf8", 0, 4)
    ]  # fmt: skip
    # 6 tokens: per-token buffers scale with the tokens, weight-sized ones stay
    read, written = ik.scale_bytes(k.args, 6, 60)
    assert read == 10 * (6 * 4 + 3072 * 2) + 512 * 4
    assert written == 10 * (6 * 4 + 3072 * 4 + 3072 * 2) + 512 * 4
    # one fp32 output that does not grow with the tokens (a LayerNorm weight gradient, say): one column reduction
    assert ik.column_reduction_passes(k, 6) == 1
    summary = ik.summarize(calls, 6, saved)
    assert summary["generated_kernels"] == 1 and summary["kernels_by_tag"]["layer_norm_with_add"] == 1
    assert summary["extern_calls"]["extern_kernels.mm"] == 1


def test_compile_records_scale_depth_and_batch_from_the_kernel_table() -> None:
    from benchmarks import cuda_counting, proxies
    from benchmarks.cases import DEPTH, JOINTS, Shape

    def entry(per_token_reads: int, kernels: int, saved: int) -> dict:
        args = [["in", 10 * per_token_reads, 2], ["out", 10, 2], ["in", 7, 4]]
        ks = [{"name": f"cpp_fused_add_{i}", "read": 0, "written": 0, "args": args} for i in range(kernels)]
        return {"kernels": ks, "column_reduction_passes": 0, "saved": [[10 * saved, 2]]}

    data = {"tokens": 10, "modes": {"forward": {"1": entry(1, 2, 0), "2": entry(1, 5, 0)}}}
    shape = Shape(2, 5)
    records, _, _ = proxies.compile_records("model", "forward", shape, kernels=data)
    full = shape.B * shape.T * JOINTS
    gen = [r for r in records if r.op.startswith("inductor.generated")]
    per_kernel_read = 10 * 2 * full / 10 + 7 * 4
    assert gen[0].bytes_read == round(2 * per_kernel_read) and gen[0].launches == 2
    assert gen[1].bytes_read == round((DEPTH - 1) * 3 * per_kernel_read) and gen[1].launches == (DEPTH - 1) * 3
    assert all(r.op in cuda_counting.GEMM_OPS or "flash" in r.op or r.op.startswith("inductor.") for r in records)
    with pytest.raises(ValueError, match="whole model only"):
        proxies.compile_records("layer_pair", "forward", shape, kernels=data)


def test_memory_per_sequence_is_linear_and_matches_the_saved_counter() -> None:
    from torch import nn

    from fastmixste.perf.memory import memory_per_sequence, training_step_memory

    torch.manual_seed(0)
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3))
    per = memory_per_sequence(model, (5, 8), precision="fp32")
    # per sequence of 5 tokens, fp32, created by the step and alive before backward: fc1's output saved by GELU
    # (5x16), GELU's output saved by fc2 (5x16); the input existed before the step; nothing fixed
    assert per["saved_per_sequence"] == 5 * (16 + 16) * F32 and per["saved_fixed"] == 0
    assert per["peak_per_sequence"] >= per["saved_per_sequence"]
    step = training_step_memory(model, (3, 5, 8), precision="bf16-autocast")
    assert step.saved_bytes > 0 and step.B == 3
    with pytest.raises(ValueError, match="not available"):
        training_step_memory(model, (3, 5, 8), policy="full")
    with pytest.raises(ValueError, match="meta device"):
        training_step_memory(nn.Linear(8, 3), (3, 8))


def test_emulated_autocast_and_routing_stay_active_in_a_checkpoint_recompute() -> None:
    from torch.utils.checkpoint import checkpoint

    from benchmarks.cuda_counting import cuda_like_attention

    w = _meta(8, 8, grad=True)
    x = _meta(2, 4, 8, grad=True)

    def block(t: torch.Tensor) -> torch.Tensor:
        h = F.linear(t, w)  # bf16 under autocast
        p = h.float().softmax(-1)  # fp32
        q = h.view(1, 2, 4, 8)
        return (p @ h.transpose(1, 2)).float().sum() + F.scaled_dot_product_attention(q, q, q).float().sum()

    with cuda_like_attention("bf16-autocast"):
        out = checkpoint(block, x, use_reentrant=False)
        with OpCounter() as c:
            out.backward()  # the recompute runs the forward again: it must cast and route as the forward did
    ops = [r.op for r in c.records]
    assert "aten._scaled_dot_product_flash_attention.default" in ops  # recomputed forward, routed to FA2
    assert x.grad is not None and w.grad.dtype == torch.float32


def test_stored_inductor_kernels_support_the_compile_model_assumptions() -> None:
    # results/inductor_kernels.json is what `python -m benchmarks.inductor_kernels` read off Inductor's generated
    # code for this model; the compile model takes GEMMs and attention from the sdpa count and everything else from
    # those kernels, which holds only if nothing else went to a library kernel.
    from benchmarks import inductor_kernels as ik

    data = ik.load()
    if data is None:
        pytest.skip("results/inductor_kernels.json not generated")
    checks = ik.check(data)
    assert data["modes"]["train"]["1"]["generated_kernels"] > 0
    for mode in ("train", "forward"):
        assert checks[mode]["only_gemm_and_attention_extern"], checks[mode]
        assert checks[mode]["layer_norms_fused_with_residual_add"], checks[mode]
        assert checks[mode]["gelu_fused_with_cast"], checks[mode]
        # 4 Linear layers per block, 2 blocks per pair: 8 forward GEMMs (+ 16 backward in a training step)
        gemms = checks[mode]["extern_calls_per_block_pair"]
        assert gemms["extern_kernels.addmm"] == 8
        assert gemms.get("extern_kernels.mm", 0) == (16 if mode == "train" else 0)



def test_fused_step_folds_proj_and_fc2_bias_gradients_and_fills_no_zero_gradients() -> None:
    """On meta, the fused training step sums no bias gradient of proj or fc2 over an activation (its block kernel's
    backward does, in its own pass) and writes no activation-sized zeros for the outputs nobody reads; eager does both
    sums (two per block) as autograd's Linear backward runs them."""
    from benchmarks import cases, proxies
    from benchmarks.cases import Shape

    shape = Shape(2, 27)
    activation = shape.B * shape.T * cases.JOINTS * cases.EMBED * 2  # one C-wide bf16 activation, in bytes

    def column_sums(provider: str) -> tuple[int, int]:
        counter, _ = proxies.count_case("model", provider, "train", shape)
        sums = sum(r.op == "aten.sum.dim_IntList" and r.bytes_read == activation for r in counter.records)
        zeros = sum(r.op == "aten.zeros.default" and r.bytes_written >= activation for r in counter.records)
        return sums, zeros

    eager_sums, _ = column_sums("eager")
    triton_sums, triton_zeros = column_sums("triton")
    assert eager_sums - triton_sums == 2 * 2 * cases.DEPTH
    assert triton_sums == 1  # the embedding Linear's bias: its gradient comes from aten's Linear backward
    assert triton_zeros == 0


def test_fused_full_recompute_accumulates_no_residual_gradient_by_a_separate_add() -> None:
    """Under recompute "full" each fused pair rebuilds its first GEMM input from the fp32 residual; the residual then
    flows on through that LayerNorm op's own output, so its gradient is summed inside the op's backward kernel, not
    by an activation-sized aten.add per pair."""
    from benchmarks import cases, proxies
    from benchmarks.cases import Shape

    shape = Shape(2, 27)
    fp32_activation = shape.B * shape.T * cases.JOINTS * cases.EMBED * 4
    counter, _ = proxies.count_case("model", "triton", "train", shape, policy="full")
    adds = [r for r in counter.records if r.op == "aten.add.Tensor" and r.bytes_written >= fp32_activation]
    assert adds == []


def test_retained_cpu_measures_each_policy_on_real_tensors() -> None:
    from benchmarks.proxies import retained_cpu

    got = retained_cpu(T=9, embed=32, depth=2, backends=("sdpa",))
    kept = got["sdpa"]["bytes"]
    assert kept["none"] > kept["lean"] > kept["full"] > 0
    assert got["sdpa"]["over_none"]["full"] == round(kept["full"] / kept["none"], 3)
