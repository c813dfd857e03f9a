"""What a run writes besides checkpoints: metrics.csv, the learning curves, results.json and results.md (the final
evaluation of the best weights on the full test set)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

from fastmixste.io.files import atomic_write
from train._data import heldout_report
from train.inputs import RunData
from train.runtime import Runtime, eval_backend

#: metrics.csv columns, one row per epoch (or part of one, at a step cap); lr is the rate the epoch's last step ran
#: at (with warm-up, earlier steps of the epoch ran lower).
METRIC_FIELDS = [
    "stage", "epoch", "step", "train_loss", "loss_mpjpe", "loss_n_mpjpe", "loss_velocity", "loss_wmpjpe", "loss_tc",
    "loss_mpjve", "val_mpjpe", "val_p_mpjpe", "lr", "seq_per_s", "epoch_time_s", "elapsed_s",
]  # fmt: skip


def write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_metrics(path: Path, history: dict[str, list[dict]]) -> None:
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        w.writeheader()
        for rows in history.values():
            for row in rows:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_FIELDS})


def describe_data(cfg: dict[str, Any]) -> str:
    """The data a run used, for titles: the built-in synthetic set is never called Human3.6M."""
    if cfg["data"]["dir"] is None:
        return "built-in synthetic data (a stand-in for Human3.6M, not real motion)"
    return f"Human3.6M from {cfg['data']['dir']} ({cfg['data']['keypoints']} 2D)"


def data_record(cfg: dict[str, Any]) -> dict[str, Any]:
    """results.json's "data" entry: what the numbers were measured on."""
    builtin = cfg["data"]["dir"] is None
    return {"name": "builtin-synthetic" if builtin else "human3.6m", "description": describe_data(cfg),
            "dir": cfg["data"]["dir"], "keypoints": cfg["data"]["keypoints"]}


def environment_record(rt: Runtime) -> dict[str, Any]:
    """results.json's "environment" entry: where the numbers were measured."""
    import os

    import torch

    return {"device": str(rt.device), "processes": rt.world_size, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__}


def write_curves(path: Path, history: dict[str, list[dict]], title: str,
                 compare: dict[str, list[dict]] | None = None) -> None:
    from fastmixste.eval.plots import plot_learning_curves

    rows = {k: v for k, v in history.items() if v}
    if rows:
        plot_learning_curves(rows, path, compare=compare, title=title)


def final_evaluation(cfg: dict[str, Any], rt: Runtime, model, data: RunData, history: dict[str, list[dict]],
                     ckpt_dir: Path, out: Path, names: list[str], train_seconds: float, t_run: float
                     ) -> tuple[dict[str, Any], str]:
    """Evaluate the best weights on the full test set (flip TTA), write results.{md,json}, metrics and curves;
    returns results.json's content and results.md's text."""
    from fastmixste import read_checkpoint
    from fastmixste.eval.evaluation import evaluate, evaluate_constant_pose, format_markdown, results_to_dict

    best = ckpt_dir / "best.pt"
    weights = "final weights"
    if names and best.is_file():
        model.load_state_dict(read_checkpoint(best, map_location=rt.device)["model"], strict=True)
        weights = str(best)
    print(f"evaluating {weights} on {len(data.test)} test sequences (flip={cfg['eval']['flip']})", flush=True)
    with rt.autocast(), eval_backend(model, cfg):
        res = evaluate(model, data.test, flip=cfg["eval"]["flip"], batch_size=cfg["eval"]["batch_size"],
                       device=rt.device, progress=cfg["progress"])
    base = evaluate_constant_pose(data.mean_pose, data.test)
    results = results_to_dict(res, baseline_mpjpe=base.protocol1["Avg"])
    results.update({
        "data": data_record(cfg),
        "environment": environment_record(rt),
        "baseline_p_mpjpe": float(base.protocol2["Avg"]),
        "weights": weights,
        "stages": {n: {"steps": history[n][-1]["step"] if history.get(n) else 0,
                       "epochs": history[n][-1]["epoch"] if history.get(n) else 0} for n in names},
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - t_run,
    })
    what = describe_data(cfg)
    md = format_markdown(res, title=f"Test subjects of {what} ({len(data.test)} sequences), {weights}")
    md += (f"- Mean training pose baseline: MPJPE {base.protocol1['Avg']:.1f} mm, P-MPJPE "
           f"{base.protocol2['Avg']:.1f} mm\n- Stages: {', '.join(names) or 'none (evaluation only)'}; training "
           f"{train_seconds:.0f} s\n")
    with eval_backend(model, cfg):
        results["heldout"], heldout_md = heldout_report(model, data.mean_pose, cfg, rt.device, rt.autocast)
    md += "\n" + heldout_md if heldout_md else ""
    write_text(out / "results.json", to_json(results))
    write_text(out / "results.md", md)
    write_metrics(out / "metrics.csv", history)
    write_curves(out / "curves.png", history, title=f"{what}: {out}")
    print(f"MPJPE (Protocol #1) {res.protocol1['Avg']:.1f} mm | P-MPJPE (Protocol #2) {res.protocol2['Avg']:.1f} mm"
          f" | mean-pose baseline MPJPE {base.protocol1['Avg']:.1f} mm", flush=True)
    return results, md


def write_comparison(out: Path, results: dict[str, Any], results_md: str, history: dict[str, list[dict]],
                     scratch: dict[str, Any], scratch_history: dict[str, list[dict]], what: str) -> None:
    """--compare-scratch: both fine-tuning curves in curves_compare.png; the scratch numbers join results.*"""
    from fastmixste.eval.plots import plot_learning_curves

    plot_learning_curves({"fine-tune from pretrained": history.get("finetune", [])}, out / "curves_compare.png",
                         compare={"fine-tune from scratch": scratch_history.get("finetune", [])},
                         title=f"{what}: fine-tuning with and without pretraining")
    results["scratch"] = {"protocol1": scratch["protocol1"], "protocol2": scratch["protocol2"],
                          "heldout": scratch.get("heldout")}
    write_text(out / "results.json", to_json(results))
    extra = (f"- Fine-tuned from scratch with the same budget: MPJPE {scratch['protocol1']['Avg']:.1f} mm, "
             f"P-MPJPE {scratch['protocol2']['Avg']:.1f} mm (curves_compare.png)\n")
    if scratch.get("heldout"):
        extra += (f"- Held-out motion, fine-tuned from scratch: MPJPE {scratch['heldout']['protocol1']['Avg']:.1f} "
                  f"mm, speed ratio {scratch['heldout']['speed_ratio']:.2f} per frame, "
                  f"{scratch['heldout']['speed_ratio_5f']:.2f} over 5 frames\n")
    write_text(out / "results.md", results_md + extra)
    print(f"from scratch: MPJPE {scratch['protocol1']['Avg']:.1f} mm vs {results['protocol1']['Avg']:.1f} mm "
          f"with pretraining", flush=True)
    if scratch.get("heldout") and results.get("heldout"):
        print(f"held-out motion from scratch: MPJPE {scratch['heldout']['protocol1']['Avg']:.1f} mm vs "
              f"{results['heldout']['protocol1']['Avg']:.1f} mm with pretraining", flush=True)


def to_json(obj: Any) -> str:
    import json

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2) + "\n"
