"""Checkpoint I/O: this project's self-describing checkpoints and upstream MixSTE ``.bin`` files.

Loading never runs arbitrary pickled code: files are read with ``torch.load(weights_only=True)`` and an allowlist
of exactly what upstream files carry besides tensors (a pickled ``numpy.random.RandomState``). Anything else is
refused unless the caller passes ``trust_checkpoint=True``.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.cli import UserFacingError
from ..io.files import atomic_write, check_regular_file, human_bytes, max_input_bytes
from ..io.safeload import describe_file_start
from .config import MixSTEConfig
from .mixste import MixSTE

FORMAT = "fastmixste"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError, UserFacingError):
    """A checkpoint file that cannot be read or does not fit the model."""


# Models shipped inside the package: fastmixste/weights/NAME.pt beside NAME.json (its sha256, size, config, the
# command that trained it and what it was trained on). ``load_checkpoint("wild")`` loads one by name.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # fastmixste/weights


def shipped_models() -> dict[str, dict[str, Any]]:
    """name -> the record of each model shipped with the package (``weights/NAME.json``)."""
    import json

    out = {}
    for card in sorted(WEIGHTS_DIR.glob("*.json")):
        with open(card, encoding="utf-8") as f:
            out[card.stem] = json.load(f)
    return out


def shipped_checkpoint(name: str) -> Path:
    """The path of the shipped model ``name``, after checking its size and sha256 against its record."""
    import hashlib

    models = shipped_models()
    if name not in models:
        raise CheckpointError(f"no shipped model named {name!r}; shipped: {sorted(models) or 'none'}")
    record = models[name]
    path = WEIGHTS_DIR / record["file"]
    if not path.is_file():
        raise CheckpointError(f"the shipped model {name!r} is missing its weights file {path} (a broken install)")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise CheckpointError(f"the shipped model file {path} has {size} bytes, its record says {record['bytes']}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != record["sha256"]:
        raise CheckpointError(f"the shipped model file {path} has sha256 {digest}, its record says "
                              f"{record['sha256']}: the file was changed or damaged")
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint argument -> a file: an existing path as given, else the name of a shipped model
    (``shipped_models()``), else the path as given (reading it then says what is wrong)."""
    p = Path(path)
    if not p.exists() and isinstance(path, str) and path in shipped_models():
        return shipped_checkpoint(path)
    return p


class _TooLarge(Exception):
    """Raised inside the unpickler by an allowlisted constructor asked for more memory than the stated limit."""


def _bounded(reconstruct: Any) -> Any:
    """numpy's ``_reconstruct(subtype, shape, dtype)`` that first checks shape x itemsize against the limit (a
    hostile pickle can ask it for any shape; the real one allocates before anything else can check)."""

    def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        dims = shape if isinstance(shape, tuple | list) else (shape,)
        count = 1
        for n in dims:
            if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
                raise _TooLarge(f"a numpy array with shape {tuple(dims)!r:.80}")
            count *= int(n)
        size = count * max(np.dtype(dtype).itemsize, 1)
        if size > max_input_bytes():
            raise _TooLarge(f"a numpy array of shape {tuple(dims)} ({human_bytes(size)}, above the "
                            f"{human_bytes(max_input_bytes())} limit on one input array)")
        return reconstruct(subtype, shape, dtype)

    return _reconstruct


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
        (_bounded(_reconstruct), "numpy.core.multiarray._reconstruct"),
        (_bounded(_reconstruct), "numpy._core.multiarray._reconstruct"),
        (np_pickle.__randomstate_ctor, "numpy.random._pickle.__randomstate_ctor"),
        (np_pickle.__bit_generator_ctor, "numpy.random._pickle.__bit_generator_ctor"),
    ]
    # numpy 2 pickles dtypes through their classes (e.g. numpy.dtypes.UInt32DType)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allow += [getattr(dtypes, n) for n in ("UInt32DType", "Float64DType", "Int64DType") if hasattr(dtypes, n)]
    return allow


def _check_device(path: Path, map_location: Any) -> None:
    """Refuse a CUDA map_location on a machine without CUDA up front, saying so (torch would fail mid-load)."""
    if isinstance(map_location, (str, torch.device)):
        try:
            device = torch.device(map_location)
        except RuntimeError as exc:
            raise CheckpointError(f"cannot load {path}: map_location {str(map_location)!r} is not a device "
                                  f"({exc})") from exc  # fmt: skip
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CheckpointError(f"cannot load {path} onto {device}: CUDA is not available on this machine "
                                  f"(torch.cuda.is_available() is False); load it onto the CPU instead "
                                  f"(map_location='cpu', --device cpu)")  # fmt: skip
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise CheckpointError(f"cannot load {path} onto {device}: this machine has "
                                  f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ...)")  # fmt: skip


