"""Validation of a training config: every option's type and range, the model's fields, the files it names; all
checked before a run loads data or trains. Messages name the option, what was expected and what came."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fastmixste import BACKENDS, RECOMPUTE_POLICIES
from train._defaults import AMP_MODES, DEFAULTS, STAGE_ONLY_KEYS, STAGES, TRAIN_DEFAULTS

Rule = tuple[Callable[[Any], bool], str]  # (accepts the value?, what is expected)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(lo: int, none: bool = False) -> Rule:
    return (lambda v: (none and v is None) or (_is_int(v) and v >= lo)), f"an int >= {lo}" + (" or null" * none)


def _number(lo: float, strict: bool, none: bool = False) -> Rule:
    ok = (lambda v: v > lo) if strict else (lambda v: v >= lo)
    return ((lambda v: (none and v is None) or (_is_number(v) and ok(v))),
            f"a number {'>' if strict else '>='} {lo:g}" + (" or null" * none))


#: Upper bounds, checked after the type and lower bound: sizes that allocate memory (batches, generated clips and
#: frames, workers, threads) and values that make training meaningless (rates, weights).
MAX_BATCH = 65_536
UPPER: dict[str, float] = {
    "batch_size": MAX_BATCH, "val.batch_size": MAX_BATCH, "eval.batch_size": MAX_BATCH,
    "eval.heldout_clips": 1_000, "motion_frames": 10_000_000, "motion_clip_frames": 100_000,
    "threads": 4_096, "seed": 2**32 - 1, "data.num_workers": 256, "lr": 100.0, "weight_decay": 100.0, "lr_decay": 10.0,
}  # fmt: skip


def _one_of(*choices: Any) -> Rule:
    return (lambda v: v in choices), "one of " + ", ".join(str(c) for c in choices)


def _text(none: bool = False) -> Rule:
    return (lambda v: (none and v is None) or (isinstance(v, str) and v != "")), "a text" + (" or null" * none)


def _betas(v: Any) -> bool:
    return isinstance(v, list | tuple) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)


def _device_name(v: Any) -> bool:
    if v == "auto":
        return True
    try:
        return isinstance(v, str) and torch.device(v).type in ("cpu", "cuda", "mps", "xpu")
    except (RuntimeError, ValueError):
        return False


_STAGE_STEP = re.compile(rf"({'|'.join(STAGES)}):[1-9]\d*")
_BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
_MAPPING: Rule = (lambda v: isinstance(v, dict), "a mapping of options")
_BACKENDS = ("auto", *BACKENDS)

#: Options of a training stage (``train:``, ``pretrain:``, ``finetune:``).
TRAIN_RULES: dict[str, Rule] = {
    "epochs": _int(0),
    "batch_size": _int(1),
    "lr": _number(0, strict=True),
    "optimizer": _one_of("adam", "adamw"),
    "weight_decay": _number(0, strict=False),
    "betas": (_betas, "a list of two numbers in [0, 1)"),
    "lr_decay": _number(0, strict=True),
    "warmup_steps": _int(0),
    "grad_clip": _number(0, strict=False, none=True),
    "max_steps": _int(0, none=True),
    "stride": _int(1, none=True),
    "flip": _BOOL,
    "checkpoint_every": _int(0, none=True),
    "val_every": _int(1),
    "h36m_3d": _BOOL,
    "motion_frames": _int(0),
    "motion_clip_frames": _int(2),
    "corruption": _MAPPING,
    "loss_weights": _MAPPING,
}
#: Every other option, by its dotted name.
RULES: dict[str, Rule] = {
    "seed": _int(0),
    "device": (_device_name, "auto, cpu, cuda or cuda:N"),
    "amp": _one_of(*AMP_MODES),
    "out": _text(),
    "stage": _one_of(*STAGES, "all"),
    "init": _text(none=True),
    "resume": _text(none=True),
    "fused": _BOOL,
    "recompute": _one_of(*RECOMPUTE_POLICIES, "auto"),
    "compare_scratch": _BOOL,
    "progress": _BOOL,
    "threads": _int(1, none=True),
    "data.dir": _text(none=True),
    "data.keypoints": _text(),
    "data.mocap": (lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) and x for x in v)),
                   "a list of npz paths"),
    "data.num_workers": _int(0),
    "val.max_frames": _int(1, none=True),
    "val.batch_size": _int(1),
    "eval.flip": _BOOL,
    "eval.batch_size": _int(1),
    "eval.max_frames": _int(1, none=True),
    "eval.heldout_clips": _int(0),
    "eval.attn_backend": (lambda v: v is None or v in _BACKENDS, "null or one of " + ", ".join(_BACKENDS)),
    "debug.nan_step": _int(1, none=True),
    "debug.interrupt_at": (lambda v: v is None or (isinstance(v, str) and _STAGE_STEP.fullmatch(v) is not None),
                           "null or STAGE:STEP, e.g. finetune:12"),
}
#: Named flags that carry numbers: argparse checks the type, these the range.
FLAG_RULES: dict[str, Rule] = {
    "epochs": TRAIN_RULES["epochs"], "batch_size": TRAIN_RULES["batch_size"], "lr": TRAIN_RULES["lr"],
    "max_steps": _int(0), "seed": RULES["seed"], "threads": _int(1),
}  # fmt: skip


def _got(value: Any) -> str:
    kind = "" if value is None or isinstance(value, str | list | dict) else f" ({type(value).__name__})"
    return f"{value!r}{kind}"


def _check(name: str, value: Any, rule: Rule, upper: float | None = None) -> None:
    accepts, expected = rule
    if not accepts(value):
        raise ValueError(f"{name}: expected {expected}, got {_got(value)}")
    if upper is not None and value is not None and value > upper:
        limit = f"{upper:,}" if isinstance(upper, int) else f"{upper:,g}"
        raise ValueError(f"{name}: expected at most {limit}, got {_got(value)}")


def check_flags(args: argparse.Namespace) -> None:
    """Range-check the numeric command-line flags (argparse has checked their types)."""
    for key, rule in FLAG_RULES.items():
        value = getattr(args, key, None)
        if value is not None:
            flag = "--" + key.replace("_", "-")
            _check(flag if flag[2:] == key else f"{flag} ({key})", value, rule, UPPER.get(key))


def _check_corruption(where: str, values: dict[str, Any]) -> None:
    from fastmixste.data.corruption import CorruptionConfig

    defaults = CorruptionConfig().to_dict()
    for key, value in values.items():
        name, default = f"{where}.{key}", defaults.get(key)
        lo, hi = _CORRUPTION_BOUNDS.get(key, (0.0, 1e3))
        if isinstance(default, list):
            ok = (isinstance(value, list) and len(value) == len(default)
                  and all(_is_number(x) and lo <= x <= hi for x in value))
            _check(name, value, (lambda v, ok=ok: ok, f"a list of {len(default)} numbers in [{lo:g}, {hi:g}]"))
            if len(default) == 2:
                _check(name, value, (lambda v: v[0] <= v[1], "a range [low, high] with low <= high"))
        elif isinstance(default, str):
            from fastmixste.data.corruption import KEYPOINT_DEFINITIONS

            _check(name, value, _one_of(*KEYPOINT_DEFINITIONS))
        elif _is_int(default):
            _check(name, value, _int(1), 10_000)
        elif key.endswith("_p"):
            _check(name, value, (lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"))
        else:
            _check(name, value, _number(lo, strict=False), hi)
    CorruptionConfig.from_dict(values)  # unknown keys


#: Plausible ranges of the corruption settings (normalised image units for noise: 1.0 is half the image width).
_CORRUPTION_BOUNDS: dict[str, tuple[float, float]] = {
    "azimuth_deg": (-360.0, 360.0), "elevation_deg": (-90.0, 90.0), "distance_m": (0.1, 1000.0),
    "focal": (0.01, 100.0), "aim_offset_m": (0.0, 100.0), "roll_deg": (-180.0, 180.0),
    "noise_std": (0.0, 1.0), "jitter_std": (0.0, 1.0),
    "joint_noise_scale": (0.0, 100.0),
}  # fmt: skip


def _check_loss_weights(stage: str, values: dict[str, Any]) -> None:
    from fastmixste.eval.losses import FINETUNE_WEIGHTS, PRETRAIN_WEIGHTS

    terms = PRETRAIN_WEIGHTS if stage == "pretrain" else FINETUNE_WEIGHTS
    unknown = sorted(set(values) - set(terms))
    if unknown:
        raise ValueError(f"{stage}.loss_weights: unknown term(s) {unknown}; expected some of {sorted(terms)}")
    for key, value in values.items():
        _check(f"{stage}.loss_weights.{key}", value, _number(0, strict=False), 1e6)


def check_options(cfg: dict[str, Any]) -> None:
    """Type and range of every option present; works before and after the stage sections are flattened."""
    for name, rule in RULES.items():
        section, _, key = name.rpartition(".")
        node = cfg[section] if section else cfg
        if key in node:
            _check(name, node[key], rule, UPPER.get(name))
    for section in ("train",) + STAGES:
        for key, value in cfg.get(section, {}).items():
            if key in TRAIN_RULES:
                _check(f"{section}.{key}", value, TRAIN_RULES[key], UPPER.get(key))
        if section != "train" and section in cfg and "corruption" in cfg[section]:
            _check_corruption(f"{section}.corruption", cfg[section]["corruption"] or {})
        if section != "train" and section in cfg and "loss_weights" in cfg[section]:
            _check_loss_weights(section, cfg[section]["loss_weights"] or {})


def validate(cfg: dict[str, Any]) -> None:
    """Raise ValueError naming the option, what was expected and what came, for any value of a resolved config
    that cannot work: option types and ranges, and the model's fields (files: :func:`check_files`)."""
    check_options(cfg)
    from fastmixste.model.config import MixSTEConfig

    model = dict(cfg["model"])
    if "recompute" in model:
        raise ValueError(f"model.recompute: set the recompute policy with recompute: (top level) or --recompute, "
                         f"not under model: (got model.recompute={model['recompute']!r})")
    if "attn_backend" in model:
        _check("model.attn_backend", model["attn_backend"], _one_of(*_BACKENDS))
    try:
        config = MixSTEConfig.from_dict(model)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model: {e}") from None
    # Training feeds (T, 17, 2) keypoints (x, y) and predicts 17 joints: other shapes would fail at the first step.
    if config.in_chans != 2:
        raise ValueError(f"model.in_chans: training feeds 2D keypoints (x, y): expected 2, got {config.in_chans}")
    if config.num_joints != 17:
        raise ValueError(f"model.num_joints: training data has the 17 Human3.6M joints: expected 17, got "
                         f"{config.num_joints}")


