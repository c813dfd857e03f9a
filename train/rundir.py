"""The run folder (``--out``) as something one run owns: a lock file keeps a second run out, an existing run is
never replaced unless ``--overwrite`` says so, leftovers of interrupted writes are removed, and ``--resume``
continues with the settings the run was started with.

A run folder is changed as a transaction: everything a run reads (config, flags, files, checkpoints, data) is
checked before the folder is touched; ``--overwrite`` then moves the previous run's outputs (only the files runs
write: :data:`RUN_FILES` and :data:`RUN_CHECKPOINTS`, never a user's own file) aside into
``OUT/.previous-run.<pid>/``; they are deleted once the new run has written its first checkpoint, and moved back
if it fails before that. Every run records a run id (``run_id`` in config.yaml and in its checkpoints): ``--resume``
refuses a checkpoint of another run into a folder that holds a run, unless ``--allow-other-run``.

The lock, ``OUT/run.lock``, holds the owner's pid, host and start time; the owner refreshes its modification time
every 30 s. A lock is stale (and taken over, with a note) when its process is gone: on the same host its pid is not
running; from another host (a shared filesystem) it has not been refreshed for 10 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastmixste.io.cli import UserInputError
from train._config import STAGES, load_yaml

LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 600.0  # a lock from another host not refreshed for this long belongs to a run that is gone

#: What a run writes into --out (checkpoints/*.pt besides); scratch/ (--compare-scratch) holds the same.
RUN_FILES = ("config.yaml", "metrics.csv", "curves.png", "curves_compare.png", "results.md", "results.json")
#: The checkpoints a run writes into OUT/checkpoints (a stage that is not the last keeps its best as STAGE_best.pt).
RUN_CHECKPOINTS = ("last.pt", "best.pt", "pretrained.pt", "pretrain_best.pt")
ASIDE_PREFIX = ".previous-run."
#: What a resume checkpoint holds besides the weights (best.pt and pretrained.pt hold weights only).
RESUME_KEYS = ("run_config", "stage", "epoch", "step_in_epoch", "step", "optimizer", "scheduler", "rng", "best",
               "accum", "history")
#: Settings that may differ on --resume: where and how the run executes, not what it computes.
# recompute changes memory and time, never results (bitwise-equal gradients), so a resumed run may pick another
SAFE_ON_RESUME = (("device",), ("threads",), ("progress",), ("recompute",), ("data", "num_workers"),
                  ("val", "batch_size"), ("eval", "batch_size"))
SAFE_FLAGS_TEXT = ("--device, --threads, --no-progress, --recompute and --set data.num_workers / val.batch_size / "
                   "eval.batch_size")


# ------------------------------------------------------------------------------------------------ what is there
def _run_files(folder: Path) -> list[Path]:
    found = [folder / n for n in RUN_FILES if (folder / n).is_file()]
    found += [folder / "checkpoints" / n for n in RUN_CHECKPOINTS if (folder / "checkpoints" / n).is_file()]
    return found


def run_outputs(out: Path) -> list[Path]:
    """The files of a previous run in ``out`` (its own and those of its scratch/ comparison)."""
    return _run_files(out) + _run_files(out / "scratch")


def leftover_temp_files(out: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (``.NAME.XXXX.tmp``, io.files.atomic_write) in ``out``."""
    folders = (out, out / "checkpoints", out / "scratch", out / "scratch" / "checkpoints")
    return [p for d in folders if d.is_dir() for p in sorted(d.glob(".*.tmp")) if p.is_file()]


def _continues_pretraining(out: Path, stages: list[str], init: str | None) -> bool:
    """A --stage finetune run into the folder of a --stage pretrain run fine-tunes its pretrained.pt (not a clash)."""
    if stages != ["finetune"] or init or not (out / "checkpoints" / "pretrained.pt").is_file():
        return False
    try:
        return load_yaml(out / "config.yaml").get("stage") == "pretrain"
    except (OSError, ValueError):
        return False


