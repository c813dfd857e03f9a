"""One training stage from a position (epoch, step in epoch, optimizer step) to its step budget: the loop,
per-epoch validation, checkpoints (last, best) and the per-epoch history rows."""

from __future__ import annotations

import copy
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from fastmixste.io.cli import RunFailed, defer_interrupts
from train._data import EpochBatchSampler, seed_step, step_generator
from train.inputs import RunData
from train.outputs import write_metrics
from train.runtime import Runtime, eval_backend, rng_state, set_rng_state
from train.stages import Stage, build_optimizer


class TrainingDiverged(RunFailed):
    """A non-finite loss: the run stops, the last checkpoint on disk is the last good one."""


def _validate(model, seqs: list, cfg: dict[str, Any], rt: Runtime) -> tuple[float, float]:
    from fastmixste.eval.evaluation import evaluate

    with rt.autocast(), eval_backend(model, cfg):
        res = evaluate(model, seqs, flip=False, batch_size=cfg["val"]["batch_size"], device=rt.device,
                       progress=False)
    return res.protocol1["Avg"], res.protocol2["Avg"]


class StageTrainer:
    """Runs one stage from a position (epoch, step in epoch, optimizer step) to its step budget."""

    def __init__(self, stage: Stage, model: torch.nn.Module, train_model: torch.nn.Module, cfg: dict[str, Any],
                 rt: Runtime, data: RunData, ckpt_dir: Path, best_name: str, history: dict[str, list[dict]],
                 out: Path) -> None:
        self.stage, self.s, self.model, self.train_model = stage, stage.settings, model, train_model
        self.cfg, self.rt, self.data, self.ckpt_dir, self.best_name, self.out = cfg, rt, data, ckpt_dir, best_name, out
        self.history = history
        self.per_rank_bs = self.s.batch_size // rt.world_size
        self.steps_per_epoch = EpochBatchSampler.batches_per_epoch(len(stage.dataset), self.per_rank_bs,
                                                                   rt.world_size)
        total = self.s.epochs * self.steps_per_epoch
        self.cap = total if self.s.max_steps is None else min(total, self.s.max_steps)
        self.opt, self.sched = build_optimizer(model, self.s, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best = math.inf
        self.accum = self._fresh_accum()
        self.last_lr = self.opt.param_groups[0]["lr"]  # the rate the latest step ran at (metrics.csv's lr)
        # True between the step that ends an epoch (or the stage) and the end of that epoch's bookkeeping
        # (validation, history row, checkpoints): a checkpoint saved on Ctrl-C in between resumes there.
        self.epoch_end_pending = False
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
            "last_lr": self.last_lr,
            "epoch_end_pending": self.epoch_end_pending,
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
        self.last_lr = float(ckpt.get("last_lr", self.opt.param_groups[0]["lr"]))
        self.epoch_end_pending = bool(ckpt.get("epoch_end_pending", False))

    def save_last(self) -> None:
        from fastmixste import save_checkpoint

        if self.rt.is_main:
            save_checkpoint(self.ckpt_dir / "last.pt", self.model, **self.state())

    def save_on_interrupt(self) -> str | None:
        """Ctrl-C hook: write last.pt with the state after the last complete step (steps and epoch bookkeeping
        run with Ctrl-C deferred, so the state is never half-updated); returns the note for the user."""
        if not self.rt.is_main:
            return None
        self.save_last()
        where = f"{self.stage.name} step {self.global_step}"
        if self.epoch_end_pending:
            where += ", before the epoch's validation"
        return f"saved a resumable checkpoint to {self.ckpt_dir / 'last.pt'} ({where}); continue with --resume"

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

    def _step(self, batch: Any) -> tuple[float, dict[str, float], int, float]:
        """One optimizer step: (loss, loss terms, sequences on this process, the learning rate it ran at)."""
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
        if self.s.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.grad_clip)
        lr = self.opt.param_groups[0]["lr"]  # what this step uses; sched.step() below sets the next step's
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return loss.item(), {k: v.item() for k, v in parts.items()}, x.shape[0], lr

    def _row(self, val: tuple[float, float] | None) -> dict[str, Any]:
        """The history row (metrics.csv line) of the epoch so far; lr is the rate its last step ran at."""
        a = self.accum
        n = max(a["batches"], 1.0)
        loss = a["loss"]
        # Loss-term sums of the current epoch live in accum as part_<name>, so a mid-epoch resume keeps them.
        parts_sum = {k[len("part_"):]: v for k, v in a.items() if k.startswith("part_")}
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
            "lr": self.last_lr,
            "seq_per_s": a["seqs"] * self.rt.world_size / a["seconds"] if a["seconds"] > 0 else None,
            "epoch_time_s": a["seconds"],
            "elapsed_s": time.perf_counter() - self.t_start,
        }
        return row

    def _train_step(self, batch: Any, bar: tqdm) -> None:
        """One optimizer step and the counters that record it (runs with Ctrl-C deferred)."""
        t0 = time.perf_counter()
        loss, parts, n, self.last_lr = self._step(batch)
        if self.rt.device.type == "cuda":
            torch.cuda.synchronize(self.rt.device)
        dt = time.perf_counter() - t0
        if self.cfg["debug"].get("interrupt_at") == f"{self.stage.name}:{self.global_step + 1}":
            signal.raise_signal(signal.SIGINT)  # test hook: Ctrl-C in the middle of this step
        self.global_step += 1
        self.step_in_epoch += 1
        a = self.accum
        a["loss"] += loss
        a["batches"] += 1
        a["seqs"] += n
        a["seconds"] += dt
        for k, v in parts.items():
            a[f"part_{k}"] = a.get(f"part_{k}", 0.0) + v
        self.epoch_end_pending = self.global_step >= self.cap or self.step_in_epoch >= self.steps_per_epoch
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.last_lr:.2e}",
                        seq_s=f"{a['seqs'] * self.rt.world_size / max(a['seconds'], 1e-9):.0f}")

    def _end_epoch(self, rows: list[dict]) -> None:
        """Validate (when due), then record the epoch: history row, best score, checkpoints, metrics.csv."""
        rt, s = self.rt, self.s
        complete = self.step_in_epoch >= self.steps_per_epoch
        done = self.global_step >= self.cap
        val = None
        if done or (complete and (self.epoch + 1) % s.val_every == 0):
            if rt.is_main:
                val = _validate(self.model, self.data.val, self.cfg, rt)
            rt.barrier()
        with defer_interrupts():
            row = self._row(val)
            rows.append(row)
            improved = val is not None and val[0] < self.best
            if improved:
                self.best = val[0]
            if complete:
                self.epoch += 1
                self.step_in_epoch = 0
                self.accum = self._fresh_accum()
            self.epoch_end_pending = False
            if rt.is_main:
                from fastmixste import save_checkpoint

                self.save_last()
                if improved:
                    save_checkpoint(self.ckpt_dir / self.best_name, self.model, stage=self.stage.name,
                                    step=self.global_step, val_mpjpe=self.best, run_config=self.cfg)
                write_metrics(self.out / "metrics.csv", self.history)
                print(_epoch_line(row, s.epochs, improved), flush=True)
            rt.barrier()

    def run(self) -> None:
        st, rt, s = self.stage, self.rt, self.s
        rows = self.history.setdefault(st.name, [])
        if self.global_step >= self.cap and not self.epoch_end_pending:
            return
        if rt.is_main:
            print(f"[{st.name}] {len(st.dataset)} clips of {self.cfg['model'].get('num_frame')} frames, "
                  f"{self.steps_per_epoch} steps/epoch x {s.epochs} epochs"
                  + (f", capped at {self.cap} steps" if self.cap < s.epochs * self.steps_per_epoch else "")
                  + f", batch {s.batch_size}" + (f" ({rt.world_size} processes)" if rt.distributed else "")
                  + (f", resuming at step {self.global_step}" if self.global_step else ""), flush=True)
        self.train_model.train()
        while self.global_step < self.cap or self.epoch_end_pending:
            if not self.epoch_end_pending:
                bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, disable=not (rt.is_main and
                           self.cfg["progress"]), desc=f"{st.name} {self.epoch + 1}/{s.epochs}", unit="step",
                           leave=False, dynamic_ncols=True)
                for batch in self._loader():
                    with defer_interrupts():
                        self._train_step(batch, bar)
                    if self.epoch_end_pending:
                        break
                    if s.checkpoint_every and self.global_step % s.checkpoint_every == 0:
                        self.save_last()
                bar.close()
                self.epoch_end_pending = True  # also when the loader ran out early: the epoch ends here
            self._end_epoch(rows)


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    val = ""
    if row["val_mpjpe"] is not None:
        val = f" | val MPJPE {row['val_mpjpe']:.1f} mm, P-MPJPE {row['val_p_mpjpe']:.1f} mm" + (" *" if improved
                                                                                                 else "")
    sps = f" | {row['seq_per_s']:.0f} seq/s" if row["seq_per_s"] else ""
    return (f"[{row['stage']}] epoch {row['epoch']}/{epochs} | step {row['step']} | loss {row['train_loss']:.4f}"
            f"{val} | lr {row['lr']:.2e}{sps} | {row['epoch_time_s']:.1f} s")
