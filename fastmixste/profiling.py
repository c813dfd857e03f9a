"""Hardware-independent performance proxies: bytes moved, FLOPs, kernel launches, bytes saved for backward.

Everything here runs on the ``meta`` device, so full-scale shapes (batch 128 x 243 frames) cost no memory and no
GPU. Three counters and one model:

- :class:`OpCounter` (a TorchDispatchMode) records every aten op that reaches the dispatcher: bytes read (its
  tensor inputs) + bytes written (its outputs), FLOPs from :mod:`torch.utils.flop_counter`'s formulas, and one
  kernel launch. View ops (view, permute, transpose, expand, slice, select, t, _unsafe_view, detach, ...) move
  nothing and are skipped, as are allocations (empty*). Custom ops (``fastmixste::spatial_attention`` ...) are
  opaque to dispatch: they count their own inputs and outputs once, as a single launch (see ``launches_per_op``).
- :class:`SavedTensorCounter` adds up the bytes autograd keeps for backward, one entry per storage.
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

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

__all__ = [
    "DeviceSpec",
    "RTX_4090",
    "H100",
    "DEVICES",
    "OpRecord",
    "OpCounter",
    "SavedTensorCounter",
    "tensor_bytes",
    "storage_key",
    "roofline_seconds",
    "op_seconds",
    "summarize",
    "device_table",
    "count",
]


# ----------------------------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    """Peak numbers of one GPU for the roofline model (dense bf16 tensor-core FLOP/s, DRAM bytes/s)."""

    name: str
    peak_flops: float
    bandwidth: float

    @property
    def ridge(self) -> float:
        """FLOP per byte above which an op is compute-bound."""
        return self.peak_flops / self.bandwidth


#: RTX 4090 (sm_89): 165 TFLOPS bf16 tensor (fp32 accumulate, dense), 1008 GB/s.
RTX_4090 = DeviceSpec("RTX 4090", 165e12, 1008e9)
#: H100 SXM (sm_90): 989 TFLOPS bf16 tensor (dense), 3.35 TB/s.
H100 = DeviceSpec("H100", 989e12, 3.35e12)
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

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written


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
    once the storage is freed, so a counter must keep the tensors alive while it counts (SavedTensorCounter does).
    """
    return t.untyped_storage()._cdata


@dataclass
class SavedTensorCounter:
    """Bytes autograd saves for backward inside ``with SavedTensorCounter(exclude=params) as s:``.

    Each storage counts once, with its full size (a saved view keeps its whole base alive). Storages of the
    tensors in ``exclude`` (typically the parameters, which exist anyway) are left out. ``s.bytes`` is the total,
    ``s.count`` the number of distinct storages, ``s.tensors_saved`` the number of pack calls.
    """

    exclude: Iterable[torch.Tensor] = ()
    storages: dict[int, int] = field(default_factory=dict)
    tensors_saved: int = 0

    def __post_init__(self) -> None:
        self._excluded = {storage_key(t) for t in self.exclude}
        self._alive: list[torch.Tensor] = []
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.tensors_saved += 1
        key = storage_key(t)
        if key not in self._excluded:
            self.storages[key] = t.untyped_storage().nbytes()
            self._alive.append(t)  # keeps the key unique while counting
        return t

    def __enter__(self) -> SavedTensorCounter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(*exc)
        self._alive.clear()

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    @property
    def count(self) -> int:
        return len(self.storages)


# ----------------------------------------------------------------------------------------------------------------
# Roofline
# ----------------------------------------------------------------------------------------------------------------


def _flops(record: OpRecord, padded: bool) -> int:
    return record.issued_flops if padded and record.issued_flops is not None else record.flops


def op_seconds(record: OpRecord, device: DeviceSpec, launch_overhead_s: float = 0.0, padded: bool = False) -> float:
    """Modelled time of one op: max(bytes / bandwidth, flops / peak) + launches * launch_overhead_s.

    ``padded=True`` uses the tile-padded FLOPs where the record has them.
    """
    flops = _flops(record, padded)
    return max(record.bytes / device.bandwidth, flops / device.peak_flops) + record.launches * launch_overhead_s


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
        t_mem = r.bytes / device.bandwidth
        t_comp = _flops(r, padded) / device.peak_flops
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


def device_table() -> dict[str, dict[str, float | str]]:
    """The device specs as plain dicts (for JSON)."""
    return {key: {**asdict(spec), "ridge_flop_per_byte": spec.ridge} for key, spec in DEVICES.items()}


def count(fn: Callable[[], Any], launches_per_op: dict[str, int] | None = None) -> OpCounter:
    """Run ``fn()`` under an :class:`OpCounter` and return the counter."""
    with OpCounter(launches_per_op) as counter:
        fn()
    return counter
