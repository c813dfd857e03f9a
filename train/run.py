"""The main job: pretrain MixSTE on corrupted 2D from 3D motion, fine-tune on Human3.6M 2D detections, evaluate.

    python -m train.run                                   # built-in data, small config, all stages (~5 min, 2 cores)
    python -m train.run --config h36m_paper --data-dir data/h36m --out runs/paper
    torchrun --nproc_per_node=8 -m train.run --config h36m_paper --data-dir data/h36m

Outputs in ``--out``: config.yaml (resolved), checkpoints/{last,best}.pt (+ pretrained.pt after pretraining),
metrics.csv, curves.png, results.md, results.json. A folder that holds a run is continued (``--resume``, with the
run's stored settings) or replaced (``--overwrite``), never silently overwritten; ``OUT/run.lock`` keeps a second
run out while one runs (train/rundir.py). Everything the run reads (config, flags, --init, --resume, the data) is
checked before the folder is touched; --overwrite sets the previous run's files aside until the new run's first
checkpoint, and puts them back if it fails before.

Exit codes: 0 done, 2 bad input (one or two lines saying what was expected and what came), 1 a failed run (a
NaN/inf loss; last.pt stays the last good checkpoint), 130 Ctrl-C and 143 SIGTERM (after saving a resumable
last.pt). ``--debug`` or FASTMIXSTE_DEBUG=1 adds the traceback.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fastmixste.io.cli import UserInputError, cli_entry, interrupt_hook
from fastmixste.model.checkpoint import check_finite_weights
from train import rundir
from train._checks import check_files
from train._config import build_parser, dump_yaml, resolve_config
from train.inputs import RunData, build_model, check_same_arch, load_init_weights, load_run_data
from train.outputs import describe_data, final_evaluation, write_comparison, write_text
from train.runtime import Runtime, fused_unavailable_message, resolve_recompute, setup_runtime
from train.stages import make_stages, planned_stages
from train.trainer import StageTrainer

__all__ = ["RunOutcome", "main", "run_pipeline", "load_init_weights"]

#: The stage being trained (at most one): on Ctrl-C its state after the last complete step is saved.
_TRAINING: list[StageTrainer] = []


def _resume_path(cfg: dict[str, Any]) -> Path | None:
    if not cfg["resume"]:
        return None
    path = Path(cfg["out"]) / "checkpoints" / "last.pt" if cfg["resume"] == "auto" else Path(cfg["resume"])
    if not path.is_file():
        if cfg["resume"] == "auto":
            raise UserInputError(f"--resume: {cfg['out']} holds no run to continue (no checkpoints/last.pt); drop "
                                 f"--resume to start a new run, or pass --out of the run to continue")
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path


@dataclass
class RunOutcome:
    """What a finished pipeline hands on: results.json's content and results.md's text (rank 0; empty elsewhere)
    and the per-epoch history of every stage (kept in memory, so nothing is read back from metrics.csv)."""

    results: dict[str, Any]
    results_md: str
    history: dict[str, list[dict]]


def _build_models(cfg: dict[str, Any], rt: Runtime) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The model (seeded) and what training calls: the model itself, or its DDP wrapper across processes."""
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg).to(rt.device)
    model.set_recompute(resolve_recompute(cfg, model, rt))
    train_model: torch.nn.Module = model
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda"
                                              else None)
    if rt.is_main:
        print(f"model: {model.num_parameters():,} parameters, attention backend {model.attn_backend!r}, "
              f"device {rt.device}, amp {rt.amp_dtype or 'none'}, recompute {model.recompute}", flush=True)
    return model, train_model