def check_run_folder(out: Path, *, resume: bool, overwrite: bool, stages: list[str], init: str | None) -> None:
    """Refuse an --out that is a file, or that holds a run, unless --resume continues it or --overwrite replaces it."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; expected a folder for the run's outputs")
    if resume and overwrite:
        raise UserInputError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if resume or overwrite:
        return
    found = run_outputs(out)
    if found and not _continues_pretraining(out, stages, init):
        names = ", ".join(str(p.relative_to(out)) for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise UserInputError(f"--out {out} already holds a run ({names}); pass --resume to continue it, "
                             f"--overwrite to replace it, or choose another --out")


def new_run_id() -> str:
    """A fresh run id ("run-" and 12 hex digits: never read back from YAML as a number)."""
    return f"run-{uuid.uuid4().hex[:12]}"


def folder_run_id(out: Path) -> str | None:
    """The run id recorded in ``OUT/config.yaml`` (None when there is none: no run, or one from before run ids)."""
    try:
        value = load_yaml(out / "config.yaml").get("run_id") if (out / "config.yaml").is_file() else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def check_resume_owner(out: Path, path: Path, ckpt: dict[str, Any], allow_other: bool) -> None:
    """Refuse to continue, in a folder that holds a run, a checkpoint of another run: its history and best score
    would be mixed with that run's files (metrics.csv, results, best.pt)."""
    if allow_other or not run_outputs(out):
        return
    if path.resolve() == (out / "checkpoints" / "last.pt").resolve():
        return
    theirs = (ckpt.get("run_config") or {}).get("run_id") if isinstance(ckpt.get("run_config"), dict) else None
    ours = folder_run_id(out)
    if ours is not None and theirs == ours:
        return
    raise UserInputError(
        f"--resume {path} is a checkpoint of another run (run id {theirs or 'not recorded'}) than the one --out "
        f"{out} holds (run id {ours or 'not recorded'}): continuing it there would mix the two runs' files\n"
        f"resume into that run's own folder, an empty --out, or pass --allow-other-run to do it anyway")


class PreviousRun:
    """--overwrite: the previous run's outputs, moved aside into ``OUT/.previous-run.<pid>/`` (not deleted) until
    the new run has written its first checkpoint (:meth:`discard`), or moved back if it fails before (:meth:`restore`).
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.folder = self.out / f"{ASIDE_PREFIX}{os.getpid()}"
        self.moved: list[Path] = []

    def move_aside(self) -> list[Path]:
        """Move the previous run's files (only those runs write) aside; returns their paths relative to OUT."""
        for p in run_outputs(self.out):
            rel = p.relative_to(self.out)
            dest = self.folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            self.moved.append(rel)
        return list(self.moved)

    def restore(self) -> None:
        """The new run failed before its first checkpoint: remove what it wrote, put the previous run back."""
        if not self.moved:
            return
        for p in run_outputs(self.out):
            p.unlink(missing_ok=True)
        for rel in self.moved:
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.folder / rel, self.out / rel)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.moved = []

    def discard(self) -> None:
        """The new run has started (it wrote a checkpoint): delete the previous run's files."""
        if self.moved:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.moved = []


def set_aside_folders(out: Path) -> list[Path]:
    """Folders of runs replaced by an --overwrite run that was killed before it finished (kept, never deleted)."""
    return sorted(p for p in out.glob(f"{ASIDE_PREFIX}*") if p.is_dir()) if out.is_dir() else []


def remove_leftovers(out: Path) -> list[Path]:
    found = leftover_temp_files(out)
    for p in found:
        p.unlink(missing_ok=True)
    return found


# ---------------------------------------------------------------------------------------------------- the lock
def _pid_alive(pid: int) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False  # 0 and negative pids name process groups, not a process
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a pid no process can have
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    try:  # Linux: a zombie (killed, not yet reaped) is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


