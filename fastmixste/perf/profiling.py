"""Hardware-independent performance proxies: bytes moved, FLOPs, kernel launches, bytes saved for backward.

Everything here runs on the ``meta`` device, so full-scale shapes (batch 128 x 243 frames) cost no memory and no
GPU. Three counters and one model:

- :class:`OpCounter` (a TorchDispatchMode) records every aten op that reaches the dispatcher: bytes read (its
  tensor inputs) + bytes written (its outputs), FLOPs from :mod:`torch.utils.flop_counter`'s formulas, and one
  kernel launch. View ops (view, permute, transpose, expand, slice, select, t, _unsafe_view, detach, ...) move
  nothing and are skipped, as are allocations (empty*). Custom ops (``fastmixste::spatial_attention`` ...) are
  opaque to dispatch: they count their own inputs and outputs once, as a single launch (see ``launches_per_op``).
- memory (kept for backward, live bytes and their peak) is counted by :class:`fastmixste.perf.memory.MemoryTracker`.
- :func:`roofline_seconds` turns the records into a *modelled* time on a :class:`DeviceSpec`:
  per op max(bytes / bandwidth, flops / peak), summed over ops.

What the model assumes, so nobody reads more into it than it says:
- every op moves exactly its inputs and outputs through DRAM once (perfect reuse inside an op, none across ops);
- every FLOP counted is a tensor-core FLOP at the bf16 peak (only matmul/attention formulas count FLOPs; the
  element-wise ops are treated as purely memory-bound);
- one aten op is one kernel launch, an approximation (cuBLAS folds bias adds into epilogues; some ops launch two);
- launch overhead is zero unless ``launch_overhead_s`` is given (a separate, labelled variant);
- FLOPs are the useful ones unless ``padded=True``, which charges what kernels issue on padded tiles where a
  record says so (``OpRecord.issued_flops``; another labelled variant).
It is a model: measured timings are the evidence, the model says where the bytes go.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import flop_registry

from ..model.mixste import EMULATED_AUTOCAST

__all__ = [
    "DeviceSpec",
    "RTX_4090",
    "H100",
    "DEVICES",
    "OpRecord",
    "OpCounter",
    "tensor_bytes",
    "storage_key",
    "roofline_seconds",
    "op_seconds",
    "efficient_seconds",
    "kernel_class",
    "summarize",
    "device_table",
    "count",
]


# ----------------------------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    """Peak numbers of one GPU for the roofline model (dense bf16 tensor-core FLOP/s, DRAM bytes/s), its
    compute capability (``sm``, which picks kernel tile sizes), opt-in shared memory per block and memory size."""

    name: str
    peak_flops: float
    bandwidth: float
    sm: int = 89
    smem_per_block: int = 101376
    memory_bytes: int = 24 * 2**30

    @property
    def ridge(self) -> float:
        """FLOP per byte above which an op is compute-bound."""
        return self.peak_flops / self.bandwidth


#: RTX 4090 (sm_89): 165 TFLOPS bf16 tensor (fp32 accumulate, dense), 1008 GB/s.
RTX_4090 = DeviceSpec("RTX 4090", 165e12, 1008e9, sm=89, smem_per_block=101376, memory_bytes=24 * 2**30)
#: H100 SXM (sm_90): 989 TFLOPS bf16 tensor (dense), 3.35 TB/s, 227 KB shared memory per block, 80 GB.
H100 = DeviceSpec("H100", 989e12, 3.35e12, sm=90, smem_per_block=232448, memory_bytes=80 * 2**30)
DEVICES: dict[str, DeviceSpec] = {"rtx4090": RTX_4090, "h100": H100}


# ----------------------------------------------------------------------------------------------------------------
# Op counter
# ----------------------------------------------------------------------------------------------------------------

_aten = torch.ops.aten
# Ops that return (or behave as) a view although their schema does not say so, and allocations that launch nothing.
_NO_TRAFFIC = {
    _aten._unsafe_view.default,
    _aten.lift_fresh.default,
    _aten.empty.memory_format,
    _aten.empty_like.default,
    _aten.empty_strided.default,
    _aten.new_empty.default,
    _aten.new_empty_strided.default,
    _aten.resize_.default,
}
# Ops whose output aliases an input's storage without the schema saying so.
_ALIASING = {_aten._unsafe_view.default, _aten.lift_fresh.default, _aten.detach.default, _aten.alias.default}
# Ops that overwrite their first argument without reading it: count it as written only.
_OVERWRITE = {
    _aten.copy_.default,
    _aten.fill_.Scalar,
    _aten.fill_.Tensor,
    _aten.zero_.default,
    _aten.uniform_.default,
    _aten.normal_.default,
    _aten.bernoulli_.float,
}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel must touch to read or write ``t`` once: dims of stride 0 (expands) count once."""
    if t.numel() == 0:
        return 0
    distinct = math.prod(s for s, st in zip(t.shape, t.stride()) if st != 0)
    return distinct * t.element_size()