def _starting_point(cfg: dict[str, Any], rt: Runtime, model: torch.nn.Module, names: list[str], ckpt_dir: Path,
                    resume_ckpt: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any] | None, int, dict[str, list[dict]]]:
    """Resume checkpoint (or None), index of the first stage to train, and the history so far; applies --init.
    ``resume_ckpt``: the --resume checkpoint when the caller has read it already."""
    from fastmixste import read_checkpoint

    resume = _resume_path(cfg)
    if resume:
        ckpt = resume_ckpt if resume_ckpt is not None else read_checkpoint(resume, map_location=rt.device)
        check_same_arch(model, dict(ckpt["config"]), f"--resume {resume}")
        if ckpt["stage"] not in names:
            raise ValueError(f"--resume {resume}: the checkpoint is from stage {ckpt['stage']!r}, but this run "
                             f"trains {names}")
        if rt.is_main:
            print(f"resuming from {resume}: stage {ckpt['stage']}, step {ckpt['step']}", flush=True)
        return ckpt, names.index(ckpt["stage"]), {k: list(v) for k, v in ckpt["history"].items()}
    history: dict[str, list[dict]] = {}
    if cfg["init"]:
        load_init_weights(model, cfg["init"])
        if Path(cfg["init"]) == ckpt_dir / "pretrained.pt":
            # Continuing this folder's pretraining run: keep its curves in metrics.csv and curves.png.
            history = {k: list(v) for k, v in read_checkpoint(cfg["init"]).get("history", {}).items()}
        if rt.is_main:
            print(f"initialised from {cfg['init']}", flush=True)
    return None, 0, history


def run_pipeline(cfg: dict[str, Any], rt: Runtime, data: RunData | None = None,
                 resume_ckpt: dict[str, Any] | None = None) -> RunOutcome:
    """Train the planned stages (resuming if asked), evaluate, write every output file.

    The model, --resume and --init are checked before the data loads, and nothing is written before both are
    ready; a resumed run keeps its config.yaml."""
    from fastmixste import save_checkpoint

    t_run = time.perf_counter()
    out = Path(cfg["out"])
    ckpt_dir = out / "checkpoints"
    names = planned_stages(cfg)
    cfg = _with_auto_init(cfg)
    model, train_model = _build_models(cfg, rt)
    ckpt, start, history = _starting_point(cfg, rt, model, names, ckpt_dir, resume_ckpt)
    if data is None:
        data = load_run_data(cfg, rt, need_pretrain="pretrain" in names)
    stages = make_stages(cfg, data, names)
    if rt.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not (cfg["resume"] and (out / "config.yaml").is_file()):
            write_text(out / "config.yaml", dump_yaml(cfg))

    for i, stage in enumerate(stages):
        if i < start:
            continue
        best_name = "best.pt" if i == len(stages) - 1 else f"{stage.name}_best.pt"
        trainer = StageTrainer(stage, model, train_model, cfg, rt, data, ckpt_dir, best_name, history, out)
        if ckpt is not None and i == start:
            trainer.load_state(ckpt)
        _TRAINING.append(trainer)
        trainer.run()
        _TRAINING.remove(trainer)  # not on an exception: a Ctrl-C hook still saves this stage
        if stage.name == "pretrain" and rt.is_main:
            # The fine-tuning stage starts from these weights (also usable with --init).
            save_checkpoint(ckpt_dir / "pretrained.pt", model, stage="pretrain", step=trainer.global_step,
                            run_config=cfg, history={"pretrain": history.get("pretrain", [])})
        rt.barrier()
    train_seconds = time.perf_counter() - t_run

    outcome = RunOutcome({}, "", history)
    if rt.is_main:
        outcome.results, outcome.results_md = final_evaluation(cfg, rt, model, data, history, ckpt_dir, out, names,
                                                               train_seconds, t_run)
    rt.barrier()
    return outcome


def _with_auto_init(cfg: dict[str, Any]) -> dict[str, Any]:
    """A --stage finetune run into the folder of a --stage pretrain run fine-tunes that run's pretrained.pt."""
    pretrained = Path(cfg["out"]) / "checkpoints" / "pretrained.pt"
    if planned_stages(cfg) == ["finetune"] and not cfg["init"] and not cfg["resume"] and pretrained.is_file():
        return {**cfg, "init": str(pretrained)}
    return cfg


