"""The main job: pretrain MixSTE on corrupted 2D from 3D motion, fine-tune on Human3.6M 2D detections, evaluate.

    python -m train.run                                   # built-in data, small config, all stages (~5 min, 2 cores)
    python -m train.run --config h36m_paper --data-dir data/h36m --out runs/paper
    torchrun --nproc_per_node=8 -m train.run --config h36m_paper --data-dir data/h36m

Outputs in ``--out``: config.yaml (resolved), checkpoints/{last,best}.pt (+ pretrained.pt after pretraining),
metrics.csv, curves.png, results.md, results.json.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fastmixste._io import atomic_write
from train._config import STAGES, build_parser, dump_yaml, resolve_config
from train._data import (
    EpochBatchSampler,
    MotionWindows,
    crop_sequences,
    heldout_report,
    pretrain_clips,
    seed_step,
    step_generator,
    validation_subset,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
MakeBatch = Callable[[Any, torch.Generator], tuple[torch.Tensor, torch.Tensor]]

METRIC_FIELDS = [
    "stage", "epoch", "step", "train_loss", "loss_mpjpe", "loss_n_mpjpe", "loss_velocity", "loss_wmpjpe", "loss_tc",
    "loss_mpjve", "val_mpjpe", "val_p_mpjpe", "lr", "seq_per_s", "epoch_time_s", "elapsed_s",
]  # fmt: skip


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stops, the last checkpoint on disk is the last good one."""


# ---------------------------------------------------------------------------------------------------------------
# Runtime: device, processes, precision
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Runtime:
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


# ---------------------------------------------------------------------------------------------------------------
# RNG state <-> plain containers (checkpoints are read back with weights_only loading)
# ---------------------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
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
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


# ---------------------------------------------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------------------------------------------
def _atomic_write(path: Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_metrics(path: Path, history: dict[str, list[dict]]) -> None:
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        w.writeheader()
        for rows in history.values():
            for row in rows:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_FIELDS})


def write_curves(path: Path, history: dict[str, list[dict]], compare: dict[str, list[dict]] | None = None) -> None:
    from fastmixste.plots import plot_learning_curves

    rows = {k: v for k, v in history.items() if v}
    if rows:
        plot_learning_curves(rows, path, compare=compare)


# ---------------------------------------------------------------------------------------------------------------
# Model, data
# ---------------------------------------------------------------------------------------------------------------
def build_model(cfg: dict[str, Any]):
    from fastmixste import MixSTE, MixSTEConfig

    return MixSTE.from_config(MixSTEConfig.from_dict(dict(cfg["model"])))


_ARCH_FIELDS = ("num_frame", "num_joints", "in_chans", "embed_dim_ratio", "depth", "num_heads", "mlp_ratio",
                "qkv_bias")


def _check_same_arch(model, other_config: dict[str, Any], what: str) -> None:
    ours = model.config.to_dict()
    diff = {k: (ours[k], other_config.get(k)) for k in _ARCH_FIELDS if ours[k] != other_config.get(k)}
    if diff:
        detail = ", ".join(f"{k}: run has {a!r}, file has {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{what} does not fit the model of this run ({detail}). Keep model: the same across "
                         f"stages (num_frame included) or pass a matching --config/--set model.*")


def load_init_weights(model, path: str) -> None:
    """Copy the weights of ``path`` (this project's checkpoint or an upstream MixSTE file) into ``model``."""
    from fastmixste import load_checkpoint

    src = load_checkpoint(path, attn_backend="eager", num_heads=model.config.num_heads)
    _check_same_arch(model, src.config.to_dict(), f"--init {path}")
    model.load_state_dict(src.state_dict(), strict=True)


@dataclass
class RunData:
    train: list
    test: list
    val: list
    pretrain_clips: list[np.ndarray]
    mean_pose: np.ndarray  # (17, 3) mean training pose, root-relative camera coordinates (the baseline)


