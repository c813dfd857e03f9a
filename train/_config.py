"""Training configuration: YAML files with defaults, ``--set key.sub=value`` overrides and named flags.

Resolution order (later wins): built-in defaults -> YAML file -> ``--set`` -> named command-line flags. The
``train:`` section holds options shared by both stages; ``pretrain:`` and ``finetune:`` override them per stage
(``--set train.KEY=value`` sets KEY for both stages, over the stage sections of the file). Every option is type-
and range-checked (:func:`validate`) before a run loads data.
The resolved config is flat per stage (each stage section lists every training option) and is what a run saves.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from fastmixste.cli import add_debug_argument

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STAGES: tuple[str, ...] = ("pretrain", "finetune")

#: Options of one training stage (the ``train:`` section and the per-stage sections).
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 32,  # sequences per optimizer step, summed over all processes
    "lr": 1e-3,
    "optimizer": "adam",  # adam | adamw
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "lr_decay": 0.96,  # multiplied into the lr once per epoch
    "warmup_steps": 0,  # linear warm-up from 0 over the first steps of the stage
    "grad_clip": 1.0,  # max global grad norm; 0 or null disables clipping
    "max_steps": None,  # cap on optimizer steps of the stage (smoke runs, tests)
    "stride": None,  # window stride of the training clips; null = num_frame (non-overlapping, upstream)
    "flip": True,  # random left/right mirror augmentation (p = 0.5 per clip)
    "checkpoint_every": 0,  # also write last.pt every N steps (0: once per epoch)
    "val_every": 1,  # validate every N epochs (and at the end of the stage)
}

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "amp": "auto",  # auto (bf16 on CUDA where supported, else none) | none | fp16 | bf16
    "out": "runs/default",
    "stage": "all",  # pretrain | finetune | all
    "init": None,  # weights the first trained stage starts from (ours or upstream MixSTE)
    "resume": None,  # path of a last.pt to continue from
    "fused": False,  # train with the Triton attention kernels
    "compare_scratch": False,  # also fine-tune from scratch with the same budget, plot both curves
    "progress": True,  # tqdm bars
    "threads": None,  # CPU threads per process (torch.set_num_threads); null = torch's default
    "data": {
        "dir": None,  # VideoPose3D-format npz files; null = the built-in dataset
        "keypoints": "cpn_ft_h36m_dbb",
        "mocap": [],  # extra pretraining corpora (npz files from the mocap import)
        "num_workers": 0,
    },
    "model": {},  # MixSTEConfig fields; omitted ones take MixSTEConfig's defaults
    "train": {},
    "pretrain": {"h36m_3d": True, "corruption": {}},  # h36m_3d: use the training subjects' 3D as a source
    "finetune": {},
    # Per-epoch validation: one test clip per action and subject, first max_frames frames, no flip.
    "val": {"max_frames": 486, "batch_size": 64},
    # Final evaluation: the full test set. attn_backend: null = the training backend (weights are shared, so any
    # backend gives the same numbers; e.g. sdpa keeps a --fused run under TRITON_INTERPRET=1 quick to evaluate).
    "eval": {"flip": True, "batch_size": 64, "max_frames": None, "attn_backend": None},
    # Test hooks, never restored by --resume: a NaN loss at this step of a stage (the divergence stop); Ctrl-C in
    # the middle of step STEP of stage STAGE, written "STAGE:STEP" (the interrupt save).
    "debug": {"nan_step": None, "interrupt_at": None},
}

_STAGE_ONLY_KEYS = {"pretrain": {"h36m_3d", "corruption"}, "finetune": set()}


def deep_merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``; dict values merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


# PyYAML follows YAML 1.1, where 5e-4 (no dot) is a string, not a number: read such values as the floats they mean.
_EXPONENT_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _numbers(value: Any) -> Any:
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        candidate = CONFIG_DIR / path.name if path.suffix else CONFIG_DIR / f"{path}.yaml"
        if candidate.is_file():
            path = candidate
        else:
            raise FileNotFoundError(f"config file not found: {path} (built-in configs: "
                                    f"{sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))})")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return _numbers(data)


def apply_set(cfg: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` override in place; the value is parsed as YAML (numbers, lists, null...).

    ``train.KEY=value`` sets that option for every stage: it also removes KEY from the ``pretrain:`` and
    ``finetune:`` sections, which would otherwise shadow it. A later ``--set finetune.KEY=...`` still wins.
    """
    if "=" not in assignment:
        raise ValueError(f"--set expects key.sub=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"--set {assignment!r}: empty name in {key.strip()!r}")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.setdefault(p, {}), dict):
            raise ValueError(f"--set {assignment!r}: {p!r} is not a section")
        node = node[p]
    try:
        node[parts[-1]] = _numbers(yaml.safe_load(raw))
    except yaml.YAMLError as e:
        raise ValueError(f"--set {assignment!r}: the value is not valid YAML ({e.problem})") from None
    if len(parts) == 2 and parts[0] == "train":
        for stage in STAGES:
            if isinstance(cfg.get(stage), dict):
                cfg[stage].pop(parts[1], None)


def _check_keys(cfg: dict[str, Any]) -> None:
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
        allowed = set(TRAIN_DEFAULTS) | _STAGE_ONLY_KEYS.get(section, set())
        bad = sorted(set(cfg[section]) - allowed)
        if bad:
            raise ValueError(f"unknown key(s) {bad} in '{section}:'; expected some of {sorted(allowed)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.run",
        description="Pretrain MixSTE on corrupted 2D from 3D motion, fine-tune on Human3.6M 2D detections, "
        "evaluate (Protocol #1 and #2 per action).",
    )
    p.add_argument("--config", help="YAML config (a path, or the name of one in train/configs/); default: default")
    p.add_argument("--stage", choices=("pretrain", "finetune", "all"))
    p.add_argument("--data-dir", help="folder with data_3d_h36m.npz and data_2d_h36m_<keypoints>.npz; "
                   "default: the built-in dataset")
    p.add_argument("--mocap", action="append", metavar="NPZ", help="extra pretraining corpus (repeatable)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--epochs", type=int, help="epochs of every stage")
    p.add_argument("--batch-size", type=int, help="sequences per step (all processes together)")
    p.add_argument("--lr", type=float, help="learning rate of every stage")
    p.add_argument("--max-steps", type=int, help="cap the optimizer steps of each stage")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=("auto", "none", "fp16", "bf16"))
    p.add_argument("--resume", nargs="?", const="auto", metavar="LAST_PT",
                   help="continue from OUT/checkpoints/last.pt (or the file given) with the run's stored settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out holds (its checkpoints, metrics and results are deleted)")
    p.add_argument("--init", metavar="CKPT", help="weights to start from (this project's or upstream MixSTE)")
    p.add_argument("--fused", action="store_true", help="train with the fused Triton attention kernels")
    p.add_argument("--compare-scratch", action="store_true",
                   help="also fine-tune from scratch with the same budget and plot both validation curves")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, help="CPU threads per process (default: torch's choice)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config entry, e.g. --set model.depth=4 --set finetune.lr=5e-4")
    add_debug_argument(p)
    return p


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """argparse namespace -> fully resolved config dict (plain YAML-able values)."""
    cfg = deep_merge(DEFAULTS, load_yaml(args.config or CONFIG_DIR / "default.yaml"))
    check_flags(args)
    for assignment in args.set:
        apply_set(cfg, assignment)
    _check_keys(cfg)
    check_options(cfg)  # before flattening: a bad value is named where it was written (train.lr, finetune.lr...)
    # Flatten: every stage section lists every training option.
    for stage in STAGES:
        cfg[stage] = deep_merge(deep_merge(TRAIN_DEFAULTS, cfg["train"]), cfg[stage])
    cfg.pop("train")
    cfg["pretrain"]["corruption"] = dict(cfg["pretrain"].get("corruption") or {})
    named = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "max_steps": args.max_steps}
    for stage in STAGES:
        for key, value in named.items():
            if value is not None:
                cfg[stage][key] = value
    for key in ("stage", "out", "seed", "device", "amp", "init", "resume", "threads"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if args.data_dir is not None:
        cfg["data"]["dir"] = args.data_dir
    if args.mocap:
        cfg["data"]["mocap"] = list(cfg["data"]["mocap"] or []) + list(args.mocap)
    if args.fused:
        cfg["fused"] = True
    if args.compare_scratch:
        cfg["compare_scratch"] = True
    if args.no_progress:
        cfg["progress"] = False
    if cfg["fused"]:
        cfg["model"]["attn_backend"] = "triton"
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Validation: every option's type and range, checked before any data loads or training starts
# ---------------------------------------------------------------------------------------------------------------
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


_STAGE_STEP = re.compile(r"(pretrain|finetune):[1-9]\d*")
_BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
_MAPPING: Rule = (lambda v: isinstance(v, dict), "a mapping of options")
_BACKENDS = ("auto", "eager", "sdpa", "xformers", "triton")

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
    "corruption": _MAPPING,
}
#: Every other option, by its dotted name.
RULES: dict[str, Rule] = {
    "seed": _int(0),
    "device": (_device_name, "auto, cpu, cuda or cuda:N"),
    "amp": _one_of("auto", "none", "fp16", "bf16"),
    "out": _text(),
    "stage": _one_of("pretrain", "finetune", "all"),
    "init": _text(none=True),
    "resume": _text(none=True),
    "fused": _BOOL,
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


def _check(name: str, value: Any, rule: Rule) -> None:
    accepts, expected = rule
    if not accepts(value):
        raise ValueError(f"{name}: expected {expected}, got {_got(value)}")


def check_flags(args: argparse.Namespace) -> None:
    """Range-check the numeric command-line flags (argparse has checked their types)."""
    for key, rule in FLAG_RULES.items():
        value = getattr(args, key, None)
        if value is not None:
            flag = "--" + key.replace("_", "-")
            _check(flag if flag[2:] == key else f"{flag} ({key})", value, rule)


def _check_corruption(where: str, values: dict[str, Any]) -> None:
    from fastmixste.corruption import CorruptionConfig

    defaults = CorruptionConfig().to_dict()
    for key, value in values.items():
        name, default = f"{where}.{key}", defaults.get(key)
        if isinstance(default, list):
            ok = isinstance(value, list) and len(value) == len(default) and all(_is_number(x) for x in value)
            _check(name, value, (lambda v, ok=ok: ok, f"a list of {len(default)} numbers"))
            if len(default) == 2:
                _check(name, value, (lambda v: v[0] <= v[1], "a range [low, high] with low <= high"))
        elif _is_int(default):
            _check(name, value, _int(1))
        elif key.endswith("_p"):
            _check(name, value, (lambda v: _is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"))
        else:
            _check(name, value, _number(0, strict=False))
    CorruptionConfig.from_dict(values)  # unknown keys


def check_options(cfg: dict[str, Any]) -> None:
    """Type and range of every option present; works before and after the stage sections are flattened."""
    for name, rule in RULES.items():
        section, _, key = name.rpartition(".")
        node = cfg[section] if section else cfg
        if key in node:
            _check(name, node[key], rule)
    for section in ("train",) + STAGES:
        for key, value in cfg.get(section, {}).items():
            if key in TRAIN_RULES:
                _check(f"{section}.{key}", value, TRAIN_RULES[key])
        if section != "train" and section in cfg and "corruption" in cfg[section]:
            _check_corruption(f"{section}.corruption", cfg[section]["corruption"] or {})


def validate(cfg: dict[str, Any]) -> None:
    """Raise ValueError naming the option, what was expected and what came, for any value of a resolved config
    that cannot work: option types and ranges, and the model's fields (files: :func:`check_files`)."""
    check_options(cfg)
    from fastmixste.config import MixSTEConfig

    model = dict(cfg["model"])
    if "attn_backend" in model:
        _check("model.attn_backend", model["attn_backend"], _one_of(*_BACKENDS))
    try:
        MixSTEConfig.from_dict(model)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model: {e}") from None


def check_files(cfg: dict[str, Any]) -> None:
    """Raise FileNotFoundError for a data folder, mocap corpus or --init file that is not there."""
    if cfg["data"]["dir"] is not None and not Path(cfg["data"]["dir"]).is_dir():
        raise FileNotFoundError(f"data.dir (--data-dir): {cfg['data']['dir']} is not a folder")
    for path in cfg["data"]["mocap"] or []:
        if not Path(path).is_file():
            raise FileNotFoundError(f"data.mocap (--mocap): no file at {path}")
    if cfg["init"] is not None and not Path(cfg["init"]).is_file():
        raise FileNotFoundError(f"init (--init): no file at {cfg['init']}")


def dump_yaml(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