def _check_container(path: Path) -> None:
    """Say plainly when a file is missing, empty, truncated, corrupt or not a PyTorch checkpoint at all.

    torch.save writes a zip archive (``<name>/data.pkl`` plus one entry per storage, each with a CRC-32) or, in the
    legacy format, a pickle stream (first byte 0x80). Anything else is not a checkpoint; a zip without its central
    directory was cut short; an entry failing its CRC was damaged (torch.load itself does not check CRCs).
    """
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    try:
        check_regular_file(path, "checkpoint")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint (an interrupted copy or download?)")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path} is truncated or corrupt ({size} bytes): it starts like a PyTorch "
                                  f"checkpoint (a zip archive) but its zip directory is missing or damaged, as "
                                  f"when a copy or save was cut short")  # fmt: skip
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                    raise CheckpointError(f"{path} is not a checkpoint: it is a zip archive without the data.pkl "
                                          f"of a PyTorch checkpoint (it holds {', '.join(names[:4])}"
                                          f"{', ...' if len(names) > 4 else ''}; an .npz data file?)")  # fmt: skip
                bad = zf.testzip()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise CheckpointError(f"{path} is corrupt: its zip archive cannot be read ({exc})") from exc
        if bad is not None:
            raise CheckpointError(f"{path} is corrupt: entry {bad!r} fails its CRC-32 check (the file was damaged "
                                  f"after it was written)")  # fmt: skip
    elif head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a checkpoint: neither a PyTorch zip archive nor a legacy PyTorch "
                              f"pickle ({describe_file_start(head)})")  # fmt: skip


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", trust_checkpoint: bool = False
) -> dict[str, Any]:
    """Read a checkpoint file into a dict without running arbitrary pickled code.

    Returns the raw dict: for this project's files ``{"format", "format_version", "config", "model", **extra}``;
    for upstream files ``{"epoch", "lr", "random_state", "optimizer", "model_pos"}``.
    Raises FileNotFoundError, or CheckpointError saying which of these it is: empty, truncated or corrupt, not a
    checkpoint, a CUDA map_location without CUDA, or pickled objects outside the allowlist (the only case where
    ``trust_checkpoint=True`` could help).
    """
    path = Path(path)
    _check_container(path)
    _check_device(path, map_location)
    try:
        if trust_checkpoint:
            obj = torch.load(path, map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(_numpy_allowlist()):
                obj = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, OSError, ... : sort out what it means
        text = str(exc)
        chain, cause = [], exc
        while cause is not None and len(chain) < 5:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        big = [c for c in chain if isinstance(c, _TooLarge)]
        too_large = re.search(r"_TooLarge: (.*)", text)
        if big or too_large:
            what = str(big[0]) if big else too_large.group(1)
            raise CheckpointError(f"refusing to load {path}: it asks for {what}; not allocated") from None
        said = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", text)))
        if found and not trust_checkpoint:
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled objects outside the allowlist of tensors, "
                f"containers and numpy RandomState (it refers to {', '.join(found)}). Loading it could run "
                f"arbitrary code; pass trust_checkpoint=True only if you trust where the file came from."
            ) from exc
        if "torch.cuda.is_available() is False" in text or "Attempting to deserialize object on" in text:
            raise CheckpointError(f"cannot load {path}: it maps tensors onto a CUDA device this machine does not "
                                  f"have ({said}); load it onto the CPU (map_location='cpu', --device cpu)") from exc
        raise CheckpointError(f"{path} is truncated or corrupt, or not a PyTorch checkpoint: its contents cannot "
                              f"be read ({type(exc).__name__}: {said})") from exc  # fmt: skip
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a model checkpoint: it holds a {type(obj).__name__}, expected a dict "
                              f"with the model weights")  # fmt: skip
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


def check_finite_weights(state_dict: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse weights holding NaN or inf (CheckpointError naming the file, the tensor and how many values): a model
    built from them gives NaN for every input, silently."""
    bad = []
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            n = int((~torch.isfinite(value)).sum())
            if n:
                bad.append(f"{name} ({n} of {value.numel()})")
    if bad:
        raise CheckpointError(f"{path}: the weights hold NaN/inf values in {len(bad)} tensor(s): "
                              f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}; a model built from them "
                              f"would output NaN (a diverged or damaged checkpoint)")


def infer_upstream_config(state_dict: dict[str, torch.Tensor], num_heads: int = 8) -> MixSTEConfig:
    """Infer the MixSTE2 constructor arguments from upstream weight shapes (num_heads cannot be inferred); HoT's
    hot_mixste weights give token_num, with HoT's prune_at (layer_index) 3."""
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
        # HoT (hot_mixste) files: token_num from pos_embed_token; the pruning pair is not stored, HoT's setting is 3
        token_num=int(state_dict["pos_embed_token"].shape[1]) if "pos_embed_token" in state_dict else None,
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
    RandomState) have their config inferred from tensor shapes; ``num_heads`` defaults to 8 for them. Our own
    files store their config, head count included: a ``num_heads`` that differs from it is refused.
    Weights are loaded with ``strict=True``. ``path`` may also name a model shipped with the package (``"wild"``:
    see ``shipped_models()``), checked against its recorded sha256 before it is read.
    """
    path = resolve_checkpoint(path)
    obj = read_checkpoint(path, map_location, trust_checkpoint)
    state_dict = _extract_state_dict(obj, path)
    if num_heads is not None and (isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1):
        raise CheckpointError(f"num_heads must be a positive int, got {num_heads!r}")
    if obj.get("format") == FORMAT:
        try:
            config = MixSTEConfig.from_dict(dict(obj["config"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: the stored model config is invalid ({exc})") from exc
        # Our files store their head count; num_heads exists for upstream files, which do not.
        if num_heads is not None and num_heads != config.num_heads:
            raise CheckpointError(f"{path} is a fastmixste checkpoint that stores num_heads={config.num_heads}, "
                                  f"but num_heads={num_heads} was given (--num-heads); that option is only for "
                                  f"upstream MixSTE files, which do not store it. Omit it")  # fmt: skip
    else:
        try:
            config = infer_upstream_config(state_dict, num_heads or 8)
        except ValueError as exc:  # e.g. a head count that does not divide the width
            raise CheckpointError(f"{path}: num_heads={num_heads or 8} does not fit this upstream checkpoint "
                                  f"({exc})") from exc  # fmt: skip
    check_finite_weights(state_dict, path)
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