def load_run_data(cfg: dict[str, Any], rt: Runtime, need_pretrain: bool) -> RunData:
    from fastmixste.data.h36m import TEST_SUBJECTS, TRAIN_SUBJECTS, load_h36m

    if cfg["data"]["dir"]:
        data_dir = Path(cfg["data"]["dir"])
    else:
        from fastmixste.data.builtin import builtin_data_dir

        # The built-in data is generated on first use: one process writes it, the others wait and read.
        if rt.is_main:
            builtin_data_dir()
        rt.barrier()
        data_dir = builtin_data_dir()
    data = load_h36m(data_dir, keypoints=cfg["data"]["keypoints"])
    train = data.sequences(TRAIN_SUBJECTS)
    test = crop_sequences(data.sequences(TEST_SUBJECTS), cfg["eval"]["max_frames"])
    val = validation_subset(test, cfg["val"]["max_frames"])
    clips = pretrain_clips(cfg, train, log=rt.is_main) if need_pretrain else []
    frames = np.concatenate([s.pose_3d for s in train])
    return RunData(train=train, test=test, val=val, pretrain_clips=clips, mean_pose=frames.mean(axis=0))


# ---------------------------------------------------------------------------------------------------------------
# One training stage
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str  # "pretrain" | "finetune"
    cfg: dict[str, Any]  # the resolved per-stage section
    dataset: Dataset
    make_batch: MakeBatch
    loss_fn: LossFn
    collate: Callable | None = None


def make_stages(cfg: dict[str, Any], data: RunData, names: list[str]) -> list[Stage]:
    from fastmixste.corruption import CorruptionConfig, corrupted_batch
    from fastmixste.data.windows import TrainWindows, collate_windows
    from fastmixste.losses import finetune_loss, pretrain_loss

    num_frame = cfg["model"].get("num_frame", 243)
    stages = []
    for name in names:
        s = cfg[name]
        if name == "pretrain":
            ccfg = CorruptionConfig.from_dict(s["corruption"])
            if not s["flip"]:
                ccfg = CorruptionConfig.from_dict({**ccfg.to_dict(), "flip_p": 0.0})
            ds = MotionWindows(data.pretrain_clips, num_frame, s["stride"])
            stages.append(Stage(name, s, ds, lambda world, g, c=ccfg: corrupted_batch(world, g, c), pretrain_loss))
        else:
            ds = TrainWindows(data.train, num_frame, stride=s["stride"], flip=s["flip"], seed=cfg["seed"])
            stages.append(Stage(name, s, ds, lambda batch, g: (batch[0], batch[1]), finetune_loss, collate_windows))
    return stages


