"""The AOT resource report: every launcher configuration compiles for sm_89 and sm_90 without spills and within the
per-block shared-memory limit. Compiling needs real @triton.jit functions, so the report runs in a subprocess with
TRITON_INTERPRET removed from its environment (the test session sets it on machines without a GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastmixste.kernels import report
from fastmixste.kernels.block import report_cases as block_report_cases
from fastmixste.kernels.spatial import report_cases


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
    block = [r for r in rows if r["kernel"].startswith(("_residual_norm", "_bias_gelu"))]
    assert len(block) == 2 * len(block_report_cases())
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