@dataclass
class OpRecord:
    """One dispatched op: name (e.g. ``aten.mm.default``), bytes read/written, FLOPs and kernel launches."""

    op: str
    bytes_read: int
    bytes_written: int
    flops: int
    launches: int = 1
    #: FLOPs the kernel issues when its tiles are padded (e.g. 17 rows in a 128-row tile); None: same as flops.
    issued_flops: int | None = None
    #: Per compute capability (e.g. 89, 90), what differs there: {"bytes": ..., "issued_flops": ...} (kernels whose
    #: tile sizes, hence padded workspaces, depend on the architecture). Missing keys fall back to the fields above.
    by_sm: dict[int, dict[str, int]] | None = None
    #: Kind of kernel for the efficiency model (:func:`efficient_seconds`): "gemm", "gemm_wgrad", "flash_fwd",
    #: "flash_bwd" or "streaming"; None: "gemm" for the aten GEMM ops, else "streaming".
    kernel_class: str | None = None

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    def bytes_on(self, device: DeviceSpec) -> int:
        """Bytes moved on ``device`` (its architecture's override, else :attr:`bytes`)."""
        if self.by_sm and "bytes" in self.by_sm.get(device.sm, {}):
            return self.by_sm[device.sm]["bytes"]
        return self.bytes

    def issued_flops_on(self, device: DeviceSpec) -> int | None:
        if self.by_sm and "issued_flops" in self.by_sm.get(device.sm, {}):
            return self.by_sm[device.sm]["issued_flops"]
        return self.issued_flops


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [x for x in tree_flatten(tree)[0] if isinstance(x, torch.Tensor)]


class OpCounter(TorchDispatchMode):
    """Record bytes, FLOPs and launches of every op run inside ``with OpCounter() as c:`` (any device; meta works).

    ``launches_per_op`` overrides the one-launch default for ops known to launch more kernels (keys are op names as
    ``str(func)``, e.g. ``"fastmixste.temporal_attention_backward.default"``). Records are in ``self.records``.
    """

    def __init__(self, launches_per_op: dict[str, int] | None = None) -> None:
        super().__init__()
        self.records: list[OpRecord] = []
        self.launches_per_op = dict(launches_per_op or {})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func in _NO_TRAFFIC or func is _aten.detach.default:
            return out
        outs = _tensors(out)
        if not outs:  # e.g. is_same_size, _local_scalar_dense: no kernel writes memory
            return out
        ins = _tensors((args, kwargs))
        if func in _OVERWRITE and ins:
            ins = ins[1:]
        flops = 0
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out))
        name = str(func)
        self.records.append(
            OpRecord(
                op=name,
                bytes_read=sum(tensor_bytes(t) for t in ins),
                bytes_written=sum(tensor_bytes(t) for t in outs),
                flops=flops,
                launches=self.launches_per_op.get(name, 1),
            )
        )
        return out

    def totals(self) -> dict[str, int]:
        """{"bytes_read", "bytes_written", "bytes", "flops", "launches", "ops"} summed over the records."""
        return summarize(self.records)

    def by_op(self) -> dict[str, dict[str, int]]:
        """Per op name: {"count", "bytes", "flops", "launches"}."""
        table: dict[str, dict[str, int]] = defaultdict(lambda: {"count": 0, "bytes": 0, "flops": 0, "launches": 0})
        for r in self.records:
            row = table[r.op]
            row["count"] += 1
            row["bytes"] += r.bytes
            row["flops"] += r.flops
            row["launches"] += r.launches
        return dict(table)


