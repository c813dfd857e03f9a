"""The AOT resource report: every launcher configuration compiles for sm_89 and sm_90 without spills and within the
per-block shared-memory limit. Compiling needs real @triton.jit functions, so the report runs in a subprocess with
TRITON_INTERPRET removed from its environment (the test session sets it on machines without a GPU).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator

import pytest
import torch
from fastmixste.kernels import OP_MODULES, SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, report
from fastmixste.kernels._common import LaunchConfig
from fastmixste.kernels.spatial import report_cases

# The launchers' choices are enumerated per op module over a grid of shapes wider than the classes report_cases()
# walks: every T up to 70, the tile boundaries and long sequences; N across the spatial packing classes and past
# its limit; one and several heads; every head dim, dtype and direction. Launch plans are taken as on a GPU (the
# interpreter stacks several sequences per program, which no GPU does); shapes an op refuses (unsupported_reasons)
# launch nothing and are skipped. A new op module adds its enumerator to LAUNCH_CHOICES: the test fails without one.
_LENGTHS = [*range(1, 70), 81, 95, 96, 97, 127, 128, 129, 243, 256, 351, 1024]
_JOINTS = [1, 2, 3, 5, 8, 13, 16, 17, 21, 31, 32, 33, 40, 63, 64, 65]


def _attention_choices(op) -> Iterator[tuple[torch.dtype, LaunchConfig]]:
    for dtype in SUPPORTED_DTYPES:
        for T in _LENGTHS:
            for N in _JOINTS:
                for H in (1, 8):
                    for D in SUPPORTED_HEAD_DIMS:
                        shape = (3, T, N, 3 * H * D)
                        probe = torch.empty(shape, device="meta", dtype=dtype)
                        for backward in (False, True):
                            if op.unsupported_reasons(probe, H, backward=backward):
                                continue
                            for cfg, grid in op.launch_plan(shape, H, dtype, backward):
                                assert grid[0] >= 1, (shape, grid)
                                yield dtype, cfg


# Cross-attention: query and key lengths independently around every tile edge (and HoT's 81, 243), every query
# broadcast (none, over the batch, the joints, both), one and several heads (on a GPU the joint count changes grids
# only, so one odd N).
_CROSS_LENGTHS = [1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 81, 127, 128, 129, 243, 244]


def _cross_choices(op) -> Iterator[tuple[torch.dtype, LaunchConfig]]:
    N = 3
    for dtype in SUPPORTED_DTYPES:
        for TQ in _CROSS_LENGTHS:
            for TK in _CROSS_LENGTHS:
                for H in (1, 8):
                    for D in SUPPORTED_HEAD_DIMS:
                        kv = (3, TK, N, H * D)
                        for q in ((3, TQ, N, H * D), (1, TQ, N, H * D), (3, TQ, 1, H * D), (1, TQ, 1, H * D)):
                            probes = [torch.empty(s, device="meta", dtype=dtype) for s in (q, kv, kv)]
                            for backward in (False, True):
                                if op.unsupported_reasons(*probes, H, backward=backward):
                                    continue
                                for cfg, grid in op.launch_plan(q, kv, H, dtype, backward):
                                    assert grid[0] >= 1, (q, kv, grid)
                                    yield dtype, cfg


# The block kernels: every C from 1 to 70, both sides of each tile width up to the 2048 limit and past it (refused),
# row counts from 1 to a full-scale 243-frame sequence, one and two norms, with and without y (and with y, with and
# without the y bias; the DropPath mask is a runtime operand, no variant), every h / y / gradient dtype, both
# directions, backwards with and without writing the forward's h (g for bias + GELU); bias + GELU over row counts
# and widths around its tiles.
_CHANNELS = [*range(1, 71), 95, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 4096]
_ROWS = [(1, 1, 1), (2, 3, 5), (1, 27, 17), (2, 81, 17), (2, 243, 17)]


def _block_choices(op) -> Iterator[tuple[torch.dtype, LaunchConfig]]:
    for h in SUPPORTED_DTYPES:
        for C in _CHANNELS:
            if op.unsupported_reasons(torch.empty(1, 1, 1, C, device="meta", dtype=torch.float32), h):
                continue
            for rows in _ROWS:
                for y, y_bias in [(None, False)] + [(y, b) for y in SUPPORTED_DTYPES for b in (False, True)]:
                    for two in (False, True):
                        for backward, write_h in ((False, False), (True, False), (True, True)):
                            plan = op.launch_plan((*rows, C), h, backward, y_dtype=y, two_norms=two,
                                                  write_h=write_h, y_bias=y_bias, programs=528)  # fmt: skip
                            for cfg, grid in plan:
                                assert grid[0] >= 1, (rows, C, grid)
                                yield h, cfg


def _gelu_choices(op) -> Iterator[tuple[torch.dtype, LaunchConfig]]:
    for u in SUPPORTED_DTYPES:
        for shape in [(1, 1), (5, 7, 40), (2, 243, 17, 1024), (3, 128), (17, 129), (4, 2048)]:
            for grad in SUPPORTED_DTYPES:
                for backward, write_g in ((False, False), (True, False), (True, True)):
                    plan = op.launch_plan(shape, u, backward, grad_dtype=grad, write_g=write_g, programs=528)
                    for cfg, grid in plan:
                        assert min(grid) >= 1, (shape, grid)
                        yield u, cfg


LAUNCH_CHOICES: dict[str, Callable[[object], Iterable[tuple[torch.dtype, LaunchConfig]]]] = {
    "spatial": _attention_choices,
    "temporal": _attention_choices,
    "block": _block_choices,
    "gelu": _gelu_choices,
    "cross": _cross_choices,
}


def _case_key(case) -> tuple:
    """The compiled case's key as :meth:`LaunchConfig.key` forms it; for ops whose pointers carry types of their own
    (TypedLaunchConfig), with every pointer's type as the case's signature gives it."""
    key = (case.name, case.dtype, tuple(case.constexprs.items()), case.num_warps, case.num_stages)
    if "ptr_types" in case.extra:
        key += (tuple((n, t[1:]) for n, t in case.signature.items() if t.startswith("*")),)
    return key


@pytest.mark.parametrize("module", OP_MODULES)
def test_report_covers_every_configuration_the_launchers_pick(module, monkeypatch):
    """Every (kernel, dtype, constexprs, warps, stages) a launcher picks is a report case, and every case is picked."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    op = importlib.import_module(f"fastmixste.kernels.{module}")
    assert module in LAUNCH_CHOICES, f"op module {module!r} has no enumerator of launch choices in this test"
    compiled = {_case_key(c) for c in op.report_cases()}
    picked = {cfg.key(dtype) for dtype, cfg in LAUNCH_CHOICES[module](op)}
    missing = picked - compiled
    assert not missing, f"{module}: {len(missing)} launchable configurations are not compiled: {sorted(missing)[:5]}"
    assert compiled == picked, f"{module}: report cases no launch picks: {sorted(compiled - picked)[:5]}"


