"""A run never loses or misstates work: real train.run processes killed (SIGKILL) or stopped with Ctrl-C (SIGINT)
mid-training resume to bitwise the same weights as an uninterrupted run; a second run into the same --out is
refused while the first holds the lock; stale locks are taken over; leftovers of interrupted writes are removed;
--resume keeps the run's own settings and config.yaml; an existing run folder is replaced only with --overwrite."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastmixste import read_checkpoint
from tests.train.conftest import tiny_args
from train.run import main
from train.rundir import LOCK_NAME, STALE_S, RunLock, leftover_temp_files, set_aside_folders

REPO = Path(__file__).resolve().parents[2]
# Fine-tuning only, one window per training sequence, batches of 8: ~75 short steps per epoch, last.pt every 5.
RUN = ["--stage", "finetune", "--epochs", "2", "--batch-size", "8", "--set", "finetune.stride=100000",
       "--set", "finetune.checkpoint_every=5"]  # fmt: skip


def _weights_equal(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not diff, f"weights differ (not bitwise equal) in {diff[:5]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, builtin_dir) -> Path:
    """The uninterrupted run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(tiny_args(out, *RUN)) == 0
    return out


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "FASTMIXSTE_DEBUG": "0"}
    return subprocess.Popen([sys.executable, "-m", "train.run", *tiny_args(out, *RUN)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {path} appeared:\n"
                                 f"{proc.stderr.read()[-3000:]}")  # fmt: skip
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


def _signal_after_first_checkpoint(out: Path, sig: int) -> tuple[subprocess.Popen, str]:
    """Start a run into ``out``, send ``sig`` once last.pt exists; the ended process and its stderr."""
    proc = _start(out)
    try:
        _wait_for(out / "checkpoints" / "last.pt", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, err


@pytest.mark.slow
def test_sigkill_then_resume_matches_and_a_second_run_is_refused_meanwhile(tmp_path, reference, capsys) -> None:
    out = tmp_path / "run"
    first = _start(out)
    try:
        _wait_for(out / LOCK_NAME, first)
        # A second run into the same folder while the first holds the lock: refused, naming the holder.
        assert main(tiny_args(out, *RUN)) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is in use by another run (pid {first.pid} on {socket.gethostname()}" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        _wait_for(out / "checkpoints" / "last.pt", first)
        time.sleep(random.uniform(0.0, 0.3))  # a kill at some point of the steps that follow
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    killed_at = read_checkpoint(out / "checkpoints" / "last.pt")["step"]
    total = read_checkpoint(reference / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < total, (killed_at, total)
    assert (out / LOCK_NAME).is_file()  # the killed run could not remove its lock

    # --resume alone: the dead process's lock is taken over (saying so); the run ends as if never interrupted.
    assert main(["--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert f"took over the stale lock {out / LOCK_NAME} (process {first.pid} on this host is not running)" \
        in captured.err
    assert "continuing the run stored in" in captured.out
    _weights_equal(reference / "checkpoints" / "last.pt", out / "checkpoints" / "last.pt")
    _weights_equal(reference / "checkpoints" / "best.pt", out / "checkpoints" / "best.pt")
    def settings(folder: Path) -> list[str]:  # config.yaml without the run id (each run has its own)
        return [ln for ln in (folder / "config.yaml").read_text().replace(str(folder), "OUT").splitlines()
                if not ln.startswith("run_id:")]

    assert settings(out) == settings(reference)
    assert not (out / LOCK_NAME).exists() and not leftover_temp_files(out)


@pytest.mark.slow
def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_130(tmp_path, reference, capsys) -> None:
    out = tmp_path / "run"
    proc, err = _signal_after_first_checkpoint(out, signal.SIGINT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted (Ctrl-C); saved a resumable checkpoint to {out / 'checkpoints' / 'last.pt'} "
                           f"(finetune step {ckpt['step']}") and line.endswith("continue with --resume"), err
    assert 0 < ckpt["step"] < read_checkpoint(reference / "checkpoints" / "last.pt")["step"]
    assert not (out / LOCK_NAME).exists()  # a clean exit releases the lock

    assert main(["--out", str(out), "--resume", "--no-progress"]) == 0
    _weights_equal(reference / "checkpoints" / "last.pt", out / "checkpoints" / "last.pt")
    capsys.readouterr()


@pytest.mark.slow
def test_sigterm_saves_a_resumable_checkpoint_releases_the_lock_and_exits_143(tmp_path, builtin_dir) -> None:
    """SIGTERM (timeout, SLURM, Kubernetes) is handled like Ctrl-C: last.pt saved, run.lock removed, exit 143."""
    out = tmp_path / "run"
    proc, err = _signal_after_first_checkpoint(out, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"terminated (SIGTERM); saved a resumable checkpoint to {out / 'checkpoints' / 'last.pt'}")
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] > 0 and ckpt["run_config"]["run_id"].startswith("run-")
    assert not (out / LOCK_NAME).exists()


def test_resume_keeps_the_runs_settings_and_config_yaml(tmp_path, builtin_dir, capsys) -> None:
    """A capped 2-epoch plan interrupted mid-way resumes capped (not as the default config's epochs)."""
    out = tmp_path / "capped"
    args = [*RUN[:-2], "--max-steps", "7"]
    assert main(tiny_args(out, *args, "--set", "debug.interrupt_at=finetune:3")) == 130
    assert "saved a resumable checkpoint" in capsys.readouterr().err
    config = (out / "config.yaml").read_bytes()
    assert read_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3
    # Nothing but --resume: epochs, cap, model, batch and seed come from the run itself.
    assert main(["--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "capped at 7 steps" in printed and "resuming at step 3" in printed
    last = read_checkpoint(out / "checkpoints" / "last.pt")
    assert last["step"] == 7 and last["config"]["num_frame"] == 9  # the tiny model, not the default config's
    assert (out / "config.yaml").read_bytes() == config


@pytest.mark.slow
def test_overwrite_replaces_the_previous_run(tmp_path, builtin_dir, capsys) -> None:
    out = tmp_path / "run"
    args = ["--stage", "finetune", "--epochs", "1", "--max-steps", "2"]
    assert main(tiny_args(out, *args)) == 0
    (out / "notes.txt").write_text("mine")
    old_best = read_checkpoint(out / "checkpoints" / "best.pt")["val_mpjpe"]
    assert main(tiny_args(out, *args, "--seed", "1")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert read_checkpoint(out / "checkpoints" / "best.pt")["val_mpjpe"] == old_best  # untouched

    # --overwrite: the old outputs go (a stale best.pt must not stand for the new run), other files stay, a user's
    # own file among the checkpoints included; the old ones are set aside until the new run's first checkpoint.
    (out / "checkpoints" / "pretrain_best.pt").write_bytes(b"old")
    (out / "checkpoints" / "my_weights.pt").write_bytes(b"mine")
    assert main(tiny_args(out, *args, "--seed", "1", "--overwrite")) == 0
    assert "--overwrite: set the previous run's 8 output file(s) aside" in capsys.readouterr().out
    assert not (out / "checkpoints" / "pretrain_best.pt").exists() and not set_aside_folders(out)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "checkpoints" / "my_weights.pt").read_bytes() == b"mine"
    assert read_checkpoint(out / "checkpoints" / "last.pt")["run_config"]["seed"] == 1
    assert "seed: 1" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_finetune_continues_a_pretraining_folder(tmp_path, builtin_dir) -> None:
    """--stage pretrain then --stage finetune into the same --out is the documented two-step flow, not a clash."""
    out = tmp_path / "two_step"
    assert main(tiny_args(out, "--stage", "pretrain", "--epochs", "1", "--max-steps", "1")) == 0
    assert main(tiny_args(out, "--stage", "finetune", "--epochs", "1", "--max-steps", "1")) == 0
    last = read_checkpoint(out / "checkpoints" / "last.pt")
    assert last["stage"] == "finetune" and [r["stage"] for r in last["history"]["pretrain"]] == ["pretrain"]
    # A third run would replace the fine-tuned run: refused.
    assert main(tiny_args(out, "--stage", "finetune", "--epochs", "1", "--max-steps", "1")) == 2


@pytest.mark.slow
def test_leftover_temp_files_are_removed_at_the_next_start(tmp_path, builtin_dir, capsys) -> None:
    out = tmp_path / "run"
    args = ["--stage", "finetune", "--epochs", "1", "--max-steps", "3", "--set", "debug.interrupt_at=finetune:2"]
    assert main(tiny_args(out, *args)) == 130
    # What a write killed between creating its temporary file and renaming it leaves behind.
    leftovers = [out / "checkpoints" / ".last.pt.k2j4x9.tmp", out / ".metrics.csv.a8b0c1.tmp"]
    for p in leftovers:
        p.write_bytes(b"partial")
    (out / "keep.tmp").write_text("a user's file, not one of ours")
    assert leftover_temp_files(out) == sorted(leftovers, key=lambda p: (p.parent != out, p))
    assert main(["--out", str(out), "--resume"]) == 0
    assert "removed 2 unfinished temporary file(s) of an interrupted write" in capsys.readouterr().err
    assert not any(p.exists() for p in leftovers) and (out / "keep.tmp").exists()


def test_stale_and_live_locks(tmp_path, monkeypatch) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    lock_file = out / LOCK_NAME

    def write_lock(pid: int, host: str, age_s: float = 0.0) -> None:
        lock_file.write_text(json.dumps({"pid": pid, "host": host, "started": "2026-01-01T00:00:00+00:00"}))
        t = time.time() - age_s
        os.utime(lock_file, (t, t))

    # Same host, live process (this one): held.
    write_lock(os.getpid(), socket.gethostname())
    with pytest.raises(ValueError, match=f"is in use by another run \\(pid {os.getpid()}"):
        RunLock(out).acquire()
    # Same host, a process that has exited: stale, taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(dead.pid, socket.gethostname())
    lock = RunLock(out)
    assert f"process {dead.pid} on this host is not running" in lock.acquire()
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_file.exists()
    # Another host (a shared filesystem): its pid means nothing here; held while refreshed, stale when not.
    write_lock(12345, "some-other-node", age_s=60)
    with pytest.raises(ValueError, match="pid 12345 on some-other-node"):
        RunLock(out).acquire()
    write_lock(12345, "some-other-node", age_s=STALE_S + 60)
    lock = RunLock(out)
    assert "on host some-other-node has given no sign of life" in lock.acquire()
    # The holder refreshes the lock while it runs.
    monkeypatch.setattr("train.rundir.HEARTBEAT_S", 0.05)
    lock.release()
    lock = RunLock(out)
    lock.acquire()
    t = time.time() - 1000
    os.utime(lock_file, (t, t))
    time.sleep(0.5)
    assert time.time() - lock_file.stat().st_mtime < 100
    lock.release()
    # An unreadable lock file (e.g. empty, from a crash while writing it) is stale.
    lock_file.write_text("")
    lock = RunLock(out)
    assert "unreadable" in lock.acquire()
    lock.release()


@pytest.mark.slow
def test_ctrl_c_during_validation_resumes_with_that_epochs_validation(tmp_path, builtin_dir, monkeypatch,
                                                                      capsys) -> None:
    """Ctrl-C while an epoch is being validated: last.pt is saved before the epoch's bookkeeping, and the resumed
    run validates it, records its row and ends like an uninterrupted run (no lost row, no stale best)."""
    import train.trainer as trainer_module

    args = ["--stage", "finetune", "--epochs", "2", "--batch-size", "64", "--set", "finetune.stride=100000"]
    ref = tmp_path / "ref"
    assert main(tiny_args(ref, *args)) == 0
    validate = trainer_module._validate
    calls = []

    def interrupted_validate(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while the first epoch is being validated
        return validate(*a, **k)

    out = tmp_path / "run"
    monkeypatch.setattr(trainer_module, "_validate", interrupted_validate)
    assert main(tiny_args(out, *args)) == 130
    assert "before the epoch's validation" in capsys.readouterr().err
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["epoch_end_pending"] and ckpt["history"].get("finetune", []) == []
    monkeypatch.setattr(trainer_module, "_validate", validate)
    assert main(["--out", str(out), "--resume"]) == 0
    _weights_equal(ref / "checkpoints" / "last.pt", out / "checkpoints" / "last.pt")
    _weights_equal(ref / "checkpoints" / "best.pt", out / "checkpoints" / "best.pt")
    rows = read_checkpoint(out / "checkpoints" / "last.pt")["history"]["finetune"]
    ref_rows = read_checkpoint(ref / "checkpoints" / "last.pt")["history"]["finetune"]
    keys = ("epoch", "step", "train_loss", "val_mpjpe", "lr")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in ref_rows]
