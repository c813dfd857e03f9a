"""The expected/pessimistic efficiency model, the GPU peers' column reductions, tile padding and calibration: each
number here is counted by hand in the test, not read back from the model's own tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import calibration, cuda_counting, efficiency, proxies
from benchmarks import inductor_kernels as ik
from benchmarks.cases import Shape
from fastmixste.perf.profiling import DeviceSpec, OpRecord, efficient_seconds

DEV = DeviceSpec("toy", peak_flops=100.0, bandwidth=10.0)
EFF = {"gemm": 0.5, "gemm_wgrad": 0.25, "flash_fwd": 0.5, "flash_bwd": 0.2, "streaming": 0.8, "launch": 0.125}


def test_efficient_seconds_charges_padded_flops_at_the_class_efficiency_and_bytes_at_bandwidth() -> None:
    # compute-bound on its padded tiles: 400 issued FLOPs / (100 x 0.2) = 20 s > 80 B / (10 x 0.8) = 10 s
    flash = OpRecord("attn_bwd", 40, 40, flops=100, launches=2, issued_flops=400, kernel_class="flash_bwd")
    # memory-bound GEMM: 160 B / 8 = 20 s > 100 FLOPs / 50 = 2 s
    gemm = OpRecord("aten.mm.default", 80, 80, flops=100)
    # streaming: no FLOPs, 24 B / 8 = 3 s
    ew = OpRecord("aten.add.Tensor", 16, 8, flops=0)
    out = efficient_seconds([flash, gemm, ew], DEV, EFF)
    assert out["by_class"] == pytest.approx({"flash_bwd": 20.0, "gemm": 20.0, "streaming": 3.0, "launch": 0.5})
    assert out["seconds"] == pytest.approx(43.5)
    # a calibration scales one class only
    scaled = efficient_seconds([flash, gemm, ew], DEV, EFF, scale={"flash_bwd": 1.5, "launch": 2.0})
    assert scaled["seconds"] == pytest.approx(43.5 + 10.0 + 0.5)


def test_fused_attention_issued_flops_counted_by_hand() -> None:
    meta = {"device": "meta", "dtype": torch.bfloat16}
    D, H = 64, 2
    # spatial, N = 17, 6 frames: a 64-row tile holds floor(64 / 17) = 3 frames -> 2 tiles per head, 4 programs;
    # forward S = Q K^T and O = P V on 64 x 64 x 64: 2 x 2 x 64^3 FLOPs each; backward 5 such matmuls
    qkv = torch.empty(2, 3, 17, 3 * H * D, **meta)
    assert cuda_counting._fused_issued_flops("fastmixste.spatial_attention.default", (qkv, H)) == 4 * 2 * 2 * 64**3
    grad = torch.empty(2, 3, 17, H * D, **meta)
    bwd = cuda_counting._fused_issued_flops("fastmixste.spatial_attention_backward.default", (grad, qkv, H))
    assert bwd == 4 * 5 * 2 * 64**3
    # temporal, T = 100 -> two 64-row blocks each way (a 128 x 128 padded square per sequence and head);
    # 2 x 3 joints x 2 heads = 12 (sequence, head) pairs. Forward 2 matmuls, backward 3 (dQ pass) + 4 (dK/dV pass)
    qkv = torch.empty(2, 100, 3, 3 * H * D, **meta)
    fwd = cuda_counting._fused_issued_flops("fastmixste.temporal_attention.default", (qkv, H))
    assert fwd == 12 * 2 * 2 * 128 * 128 * D
    grad = torch.empty(2, 100, 3, H * D, **meta)
    args = (grad, qkv, grad, torch.empty(2, 3, H, 100, device="meta"), H)
    bwd = cuda_counting._fused_issued_flops("fastmixste.temporal_attention_backward.default", args)
    assert bwd == 12 * 7 * 2 * 128**2 * D


def test_fa2_spatial_forward_is_charged_on_its_128_row_tiles() -> None:
    # FA2 runs one 128 x 128 tile per (sequence, head) for 17 joints: 2 matmuls of 128 x 128 x 64, whatever the 17
    q = torch.empty(6, 2, 17, 64, device="meta", dtype=torch.bfloat16)
    per_sm = cuda_counting._fa2_records("aten._scaled_dot_product_flash_attention.default", (q, q, q))
    assert per_sm[89]["issued_flops"] == 12 * 2 * 2 * 128 * 128 * 64
    # backward on sm_89: 64-row x 128-column tiles, 5 matmuls
    bwd = cuda_counting._fa2_records("aten._scaled_dot_product_flash_attention_backward.default", (q, q, q, q, q))
    assert bwd[89]["issued_flops"] == 12 * 5 * 2 * 64 * 128 * 64


def test_weight_gradient_casts_are_not_column_reductions_and_mix_order_fuses_layer_norm_weights() -> None:
    tokens = 7  # sizes below are not multiples of 7, so they do not grow with the tokens

    def kernel(name: str, outs: list[tuple[int, int]], ins: list[tuple[int, int]]) -> ik.KernelCall:
        args = [ik.Arg("x", "in", 10 * tokens, 2)] + [ik.Arg("i", "in", n, s) for n, s in ins]
        return ik.KernelCall(name, "fused", args + [ik.Arg("o", "out", n, s) for n, s in outs])

    # a GELU backward writing the fc1 bias gradient (a sum, bf16 then its fp32 copy) and casting the bf16 fc weight
    # gradient (6,000 elements, read from the GEMM's output) to fp32: one reduction, the cast is not one
    gelu = kernel("cpp_fused_gelu_backward_sum_1", [(20, 2), (20, 4), (6000, 4)], [(6000, 2)])
    assert ik.column_reductions(gelu, tokens) == [20] and ik.column_reduction_passes(gelu, tokens) == 1
    # a LayerNorm backward (dgamma, dbeta of the LN width, gamma read in fp32) and a bias sum of another width:
    # on the GPU the mix-order reduction fuses dgamma/dbeta with the dX pass, the bias sum stays a pass
    w = ik.LN_WIDTH
    ln = kernel("cpp_fused_native_layer_norm_backward_sum_2", [(w, 4), (w, 4), (3 * w, 4)], [(w, 4)])
    assert ik.column_reduction_passes(ln, tokens) == 2
    assert ik.column_reduction_passes(ln, tokens, mix_order=True) == 1
    # the same outputs without a LayerNorm backward in the kernel: nothing to fuse with
    assert ik.column_reduction_passes(dataclass_renamed(ln, "cpp_fused_sum_3"), tokens, mix_order=True) == 2


def dataclass_renamed(call: ik.KernelCall, name: str) -> ik.KernelCall:
    return ik.KernelCall(name, call.kind, call.args)


def test_efficiency_table_has_sources_and_ordered_levels() -> None:
    for device, rows in efficiency.EFFICIENCY.items():
        assert set(rows) == set(efficiency.CLASSES), device
        for cls, row in rows.items():
            assert row["sources"] and all(isinstance(s, str) and len(s) > 20 for s in row["sources"]), (device, cls)
            if cls == "launch":  # seconds: more overhead is worse
                assert 0 == row["optimistic"] <= row["expected"] <= row["pessimistic"], (device, cls)
            else:
                assert 1 == row["optimistic"] >= row["expected"] >= row["pessimistic"] > 0, (device, cls)
    # one efficiency per kind of kernel, whoever wrote it: there is no per-author class to pick from
    assert not any("fa2" in c or "triton" in c or "inductor" in c for c in efficiency.CLASSES)


def test_classify_kernel_names() -> None:
    assert calibration.classify_kernel("void flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>") == (
        "flash_fwd"
    )
    assert calibration.classify_kernel("flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel") == "flash_bwd"
    assert calibration.classify_kernel("flash_bwd_convert_dq_kernel") == "flash_bwd"
    assert calibration.classify_kernel("_temporal_attn_bwd_dkdv_kernel") == "flash_bwd"
    assert calibration.classify_kernel("_spatial_attn_fwd_kernel") == "flash_fwd"
    assert calibration.classify_kernel("sm80_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x32") == "gemm"
    assert calibration.classify_kernel("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_tn") == "gemm"
    assert calibration.classify_kernel("triton_per_fused_add_native_layer_norm_3") == "streaming"
    assert calibration.classify_kernel("_residual_norm_fwd_kernel") == "streaming"


def test_calibration_files_are_validated(tmp_path: Path) -> None:
    good = calibration.document("rtx4090", "toy", 2, 27, {"triton": {"gemm": {"measured_s": 2, "modelled_s": 1,
                                                                               "ratio": 2.0}}})  # fmt: skip
    path = tmp_path / "calibration.json"
    calibration.write(path, good)
    assert calibration.load(path)["classes"]["gemm"]["ratio"] == 2.0
    assert calibration.load(tmp_path / "absent.json") is None
    for bad in ('{"kind": "calibration", "device": "rtx4090", "classes": {"gemm": {"ratio": -1}}}',
                '{"kind": "calibration", "device": "rtx4090", "classes": {"warp": {"ratio": 1}}}',
                '{"kind": "other"}', "not json"):  # fmt: skip
        path.write_text(bad)
        with pytest.raises(ValueError, match="expected"):
            calibration.load(path)
    other = tmp_path / "notes.json"
    other.write_text('{"kind": "notes"}')
    with pytest.raises(ValueError, match="not replacing"):
        calibration.write(other, good)
    assert json.loads(other.read_text()) == {"kind": "notes"}


def test_a_fake_calibration_moves_the_headline_of_hand_made_kernels() -> None:
    # triton: one flash-style backward kernel of 1e14 issued FLOPs and a 100 GB streaming kernel; sdpa: the same
    # streaming kernel and a 3e14-FLOP flash backward. Expected RTX 4090 seconds counted here from the table.
    eff = efficiency.table("rtx4090", "expected")
    peak, bw = 165e12, 1008e9
    bwd = 1e14 / (peak * eff["flash_bwd"])
    stream = 1e11 / (bw * eff["streaming"])
    launch = eff["launch"]

    def kernels(flops: float) -> list[OpRecord]:
        return [OpRecord("k", 0, 0, 0, issued_flops=int(flops), kernel_class="flash_bwd"), OpRecord("e", 10**11, 0, 0)]

    records = {"triton": kernels(1e14), "sdpa": kernels(3e14)}

    def ratio() -> float:
        cases_ = {p: {"modelled": proxies._modelled(r, p)} for p, r in records.items()}
        return proxies.headline_entry(cases_, cases_, "rtx4090")["ratios_expected"]["train_triton_vs_sdpa"]

    try:
        proxies.set_calibration(None)
        t, s = bwd + stream + 2 * launch, 3 * bwd + stream + 2 * launch
        assert ratio() == pytest.approx(s / t, abs=2e-3)
        # our flash backward measured 2x its modelled time, FA2's as modelled: the ratio falls to s / (t + bwd)
        proxies.set_calibration({"kind": "calibration", "device": "rtx4090", "classes": {},
                                 "providers": {"triton": {"flash_bwd": {"ratio": 2.0}}}}, "fake")  # fmt: skip
        assert ratio() == pytest.approx(s / (t + bwd), abs=2e-3) and s / (t + bwd) < s / t - 0.3
        # streaming measured 1.5x for both: the same time added to both moves the ratio towards 1
        stream_x15 = {"kind": "calibration", "device": "rtx4090", "classes": {"streaming": {"ratio": 1.5}}}
        proxies.set_calibration(stream_x15, "fake")
        assert ratio() == pytest.approx((s + stream / 2) / (t + stream / 2), abs=2e-3)
    finally:
        proxies.set_calibration(None)


@pytest.mark.slow
def test_a_fake_calibration_moves_the_expected_headline_by_the_calibrated_share() -> None:
    # One layer pair at the training shape, counted once per provider; the headline entry is rebuilt from the
    # records under each calibration (as proxy_case does).
    shape = Shape(128, 243)
    records = {p: proxies.count_case("layer_pair", p, "train", shape)[0].records for p in ("triton", "sdpa")}

    def entry() -> tuple[dict, dict]:
        cases_ = {p: {"modelled": proxies._modelled(r, p)} for p, r in records.items()}
        return cases_, proxies.headline_entry(cases_, cases_, "rtx4090")

    proxies.set_calibration(None)
    try:
        train, base = entry()
        t_cls = train["triton"]["modelled"]["rtx4090"]["expected_by_class"]
        s_cls = train["sdpa"]["modelled"]["rtx4090"]["expected_by_class"]
        t, s = sum(t_cls.values()), sum(s_cls.values())
        assert base["ratios_expected"]["train_triton_vs_sdpa"] == pytest.approx(s / t, abs=2e-3)
        # our flash-style backward measured 3x slower than modelled: only triton's time grows, by 2x that share
        fake = {"kind": "calibration", "device": "rtx4090", "providers": {"triton": {"flash_bwd": {"ratio": 3.0}}},
                "classes": {}}  # fmt: skip
        proxies.set_calibration(fake, "fake")
        _, slow = entry()
        want = s / (t + 2 * t_cls["flash_bwd"])
        assert slow["ratios_expected"]["train_triton_vs_sdpa"] == pytest.approx(want, abs=2e-3)
        assert slow["ratios_expected"]["train_triton_vs_sdpa"] < base["ratios_expected"]["train_triton_vs_sdpa"] - 0.05
        assert slow["ratios"] == base["ratios"] and slow["ratios_pessimistic"] == base["ratios_pessimistic"]
        # GEMMs 2x slower on every path: the same time is added to both, so the ratio moves towards 1
        gemm = {"kind": "calibration", "device": "rtx4090", "classes": {"gemm": {"ratio": 2.0}}}
        proxies.set_calibration(gemm, "fake")
        _, g = entry()
        t_g = t_cls.get("gemm", 0) + t_cls.get("gemm_wgrad", 0)
        s_g = s_cls.get("gemm", 0) + s_cls.get("gemm_wgrad", 0)
        assert math.isclose(t_g, s_g, rel_tol=1e-9)  # the same GEMMs on both paths
        assert g["ratios_expected"]["train_triton_vs_sdpa"] == pytest.approx((s + s_g) / (t + t_g), abs=2e-3)
        assert 1 < g["ratios_expected"]["train_triton_vs_sdpa"] < base["ratios_expected"]["train_triton_vs_sdpa"]
        # a calibration for another device changes nothing here
        proxies.set_calibration({**fake, "device": "h100"}, "fake")
        _, other = entry()
        assert other["ratios_expected"] == base["ratios_expected"]
    finally:
        proxies.set_calibration(None)