def build_optimizer(model: torch.nn.Module, s: dict[str, Any], steps_per_epoch: int):
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"lr": float(s["lr"]), "betas": tuple(float(b) for b in s["betas"]),
              "weight_decay": float(s["weight_decay"])}
    opt = torch.optim.AdamW(params, **kwargs) if s["optimizer"] == "adamw" else torch.optim.Adam(params, **kwargs)
    warmup, decay = int(s["warmup_steps"]), float(s["lr_decay"])

    # lr(step) = lr * warm-up ramp * decay ** epoch; a pure function of the step, so resuming reproduces it.
    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return ramp * decay ** (step // steps_per_epoch)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


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


def _validate(model, seqs: list, cfg: dict[str, Any], rt: Runtime) -> tuple[float, float]:
    from fastmixste.evaluation import evaluate

    with rt.autocast(), eval_backend(model, cfg):
        res = evaluate(model, seqs, flip=False, batch_size=cfg["val"]["batch_size"], device=rt.device,
                       progress=False)
    return res.protocol1["Avg"], res.protocol2["Avg"]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


class StageTrainer:
    """Runs one stage from a position (epoch, step in epoch, optimizer step) to its step budget."""

    def __init__(self, stage: Stage, model: torch.nn.Module, train_model: torch.nn.Module, cfg: dict[str, Any],
                 rt: Runtime, data: RunData, ckpt_dir: Path, best_name: str, history: dict[str, list[dict]],
                 out: Path) -> None:
        self.stage, self.s, self.model, self.train_model = stage, stage.cfg, model, train_model
        self.cfg, self.rt, self.data, self.ckpt_dir, self.best_name, self.out = cfg, rt, data, ckpt_dir, best_name, out
        self.history = history
        self.per_rank_bs = self.s["batch_size"] // rt.world_size
        self.steps_per_epoch = EpochBatchSampler.batches_per_epoch(len(stage.dataset), self.per_rank_bs,
                                                                   rt.world_size)
        total = self.s["epochs"] * self.steps_per_epoch
        self.cap = total if self.s["max_steps"] is None else min(total, int(self.s["max_steps"]))
        self.opt, self.sched = build_optimizer(model, self.s, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best = math.inf
        self.accum = self._fresh_accum()
        self.t_start = time.perf_counter()

    @staticmethod
    def _fresh_accum() -> dict[str, float]:
        return {"loss": 0.0, "batches": 0.0, "seqs": 0.0, "seconds": 0.0}

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "run_config": self.cfg,
            "stage": self.stage.name,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.global_step,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "best": self.best,
            "accum": dict(self.accum),
            "history": copy.deepcopy(self.history),
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.epoch, self.step_in_epoch, self.global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]
        self.best = float(ckpt["best"])
        self.accum = {k: float(v) for k, v in ckpt["accum"].items()}

    def save_last(self) -> None:
        from fastmixste import save_checkpoint

        if self.rt.is_main:
            save_checkpoint(self.ckpt_dir / "last.pt", self.model, **self.state())

    # -- the loop ---------------------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        st, rt = self.stage, self.rt
        if hasattr(st.dataset, "set_epoch"):
            st.dataset.set_epoch(self.epoch)
        sampler = EpochBatchSampler(len(st.dataset), self.per_rank_bs, seed=self.cfg["seed"], stage=st.name,
                                    epoch=self.epoch, rank=rt.rank, world_size=rt.world_size,
                                    start=self.step_in_epoch)
        # A private generator: creating a DataLoader iterator must not draw from the global RNG.
        return DataLoader(st.dataset, batch_sampler=sampler, num_workers=self.cfg["data"]["num_workers"],
                          collate_fn=st.collate, generator=torch.Generator().manual_seed(self.cfg["seed"]),
                          pin_memory=rt.device.type == "cuda")

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.rt.distributed:
            dist.all_reduce(bad)  # every process stops together
        if bad.item() > 0:
            last = self.ckpt_dir / "last.pt"
            kept = (f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet")
            raise TrainingDiverged(
                f"non-finite loss ({loss.item()}) at {self.stage.name} step {self.global_step + 1} "
                f"(epoch {self.epoch + 1}); stopping. Nothing was written for this step; {kept}."
            )

    def _step(self, batch: Any) -> tuple[float, dict[str, float], int]:
        st, rt, seed = self.stage, self.rt, self.cfg["seed"]
        seed_step(seed, st.name, self.global_step, rt.rank)
        x, y = st.make_batch(batch, step_generator(seed, st.name, self.global_step, rt.rank))
        x = x.to(rt.device, torch.float32, non_blocking=True)
        y = y.to(rt.device, torch.float32, non_blocking=True)
        with rt.autocast():
            pred = self.train_model(x)
        loss, parts = st.loss_fn(pred.float(), y)
        if self.cfg["debug"]["nan_step"] is not None and self.global_step + 1 == int(self.cfg["debug"]["nan_step"]):
            loss = loss * float("nan")  # test hook: a diverging step
        self._check_finite(loss)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.s["grad_clip"]:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.s["grad_clip"]))
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return loss.item(), {k: v.item() for k, v in parts.items()}, x.shape[0]

    def _row(self, parts_sum: dict[str, float], val: tuple[float, float] | None, lr: float) -> dict[str, Any]:
        a = self.accum
        n = max(a["batches"], 1.0)
        loss = a["loss"]
        if self.rt.distributed:  # mean over processes
            t = torch.tensor([loss, *parts_sum.values()], dtype=torch.float64, device=self.rt.device
                             if self.rt.device.type == "cuda" else "cpu")
            dist.all_reduce(t)
            t /= self.rt.world_size
            loss, parts_sum = float(t[0]), dict(zip(parts_sum, t[1:].tolist()))
        complete = self.step_in_epoch >= self.steps_per_epoch
        epoch = self.epoch + (1.0 if complete else self.step_in_epoch / self.steps_per_epoch)
        row = {
            "stage": self.stage.name,
            "epoch": int(epoch) if complete else round(epoch, 4),
            "step": self.global_step,
            "train_loss": loss / n,
            **{f"loss_{k}": v / n for k, v in parts_sum.items()},
            "val_mpjpe": None if val is None else val[0],
            "val_p_mpjpe": None if val is None else val[1],
            "lr": lr,
            "seq_per_s": a["seqs"] * self.rt.world_size / a["seconds"] if a["seconds"] > 0 else None,
            "epoch_time_s": a["seconds"],
            "elapsed_s": time.perf_counter() - self.t_start,
        }
        return row

    def run(self) -> None:
        st, rt, s = self.stage, self.rt, self.s
        rows = self.history.setdefault(st.name, [])
        if self.global_step >= self.cap:
            return
        if rt.is_main:
            print(f"[{st.name}] {len(st.dataset)} clips of {self.cfg['model'].get('num_frame')} frames, "
                  f"{self.steps_per_epoch} steps/epoch x {s['epochs']} epochs"
                  + (f", capped at {self.cap} steps" if self.cap < s["epochs"] * self.steps_per_epoch else "")
                  + f", batch {s['batch_size']}" + (f" ({rt.world_size} processes)" if rt.distributed else "")
                  + (f", resuming at step {self.global_step}" if self.global_step else ""), flush=True)
        # Loss-term sums of the current epoch live in accum as part_<name> so a mid-epoch resume keeps them.
        parts_sum = {k[len("part_"):]: v for k, v in self.accum.items() if k.startswith("part_")}
        self.train_model.train()
        while self.global_step < self.cap:
            bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, disable=not (rt.is_main and
                       self.cfg["progress"]), desc=f"{st.name} {self.epoch + 1}/{s['epochs']}", unit="step",
                       leave=False, dynamic_ncols=True)
            for batch in self._loader():
                t0 = time.perf_counter()
                loss, parts, n = self._step(batch)
                if rt.device.type == "cuda":
                    torch.cuda.synchronize(rt.device)
                dt = time.perf_counter() - t0
                self.global_step += 1
                self.step_in_epoch += 1
                a = self.accum
                a["loss"] += loss
                a["batches"] += 1
                a["seqs"] += n
                a["seconds"] += dt
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v
                    a[f"part_{k}"] = parts_sum[k]
                lr = self.sched.get_last_lr()[0]
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                                seq_s=f"{a['seqs'] * rt.world_size / max(a['seconds'], 1e-9):.0f}")
                if self.global_step >= self.cap:
                    break
                if s["checkpoint_every"] and self.global_step % int(s["checkpoint_every"]) == 0 \
                        and self.step_in_epoch < self.steps_per_epoch:
                    self.save_last()
            bar.close()
            complete = self.step_in_epoch >= self.steps_per_epoch
            done = self.global_step >= self.cap
            lr = self.sched.get_last_lr()[0]
            val = None
            if done or (complete and (self.epoch + 1) % int(s["val_every"]) == 0):
                if rt.is_main:
                    val = _validate(self.model, self.data.val, self.cfg, rt)
                rt.barrier()
            row = self._row(parts_sum, val, lr)
            rows.append(row)
            improved = val is not None and val[0] < self.best
            if improved:
                self.best = val[0]
            if complete:
                self.epoch += 1
                self.step_in_epoch = 0
                self.accum = self._fresh_accum()
                parts_sum = {}
            if rt.is_main:
                from fastmixste import save_checkpoint

                self.save_last()
                if improved:
                    save_checkpoint(self.ckpt_dir / self.best_name, self.model, stage=st.name, step=self.global_step,
                                    val_mpjpe=self.best, run_config=self.cfg)
                write_metrics(self.out / "metrics.csv", self.history)
                print(_epoch_line(row, s["epochs"], improved), flush=True)
            rt.barrier()


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    val = ""
    if row["val_mpjpe"] is not None:
        val = f" | val MPJPE {row['val_mpjpe']:.1f} mm, P-MPJPE {row['val_p_mpjpe']:.1f} mm" + (" *" if improved
                                                                                                 else "")
    sps = f" | {row['seq_per_s']:.0f} seq/s" if row["seq_per_s"] else ""
    return (f"[{row['stage']}] epoch {row['epoch']}/{epochs} | step {row['step']} | loss {row['train_loss']:.4f}"
            f"{val} | lr {row['lr']:.2e}{sps} | {row['epoch_time_s']:.1f} s")