def _check_backends(cfg: dict[str, Any]) -> None:
    """The attention backends the config names (model.attn_backend, eval.attn_backend) can run on its device."""
    from fastmixste.model.attention import available_backends
    from train.runtime import _resolve_amp, _resolve_device

    try:
        device = _resolve_device(cfg["device"], int(os.environ.get("LOCAL_RANK", "0")))
    except (ValueError, RuntimeError):
        return  # reported by setup_runtime with its own message
    dtype = _resolve_amp(cfg["amp"], device) or torch.float32
    model = cfg["model"]
    width, heads = model.get("embed_dim_ratio", 512), model.get("num_heads", 8)
    for option, name, training in (("model.attn_backend", None if cfg["fused"] else model.get("attn_backend"), True),
                                   ("eval.attn_backend", cfg["eval"].get("attn_backend"), False)):
        if not name or name == "auto":
            continue
        reasons = available_backends(device, dtype, training, head_dim=width // heads,
                                     num_joints=model.get("num_joints", 17), dim=width)[name]
        if reasons:
            raise UserInputError(f"{option}={name} cannot run on {device}: {'; '.join(reasons)}; choose another "
                                 f"backend (sdpa runs everywhere)")


def _preflight(cfg: dict[str, Any], rt: Runtime, resume_ckpt: dict[str, Any] | None, overwrite: bool) -> RunData:
    """Everything a run reads, checked before its folder is touched: the model, --init (or the folder's
    pretrained.pt it would continue), the --resume checkpoint's architecture and stage, the data and the stages
    built from it. Returns the data (the run uses it)."""
    names = planned_stages(cfg)
    model = build_model(cfg)
    if resume_ckpt is not None:
        path = _resume_path(cfg)
        check_same_arch(model, dict(resume_ckpt["config"]), f"--resume {path}")
        if resume_ckpt["stage"] not in names:
            raise UserInputError(f"--resume {path}: the checkpoint is from stage {resume_ckpt['stage']!r}, but this "
                                 f"run trains {names}")
    else:
        init = (cfg if overwrite else _with_auto_init(cfg))["init"]  # --overwrite sets pretrained.pt aside
        if init:
            load_init_weights(model, init)
    del model
    data = load_run_data(cfg, rt, need_pretrain="pretrain" in names)
    make_stages(cfg, data, names)
    return data


def run_compare_scratch(cfg: dict[str, Any], rt: Runtime, pretrained: RunOutcome) -> None:
    """Fine-tune from scratch with the same budget in OUT/scratch; plot both fine-tuning curves together."""
    scfg = copy.deepcopy(cfg)
    out = Path(cfg["out"])
    scfg.update(out=str(out / "scratch"), stage="finetune", init=None, compare_scratch=False)
    scratch_last = out / "scratch" / "checkpoints" / "last.pt"
    scfg["resume"] = str(scratch_last) if cfg["resume"] and scratch_last.is_file() else None
    if rt.is_main:
        print("fine-tuning from scratch with the same budget (--compare-scratch)", flush=True)
    scratch = run_pipeline(scfg, rt)
    if rt.is_main:
        write_comparison(out, pretrained.results, pretrained.results_md, pretrained.history, scratch.results,
                         scratch.history, describe_data(cfg))