class RunLock:
    """``OUT/run.lock``: taken by :meth:`acquire` (raises UserInputError when a live run holds it), refreshed by a
    background thread, removed by :meth:`release`. A killed run leaves it behind; the next run takes it over."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.info = {"pid": os.getpid(), "host": socket.gethostname(),
                     "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                     "command": " ".join(sys.argv)}  # fmt: skip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False
        self._made_folder = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.info, f)
        return True

    def _read(self) -> tuple[dict[str, Any] | None, float]:
        for _ in range(10):  # a lock being written this instant: give its owner a moment
            try:
                text, mtime = self.path.read_text(encoding="utf-8"), self.path.stat().st_mtime
            except (FileNotFoundError, NotADirectoryError):
                return None, 0.0
            try:
                info = json.loads(text)
                if isinstance(info, dict):
                    return info, mtime
            except ValueError:
                pass
            time.sleep(0.05)
        return {}, mtime

    def _stale_reason(self, info: dict[str, Any], mtime: float) -> str | None:
        pid, host = info.get("pid"), info.get("host")
        if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(host, str):
            return "the lock file is unreadable"
        if not 0 < pid < 2**31:
            return f"the lock file names pid {pid}, which no process can have"
        if host == socket.gethostname():
            return None if _pid_alive(pid) else f"process {pid} on this host is not running"
        age = time.time() - mtime
        if age > STALE_S:
            return f"the run of process {pid} on host {host} has given no sign of life for {age / 60:.0f} min"
        return None

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over."""
        try:
            self._made_folder = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            created = self._create()
        except OSError as e:
            raise UserInputError(f"--out {self.out}: cannot write there ({e.strerror or e})") from None
        note = None
        if not created:
            info, mtime = self._read()
            if info is not None:
                reason = self._stale_reason(info, mtime)
                if reason is None:
                    age = time.time() - mtime
                    raise UserInputError(
                        f"--out {self.out} is in use by another run (pid {info['pid']} on {info['host']}, started "
                        f"{info.get('started', '?')}, alive {age:.0f} s ago; lock file {self.path}); wait for it to "
                        f"finish or choose another --out (if that run is gone, delete the lock file)")
                # Take over only the lock we judged: a run that took it over meanwhile keeps it.
                if self._read()[0] == info:
                    self.path.unlink(missing_ok=True)
                note = f"took over the stale lock {self.path} ({reason})"
            if not self._create():
                raise UserInputError(f"--out {self.out} is in use by another run that started just now (lock file "
                                     f"{self.path}); choose another --out")
        self.held = True
        self._thread = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return note

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info, _ = self._read()
        if info is not None and info.get("pid") == self.info["pid"] and info.get("host") == self.info["host"]:
            self.path.unlink(missing_ok=True)
        if self._made_folder and not any(self.out.iterdir()):
            self.out.rmdir()  # a run that stopped before writing anything leaves no empty folder


# ------------------------------------------------------------------------------------------ --resume settings
def check_resume_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise UserInputError(f"--resume {path}: not a resume point (no {', '.join(missing[:3])}"
                             f"{', ...' if len(missing) > 3 else ''}): it holds weights only; a weights file such as "
                             f"best.pt or pretrained.pt starts a new run with --init")


def check_rng_state(state: Any, path: Path) -> None:
    """Refuse a resume checkpoint whose stored RNG state cannot be restored (wrong sizes or types), naming the file;
    the current RNG state is left as it was."""
    from train.runtime import rng_state, set_rng_state

    saved = rng_state()
    try:
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, expected a dict")
        set_rng_state(state)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise UserInputError(f"--resume {path}: the stored random-number state cannot be restored "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); the "
                             f"checkpoint is damaged or not from this version") from None
    finally:
        set_rng_state(saved)


_MISSING = object()


def _stage_paths(parts: list[str]) -> list[tuple[str, ...]]:
    """``train.X`` sets X of every stage (the resolved config has no train: section)."""
    if parts and parts[0] == "train":
        return [(stage, *parts[1:]) for stage in STAGES] if len(parts) > 1 else [(stage,) for stage in STAGES]
    return [tuple(parts)]


def _leaves(node: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if isinstance(node, dict) and node and prefix[:1] != ("model",):
        for key, value in node.items():
            yield from _leaves(value, (*prefix, str(key)))
    else:
        yield prefix


def explicit_settings(args: argparse.Namespace) -> list[tuple[str, list[tuple[str, ...]]]]:
    """What the command line sets, as (how it was written, config paths it sets); --out, --resume and
    --overwrite aside."""
    found: list[tuple[str, list[tuple[str, ...]]]] = []
    if args.config:
        paths = [p for leaf in _leaves(load_yaml(args.config), ()) for p in _stage_paths(list(leaf))]
        found.append((f"--config {args.config}", paths))
    for assignment in args.set:
        key = assignment.split("=", 1)[0].strip()
        found.append((f"--set {assignment}", _stage_paths(key.split("."))))
    per_stage = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "max_steps": "--max-steps"}
    for key, flag in per_stage.items():
        if getattr(args, key) is not None:
            found.append((f"{flag} {getattr(args, key)}", [(stage, key) for stage in STAGES]))
    single = {"seed": ("--seed", ("seed",)), "stage": ("--stage", ("stage",)), "amp": ("--amp", ("amp",)),
              "init": ("--init", ("init",)), "data_dir": ("--data-dir", ("data", "dir")),
              "device": ("--device", ("device",)), "threads": ("--threads", ("threads",)),
              "recompute": ("--recompute", ("recompute",))}  # fmt: skip
    for key, (flag, path) in single.items():
        if getattr(args, key) is not None:
            found.append((f"{flag} {getattr(args, key)}", [path]))
    if args.mocap:
        found.append((f"--mocap {' '.join(args.mocap)}", [("data", "mocap")]))
    if args.fused:
        found.append(("--fused", [("fused",), ("model", "attn_backend")]))
    if args.compare_scratch:
        found.append(("--compare-scratch", [("compare_scratch",)]))
    if args.no_progress:
        found.append(("--no-progress", [("progress",)]))
    return found