# ---------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------
def planned_stages(cfg: dict[str, Any]) -> list[str]:
    wanted = list(STAGES) if cfg["stage"] == "all" else [cfg["stage"]]
    return [s for s in wanted if cfg[s]["epochs"] > 0]


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
        _atomic_write(out / "config.yaml", dump_yaml(cfg))
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
        _check_same_arch(model, dict(ckpt["config"]), f"--resume {resume}")
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


def final_evaluation(cfg: dict[str, Any], rt: Runtime, model, data: RunData, history: dict[str, list[dict]],
                     ckpt_dir: Path, out: Path, names: list[str], train_seconds: float, t_run: float
                     ) -> dict[str, Any]:
    """Evaluate the best weights on the full test set (flip TTA), write results.{md,json}, metrics and curves."""
    from fastmixste import read_checkpoint
    from fastmixste.evaluation import evaluate, evaluate_constant_pose, format_markdown, results_to_dict

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
        "baseline_p_mpjpe": float(base.protocol2["Avg"]),
        "weights": weights,
        "stages": {n: {"steps": history[n][-1]["step"] if history.get(n) else 0,
                       "epochs": history[n][-1]["epoch"] if history.get(n) else 0} for n in names},
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - t_run,
    })
    results["heldout"], heldout_md = heldout_report(model, data.mean_pose, cfg, rt.device, rt.autocast)
    _atomic_write(out / "results.json", _json(results))
    md = format_markdown(res, title=f"Human3.6M test ({len(data.test)} sequences), {weights}")
    md += (f"- Mean training pose baseline: MPJPE {base.protocol1['Avg']:.1f} mm, P-MPJPE "
           f"{base.protocol2['Avg']:.1f} mm\n- Stages: {', '.join(names) or 'none (evaluation only)'}; training "
           f"{train_seconds:.0f} s\n")
    md += "\n" + heldout_md if heldout_md else ""
    _atomic_write(out / "results.md", md)
    write_metrics(out / "metrics.csv", history)
    write_curves(out / "curves.png", history)
    print(f"MPJPE (Protocol #1) {res.protocol1['Avg']:.1f} mm | P-MPJPE (Protocol #2) {res.protocol2['Avg']:.1f} mm"
          f" | mean-pose baseline MPJPE {base.protocol1['Avg']:.1f} mm", flush=True)
    return results


