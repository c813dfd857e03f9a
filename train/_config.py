"""Training configuration: YAML files with defaults, ``--set key.sub=value`` overrides and named flags.

Resolution order (later wins): built-in defaults -> YAML file -> ``--set`` -> named command-line flags. The
``train:`` section holds options shared by both stages; ``pretrain:`` and ``finetune:`` override them per stage
(``--set train.KEY=value`` sets KEY for both stages, over the stage sections of the file). Every option is type-
and range-checked (train/_checks.py) before a run loads data; the defaults and option names are in
train/_defaults.py, which both modules import.
The resolved config is flat per stage (each stage section lists every training option) and is what a run saves.
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Any

import yaml

from fastmixste import RECOMPUTE_POLICIES
from fastmixste.io.cli import add_debug_argument
from fastmixste.io.files import MAX_NESTING, check_regular_file
from train._checks import check_flags, check_keys, check_options, validate
from train._defaults import AMP_MODES, DEFAULTS, STAGES, TRAIN_DEFAULTS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


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


MAX_CONFIG_BYTES = 1 << 20  # a config file is a page of settings; 1 MiB is far beyond any real one
MAX_CONFIG_NODES = 100_000


class LimitedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without aliases (``*name``: an alias bomb expands a few hundred bytes to gigabytes),
    at most MAX_NESTING levels of nesting and MAX_CONFIG_NODES values: refused with the line where it happens."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in config files; write "
                                              "the values out", self.peek_event().start_mark)
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_NESTING:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_NESTING} levels deep",
                                              self.peek_event().start_mark)
        if self._nodes > MAX_CONFIG_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_CONFIG_NODES:,} values",
                                              self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def yaml_error(where: str, exc: yaml.YAMLError) -> ValueError:
    """A YAML syntax error -> ValueError naming the file (or option), the line and column, and the problem."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if "'\\t'" in str(problem):
        problem = f"{problem} (a tab: indent YAML with spaces)"
    return ValueError(f"{where}: not valid YAML{at}: {problem}")


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> value with LimitedLoader; syntax errors and exceeded limits as ValueError naming ``where``."""
    try:
        return yaml.load(text, Loader=LimitedLoader)  # noqa: S506 (LimitedLoader is a SafeLoader)
    except yaml.YAMLError as exc:
        raise yaml_error(where, exc) from None
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply to read") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        candidate = CONFIG_DIR / path.name if path.suffix else CONFIG_DIR / f"{path}.yaml"
        if path.exists():
            check_regular_file(path, "config file")  # a folder, pipe or device: say what it is
        if candidate.is_file():
            path = candidate
        else:
            raise FileNotFoundError(f"config file not found: {path} (built-in configs: "
                                    f"{sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))})")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    data = parse_yaml(text, str(path)) or {}
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
        node[parts[-1]] = _numbers(yaml.load(raw, Loader=LimitedLoader))  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ValueError(f"--set {assignment!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
    if len(parts) == 2 and parts[0] == "train":
        for stage in STAGES:
            if isinstance(cfg.get(stage), dict):
                cfg[stage].pop(parts[1], None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.run",
        description="Pretrain MixSTE on corrupted 2D from 3D motion, fine-tune on Human3.6M 2D detections, "
        "evaluate (Protocol #1 and #2 per action).",
    )
    p.add_argument("--config", help="YAML config (a path, or the name of one in train/configs/); default: default")
    p.add_argument("--stage", choices=(*STAGES, "all"))
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
    p.add_argument("--amp", choices=AMP_MODES)
    p.add_argument("--resume", nargs="?", const="auto", metavar="LAST_PT",
                   help="continue from OUT/checkpoints/last.pt (or the file given) with the run's stored settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out holds (its checkpoints, metrics and results are set aside, and "
                   "deleted once the new run writes its first checkpoint; other files stay)")
    p.add_argument("--allow-other-run", action="store_true",
                   help="with --resume: continue a checkpoint of another run in an --out that holds a run (their "
                   "files then mix; refused without this flag)")
    p.add_argument("--init", metavar="CKPT", help="weights to start from (this project's or upstream MixSTE)")
    p.add_argument("--fused", action="store_true", help="train with the fused Triton attention kernels")
    p.add_argument("--recompute", choices=(*RECOMPUTE_POLICIES, "auto"),
                   help="activation recompute: keep everything (none), rebuild cheap activations (lean), keep only "
                   "block-pair inputs (full), or the cheapest that fits the GPU's free memory (auto)")
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
    cfg.pop("run_id", None)  # a run's config.yaml used as --config: the new run gets its own id
    check_flags(args)
    for assignment in args.set:
        apply_set(cfg, assignment)
    check_keys(cfg)
    check_options(cfg)  # before flattening: a bad value is named where it was written (train.lr, finetune.lr...)
    # Flatten: every stage section lists every training option.
    for stage in STAGES:
        cfg[stage] = deep_merge(deep_merge(TRAIN_DEFAULTS, cfg["train"]), cfg[stage])
    cfg.pop("train")
    cfg["pretrain"]["corruption"] = dict(cfg["pretrain"].get("corruption") or {})
    for stage in STAGES:
        cfg[stage]["loss_weights"] = dict(cfg[stage].get("loss_weights") or {})
    named = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "max_steps": args.max_steps}
    for stage in STAGES:
        for key, value in named.items():
            if value is not None:
                cfg[stage][key] = value
    for key in ("stage", "out", "seed", "device", "amp", "init", "resume", "threads", "recompute"):
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


def dump_yaml(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
