"""Checkpoint I/O: this project's self-describing checkpoints and upstream MixSTE ``.bin`` files.

Loading never runs arbitrary pickled code: files are read with ``torch.load(weights_only=True)`` and an allowlist
of exactly what upstream files carry besides tensors (a pickled ``numpy.random.RandomState``). Anything else is
refused unless the caller passes ``trust_checkpoint=True``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_write
from .config import MixSTEConfig
from .model import MixSTE

FORMAT = "fastmixste"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


def _numpy_allowlist() -> list[Any]:
    # What pickling a numpy RandomState (upstream's 'random_state') refers to. numpy 1.x files name the array
    # reconstructor numpy.core.multiarray._reconstruct, numpy 2.x numpy._core.multiarray._reconstruct.
    from numpy.random import _pickle as np_pickle
    from numpy.random._mt19937 import MT19937

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allow: list[Any] = [
        np.dtype,
        np.ndarray,
        np.random.RandomState,
        MT19937,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        (np_pickle.__randomstate_ctor, "numpy.random._pickle.__randomstate_ctor"),
        (np_pickle.__bit_generator_ctor, "numpy.random._pickle.__bit_generator_ctor"),
    ]
    # numpy 2 pickles dtypes through their classes (e.g. numpy.dtypes.UInt32DType)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allow += [getattr(dtypes, n) for n in ("UInt32DType", "Float64DType", "Int64DType") if hasattr(dtypes, n)]
    return allow


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", trust_checkpoint: bool = False
) -> dict[str, Any]:
    """Read a checkpoint file into a dict without running arbitrary pickled code.

    Returns the raw dict: for this project's files ``{"format", "format_version", "config", "model", **extra}``;
    for upstream files ``{"epoch", "lr", "random_state", "optimizer", "model_pos"}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if trust_checkpoint:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    else:
        try:
            with torch.serialization.safe_globals(_numpy_allowlist()):
                obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # UnpicklingError, or RuntimeError wrapping it
            found = re.findall(r"GLOBAL ([\w.]+)", str(exc))
            what = f" (it refers to {', '.join(sorted(set(found)))})" if found else ""
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled objects outside the allowlist of tensors, "
                f"containers and numpy RandomState{what}. Loading it could run arbitrary code; pass "
                f"trust_checkpoint=True only if you trust where the file came from.\nLoader said: "
                f"{str(exc).splitlines()[-1] if str(exc) else type(exc).__name__}"
            ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def _extract_state_dict(obj: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    for key in ("model_pos", "model", "state_dict"):
        if key in obj and isinstance(obj[key], dict):
            sd = obj[key]
            break
    else:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            sd = obj  # a bare state_dict
        else:
            raise CheckpointError(
                f"{path}: no model weights found; expected a 'model_pos' (upstream MixSTE), 'model' "
                f"(fastmixste) or 'state_dict' entry, got keys {sorted(obj)}"
            )
    # DataParallel / DDP prefixes
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}


def infer_upstream_config(state_dict: dict[str, torch.Tensor], num_heads: int = 8) -> MixSTEConfig:
    """Infer the MixSTE2 constructor arguments from upstream weight shapes (num_heads cannot be inferred)."""
    try:
        emb = state_dict["Spatial_patch_to_embedding.weight"]  # (C, in_chans)
        num_joints = state_dict["Spatial_pos_embed"].shape[1]
        num_frame = state_dict["Temporal_pos_embed"].shape[1]
        fc1 = state_dict["STEblocks.0.mlp.fc1.weight"]  # (hidden, C)
    except KeyError as exc:
        raise CheckpointError(f"not a MixSTE state_dict: missing {exc.args[0]!r}") from exc
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("STEblocks.")})
    C, in_chans = emb.shape
    return MixSTEConfig(
        num_frame=int(num_frame),
        num_joints=int(num_joints),
        in_chans=int(in_chans),
        embed_dim_ratio=int(C),
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=fc1.shape[0] / C,
        qkv_bias="STEblocks.0.attn.qkv.bias" in state_dict,
    )


def load_checkpoint(
    path: str | os.PathLike,
    attn_backend: str = "auto",
    map_location: str | torch.device = "cpu",
    *,
    num_heads: int | None = None,
    trust_checkpoint: bool = False,
) -> MixSTE:
    """Load a ready MixSTE (eval mode) from a fastmixste checkpoint or an upstream MixSTE checkpoint.

    Upstream files (weights under 'model_pos' with 'module.' prefixes, plus optimizer state and a numpy
    RandomState) have their config inferred from tensor shapes; ``num_heads`` defaults to 8 for them.
    Weights are loaded with ``strict=True``.
    """
    path = Path(path)
    obj = read_checkpoint(path, map_location, trust_checkpoint)
    state_dict = _extract_state_dict(obj, path)
    if obj.get("format") == FORMAT:
        config = MixSTEConfig.from_dict(dict(obj["config"]))
        if num_heads is not None:
            config.num_heads = num_heads
    else:
        config = infer_upstream_config(state_dict, num_heads or 8)
    config.attn_backend = attn_backend
    model = MixSTE.from_config(config)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit MixSTE({config}):\n{exc}") from exc
    return model.to(map_location).eval()


def save_checkpoint(path: str | os.PathLike, model: MixSTE, **extra: Any) -> Path:
    """Write ``{"format", "format_version", "config", "model": state_dict, **extra}`` atomically.

    The file is written to a temporary file in the same directory, flushed to disk, then renamed over ``path``,
    so an interrupted save never leaves a truncated checkpoint. ``model`` may be wrapped (DDP, torch.compile).
    """
    path = Path(path)
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    if not isinstance(inner, MixSTE):
        raise TypeError(f"save_checkpoint expects a MixSTE (possibly wrapped), got {type(inner).__name__}")
    reserved = {"format", "format_version", "config", "model"} & set(extra)
    if reserved:
        raise ValueError(f"save_checkpoint: extra keys {sorted(reserved)} are reserved")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": inner.config.to_dict(),
        "model": inner.state_dict(),
        **extra,
    }
    with atomic_write(path, "wb", fsync=True) as f:
        torch.save(payload, f)
    return path
