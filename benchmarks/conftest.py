"""pytest-benchmark setup for ``pytest benchmarks/ --benchmark-only``.

- Without ``--benchmark-json``, results go to ``benchmarks/results/<device>-<date>.json`` (measured timings).
- Every JSON records the device name, torch/triton versions, git commit and date (``machine_info["fastmixste"]``)
  and references the full-scale modelled proxies (results/proxies.json, computed when absent), carrying the
  modelled rows of the shapes it timed (GPU shapes; none for the reduced CPU sizes) for modelled-vs-measured plots.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest
import torch

RESULTS = Path(__file__).resolve().parent / "results"
#: (test id, reason) of every skipped case, written into the run's JSON so the report can say what was not timed.
SKIPPED: list[tuple[str, str]] = []


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform

    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _tag() -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    if torch.cuda.is_available():
        name = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
        return f"cuda-{name}-{date}"
    return f"cpu-{date}"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Runs before pytest-benchmark builds its session (trylast), so the default JSON path is picked up there.
    if (
        getattr(config.option, "benchmark_json", "absent") is None
        and not config.getoption("benchmark_disable")
        and not config.option.collectonly  # nothing runs: no (empty) result file
    ):
        RESULTS.mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = open(RESULTS / f"{_tag()}.json", "wb")  # noqa: SIM115 (closed by the plugin)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    from .machine import environment

    info = {**environment(), "device": device_name(), "kind": "measured"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            cuda=torch.version.cuda, capability=f"sm_{props.major}{props.minor}", gpu_memory_bytes=props.total_memory
        )
    machine_info["fastmixste"] = info


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        SKIPPED.append((report.nodeid.split("[")[-1].rstrip("]"), str(report.longrepr[2]).removeprefix("Skipped: ")))


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    # The full-scale modelled proxies live in results/proxies.json (computed here when absent); this run's JSON
    # references them and carries the rows of the very shapes it timed (the GPU shapes), for modelled-vs-measured.
    from . import proxies

    path = RESULTS / "proxies.json"
    if path.exists():
        full = json.loads(path.read_text())
    else:
        full = proxies.compute()
        path.write_text(proxies.dumps(full))
    timed = {
        (b["extra_info"].get("scope"), b["extra_info"].get("mode"), b["extra_info"].get("B"), b["extra_info"].get("T"))
        for b in output_json["benchmarks"]
    }
    rows = [
        {k: v for k, v in r.items() if k != "top_ops_by_bytes"}
        for r in full["results"]
        if (r["scope"], r["mode"], r["B"], r["T"]) in timed
    ]
    output_json["fastmixste_skipped"] = [{"case": case, "reason": reason} for case, reason in SKIPPED]
    output_json["fastmixste_proxies"] = {
        "file": "benchmarks/results/proxies.json",
        "kind": "modelled",
        "environment": full["environment"],
        "note": full["note"],
        "results_for_timed_shapes": rows,
    }
