"""Memory accounting, in one tracker: what a step keeps for backward, its live bytes and their peak, measured on the
meta device at full scale (no GPU) or on any real device.

:class:`MemoryTracker` is a dispatch mode that sees every storage an op creates (live bytes, peak, workspaces it is
told about) and an autograd saved-tensor hook that sees what autograd packs for backward (each storage once, with its
full size: a saved view keeps its base alive; ``exclude`` leaves out the parameters, which exist anyway). Everything
here is built on it: :func:`saved_bytes` and :func:`retained_bytes` (what one call keeps), the per-core and per-pair
tables below, and :func:`training_step_memory` / :func:`memory_per_sequence` (a training step, and bytes per
sequence by a fit over two batches) with :class:`MemoryBudget` (what fits on a card).

    python -m fastmixste.perf.memory        # prints the attention-core and layer-pair tables
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..model.config import RECOMPUTE_POLICIES
from .profiling import _ALIASING, DeviceSpec, _tensors, parameter_dtype, precision_context, storage_key

__all__ = [
    "MemoryBudget",
    "MemoryTracker",
    "StepMemory",
    "linear_in_batch",
    "memory_per_sequence",
    "retained_bytes",
    "saved_bytes",
    "set_recompute",
    "training_step_memory",
    "spatial_attention_saved_bytes",
    "temporal_attention_saved_bytes",
    "layer_pair_saved_bytes",
]

FULL_SCALE = dict(B=128, T=243, N=17, C=512, H=8)


class MemoryTracker(TorchDispatchMode):
    """Bytes of one piece of work, inside ``with MemoryTracker(exclude=params) as m:``.

    Live memory: every op output's storage is added when it first appears and subtracted when it is freed (a
    finalizer on the storage object, which PyTorch keeps alive exactly as long as the storage). Storages that existed
    before (the parameters, the input) are not counted. ``m.live`` and ``m.peak``; ``m.transient(n)`` records a
    workspace of ``n`` bytes that a kernel allocates and frees inside one op (dispatch cannot see it): it raises the
    peak, not the live count. This is what a caching allocator would have to hold at least; its rounding and
    fragmentation come on top. ``m.keep_for_backward(out)``, called between forward and backward, records the bytes
    alive then, the output excluded (saved activations, checkpoint caches, weight casts).

    Saved for backward: what autograd packs (``saved_tensors_hooks``), each storage once with its full size, the
    storages of ``exclude`` left out: ``m.saved_bytes``, ``m.saved_count`` (distinct storages), ``m.tensors_saved``
    (pack calls). Activation checkpointing's own caches never pass through the hook; the live count sees them.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        #: bytes alive between forward and backward, the model output excluded (set by keep_for_backward)
        self.kept_for_backward: int | None = None
        self.saved: dict[int, int] = {}
        self.tensors_saved = 0
        self._seen: set[int] = set()
        self._excluded = {storage_key(t) for t in exclude}
        self._alive: list[torch.Tensor] = []  # keeps saved storages' keys unique while counting
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    # live bytes -------------------------------------------------------------------------------------------------
    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def transient(self, nbytes: int) -> None:
        self.peak = max(self.peak, self.live + nbytes)

    def keep_for_backward(self, out: torch.Tensor) -> int:
        self.kept_for_backward = self.live - out.untyped_storage().nbytes()
        return self.kept_for_backward

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.is_view or func in _ALIASING:
            return out  # a view shares its base's storage: new or tracked already, or older than the step
        for t in _tensors(out):
            storage = t.untyped_storage()
            key = storage_key(t)
            if key in self._seen:
                continue
            nbytes = storage.nbytes()
            self._seen.add(key)
            self.live += nbytes
            weakref.finalize(storage, self._free, key, nbytes)
        self.peak = max(self.peak, self.live)
        return out

    # saved for backward -----------------------------------------------------------------------------------------
    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.tensors_saved += 1
        key = storage_key(t)
        if key not in self._excluded:
            self.saved[key] = t.untyped_storage().nbytes()
            self._alive.append(t)
        return t

    @property
    def saved_bytes(self) -> int:
        return sum(self.saved.values())

    @property
    def saved_count(self) -> int:
        return len(self.saved)

    def __enter__(self) -> MemoryTracker:
        super().__enter__()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(*exc)
        self._alive.clear()
        super().__exit__(*exc)


def saved_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves while running ``fn()``, minus the storages of ``exclude``.

    Works on meta tensors (:class:`MemoryTracker` does the counting).
    """
    with MemoryTracker(exclude=exclude) as counter:
        out = fn()
    del out
    return counter.saved_bytes


def retained_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the storages created by ``fn()`` that are still alive when it returns, its output excluded.

    These are what autograd (and activation checkpointing, whose stored tensors never pass through
    ``saved_tensors_hooks``) keeps for backward. Each storage counts once; storages that existed before ``fn()``
    (parameters, the input) are not counted. Works on the meta device.
    """
    with MemoryTracker() as tracker:
        out = fn()
        kept = tracker.keep_for_backward(out)
    del out
    return kept


