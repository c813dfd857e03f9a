"""Where a training run executes: device, mixed precision, torchrun processes (DDP), and the RNG state that a
checkpoint carries (as plain containers, so checkpoints load with weights_only)."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from train._config import STAGES


@dataclass
class Runtime:
    """This process's place in the run: its device, rank among torchrun's processes, and autocast dtype."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available here (torch.cuda.is_available() is False)")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def _resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def fused_unavailable_message(cfg: dict[str, Any]) -> str | None:
    """Why ``--fused`` cannot run here (None when it can): the kernels need CUDA or TRITON_INTERPRET=1."""
    from fastmixste import kernels

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        device = _resolve_device(cfg["device"], local_rank)
    except ValueError as e:
        return f"--fused: {e}"
    dtype = _resolve_amp(cfg["amp"], device) or torch.float32
    reasons = kernels.triton_unavailable_reasons(device, dtype)
    if not reasons:
        return None
    if device.type == "cpu" and not torch.cuda.is_available() and not kernels.interpreter_active():
        return (
            "--fused trains with the fused Triton attention kernels, which need a CUDA GPU, and none is available "
            "here (torch.cuda.is_available() is False). Run without --fused to train with PyTorch attention, or "
            "set TRITON_INTERPRET=1 to run the kernels in the Triton interpreter on the CPU (very slow; for checking)."
        )
    return "--fused cannot run here: " + "; ".join(reasons)


def setup_runtime(cfg: dict[str, Any]) -> Runtime:
    """Read torchrun's environment, pick the device and precision, start the process group when distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(cfg["device"], local_rank)
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    if world > 1:
        for stage in STAGES:
            bs = cfg[stage]["batch_size"]
            if bs % world:
                raise ValueError(f"{stage}.batch_size ({bs}) must be divisible by the number of processes ({world}): "
                                 f"it is the global batch, split evenly across processes")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        elif not cfg["threads"]:
            # Processes on one CPU machine share its cores: do not oversubscribe them.
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device=device, rank=rank, world_size=world, local_rank=local_rank,
                   amp_dtype=_resolve_amp(cfg["amp"], device))


def rng_state() -> dict[str, Any]:
    """torch, CUDA, numpy and Python RNG states as tensors, lists and numbers (loadable with weights_only)."""
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global RNG is what third-party code draws from)
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only where the device count matches)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


@contextlib.contextmanager
def eval_backend(model, cfg: dict[str, Any]):
    """Evaluate with ``eval.attn_backend`` when set (same weights), then restore the training backend."""
    name = cfg["eval"].get("attn_backend")
    previous = model.attn_backend
    if name:
        model.set_attn_backend(name)
    try:
        yield model
    finally:
        model.set_attn_backend(previous)


def resolve_recompute(cfg: dict[str, Any], model: torch.nn.Module, rt: Runtime) -> str:
    """The activation recompute policy of the run: ``cfg["recompute"]``, with ``auto`` resolved and said.

    ``auto`` on CUDA measures one sequence's peak under each policy (forward + backward at batch 1) and takes the
    cheapest whose modelled peak for the largest per-process batch of the run fits 90% of the free memory. On the CPU
    nothing bounds memory the same way: ``auto`` keeps every activation (``none``) and says so.
    """
    from fastmixste.model.recompute import choose_recompute, measure_cuda_sequence_bytes, static_training_bytes

    policy = cfg["recompute"]
    if policy != "auto":
        return policy
    if rt.device.type != "cuda":
        if rt.is_main:
            print(f"recompute auto on {rt.device.type}: none (keep every activation; auto sizes recompute to a "
                  f"GPU's free memory, pass --recompute lean/full to choose here)", flush=True)
        return "none"
    batch = max(-(-cfg[s]["batch_size"] // rt.world_size) for s in STAGES)
    frames = model.config.num_frame
    free, _ = torch.cuda.mem_get_info(rt.device)
    policy, why = choose_recompute(
        lambda p: measure_cuda_sequence_bytes(model, frames, p, rt.amp_dtype),
        static_training_bytes(model),
        batch,
        free,
    )
    if rt.is_main:
        print(f"recompute auto: {why}", flush=True)
    return policy