def test_hot_pruned_length_81_is_compiled(monkeypatch) -> None:
    """HoT runs the MixSTE blocks at T = 81 after pruning and recovers 243 frames from 81 with the cross op: every
    configuration those shapes launch (every head dim, dtype and direction, 17 joints) is a report case. At T = 81
    the temporal tiles are the capped ones (the T > 64 class, the same rows as T = 243); spatial and block
    configurations do not depend on T."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    mods = {m: importlib.import_module(f"fastmixste.kernels.{m}") for m in ("spatial", "temporal", "block", "cross")}
    compiled = {_case_key(c) for mod in mods.values() for c in mod.report_cases()}
    picked = []
    for dtype in SUPPORTED_DTYPES:
        for D in SUPPORTED_HEAD_DIMS:
            for backward in (False, True):
                shape = (2, 81, 17, 3 * 8 * D)
                for m in ("spatial", "temporal"):
                    if not mods[m].unsupported_reasons(torch.empty(shape, device="meta", dtype=dtype), 8, backward):
                        picked += [cfg.key(dtype) for cfg, _ in mods[m].launch_plan(shape, 8, dtype, backward)]
                for Bq in (1, 2):
                    plan = mods["cross"].launch_plan((Bq, 243, 1, 8 * D), (2, 81, 17, 8 * D), 8, dtype, backward)
                    picked += [cfg.key(dtype) for cfg, _ in plan]
                for y in (None, dtype):
                    plan = mods["block"].launch_plan((2, 81, 17, 8 * D), dtype, backward, y_dtype=y, two_norms=True,
                                                     programs=528)  # fmt: skip
                    picked += [cfg.key(dtype) for cfg, _ in plan]
    temporal_81 = {k for k in picked if k[0].startswith("_temporal") and ("BLOCK_Q", 64) in k[2]}
    assert temporal_81, "T = 81 should run the capped 64-row query tiles"
    assert set(picked) <= compiled, sorted(set(picked) - compiled)[:5]


@pytest.mark.slow
def test_every_configuration_fits_both_targets(tmp_path):
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "fastmixste.kernels.report", "--json", str(out), "--jobs", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), f"report failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rows = json.loads(out.read_text())

    spatial = [r for r in rows if r["kernel"].startswith("_spatial_attn")]
    assert len(spatial) == 2 * len(report_cases())
    # Every case of every op module, once per target.
    assert len(rows) == 2 * len(report.gather_cases())
    assert {r["cap"] for r in rows} == {89, 90}
    for r in rows:
        where = f"{r['kernel']} {r['target']} {r['dtype']} {r['config']}"
        assert r["spill_bytes"] == 0, f"{where} spills {r['spill_bytes']} B"
        assert r["shared_bytes"] <= r["shared_limit"], f"{where}: shared {r['shared_bytes']} > {r['shared_limit']}"
        assert 0 < r["registers"] <= 255, where
        assert r["blocks_per_sm"] >= 1, where
    assert all(r["shared_limit"] == 101376 for r in rows if r["cap"] == 89)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "| kernel | target |" in proc.stdout


def test_occupancy_estimate():
    sm89 = report.TARGETS[89]
    # 128 registers x 128 threads = 16K registers per block: 4 blocks fill the 64K register file.
    assert report.occupancy(sm89, 128, 0, 4) == (4, 4 * 128 / 1536, "registers")
    # 60 KB of shared memory (+1 KB reserved) per block: one block per 100 KB SM.
    blocks, _, limited_by = report.occupancy(sm89, 32, 60 * 1024, 4)
    assert (blocks, limited_by) == (1, "shared")
    # Tiny blocks: the 24-blocks-per-SM cap binds on sm_89.
    assert report.occupancy(sm89, 16, 0, 1)[2] == "blocks"


def test_missing_modules_are_skipped_and_interpreter_refused(monkeypatch):
    assert report.gather_cases(("no_such_kernel",)) == []
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        report.build_report((89,))