def _json(obj: Any) -> str:
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
    main_results["scratch"] = {"protocol1": scratch["protocol1"], "protocol2": scratch["protocol2"],
                               "heldout": scratch.get("heldout")}
    _atomic_write(out / "results.json", _json(main_results))
    with open(out / "results.md", "a", encoding="utf-8") as f:
        f.write(f"- Fine-tuned from scratch with the same budget: MPJPE {scratch['protocol1']['Avg']:.1f} mm, "
                f"P-MPJPE {scratch['protocol2']['Avg']:.1f} mm (curves_compare.png)\n")
        if scratch.get("heldout"):
            f.write(f"- Held-out motion, fine-tuned from scratch: MPJPE {scratch['heldout']['protocol1']['Avg']:.1f} "
                    f"mm, speed ratio {scratch['heldout']['speed_ratio']:.2f}\n")
    print(f"from scratch: MPJPE {scratch['protocol1']['Avg']:.1f} mm vs {main_results['protocol1']['Avg']:.1f} mm "
          f"with pretraining", flush=True)
    if scratch.get("heldout") and main_results.get("heldout"):
        print(f"held-out motion from scratch: MPJPE {scratch['heldout']['protocol1']['Avg']:.1f} mm vs "
              f"{main_results['heldout']['protocol1']['Avg']:.1f} mm with pretraining", flush=True)


def read_history(path: Path) -> dict[str, list[dict]]:
    """metrics.csv -> {stage: rows} with numbers parsed (empty cells -> None)."""
    out: dict[str, list[dict]] = {}
    if not path.is_file():
        return out
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed = {k: (None if v == "" else (v if k == "stage" else float(v))) for k, v in row.items()}
            out.setdefault(row["stage"], []).append(parsed)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = resolve_config(args)
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
