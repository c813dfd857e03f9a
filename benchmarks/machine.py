"""The machine a result comes from: the device the measurement code drives (timer, synchronisation, peak memory,
OOM detection), the environment record every result file carries, the Triton floor, and the modelled device
(``fastmixste.perf.profiling.DEVICES``) a GPU name stands for."""

from __future__ import annotations

import contextlib
import datetime
import gc
import platform
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from fastmixste.perf import profiling

ROOT = Path(__file__).resolve().parent.parent
#: Oldest Triton the kernels compile with (keep in step with setup.py): 3.2 and 3.3 reject chained boolean
#: operators (``a and b and c``), which kernels/temporal.py uses in tl.static_assert; 3.2 also aborts (an assertion
#: in LinearLayout) compiling the spatial backward for head_dim 128 on sm_90.
MIN_TRITON: tuple[int, int] = (3, 4)


class Device:
    """What the measurement code needs from a device: a timer, synchronisation, peak memory, OOM detection.

    ``CudaDevice`` is the real one; the tests drive the same measurement code with a CPU ``Device`` (wall clock,
    no memory figures) and with fakes, so the first GPU run does not meet that code for the first time.
    """

    type = "cpu"

    def __init__(self) -> None:
        self.torch_device = torch.device("cpu")

    def synchronize(self) -> None:
        pass

    def time_call(self, fn: Callable[[], Any]) -> float:
        """Seconds one call of ``fn`` takes (synchronised)."""
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def reset_peak(self) -> None:
        pass

    def peak_bytes(self) -> int | None:
        return None

    def free(self) -> None:
        gc.collect()

    def is_oom(self, err: BaseException) -> bool:
        return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError))

    def autocast(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=dtype)


class CudaDevice(Device):
    """CUDA events around every call, torch.cuda memory statistics."""

    type = "cuda"

    def __init__(self, index: int = 0) -> None:
        self.torch_device = torch.device("cuda", index)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.torch_device)

    def time_call(self, fn: Callable[[], Any]) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        self.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def reset_peak(self) -> None:
        self.synchronize()
        torch.cuda.reset_peak_memory_stats(self.torch_device)

    def peak_bytes(self) -> int | None:
        self.synchronize()
        return int(torch.cuda.max_memory_allocated(self.torch_device))

    def free(self) -> None:
        gc.collect()
        torch.cuda.empty_cache()


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: Device | None = None) -> dict[str, Any]:
    """GPU name, SMs, memory, driver, torch/triton/CUDA versions, the commit (with a dirty flag), date, host."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    try:
        import xformers

        xformers_version = xformers.__version__
    except ImportError:
        xformers_version = "not installed"
    env_floor = triton_floor_problem(triton_version) if triton_version != "not installed" else None
    commit = _git("rev-parse", "HEAD")
    if commit != "unknown" and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (working tree modified)"
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "triton": triton_version,
        "xformers": xformers_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host": platform.node(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "triton_floor_problem": env_floor,
    }
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device.torch_device)
        env.update(
            device=props.name,
            capability=f"sm_{props.major}{props.minor}",
            sm_count=props.multi_processor_count,
            gpu_memory_bytes=props.total_memory,
            gpu_count=torch.cuda.device_count(),
            driver=_driver_version(),
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env.update(device=f"CPU {platform.machine()}", gpu_count=0)
    return env


def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (nvidia-smi not available)"


def triton_floor_problem(version: str | None = None) -> str | None:
    """Why the installed Triton is older than the kernels need (None when it is recent enough or absent)."""
    if version is None:
        try:
            import triton

            version = triton.__version__
        except ImportError:
            return None
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if parts < MIN_TRITON:
        need = ".".join(map(str, MIN_TRITON))
        return (
            f"triton {version} is older than {need}, the oldest the kernels compile with (setup.py): "
            "the parity steps will fail to compile"
        )
    return None


def spec_for(device_name: str, devices: Mapping[str, Any] | None = None) -> str | None:
    """The modelled device key ('rtx4090', 'h100') whose name is part of ``device_name``; None when none is.

    ``devices`` maps keys to specs with a ``name`` (``fastmixste.perf.profiling.DEVICES``, the default) or to dicts with
    a ``"name"`` (the ``devices`` of proxies.json). Case and spaces are ignored: 'NVIDIA GeForce RTX 4090' is the
    'RTX 4090' of the model, 'NVIDIA H100 80GB HBM3' its 'H100'.
    """
    name = device_name.lower().replace(" ", "")
    for key, spec in (profiling.DEVICES if devices is None else devices).items():
        label = spec["name"] if isinstance(spec, Mapping) else spec.name
        if label.lower().replace(" ", "") in name:
            return key
    return None
