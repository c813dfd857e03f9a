"""pytest-benchmark setup for ``pytest benchmarks/ --benchmark-only``.

- Without ``--benchmark-json``, results go to ``benchmarks/results/<device>-<date>.json`` (measured timings).
- Every JSON records the device name, torch/triton versions, git commit and date (``machine_info["fastmixste"]``)
  and carries the full-scale modelled proxies (``fastmixste_proxies``; from results/proxies.json, computed when
  absent) plus, on CUDA, the proxies of the very shapes that were timed, for modelled-vs-measured plots.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest
import torch

RESULTS = Path(__file__).resolve().parent / "results"


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
    if getattr(config.option, "benchmark_json", "absent") is None and not config.getoption("benchmark_disable"):
        RESULTS.mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = open(RESULTS / f"{_tag()}.json", "wb")  # noqa: SIM115 (closed by the plugin)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    from .proxies import environment

    info = {**environment(), "device": device_name(), "kind": "measured"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            cuda=torch.version.cuda, capability=f"sm_{props.major}{props.minor}", gpu_memory_bytes=props.total_memory
        )
    machine_info["fastmixste"] = info


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    from . import proxies

    path = RESULTS / "proxies.json"
    if path.exists():
        full = json.loads(path.read_text())
    else:
        full = proxies.compute()
        path.write_text(json.dumps(full, indent=1))
    output_json["fastmixste_proxies"] = {"file": str(path.relative_to(RESULTS.parent.parent)), **full}
