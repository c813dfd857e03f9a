"""README numbers come from generated files: its generated blocks match what ``python -m benchmarks.readme`` makes
from the committed results, and the report's prose follows the results it reads (no number typed in)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks import readme
from fastmixste.data.h36m import ACTIONS

REPO = Path(__file__).resolve().parents[2]


def test_readme_blocks_match_the_committed_results() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    made = readme.blocks(REPO / "benchmarks" / "results")
    assert {"kernel-resources", "performance-headline", "performance-modelled", "performance-limits"} <= set(made)
    assert readme.stale(text, made) == [], "README is out of date: run python -m benchmarks.readme"
    assert "<!-- generated:default-run -->" in text  # filled from a run with --run


def test_check_finds_a_hand_edited_number(tmp_path: Path, capsys) -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- generated:performance-headline -->")
    number = re.search(r"\d+\.\d\dx", text[start:]).group(0)  # the block's first ratio, whatever it is now
    edited = text[:start] + text[start:].replace(number, f"{float(number[:-1]) + 0.01:.2f}x", 1)
    assert edited != text
    (tmp_path / "README.md").write_text(edited, encoding="utf-8")
    assert readme.main(["--readme", str(tmp_path / "README.md"), "--check"]) == 1
    assert "performance-headline" in capsys.readouterr().err
    assert readme.main(["--readme", str(tmp_path / "README.md")]) == 0  # regenerating repairs it
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == text


def _results(avg: float) -> dict:
    per_action = {a: avg + i / 10 for i, a in enumerate(ACTIONS)}
    return {"protocol1": {**per_action, "Avg": avg}, "protocol2": {**per_action, "Avg": avg / 2}, "n_mpjpe": 40.25,
            "mpjve": 3.125, "baseline_mpjpe": 190.04, "baseline_p_mpjpe": 170.0, "total_seconds": 125.4,
            "data": {"description": "built-in synthetic data (a stand-in for Human3.6M, not real motion)"},
            "environment": {"device": "cpu", "threads": 1, "cpu_count": 2}}  # fmt: skip


def test_default_run_block_is_filled_from_a_runs_results(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "default"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(_results(47.0)))
    page = tmp_path / "README.md"
    page.write_text("intro\n\n<!-- generated:default-run -->old<!-- /generated:default-run -->\n\nafter\n")
    made = readme.blocks(REPO / "benchmarks" / "results", run)
    with pytest.raises(ValueError, match="kernel-resources"):  # every block made must have a place in the page
        readme.fill(page.read_text(), made)
    filled = readme.fill(page.read_text(), {"default-run": made["default-run"]})
    assert filled.startswith("intro\n\n<!-- generated:default-run -->\n") and filled.endswith("\n\nafter\n")
    flat = " ".join(filled.split())  # prose is wrapped at the README's line length
    assert "**47.0 mm MPJPE / 23.5 mm P-MPJPE**" in flat and "190.0 / 170.0 mm" in flat
    assert "2 min 5 s" in flat and "built-in synthetic data" in flat and "Human3.6M test" not in flat
    assert "| MPJPE | 47.0 | 47.1 |" in filled and "old" not in filled
    assert readme.stale(filled, {"default-run": made["default-run"]}) == []
    with pytest.raises(FileNotFoundError, match="results.json"):
        readme.blocks(REPO / "benchmarks" / "results", tmp_path / "nowhere")


def test_report_prose_follows_the_results(tmp_path: Path) -> None:
    from benchmarks import report

    results = REPO / "benchmarks" / "results"
    for name in ("proxies.json", "kernel_resources.json", *(p.name for p in results.glob("cpu-*.json"))):
        shutil.copy(results / name, tmp_path / name)
    proxies = json.loads((tmp_path / "proxies.json").read_text())
    proxies["launch_overhead_variant_s"] = 7e-6
    # the assumptions list states the same constant in words (written by proxies.py from it): keep it consistent
    proxies["assumptions"] = [a.replace("3 us", "7 us") for a in proxies.get("assumptions", [])]
    proxies["devices"]["rtx4090"]["bandwidth"] = 1.5e12
    (tmp_path / "proxies.json").write_text(json.dumps(proxies))
    kernels = json.loads((tmp_path / "kernel_resources.json").read_text())
    for row in kernels:
        if "bwd" in row["kernel"]:
            row["occupancy"] = 0.5
    (tmp_path / "kernel_resources.json").write_text(json.dumps(kernels))
    report.build(tmp_path)
    perf = (tmp_path / "PERFORMANCE.md").read_text()
    assert "+ 7 us per launch" in perf and "the +7 us per launch variant" in perf
    assert "RTX 4090 = 165 TFLOPS / 1500 GB/s" in perf
    assert "fused backward kernels at 50%-50% estimated occupancy" in perf
    assert "3 us" not in perf and "17%" not in perf
    limits = readme.limits_block(proxies, kernels)
    assert "(+7 us per launch variant)" in limits and "50%–50%" in limits