def check_files(cfg: dict[str, Any]) -> None:
    """Raise FileNotFoundError for a data folder, mocap corpus or --init file that is not there."""
    if cfg["data"]["dir"] is not None and not Path(cfg["data"]["dir"]).is_dir():
        raise FileNotFoundError(f"data.dir (--data-dir): {cfg['data']['dir']} is not a folder")
    for path in cfg["data"]["mocap"] or []:
        if not Path(path).is_file():
            raise FileNotFoundError(f"data.mocap (--mocap): no file at {path}")
        from fastmixste.data.mocap import mocap_npz_fps

        mocap_npz_fps(path)  # the corpus header (format, frame rate) now, before any data loads
    if cfg["init"] is not None and not Path(cfg["init"]).is_file():
        raise FileNotFoundError(f"init (--init): no file at {cfg['init']}")


def check_keys(cfg: dict[str, Any]) -> None:
    """Raise ValueError for an unknown section or key, or a section that is not a mapping."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; expected some of {sorted(DEFAULTS)}")
    for section, default in DEFAULTS.items():
        if isinstance(default, dict) and not isinstance(cfg[section], dict):
            raise ValueError(f"'{section}:' must be a mapping of options, got {_got(cfg[section])}")
    for section in ("data", "val", "eval", "debug"):
        bad = sorted(set(cfg[section]) - set(DEFAULTS[section]))
        if bad:
            raise ValueError(f"unknown key(s) {bad} in '{section}:'; expected some of {sorted(DEFAULTS[section])}")
    for section in ("train",) + STAGES:
        allowed = set(TRAIN_DEFAULTS) | STAGE_ONLY_KEYS.get(section, set())
        bad = sorted(set(cfg[section]) - allowed)
        if bad:
            raise ValueError(f"unknown key(s) {bad} in '{section}:'; expected some of {sorted(allowed)}")