def _normalized(cfg: dict[str, Any]) -> dict[str, Any]:
    """Model and corruption settings with their defaults filled in, so equal settings compare equal."""
    from fastmixste.data.corruption import CorruptionConfig
    from fastmixste.model.config import MixSTEConfig

    cfg = {**cfg, "model": MixSTEConfig.from_dict(dict(cfg["model"])).to_dict()}
    corruption = CorruptionConfig.from_dict(dict(cfg["pretrain"].get("corruption") or {}))
    cfg["pretrain"] = {**cfg["pretrain"], "corruption": corruption.to_dict()}
    return cfg


def _get(cfg: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(cfg, dict) or key not in cfg:
            return _MISSING
        cfg = cfg[key]
    return cfg


def _set(cfg: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        cfg = cfg.setdefault(key, {})
    cfg[path[-1]] = value


def _safe(path: tuple[str, ...]) -> bool:
    return any(path[: len(s)] == s for s in SAFE_ON_RESUME) or path[:1] == ("debug",)


def restore_settings(cfg: dict[str, Any], args: argparse.Namespace, stored: dict[str, Any], source: Path
                     ) -> tuple[dict[str, Any], list[str]]:
    """The config of a resumed run: the stored one, with the command line's safe settings (SAFE_ON_RESUME) and
    debug hooks; returns it and the safe settings that changed. Any other setting the command line gives must
    equal the stored value, else UserInputError naming each flag, the stored and the given value."""
    import copy

    from train._checks import validate

    restored = copy.deepcopy(stored)
    for key, value in cfg.items():  # options a checkpoint of an older version may lack
        if key not in restored:
            restored[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(restored[key], dict) and key not in ("model",):
            for sub, v in value.items():
                restored[key].setdefault(sub, copy.deepcopy(v))
    restored.update(out=cfg["out"], resume=cfg["resume"], debug=copy.deepcopy(cfg["debug"]))
    new, old = _normalized(cfg), _normalized(restored)
    conflicts, changed = [], []
    for written, paths in explicit_settings(args):
        diffs = []
        for path in paths:
            if path[:1] in (("out",), ("resume",), ("debug",), ("run_id",)):
                continue
            if _safe(path):
                value = _get(cfg, path)
                if value is not _MISSING and value != _get(restored, path):
                    _set(restored, path, copy.deepcopy(value))
                    changed.append(written)
                continue
            a, b = _get(new, path), _get(old, path)
            if isinstance(a, dict) and isinstance(b, dict):  # a whole section: name the options that differ
                pairs = [((*path, k), a.get(k, _MISSING), b.get(k, _MISSING)) for k in {**b, **a}]
            else:
                pairs = [(path, a, b)]
            for where, x, y in pairs:
                if x != y:
                    diffs.append(f"{'.'.join(where)}: the run has {None if y is _MISSING else y!r}, this command "
                                 f"{None if x is _MISSING else x!r}")
        if diffs:
            conflicts.append(f"{written} ({'; '.join(dict.fromkeys(diffs))})")
    if conflicts:
        raise UserInputError(
            f"--resume: the command line changes settings of the run stored in {source}: {', '.join(conflicts)}\n"
            f"drop them to continue with the run's own settings (only {SAFE_FLAGS_TEXT} may change on resume), "
            f"or start a new run with --overwrite or another --out")
    try:
        validate(restored)
    except ValueError as e:
        raise UserInputError(f"--resume {source}: the stored settings are not valid here: {e}") from None
    return restored, list(dict.fromkeys(changed))