def summarize(records: Iterable[OpRecord]) -> dict[str, int]:
    """Totals of a list of :class:`OpRecord`: bytes_read, bytes_written, bytes, flops, launches, ops."""
    tot = {"bytes_read": 0, "bytes_written": 0, "bytes": 0, "flops": 0, "launches": 0, "ops": 0}
    for r in records:
        tot["bytes_read"] += r.bytes_read
        tot["bytes_written"] += r.bytes_written
        tot["bytes"] += r.bytes
        tot["flops"] += r.flops
        tot["launches"] += r.launches
        tot["ops"] += 1
    return tot


# ----------------------------------------------------------------------------------------------------------------
# Bytes saved for backward
# ----------------------------------------------------------------------------------------------------------------


def storage_key(t: torch.Tensor) -> int:
    """Identity of the storage behind ``t``, equal for every view of it; works for meta tensors (no data_ptr).

    ``untyped_storage()._cdata`` is the address of the StorageImpl, which every view shares. It can be reused
    once the storage is freed, so a counter must keep the tensors alive while it counts (MemoryTracker does).
    """
    return t.untyped_storage()._cdata


# ----------------------------------------------------------------------------------------------------------------
# Roofline
# ----------------------------------------------------------------------------------------------------------------


def _flops(record: OpRecord, padded: bool, device: DeviceSpec) -> int:
    issued = record.issued_flops_on(device)
    return issued if padded and issued is not None else record.flops


def op_seconds(record: OpRecord, device: DeviceSpec, launch_overhead_s: float = 0.0, padded: bool = False) -> float:
    """Modelled time of one op: max(bytes / bandwidth, flops / peak) + launches * launch_overhead_s.

    ``padded=True`` uses the tile-padded FLOPs where the record has them.
    """
    flops = _flops(record, padded, device)
    t = max(record.bytes_on(device) / device.bandwidth, flops / device.peak_flops)
    return t + record.launches * launch_overhead_s


def roofline_seconds(
    records: Iterable[OpRecord], device: DeviceSpec, launch_overhead_s: float = 0.0, padded: bool = False
) -> dict[str, float]:
    """Modelled time of a list of ops on ``device``, summed per op (a model, not a measurement).

    Returns {"seconds": total, "memory_bound_seconds": time of ops whose bytes term wins,
    "compute_bound_seconds": time of ops whose FLOP term wins, "launch_seconds": launches * overhead}.
    ``padded=True`` charges the FLOPs kernels issue on padded tiles (``OpRecord.issued_flops``) instead.
    """
    mem = comp = launch = 0.0
    for r in records:
        t_mem = r.bytes_on(device) / device.bandwidth
        t_comp = _flops(r, padded, device) / device.peak_flops
        if t_comp > t_mem:
            comp += t_comp
        else:
            mem += t_mem
        launch += r.launches * launch_overhead_s
    return {
        "seconds": mem + comp + launch,
        "memory_bound_seconds": mem,
        "compute_bound_seconds": comp,
        "launch_seconds": launch,
    }


GEMM_OPS = frozenset({"aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default"})


def kernel_class(record: OpRecord) -> str:
    """The record's kernel class for :func:`efficient_seconds` (its own, else by op name)."""
    if record.kernel_class is not None:
        return record.kernel_class
    return "gemm" if record.op in GEMM_OPS else "streaming"


