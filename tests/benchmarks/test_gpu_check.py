"""benchmarks.gpu_check rehearsed on the CPU: the dry run, the no-GPU exit, the budget logic, the writers, and the
measurement and parity code driven on tiny shapes (Triton interpreter, wall-clock and fake timers), so that the
first run on a GPU does not meet this code for the first time."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from benchmarks import _gpu_documents as documents
from benchmarks import fused_ops, gpu_check, gpu_steps, machine, report
from benchmarks import gpu_checks as checks
from benchmarks import gpu_plan as plan
from benchmarks import gpu_speed as speed

ROOT = Path(__file__).resolve().parents[2]
TINY = plan.ModelShape(T=9, embed=32, heads=2, depth=1, joints=17)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    base.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=base,
        timeout=timeout,
    )


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dry_run_prints_a_plan_that_fits_420_s() -> None:
    proc = _cli("--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr
    # The steps get what planning (imports, discovery, FLOP counts on meta) left of the 420 s.
    m = re.search(r"estimated total (\d+) s; budget (\d+) s: the plan fits", out)
    assert m, out[-2000:]
    assert int(m.group(1)) <= int(m.group(2)) <= 420
    assert re.search(r"planning took \d+\.\d s of the budget", out)
    # Every part of the GPU check is in the plan, with its estimate.
    for step in (
        "environment",
        "parity:spatial_attention:bf16",
        "parity:temporal_attention:fp32",
        "parity:model:bf16-autocast",
        "determinism:model-backward",
        "smoke:train.run --fused (1 GPU)",
        "batch:train",
        "speed:model:train:triton",
        "speed:model:forward:sdpa",
        "speed:temporal_attention",
        "parity:compile:fused-model",
        "speed:model:train:compile",
        "calibration:model:train",
    ):
        assert re.search(rf"^{re.escape(step)}\s+\d+\.\d", out, re.M), f"{step} missing from the plan"
    assert re.search(r"not run: 1 GPU\(s\): DDP needs 2", out)
    assert "dry run: OK (0 build failures" in out
    # The fused-block module is reported either way: found (and checked) or absent.
    assert "block" in out


def test_without_cuda_exits_2_with_a_message() -> None:
    proc = _cli("--budget-s", "60")
    assert proc.returncode == 2
    assert "no CUDA GPU here" in proc.stderr and "--dry-run" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_bad_budget_is_a_usage_error() -> None:
    proc = _cli("--budget-s", "-3")
    assert proc.returncode == 2
    assert "--budget-s must be a positive number of seconds, got -3" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_dry_run_fails_when_the_plan_does_not_fit(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # A dry run that builds nothing (the build check is covered above) with a budget below the first steps.
    monkeypatch.setattr(gpu_check, "build_on_meta", lambda ctx: [])
    monkeypatch.setattr(gpu_check, "check_imports", lambda: [])
    status = gpu_check.main(["--dry-run", "--budget-s", "30"])
    out = capsys.readouterr().out
    assert status == 1
    assert "the plan does NOT fit" in out and "[over budget: would not run]" in out


# ---------------------------------------------------------------------------------------------------------------
# Budget and plan
# ---------------------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ctx(clock: FakeClock | None = None, budget_s: float = 100.0, **kw) -> plan.Context:
    profile = plan.Profile("Fake GPU", None, 8 * 1024**3, 1, xformers=False)
    ctx = plan.Context(
        args=None,
        profile=profile,
        modelled=plan.Modelled(None, "none"),
        discovery=fused_ops.Discovery(),
        device=machine.Device(),
        budget=plan.Budget(budget_s, clock or FakeClock()),
        **kw,
    )
    return ctx


def test_budget_admits_only_what_fits() -> None:
    clock = FakeClock()
    b = plan.Budget(50, clock)
    assert b.admit(50) is None
    clock.now += 30
    assert b.left() == pytest.approx(20)
    reason = b.admit(25)
    assert reason == "budget: needs ~25 s, 20 s of 50 s left"
    with pytest.raises(ValueError, match="budget must be positive"):
        plan.Budget(0)


def test_run_plan_statuses_and_exit_code() -> None:
    clock = FakeClock()
    ctx = _ctx(clock, budget_s=100)

    def cost(seconds: float, detail: dict):
        def run(c):
            clock.now += seconds
            return detail

        return run

    def boom(c):
        raise RuntimeError("kernel launch failed")

    steps = [
        plan.Step("a-check", "correctness", plan.CHECK, 10, cost(12, {"passed": True})),
        plan.Step("b-measure", "speed", plan.MEASURE, 20, cost(20, {"median": 1.0})),
        plan.Step("c-needs", "speed", plan.MEASURE, 5, cost(1, {}), requires=lambda c: "xformers is not installed"),
        plan.Step("d-error", "correctness", plan.CHECK, 5, boom),
        plan.Step("e-too-big", "speed", plan.MEASURE, 80, cost(80, {})),
        plan.Step("f-fails", "correctness", plan.CHECK, 10, cost(3, {"passed": False, "failures": ["dqkv: 2x"]})),
        plan.Step("g-oom", "speed", plan.MEASURE, 1, cost(1, {"oom": True, "reason": "out of memory at B=32"})),
    ]
    seen = []
    results = plan.run_plan(ctx, steps, on_step=lambda: seen.append(len(ctx.results)))
    status = {r.name: (r.status, r.reason) for r in results}
    assert status["a-check"] == ("passed", "")
    assert status["b-measure"] == ("measured", "")
    assert status["c-needs"] == ("not run", "xformers is not installed")
    assert status["d-error"][0] == "error" and "kernel launch failed" in status["d-error"][1]
    assert status["e-too-big"][0] == "not run" and status["e-too-big"][1].startswith("budget: needs ~80 s, 68 s")
    assert status["f-fails"] == ("failed", "dqkv: 2x")
    assert status["g-oom"] == ("not run", "out of memory at B=32")
    assert [r.seconds for r in results[:2]] == [12, 20]
    assert seen == list(range(1, len(steps) + 1))  # results saved after every step
    assert plan.exit_status(results) == 1
    assert plan.exit_status(results[:3]) == 0


def test_plan_table_marks_what_does_not_fit() -> None:
    ctx = _ctx()
    steps = [
        plan.Step("one", "x", plan.CHECK, 30, lambda c: {}),
        plan.Step("skip", "x", plan.CHECK, 99, lambda c: {}, requires=lambda c: "2 GPUs needed"),
        plan.Step("later", "x", plan.MEASURE, 30, lambda c: {}, requires=lambda c: "after: batch:train"),
        plan.Step("two", "x", plan.MEASURE, 50, lambda c: {}),
    ]
    rows, total = plan.plan_table(steps, 100, ctx)
    assert total == 110
    assert [r["fits"] for r in rows] == [True, None, True, False]
    text = plan.format_plan(rows, total, 100)
    assert "not run: 2 GPUs needed" in text and "does NOT fit" in text


def test_choose_batch_goes_up_while_memory_allows_and_down_on_oom() -> None:
    gb = 1024**3

    def probe_for(limit_gb: float):
        calls = []

        def probe(B: int) -> dict:
            calls.append(B)
            peak = B * gb  # 1 GB per sequence
            if peak > limit_gb * gb:
                raise MemoryError(f"B={B}: out of memory")
            return {"eager": peak, "triton": peak // 2}

        return probe, calls

    probe, calls = probe_for(20)
    B, log = speed.choose_batch(probe, 8, 20 * gb)
    assert B == 16 and calls == [8, 16]  # 32 extrapolates to 32 GB > 0.9 x 20 GB: not tried
    assert log[-1]["fits"] is None
    probe, calls = probe_for(10)
    B, _ = speed.choose_batch(probe, 32, 64 * gb)  # the plan was optimistic: step down
    assert B == 8 and calls == [32, 16, 8]
    probe, _ = probe_for(2)
    B, log = speed.choose_batch(probe, 4, 64 * gb)
    assert B is None and log[0]["fits"] is False
    # Unknown peaks (a CPU device) do not stop the search.
    B, _ = speed.choose_batch(lambda B: {"eager": None}, 4, 1)
    assert B == 32


def test_planned_batch_uses_the_modelled_memory() -> None:
    ctx = _ctx()
    ctx.modelled = plan.Modelled.load()
    ctx.profile = plan.Profile("RTX 4090", "rtx4090", 24 * 1024**3, 1, xformers=True)
    small = plan.planned_batch(ctx, "train")
    ctx.profile = plan.Profile("H100", "h100", 80 * 1024**3, 1, xformers=True)
    large = plan.planned_batch(ctx, "train")
    assert small in plan.BATCHES and large in plan.BATCHES and small < large
    assert plan.planned_batch(ctx, "forward") == 32


# The names both users pass: gpu_check the CUDA device name (or its plan's assumed GPU) against the modelled devices;
# benchmarks.report a result file's recorded device against proxies.json's "devices".
SPEC_NAMES = {
    "NVIDIA GeForce RTX 4090": "rtx4090",
    "RTX 4090 (assumed for the plan)": "rtx4090",
    "CPU rehearsal RTX 4090": "rtx4090",
    "NVIDIA H100 80GB HBM3": "h100",
    "NVIDIA H100 PCIe": "h100",
    "NVIDIA A100-SXM4-80GB": None,
    "NVIDIA H200": None,
    "CPU x86_64": None,
}


@pytest.mark.parametrize("name", list(SPEC_NAMES))
def test_spec_for_has_one_rule_for_both_users(name: str) -> None:
    proxies_devices = json.loads((ROOT / "benchmarks" / "results" / "proxies.json").read_text())["devices"]
    assert machine.spec_for(name) == SPEC_NAMES[name]
    assert machine.spec_for(name, proxies_devices) == SPEC_NAMES[name]
    assert machine.spec_for(gpu_check.PLAN_GPU[0]) == gpu_check.PLAN_GPU[1]


def test_modelled_seconds_scale_with_batch_and_add_adamw() -> None:
    m = plan.Modelled.load()
    s16, how16 = m.seconds("model", "triton", "train", 16, 243, "rtx4090")
    s8, how8 = m.seconds("model", "triton", "train", 8, 243, "rtx4090")
    assert how16 == "proxies B=16 + AdamW" and "x 8/16" in how8
    adamw = 33_783_811 * plan.ADAMW_BYTES_PER_PARAM / 1008e9
    assert s8 - adamw == pytest.approx((s16 - adamw) / 2)
    assert m.seconds("model", "compile", "train", 8, 243, "rtx4090")[0] is None


# ---------------------------------------------------------------------------------------------------------------
# Timing on fake and CPU devices
# ---------------------------------------------------------------------------------------------------------------


class FakeDevice(machine.Device):
    """Returns preset durations and peak bytes: the statistics and bookkeeping, without a GPU."""

    type = "cuda"

    def __init__(self, durations: list[float]) -> None:
        super().__init__()
        self.durations = list(durations)
        self.calls = 0
        self.resets = 0

    def time_call(self, fn):
        fn()
        self.calls += 1
        return self.durations.pop(0)

    def reset_peak(self) -> None:
        self.resets += 1

    def peak_bytes(self) -> int:
        return 123


def test_time_step_statistics_warmup_and_deadline() -> None:
    dev = FakeDevice([9.0, 8.0] + [0.1 * k for k in range(1, 11)])
    res = speed.time_step(lambda: None, dev, warmup=2, iters=10)
    assert res["first_call_s"] == 9.0 and res["n"] == 10 and dev.resets == 1
    assert res["median"] == pytest.approx(0.55) and res["p20"] == pytest.approx(0.28)
    assert res["p80"] == pytest.approx(0.82) and res["peak_memory_bytes"] == 123
    clock = FakeClock()
    dev = FakeDevice([1.0] * 20)
    clock.now = 1e9  # already past the deadline: stops after MIN_SAMPLES
    res = speed.time_step(lambda: None, dev, warmup=1, iters=10, deadline=0.0, clock=clock)
    assert res["n"] == plan.MIN_SAMPLES
    with pytest.raises(ValueError):
        speed.summarize([])


def test_cpu_device_times_real_work() -> None:
    x = torch.randn(64, 64)
    res = speed.time_step(lambda: x @ x, machine.Device(), warmup=1, iters=5)
    assert res["n"] == 5 and 0 < res["p20"] <= res["median"] <= res["p80"] and res["peak_memory_bytes"] is None


# ---------------------------------------------------------------------------------------------------------------
# Parity code on tiny shapes (Triton interpreter: fp32 and fp16; bf16 needs a GPU)
# ---------------------------------------------------------------------------------------------------------------


def _tiny_cases() -> list[fused_ops.ParityCase]:
    found = fused_ops.discover()
    assert {c.op for c in found.cases} >= {"spatial_attention", "temporal_attention"}
    return [
        dataclasses.replace(
            c,
            make_inputs=fused_ops.qkv_inputs(2, 5, C=32, H=2),
            ref_chunk=1,  # two batch elements in two chunks: the chunked references are exercised
            dtypes=(torch.float32, torch.float16),
            programs=None,
        )
        for c in found.cases
        if c.op in ("spatial_attention", "temporal_attention")
    ]


def test_discovery_finds_the_attention_ops_and_reports_the_block_module() -> None:
    found = fused_ops.discover()
    ops = {c.op: c for c in found.cases}
    assert ops["spatial_attention"].ref.__name__ == "spatial_attention_ref"
    assert ops["temporal_attention"].ref.__name__ == "temporal_attention_ref"
    # Full scale goes past the 65,535-program limit of grid axes 1/2 in every dtype.
    for case in ops.values():
        for dtype in case.dtypes:
            assert case.programs_for(dtype) > fused_ops.GRID_YZ_LIMIT
    lines = "\n".join(found.lines())
    assert ("block" in found.modules) or ("kernels/block.py: absent" in lines)


@pytest.mark.slow  # interpreted parity of every op; test_kernel_parity_catches_... keeps the checker in the fast tier
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_kernel_parity_passes_on_the_real_kernels(dtype: torch.dtype) -> None:
    for case in _tiny_cases():
        res = checks.kernel_parity(case, dtype, machine.Device())
        assert res["passed"], (case.op, res["failures"])
        assert res["deterministic_backward"]
        assert set(res["max_abs_error_fused"]) == {"out", "dqkv"}
        assert all(v > 0 for v in res["max_abs_error_eager"].values()) or dtype == torch.float32


def test_kernel_parity_catches_a_wrong_result_and_nondeterminism() -> None:
    case = _tiny_cases()[0]
    ref = case.ref

    def off_by_a_little(qkv, H):
        return ref(qkv, H) * 1.001

    res = checks.kernel_parity(dataclasses.replace(case, fn=off_by_a_little), torch.float32, machine.Device())
    assert not res["passed"] and any("fp32 error" in f for f in res["failures"])

    calls = {"n": 0}

    def flaky(qkv, H):
        calls["n"] += 1
        return ref(qkv, H) + (1e-7 if calls["n"] > 1 else 0.0)

    res = checks.kernel_parity(dataclasses.replace(case, fn=flaky), torch.float32, machine.Device())
    assert not res["passed"] and "backward not bit-identical across two runs" in res["failures"]

    def unwritten(qkv, H):
        out = ref(qkv, H)
        return torch.cat([out[:, :-1], torch.full_like(out[:, -1:], float("nan"))], dim=1)

    res = checks.kernel_parity(dataclasses.replace(case, fn=unwritten), torch.float16, machine.Device())
    assert not res["passed"] and any("NaN" in f for f in res["failures"])


@pytest.mark.slow
def test_model_parity_and_determinism_on_a_tiny_model() -> None:
    # CPU autocast in fp16 (the interpreter cannot compute bf16); a GPU run uses bf16.
    res = checks.model_parity(machine.Device(), TINY, B=2, amp=torch.float16)
    assert res["passed"], res["failures"]
    assert res["tensors_compared"] == 1 + len(list(checks.build_model(TINY).parameters()))
    det = checks.model_determinism(machine.Device(), TINY, B=1, amp=torch.float16)
    assert det["passed"] and det["triton"]["output_identical"] and not det["triton"]["gradients_differing"]


def test_smoke_judge_reads_train_run_output(tmp_path: Path) -> None:
    log = (
        "model: 35,971 parameters, attention backend 'triton', device cuda, amp torch.bfloat16\n"
        "[pretrain] epoch 0.0357/1 | step 3 | loss 1.3314 | val MPJPE 445.2 mm | lr 2.00e-03 | 14 seq/s | 3.5 s\n"
        "[finetune] epoch 0.008/1 | step 3 | loss 1.4336 | val MPJPE 557.5 mm | lr 2.00e-03 | 27 seq/s | 1.8 s\n"
    )
    (tmp_path / "results.json").write_text(json.dumps({"mpjpe_mm": 535.9}))
    res = checks.check_smoke_output(0, log, tmp_path)
    assert res["passed"] and res["losses"] == [1.3314, 1.4336]
    bad = checks.check_smoke_output(1, log.replace("'triton'", "'sdpa'").replace("1.4336", "nan"), tmp_path / "x")
    assert not bad["passed"] and len(bad["failures"]) == 4
    cmd = checks.smoke_command("/tmp/out", nproc=2)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in cmd and "--fused" in cmd
    assert cmd[5:7] == ["-m", "train.run"]  # torchrun runs a module with -m
    # The flags the smoke command passes are ones train.run accepts (its own parser, no run).
    from train._config import build_parser

    args = build_parser().parse_args(checks.smoke_command("/tmp/out")[3:])
    assert args.fused and args.amp == "bf16" and args.device == "cuda" and args.max_steps == 5


# ---------------------------------------------------------------------------------------------------------------
# The whole run, rehearsed on a CPU with tiny shapes, and its files read back by benchmarks.report
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rehearsal_runs_every_step_kind_and_writes_files_the_report_reads(tmp_path: Path) -> None:
    ctx = _ctx(budget_s=3600)
    ctx.budget = plan.Budget(3600)
    ctx.modelled = plan.Modelled.load()
    ctx.profile = plan.Profile("CPU rehearsal RTX 4090", "rtx4090", 8 * 1024**3, 1, xformers=False)
    # One dtype per op here: both interpreter dtypes are covered by the parity test above.
    tiny = [dataclasses.replace(c, dtypes=(torch.float16,)) for c in _tiny_cases()]
    ctx.discovery = fused_ops.Discovery(modules=["spatial", "temporal"], cases=tiny)
    # Tiny and few: the interpreter and CPU fp16 matmuls are slow; every code path still runs (the batch search
    # probes 1 and tries 2 where the memory allows; warm-up and timed calls on every provider).
    ctx.model_shape, ctx.amp, ctx.batches, ctx.timing = TINY, torch.float16, (1, 2), (1, 2, 0, 2)
    steps = [
        s
        for s in gpu_steps.build_steps(ctx)
        if not s.name.startswith(
            ("smoke:", "parity:compile", "speed:model:train:compile", "speed:model:forward:compile")
        )
    ]
    saved = []
    plan.run_plan(
        ctx, steps, on_step=lambda: saved.append(documents.write_outputs(ctx, tmp_path, "cpu-rehearsal", 3600))
    )
    by_name = {r.name: r for r in ctx.results}
    errors = {r.name: (r.reason, r.detail.get("traceback", "")[-800:]) for r in ctx.results if r.status == "error"}
    assert not errors, errors
    assert all(r.status == "passed" for r in ctx.results if r.kind == plan.CHECK)
    assert by_name["speed:model:train:xformers"].status == "not run"
    assert ctx.batch == {"train": 2, "forward": 2}
    got = {(r["scope"], r["mode"], r["provider"]) for r in ctx.speed_rows}
    for scope in ("model", "spatial_attention", "temporal_attention"):
        for mode in ("train", "forward"):
            for provider in ("eager", "sdpa", "triton"):
                assert (scope, mode, provider) in got
    # The modelled column is filled where proxies.json has the (scope, provider, mode, T) row (T = 243 only).
    assert all(r["modelled_s"] is None for r in ctx.speed_rows)
    assert plan.exit_status(ctx.results) == 0

    data = json.loads((tmp_path / "cpu-rehearsal.json").read_text())
    assert data["kind"] == "gpu_check" and data["exit_status"] == 0
    assert any(s["case"] == "speed:model:train:xformers" for s in data["fastmixste_skipped"])
    runs = report.load_measured(tmp_path)
    assert len(runs) == 1 and len(runs[0]["rows"]) == len(ctx.speed_rows)
    table = report.measured_table(runs[0])
    assert "whole MixSTE" in table and "spatial attention" in table
    md = (tmp_path / "cpu-rehearsal.md").read_text()
    assert "| parity:temporal_attention:fp16 | passed |" in md
    assert "| speed:model:train:xformers | not run |" in md and "xformers is not installed" in md


# ---------------------------------------------------------------------------------------------------------------
# Ops added later: discovered through the kernel package, checked without editing gpu_check
# ---------------------------------------------------------------------------------------------------------------


def _fake_block_module() -> types.ModuleType:
    """A stand-in for a later kernel module: one op with parity_cases(), one with a reference only."""
    mod = types.ModuleType("fastmixste.kernels.block")

    def bias_scale(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, C) x, (C,) w -> (B, C): x * w + 1 (a fused op would do this in Triton)."""
        return torch.addcmul(torch.ones_like(x), x, w)

    def bias_scale_ref(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * w + 1

    def gelu_bias(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x)

    def gelu_bias_ref(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x)

    def inputs(device, dtype, gen):
        if torch.device(device).type == "meta":
            return (torch.empty(6, 8, device=device, dtype=dtype), torch.empty(8, device=device, dtype=dtype)), {}
        x = torch.randn(6, 8, generator=gen, device=device).to(dtype)
        return (x, torch.randn(8, generator=gen, device=device).to(dtype)), {}

    def parity_cases():
        return [
            {
                "op": "bias_scale",
                "fn": bias_scale,
                "ref": bias_scale_ref,
                "inputs": inputs,
                "grad_args": (0, 1),
                "batch_args": (0,),
                "ref_chunk": 4,
                "kernels": 1,
                "label": "B6-C8",
                "programs": 6,
            }
        ]

    for f in (bias_scale, bias_scale_ref, gelu_bias, gelu_bias_ref, parity_cases):
        f.__module__ = mod.__name__
        setattr(mod, f.__name__, f)
    return mod


def test_a_later_kernel_module_is_discovered_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fused_ops._import_modules

    def with_block():
        mods, errors = real()
        return {**mods, "block": _fake_block_module()}, errors

    monkeypatch.setattr(fused_ops, "_import_modules", with_block)
    found = fused_ops.discover()
    ops = {c.op: c for c in found.cases}
    assert {"spatial_attention", "temporal_attention", "bias_scale"} <= set(ops)
    assert found.without_inputs == ["gelu_bias (block.py)"]
    assert "block" in found.modules and not found.missing_modules
    assert any("gelu_bias" in line and "no parity inputs" in line for line in found.lines())
    # The generic parity path: a batched input and an unbatched weight (its gradient summed over the chunks).
    res = checks.kernel_parity(
        dataclasses.replace(ops["bias_scale"], dtypes=(torch.float32,)), torch.float32, machine.Device()
    )
    assert res["passed"], res["failures"]
    assert set(res["max_abs_error_fused"]) == {"out", "dx", "dw"}


def test_triton_floor() -> None:
    assert machine.triton_floor_problem("3.9.0") is None and machine.triton_floor_problem("3.4.0") is None
    assert "older than 3.4" in machine.triton_floor_problem("3.2.0")
    setup = (ROOT / "setup.py").read_text()
    assert f"triton>={machine.MIN_TRITON[0]}.{machine.MIN_TRITON[1]}" in setup