def _check_data_files(cfg: dict[str, Any]) -> None:
    """The data folder holds the two files a run reads (their content is checked when they load)."""
    if cfg["data"]["dir"] is None:
        return
    folder = Path(cfg["data"]["dir"])
    names = ["data_3d_h36m.npz", f"data_2d_h36m_{cfg['data']['keypoints']}.npz"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise UserInputError(f"--data-dir {folder}: Human3.6M file(s) not found: {', '.join(missing)} (expected "
                             f"{' and '.join(names)} in VideoPose3D's format; see README's Data section)")


def _prepare_resume(cfg: dict[str, Any], args: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """--resume: read the checkpoint and continue with the run's stored settings (see rundir.restore_settings)."""
    if not cfg["resume"]:
        return cfg, None
    from fastmixste import read_checkpoint

    if cfg["resume"] != "auto" and args.out is None:
        # --resume OUT/checkpoints/last.pt: the run folder is the one that holds the file.
        path = Path(cfg["resume"])
        if path.parent.name == "checkpoints":
            cfg = {**cfg, "out": str(path.parent.parent)}
    path = _resume_path(cfg)
    ckpt = read_checkpoint(path, map_location="cpu")
    rundir.check_resume_checkpoint(ckpt, path)
    rundir.check_resume_owner(Path(cfg["out"]), path, ckpt, args.allow_other_run)
    rundir.check_rng_state(ckpt["rng"], path)
    check_finite_weights(ckpt.get("model") or {}, path)
    restored, changed = rundir.restore_settings(cfg, args, dict(ckpt["run_config"]), path)
    restored.setdefault("run_id", None)  # a run from before run ids
    check_files({**restored, "init": None})  # the run's data must still be there (its --init is not used again)
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 speaks (the runtime is not set up yet)
        print(f"--resume: continuing the run stored in {path} with its own settings"
              + (f" (changed on resume: {', '.join(changed)})" if changed else ""), flush=True)
    return restored, ckpt


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = resolve_config(args)
        check_files(cfg)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    if cfg["resume"] and args.overwrite:
        raise UserInputError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    cfg, resume_ckpt = _prepare_resume(cfg, args)
    if not cfg["resume"]:
        cfg["run_id"] = rundir.new_run_id()
    _check_data_files(cfg)
    if cfg["fused"]:
        msg = fused_unavailable_message(cfg)
        if msg:
            print(f"error: {msg}", file=sys.stderr)
            return 2
    _check_backends(cfg)
    out = Path(cfg["out"])
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; expected a folder for the run's outputs")
    rt = setup_runtime(cfg)
    lock = rundir.RunLock(out) if rt.is_main else None
    aside = rundir.PreviousRun(out)
    started = False
    try:
        if lock is not None:  # first the lock: a run in progress is reported as such, not as a finished one
            note = lock.acquire()
            if note:
                print(f"note: {note}", file=sys.stderr, flush=True)
        rundir.check_run_folder(out, resume=bool(cfg["resume"]), overwrite=args.overwrite,
                                stages=planned_stages(cfg), init=cfg["init"])
        for folder in rundir.set_aside_folders(out):
            print(f"note: {folder} holds the files of a run that an interrupted --overwrite run replaced; delete "
                  f"it when you no longer need them", file=sys.stderr, flush=True)
        data = _preflight(cfg, rt, resume_ckpt, args.overwrite)  # nothing in --out has been changed before this
        if lock is not None:
            removed = rundir.remove_leftovers(out)
            if removed:
                print(f"note: removed {len(removed)} unfinished temporary file(s) of an interrupted write: "
                      f"{', '.join(str(p.relative_to(out)) for p in removed)}", file=sys.stderr, flush=True)
            if args.overwrite:
                moved = aside.move_aside()
                if moved:
                    print(f"--overwrite: set the previous run's {len(moved)} output file(s) aside in {aside.folder} "
                          f"(deleted once this run writes its first checkpoint)", flush=True)
        rt.barrier()
        _TRAINING.clear()
        with interrupt_hook(lambda: _on_interrupt(out)):
            t0 = time.perf_counter()
            outcome = run_pipeline(cfg, rt, data=data, resume_ckpt=resume_ckpt)
            if cfg["compare_scratch"] and "finetune" in planned_stages(cfg):
                run_compare_scratch(cfg, rt, outcome)
            if rt.is_main:
                print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {cfg['out']}", flush=True)
        started = True
        return 0
    except KeyboardInterrupt:
        started = bool(_TRAINING)  # the interrupt hook saves a resumable last.pt of the stage being trained
        raise
    finally:
        if aside.moved:
            if started or (out / "checkpoints" / "last.pt").is_file():
                aside.discard()
            else:
                aside.restore()
                print(f"--overwrite: the new run stopped before its first checkpoint; the previous run's files "
                      f"are back in {out}", file=sys.stderr, flush=True)
        if lock is not None:
            lock.release()
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _on_interrupt(out: Path) -> str | None:
    """Ctrl-C hook of a run: save the stage being trained, or say where the run stands."""
    if _TRAINING:
        return _TRAINING[-1].save_on_interrupt()
    last = out / "checkpoints" / "last.pt"
    if last.is_file():
        return f"the run so far is in {last}; continue with --resume"
    return "nothing was trained yet"


if __name__ == "__main__":
    sys.exit(main())