def spatial_attention_saved_bytes(
    B: int = 128, T: int = 243, N: int = 17, C: int = 512, H: int = 8, dtype: torch.dtype = torch.float16
) -> dict[str, int]:
    """Bytes kept for backward by the spatial attention core, (B, T, N, 3*C) qkv -> (B, T, N, C), on meta.

    Returns {"eager": upstream q k^T / softmax / @ v math, "fused": the fused op (qkv only), "qkv": bytes of qkv}.
    qkv itself is among the saved tensors in both.
    """
    from ..kernels.reference import spatial_attention_ref
    from ..kernels.spatial import spatial_attention

    qkv = torch.empty((B, T, N, 3 * C), dtype=dtype, device="meta", requires_grad=True)
    return {
        "eager": saved_bytes(lambda: spatial_attention_ref(qkv, H)),
        "fused": saved_bytes(lambda: spatial_attention(qkv, H)),
        "qkv": B * T * N * 3 * C * torch.empty((), dtype=dtype).element_size(),
    }


def temporal_attention_saved_bytes(
    B: int = 128, T: int = 243, N: int = 17, C: int = 512, H: int = 8, dtype: torch.dtype = torch.float16
) -> dict[str, int]:
    """Bytes saved for backward by the temporal attention core alone, (B, T, N, 3*C) qkv -> (B, T, N, C).

    Returns {"eager": upstream q k^T / softmax / @ v math (:func:`temporal_attention_ref`), "triton": the fused op
    (qkv, o, fp32 lse), "qkv": bytes of qkv, "o": bytes of o, "lse": bytes of the lse rows}.
    """
    from ..kernels.reference import temporal_attention_ref
    from ..kernels.temporal import temporal_attention

    qkv = torch.empty((B, T, N, 3 * C), dtype=dtype, device="meta", requires_grad=True)
    item = torch.empty((), dtype=dtype).element_size()
    return {
        "eager": saved_bytes(lambda: temporal_attention_ref(qkv, H)),
        "triton": saved_bytes(lambda: temporal_attention(qkv, H)),
        "qkv": B * T * N * 3 * C * item,
        "o": B * T * N * C * item,
        "lse": B * N * H * T * 4,
    }


def layer_pair_saved_bytes(
    B: int = 128,
    T: int = 243,
    N: int = 17,
    C: int = 512,
    H: int = 8,
    dtype: torch.dtype = torch.float16,
    backends: tuple[str, ...] = ("eager", "triton"),
) -> dict[str, int]:
    """Bytes saved for backward by one spatial + temporal block pair (STE then TTE) of MixSTE, per backend.

    The blocks are the model's own (:class:`fastmixste.model.mixste.Block`, mlp_ratio 2, qkv bias, no dropout),
    built on the meta device; the input (B, T, N, C) is not counted when it is saved (the previous layer's output).
    """
    from ..model.mixste import Block

    with torch.device("meta"):
        blocks = [Block(C, H, 2.0, True, None, 0.0, 0.0, 0.0, axis=axis).to(dtype) for axis in ("spatial", "temporal")]
    params = [p for b in blocks for p in b.parameters()]
    x = torch.empty((B, T, N, C), dtype=dtype, device="meta", requires_grad=True)

    def run(backend: str) -> torch.Tensor:
        return blocks[1](blocks[0](x, backend), backend)

    return {name: saved_bytes(lambda name=name: run(name), exclude=[*params, x]) for name in backends}



# ------------------------------------------------------------------------------------------------------------------
# A training step
# ------------------------------------------------------------------------------------------------------------------

def set_recompute(model: torch.nn.Module, policy: str) -> str | None:
    """Apply ``model.set_recompute(policy)``; None when done, else why not (the model has no such switch, or
    refuses the policy). ``"none"`` always works on a model without the switch (nothing is recomputed there)."""
    if policy not in RECOMPUTE_POLICIES:
        raise ValueError(f"unknown recompute policy {policy!r}; expected one of {RECOMPUTE_POLICIES}")
    setter = getattr(model, "set_recompute", None)
    if setter is None:
        return None if policy == "none" else "not available: this model has no set_recompute()"
    try:
        setter(policy)
    except (ValueError, NotImplementedError, RuntimeError) as err:
        return f"not available: {err}"
    return None


@dataclass
class StepMemory:
    """What one training step keeps on the meta device at batch ``B``: bytes kept for backward (alive between
    forward and backward: saved activations, checkpoint caches, the weights' bf16 copies; parameters excluded) and
    the peak of live bytes created inside the step (kept tensors + transients + gradients + op workspaces that were
    registered)."""

    B: int
    saved_bytes: int
    peak_bytes: int


def linear_in_batch(a: StepMemory, b: StepMemory) -> dict[str, float]:
    """Fit bytes = fixed + per_sequence * B through two batches: {"saved_per_sequence", "saved_fixed",
    "peak_per_sequence", "peak_fixed"} (fixed: what does not grow with the batch, e.g. bf16 weight copies)."""
    if a.B == b.B:
        raise ValueError(f"need two different batches, got B={a.B} twice")
    out = {}
    for name in ("saved", "peak"):
        ya, yb = getattr(a, f"{name}_bytes"), getattr(b, f"{name}_bytes")
        per = (yb - ya) / (b.B - a.B)
        out[f"{name}_per_sequence"] = per
        out[f"{name}_fixed"] = ya - per * a.B
    return out


