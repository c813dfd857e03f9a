"""Calibrating the efficiency model from a GPU run: measured over modelled time per kernel class.

On a GPU, :func:`measure` profiles a whole-model training step per provider (torch.profiler, CUDA kernel times),
sorts the kernels into the efficiency model's classes by name (:func:`classify_kernel`) and compares each class's
measured time with the expected model's time for the same case (benchmarks.proxies on the meta device, same batch);
what the GPU spent between kernels is the ``launch`` class. ``python -m benchmarks.gpu_check`` runs it as its
``calibration`` step and writes ``calibration.json``; ``benchmarks.proxies`` scales the expected model by it when
the file is there (``results/calibration.json``, or ``--calibration PATH``) and says so.

File format (JSON, nothing executed or unpickled)::

    {"kind": "calibration", "device": "rtx4090", "gpu": "...", "B": 16, "T": 243,
     "providers": {"triton": {"gemm": {"measured_s": ..., "modelled_s": ..., "ratio": ...}, ...}, ...},
     "classes": {"gemm": {"measured_s": ..., "modelled_s": ..., "ratio": ...}, ...}}

``classes`` pools every provider measured; a provider's own ratios win where the file has them.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .efficiency import CLASSES

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = RESULTS / "calibration.json"
#: Providers the calibration step profiles (ours, and FlashAttention-2 through SDPA).
PROVIDERS: tuple[str, ...] = ("triton", "sdpa")
#: Largest calibration file read (bytes): a real one is a few KB.
MAX_BYTES = 1 << 20

#: FlashAttention-2 (flash_fwd/bwd_*), ours (_spatial_attn_*, _temporal_attn_*), xformers' CUTLASS (fmha_cutlassF/B).
_FLASH_BWD = re.compile(r"flash_bwd|_(spatial|temporal)_attn_bwd|fmha_cutlassB", re.I)
_FLASH_FWD = re.compile(r"flash_fwd|_(spatial|temporal)_attn_fwd|fmha_cutlassF", re.I)
_GEMM = re.compile(r"gemm|xmma|cutlass|cublas|ampere_.*_(nn|nt|tn|tt)|sm\d+_.*_(nn|nt|tn|tt)|splitKreduce", re.I)


def classify_kernel(name: str) -> str:
    """Efficiency class of a CUDA kernel from its name: FA2's and our attention kernels are flash_fwd / flash_bwd,
    cuBLAS/CUTLASS kernels (split-K reductions included) gemm, everything else (elementwise, reductions, LayerNorm,
    our block kernels, Inductor's) streaming. Weight-gradient GEMMs cannot be told apart by name: the gemm ratio
    is applied to both GEMM classes."""
    if _FLASH_BWD.search(name):
        return "flash_bwd"
    if _FLASH_FWD.search(name):
        return "flash_fwd"
    if _GEMM.search(name):
        return "gemm"
    return "streaming"


def _fold_gemm(by_class: dict[str, float]) -> dict[str, float]:
    out = dict(by_class)
    out["gemm"] = out.get("gemm", 0.0) + out.pop("gemm_wgrad", 0.0)
    return out


def ratios(measured: dict[str, float], modelled: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per class: {"measured_s", "modelled_s", "ratio"} for the classes both have time in (GEMM classes pooled)."""
    measured, modelled = _fold_gemm(measured), _fold_gemm(modelled)
    out = {}
    for cls in sorted(set(measured) & set(modelled)):
        if measured[cls] > 0 and modelled[cls] > 0:
            m, e = measured[cls], modelled[cls]
            out[cls] = {"measured_s": m, "modelled_s": e, "ratio": m / e}
    return out


def document(device: str, gpu: str, B: int, T: int, per_provider: dict[str, dict[str, dict[str, float]]]) -> dict:
    """The calibration file's content from per-provider :func:`ratios`; ``classes`` pools the providers."""
    pooled: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for table in per_provider.values():
        for cls, row in table.items():
            pooled[cls][0] += row["measured_s"]
            pooled[cls][1] += row["modelled_s"]
    classes = {c: {"measured_s": m, "modelled_s": e, "ratio": m / e} for c, (m, e) in pooled.items() if e > 0}
    return {"kind": "calibration", "device": device, "gpu": gpu, "B": B, "T": T, "providers": per_provider,
            "classes": classes}  # fmt: skip


def load(path: Path) -> dict | None:
    """The calibration at ``path``, validated; None when there is no file. Raises ValueError, naming what was
    expected, for a file that is too large, not JSON, or whose ratios are not positive finite numbers."""
    if not path.exists():
        return None
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{path}: expected a calibration file of at most {MAX_BYTES} bytes, got {size}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: expected calibration JSON, got unreadable text ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != "calibration" or not isinstance(data.get("device"), str):
        raise ValueError(f"{path}: expected an object with kind 'calibration' and a device name")
    tables = [data.get("classes", {})] + list((data.get("providers") or {}).values())
    for table in tables:
        if not isinstance(table, dict):
            raise ValueError(f"{path}: expected class tables as objects, got {type(table).__name__}")
        for cls, row in table.items():
            r = row.get("ratio") if isinstance(row, dict) else None
            if cls not in CLASSES or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
                raise ValueError(f"{path}: expected class in {CLASSES} with a positive ratio, got {cls!r}: {row!r}")
    return data


def scale_for(calibration: dict | None, device: str, provider: str) -> dict[str, float] | None:
    """{class: measured / modelled} to apply to ``provider`` on ``device`` (its own ratios over the pooled ones;
    the gemm ratio also for gemm_wgrad), or None when the calibration is for another device or absent."""
    if not calibration or calibration.get("device") != device:
        return None
    table = {c: row["ratio"] for c, row in calibration.get("classes", {}).items()}
    table.update({c: row["ratio"] for c, row in calibration.get("providers", {}).get(provider, {}).items()})
    if "gemm" in table:
        table.setdefault("gemm_wgrad", table["gemm"])
    return table


def measured_by_class(step: Callable[[], Any], synchronize: Callable[[], None], iters: int = 3) -> dict[str, float]:
    """CUDA kernel seconds per class over one call of ``step`` (mean of ``iters`` profiled calls after one warm-up),
    plus "launch": wall time not covered by kernels. Needs CUDA."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    step()
    synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        synchronize()
        wall = (time.perf_counter() - t0) / iters
    by_class: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
        if ev.device_type == torch.autograd.DeviceType.CUDA and us:
            by_class[classify_kernel(ev.key)] += us * 1e-6 / iters
    by_class["launch"] = max(0.0, wall - sum(by_class.values()))
    return dict(by_class)


def modelled_by_class(provider: str, B: int, T: int, device: str) -> dict[str, float]:
    """The expected model's seconds per class for a whole-model training step of ``provider`` at (B, T)
    (no calibration applied)."""
    from fastmixste.perf import profiling

    from . import efficiency, proxies
    from .cases import Shape

    counter, _ = proxies.count_case("model", provider, "train", Shape(B, T))
    eff = efficiency.table(device, "expected")
    return profiling.efficient_seconds(counter.records, profiling.DEVICES[device], eff)["by_class"]


def write(path: Path, doc: dict) -> None:
    """Write ``doc`` to ``path`` atomically; refuses to replace a file that is not a calibration (one this command
    did not make)."""
    from fastmixste.io.files import atomic_write

    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            old = None
        if not isinstance(old, dict) or old.get("kind") != "calibration":
            raise ValueError(f"{path} exists and is not a calibration file: not replacing it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(doc, indent=1) + "\n")


def run(
    make_step: Callable[[str], Callable[[], Any]],
    synchronize: Callable[[], None],
    B: int,
    T: int,
    device: str,
    gpu: str,
    out: Path,
    providers: tuple[str, ...] = PROVIDERS,
    modelled: Callable[[str], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The GPU check's calibration step: per provider, ``make_step(provider)`` (a whole-model forward + backward at
    batch B, bf16 autocast) profiled by class against the expected model at the same (B, T) on ``device``
    (``modelled(provider)``, default :func:`modelled_by_class` counted on meta); writes the document to ``out`` and
    returns it with the path."""
    per_provider = {}
    for provider in providers:
        measured = measured_by_class(make_step(provider), synchronize, iters=2)
        model = modelled(provider) if modelled else modelled_by_class(provider, B, T, device)
        per_provider[provider] = ratios(measured, model)
    doc = document(device, gpu, B, T, per_provider)
    write(out, doc)
    return {**doc, "path": str(out)}


__all__ = ["classify_kernel", "ratios", "document", "load", "scale_for", "measured_by_class", "modelled_by_class",
           "write", "run", "DEFAULT", "PROVIDERS"]  # fmt: skip