def efficient_seconds(
    records: Iterable[OpRecord],
    device: DeviceSpec,
    efficiency: dict[str, float],
    scale: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Modelled time of a list of ops with per-class efficiencies (a model, not a measurement).

    Per op of class c: max(issued FLOPs / (peak x efficiency[c]), bytes / (bandwidth x efficiency["streaming"]))
    times ``scale[c]`` where given (a calibration: measured over modelled time for that class), plus launches x
    efficiency["launch"] (seconds) times ``scale["launch"]``, kept as its own class "launch". Issued FLOPs are the
    padded-tile ones where a record has them. Returns {"seconds": total, "by_class": {class: seconds}}.
    """
    by_class: dict[str, float] = defaultdict(float)
    launch = efficiency.get("launch", 0.0)
    scale = scale or {}
    for r in records:
        cls = kernel_class(r)
        flops = _flops(r, True, device)
        t_comp = flops / (device.peak_flops * efficiency[cls]) if flops else 0.0
        t_mem = r.bytes_on(device) / (device.bandwidth * efficiency["streaming"])
        by_class[cls] += max(t_comp, t_mem) * scale.get(cls, 1.0)
        by_class["launch"] += r.launches * launch * scale.get("launch", 1.0)
    return {"seconds": sum(by_class.values()), "by_class": dict(by_class)}


def device_table() -> dict[str, dict[str, float | str]]:
    """The device specs as plain dicts (for JSON)."""
    return {key: {**asdict(spec), "ridge_flop_per_byte": spec.ridge} for key, spec in DEVICES.items()}


def count(fn: Callable[[], Any], launches_per_op: dict[str, int] | None = None) -> OpCounter:
    """Run ``fn()`` under an :class:`OpCounter` and return the counter."""
    with OpCounter(launches_per_op) as counter:
        fn()
    return counter


# ----------------------------------------------------------------------------------------------------------------
# Autocast on the meta device
# ----------------------------------------------------------------------------------------------------------------

#: Ops CUDA autocast runs in the lower precision (its "lower_precision_fp" list, the ones a transformer uses).
AUTOCAST_LOWER = frozenset(
    {"linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm", "addbmm", "einsum",
     "scaled_dot_product_attention", "conv1d", "conv2d", "conv3d", "prelu"}
)  # fmt: skip
#: Ops CUDA autocast runs in fp32 (its "fp32" list, the ones a transformer uses).
AUTOCAST_FP32 = frozenset(
    {"layer_norm", "group_norm", "softmax", "log_softmax", "exp", "log", "pow", "rsqrt", "sum", "prod", "cumsum",
     "norm", "mse_loss", "l1_loss", "cross_entropy", "nll_loss"}
)  # fmt: skip


def backward_under(mode: TorchFunctionMode, func: Callable, args: tuple, kwargs: dict) -> tuple[bool, Any]:
    """For a TorchFunctionMode's handler: run ``Tensor.backward`` / ``torch.autograd.backward`` with ``mode`` (and
    every mode under it) active, so that code replayed inside backward (activation checkpointing recomputes the
    forward there) sees the modes as the forward did. Returns (handled, result).

    A mode is popped while its handler runs, and both backward functions are overridable (each mode would pop itself
    in turn), so the handler re-enters ``mode`` and calls the autograd engine directly.
    """
    if func is torch.Tensor.backward:
        bound = inspect.signature(torch.Tensor.backward).bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        tensors, grads, retain, create, inputs = a["self"], a["gradient"], a["retain_graph"], a["create_graph"], a[
            "inputs"
        ]
    elif func is torch.autograd.backward:
        bound = inspect.signature(torch.autograd.backward).bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        tensors, grads, retain, create, inputs = (
            a["tensors"], a["grad_tensors"], a["retain_graph"], a["create_graph"], a["inputs"]
        )  # fmt: skip
    else:
        return False, None
    tensors = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    if grads is None or isinstance(grads, torch.Tensor):
        grads = (grads,) * len(tensors) if grads is None else (grads,)
    inputs = () if inputs is None else (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    with mode:
        grads = torch.autograd._make_grads(tensors, tuple(grads), is_grads_batched=False)
        torch.autograd.graph._engine_run_backward(
            tensors, grads, create if retain is None else retain, create, inputs,
            allow_unreachable=True, accumulate_grad=True,
        )  # fmt: skip
    return True, None


class AutocastEmulation(TorchFunctionMode):
    """CUDA autocast's casting rules, applied at the Python API level so they also act on meta tensors.

    ``torch.autocast("cuda")`` needs a CUDA build, and autocast keys exist only for real device types, so a
    meta-device count would otherwise see no casts. Inside ``with AutocastEmulation(torch.bfloat16):``
    - ops of :data:`AUTOCAST_LOWER` get their floating inputs cast to ``dtype`` (``Tensor.to``, an autograd op: its
      backward casts the gradient back, as autocast's does); casts of leaf tensors that require grad (parameters)
      are cached for the life of the context, as autocast caches them;
    - ops of :data:`AUTOCAST_FP32` get lower-precision inputs cast to fp32;
    - everything else runs in its inputs' dtypes with the usual type promotion (fp32 residual + bf16 branch -> fp32).
    Custom ops are not touched (autocast does not touch them either, unless they register an autocast rule).
    The mode stays active through ``Tensor.backward``, as autocast's state does for a checkpoint's recompute,
    and the cast cache is emptied there: a recompute casts the weights again, as it does under autocast.
    While active, :func:`fastmixste.model.mixste.emulated_autocast_dtype` answers ``dtype``.
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.dtype = dtype
        self._cache: dict[int, torch.Tensor] = {}

    def _cast(self, x: Any, dtype: torch.dtype, from_fp32: bool) -> Any:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dtype == dtype:
            return x
        if from_fp32 and x.dtype != torch.float32:
            return x
        if x.is_leaf and x.requires_grad:
            key = id(x)
            if key not in self._cache:
                self._cache[key] = x.to(dtype)
            return self._cache[key]
        return x.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.backward or func is torch.autograd.backward:
            self._cache.clear()  # a recompute in backward enters a fresh autocast region: weights are cast again
        handled, result = backward_under(self, func, args, kwargs)
        if handled:
            return result
        name = getattr(func, "__name__", "")
        if name in AUTOCAST_LOWER:
            args, kwargs = tree_map(lambda t: self._cast(t, self.dtype, True), (args, kwargs))
        elif name in AUTOCAST_FP32:
            args, kwargs = tree_map(lambda t: self._cast(t, torch.float32, False), (args, kwargs))
        return func(*args, **kwargs)

    def __enter__(self) -> AutocastEmulation:
        EMULATED_AUTOCAST.append(self.dtype)
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._cache.clear()
        EMULATED_AUTOCAST.pop()
        super().__exit__(*exc)


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    """``"bf16-autocast"`` / ``"fp16-autocast"`` (fp32 parameters, CUDA autocast's rules, see
    :class:`AutocastEmulation`) or ``"bf16"`` / ``"fp32"`` / ``"fp16"`` (everything in that dtype: nothing to do)."""
    if precision == "bf16-autocast":
        return AutocastEmulation(torch.bfloat16)
    if precision == "fp16-autocast":
        return AutocastEmulation(torch.float16)
    if precision in ("bf16", "fp16", "fp32"):
        return contextlib.nullcontext()
    raise ValueError(f"unknown precision {precision!r}; expected bf16-autocast, fp16-autocast, bf16, fp16 or fp32")


def parameter_dtype(precision: str) -> torch.dtype:
    """dtype of the parameters (and the input) under ``precision``: fp32 for the autocast schemes."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
