"""The main job: pretrain MixSTE on corrupted 2D from 3D motion, fine-tune on Human3.6M 2D detections, evaluate.

    python -m train.run                                   # built-in data, small config, all stages (~5 min, 2 cores)
    python -m train.run --config h36m_paper --data-dir data/h36m --out runs/paper
    torchrun --nproc_per_node=8 -m train.run --config h36m_paper --data-dir data/h36m

Outputs in ``--out``: config.yaml (resolved), checkpoints/{last,best}.pt (+ pretrained.pt after pretraining),
metrics.csv, curves.png, results.md, results.json.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from train._config import build_parser, check_files, dump_yaml, resolve_config
from train.inputs import RunData, build_model, check_same_arch, load_init_weights, load_run_data
from train.outputs import final_evaluation, read_history, to_json, write_text
from train.runtime import Runtime, fused_unavailable_message, setup_runtime
from train.stages import make_stages, planned_stages
from train.trainer import StageTrainer, TrainingDiverged

__all__ = ["main", "run_pipeline", "load_init_weights"]


def _resume_path(cfg: dict[str, Any]) -> Path | None:
    if not cfg["resume"]:
        return None
    path = Path(cfg["out"]) / "checkpoints" / "last.pt" if cfg["resume"] == "auto" else Path(cfg["resume"])
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path


def run_pipeline(cfg: dict[str, Any], rt: Runtime, data: RunData | None = None) -> dict[str, Any]:
    """Train the planned stages (resuming if asked), evaluate, write every output file; returns results.json."""
    from fastmixste import read_checkpoint, save_checkpoint

    t_run = time.perf_counter()
    out = Path(cfg["out"])
    ckpt_dir = out / "checkpoints"
    names = planned_stages(cfg)
    if names == ["finetune"] and not cfg["init"] and not cfg["resume"] and (ckpt_dir / "pretrained.pt").is_file():
        # A --stage pretrain run wrote this folder's pretrained weights: fine-tune from them.
        cfg = {**cfg, "init": str(ckpt_dir / "pretrained.pt")}
    if rt.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", dump_yaml(cfg))
    if data is None:
        data = load_run_data(cfg, rt, need_pretrain="pretrain" in names)
    stages = make_stages(cfg, data, names)

    torch.manual_seed(cfg["seed"])
    model = build_model(cfg).to(rt.device)
    train_model: torch.nn.Module = model
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda"
                                              else None)
    if rt.is_main:
        print(f"model: {model.num_parameters():,} parameters, attention backend {model.attn_backend!r}, "
              f"device {rt.device}, amp {rt.amp_dtype or 'none'}", flush=True)

    resume = _resume_path(cfg)
    ckpt = read_checkpoint(resume, map_location=rt.device) if resume else None
    history: dict[str, list[dict]] = {}
    start = 0
    if ckpt is not None:
        check_same_arch(model, dict(ckpt["config"]), f"--resume {resume}")
        if ckpt["stage"] not in names:
            raise ValueError(f"--resume {resume}: the checkpoint is from stage {ckpt['stage']!r}, but this run "
                             f"trains {names}")
        start = names.index(ckpt["stage"])
        history = {k: list(v) for k, v in ckpt["history"].items()}
        if rt.is_main:
            print(f"resuming from {resume}: stage {ckpt['stage']}, step {ckpt['step']}", flush=True)
    elif cfg["init"]:
        load_init_weights(model, cfg["init"])
        if Path(cfg["init"]) == ckpt_dir / "pretrained.pt":
            # Continuing this folder's pretraining run: keep its curves in metrics.csv and curves.png.
            history = {k: list(v) for k, v in read_checkpoint(cfg["init"]).get("history", {}).items()}
        if rt.is_main:
            print(f"initialised from {cfg['init']}", flush=True)

    for i, stage in enumerate(stages):
        if i < start:
            continue
        best_name = "best.pt" if i == len(stages) - 1 else f"{stage.name}_best.pt"
        trainer = StageTrainer(stage, model, train_model, cfg, rt, data, ckpt_dir, best_name, history, out)
        if ckpt is not None and i == start:
            trainer.load_state(ckpt)
        trainer.run()
        if stage.name == "pretrain" and rt.is_main:
            # The fine-tuning stage starts from these weights (also usable with --init).
            save_checkpoint(ckpt_dir / "pretrained.pt", model, stage="pretrain", step=trainer.global_step,
                            run_config=cfg, history={"pretrain": history.get("pretrain", [])})
        rt.barrier()
    train_seconds = time.perf_counter() - t_run

    results: dict[str, Any] = {}
    if rt.is_main:
        results = final_evaluation(cfg, rt, model, data, history, ckpt_dir, out, names, train_seconds, t_run)
    rt.barrier()
    return results


def run_compare_scratch(cfg: dict[str, Any], rt: Runtime, main_results: dict[str, Any]) -> None:
    """Fine-tune from scratch with the same budget in OUT/scratch; plot both fine-tuning curves together."""
    scfg = copy.deepcopy(cfg)
    out = Path(cfg["out"])
    scfg.update(out=str(out / "scratch"), stage="finetune", init=None, compare_scratch=False)
    scratch_last = out / "scratch" / "checkpoints" / "last.pt"
    scfg["resume"] = str(scratch_last) if cfg["resume"] and scratch_last.is_file() else None
    if rt.is_main:
        print("fine-tuning from scratch with the same budget (--compare-scratch)", flush=True)
    scratch = run_pipeline(scfg, rt)
    if not rt.is_main:
        return
    history = read_history(out / "metrics.csv")
    scratch_history = read_history(out / "scratch" / "metrics.csv")
    from fastmixste.plots import plot_learning_curves

    plot_learning_curves({"fine-tune from pretrained": history.get("finetune", [])}, out / "curves_compare.png",
                         compare={"fine-tune from scratch": scratch_history.get("finetune", [])})
    main_results["scratch"] = {"protocol1": scratch["protocol1"], "protocol2": scratch["protocol2"]}
    write_text(out / "results.json", to_json(main_results))
    with open(out / "results.md", "a", encoding="utf-8") as f:
        f.write(f"- Fine-tuned from scratch with the same budget: MPJPE {scratch['protocol1']['Avg']:.1f} mm, "
                f"P-MPJPE {scratch['protocol2']['Avg']:.1f} mm (curves_compare.png)\n")
    print(f"from scratch: MPJPE {scratch['protocol1']['Avg']:.1f} mm vs {main_results['protocol1']['Avg']:.1f} mm "
          f"with pretraining", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = resolve_config(args)
        check_files(cfg)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    if cfg["fused"]:
        msg = fused_unavailable_message(cfg)
        if msg:
            print(f"error: {msg}", file=sys.stderr)
            return 2
    rt = setup_runtime(cfg)
    try:
        t0 = time.perf_counter()
        results = run_pipeline(cfg, rt)
        if cfg["compare_scratch"] and "finetune" in planned_stages(cfg):
            run_compare_scratch(cfg, rt, results)
        if rt.is_main:
            print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {cfg['out']}", flush=True)
        return 0
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