@dataclass(frozen=True)
class MemoryBudget:
    """How much of a card a training step may use, and what it holds besides activations.

    - ``context_bytes``: CUDA context, cuBLAS/cuDNN workspaces and kernels (~0.5-1 GB on a real card; 1 GiB here);
    - ``headroom``: share of the rest held back for the caching allocator's rounding and fragmentation (10%);
    - ``bytes_per_parameter``: fp32 weights (4) + Adam's two fp32 moments (8) + the previous step's fp32 gradients
      (4), which ``train.run`` keeps alive through the next forward (it zeroes them after the forward) = 16; the
      step's own gradients are created inside the step and are part of its measured peak.
    """

    context_bytes: int = 2**30
    headroom: float = 0.10
    bytes_per_parameter: int = 16

    def usable(self, device: DeviceSpec) -> float:
        return (device.memory_bytes - self.context_bytes) * (1.0 - self.headroom)

    def max_batch(self, device: DeviceSpec, parameters: int, peak_fixed: float, peak_per_sequence: float) -> int:
        """Largest batch whose step fits: usable >= params * bytes_per_parameter + peak_fixed + B * per_sequence."""
        room = self.usable(device) - parameters * self.bytes_per_parameter - peak_fixed
        return max(0, math.floor(room / peak_per_sequence)) if peak_per_sequence > 0 else 0


def training_step_memory(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    precision: str = "bf16-autocast",
    policy: str = "none",
    context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> StepMemory:
    """Kept-for-backward bytes and peak live bytes of one training step of ``model`` (on the meta device) on a
    meta input of ``input_shape`` (batch first): forward under ``precision``'s casting rules, backward from a
    gradient of ones. ``policy`` goes to ``model.set_recompute`` (ValueError when not available). ``context``
    (optional) is entered around the step, e.g. to route attention to the kernels a GPU would run.
    The input and the parameters exist before the step and are not counted; gradients created by backward are in
    the peak."""
    why = set_recompute(model, policy)
    if why:
        raise ValueError(f"recompute policy {policy!r}: {why}")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("meta")
    if device.type != "meta":
        raise ValueError(f"training_step_memory counts on the meta device; the model is on {device}")
    model.train()
    x = torch.empty(*input_shape, device="meta", dtype=parameter_dtype(precision))
    tracker = MemoryTracker(exclude=params)
    with context() if context else contextlib.nullcontext(), tracker:
        with precision_context(precision):
            out = model(x)
        # alive between forward and backward (the output excluded): saved tensors, checkpoint caches, weight casts
        kept = tracker.keep_for_backward(out)
        out.backward(torch.ones_like(out))
    model.zero_grad(set_to_none=True)
    return StepMemory(int(input_shape[0]), kept, tracker.peak)


def memory_per_sequence(
    model: torch.nn.Module,
    sequence_shape: tuple[int, ...],
    precision: str = "bf16-autocast",
    policy: str = "none",
    context: Callable[[], contextlib.AbstractContextManager] | None = None,
    batches: tuple[int, int] = (2, 4),
) -> dict[str, float]:
    """Bytes per sequence of ``sequence_shape`` (e.g. (243, 17, 2) for MixSTE) for one training step on meta:
    {"saved_per_sequence", "saved_fixed", "peak_per_sequence", "peak_fixed"} (see :func:`linear_in_batch`)."""
    a, b = (training_step_memory(model, (B, *sequence_shape), precision, policy, context) for B in batches)
    return linear_in_batch(a, b)


def _gib(n: int) -> str:
    return f"{n / 2**30:.3f} GiB"


def main() -> None:
    for dtype in (torch.float16, torch.float32):
        spatial = spatial_attention_saved_bytes(**FULL_SCALE, dtype=dtype)
        attn = temporal_attention_saved_bytes(**FULL_SCALE, dtype=dtype)
        pair = layer_pair_saved_bytes(**FULL_SCALE, dtype=dtype)
        print(f"B=128 T=243 N=17 C=512 H=8 {dtype}")
        print(f"  spatial attention core:  eager {_gib(spatial['eager'])}, triton {_gib(spatial['fused'])} (qkv only)")
        print(
            f"  temporal attention core: eager {_gib(attn['eager'])}, triton {_gib(attn['triton'])} "
            f"(qkv {_gib(attn['qkv'])} + o {_gib(attn['o'])} + lse {_gib(attn['lse'])})"
        )
        print(
            f"  STE+TTE layer pair:      eager {_gib(pair['eager'])}, triton {_gib(pair['triton'])} "
            f"(saves {_gib(pair['eager'] - pair['triton'])}, {pair['eager'] / pair['triton']:.2f}x less)"
        )


if __name__ == "__main__":
    main()
