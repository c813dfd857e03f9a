"""Evaluate a MixSTE checkpoint (ours or upstream) on the Human3.6M test subjects.

    python -m train.evaluate --checkpoint PATH [--data-dir DIR] [--no-flip] [--backend NAME] [--heldout-clips N]
                             [--out DIR]

Upstream MixSTE's protocol: windows of the model's num_frame frames, flip test-time augmentation (unless
``--no-flip``), root joint zeroed, MPJPE with the root, per-action means over the 15 actions and their average.
Prints the Protocol #1 / #2 tables in the paper's layout, N-MPJPE, MPJVE and throughput; with ``--out DIR`` writes
``DIR/results.json`` (the training run's schema) and ``DIR/results.md``. Without ``--data-dir`` the built-in
generated stand-in dataset is used (numbers then say nothing about Human3.6M).

Beside the test subjects it scores the held-out motion set that ``train.run`` reports
(``fastmixste.data.motion.heldout_sequences``: procedural patterns and subjects outside the built-in fine-tuning
set, seen through S9's four cameras with the built-in CPN-like 2D error; ``--heldout-clips`` clips per pattern,
0 to skip): MPJPE / P-MPJPE per pattern, the speed ratio (predicted over true median joint speed; below 1:
over-smoothed) and the mean-training-pose baseline. The same clips as a training run's, so the numbers compare.

Flags, the checkpoint, the backend and --out are checked before the data loads. Exit codes (fastmixste.io.cli):
0 done; 2 bad input, with a one-line message on stderr (``--debug`` or FASTMIXSTE_DEBUG=1 adds the traceback);
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from fastmixste import BACKENDS, load_checkpoint
from fastmixste.eval.evaluation import (
    evaluate,
    evaluate_constant_pose,
    evaluate_heldout,
    format_heldout_markdown,
    format_markdown,
    results_to_dict,
)
from fastmixste.io.cli import UserInputError, add_debug_argument, cli_entry
from fastmixste.io.files import atomic_write, check_writable_folder
from train._data import crop_sequences


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="fastmixste checkpoint or upstream MixSTE .bin")
    p.add_argument("--data-dir", default=None,
                   help="folder with data_3d_h36m.npz and data_2d_h36m_<keypoints>.npz (default: built-in data)")
    p.add_argument("--keypoints", default="cpn_ft_h36m_dbb", help="2D detections: data_2d_h36m_<this>.npz")
    p.add_argument("--no-flip", action="store_true", help="disable flip test-time augmentation")
    p.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS, help="attention backend")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    p.add_argument("--subjects", nargs="+", default=None, help="test subjects (default: S9 S11)")
    p.add_argument("--actions", nargs="+", default=None, help="restrict to these actions (default: all)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="score only the first N frames of each sequence (quick checks; a training run's "
                        "eval.max_frames)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the mean-training-pose baseline (saves loading the training subjects)")
    p.add_argument("--heldout-clips", type=int, default=4,
                   help="clips per pattern of the held-out motion set (default 4, train.run's eval.heldout_clips; "
                        "0 skips it)")
    p.add_argument("--num-heads", type=int, default=None,
                   help="heads of an upstream MixSTE checkpoint (default 8; they are not stored in it). Our own "
                        "checkpoints store theirs: a different value is refused")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results.json / results.md in --out that train.evaluate did not write")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_argument(p)
    return p.parse_args(argv)


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserInputError(f"--device {name!r} is not a device; expected cpu or cuda (or cuda:N)") from exc
    if device.type not in ("cpu", "cuda"):
        raise UserInputError(f"--device {name!r}: expected cpu or cuda (or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available on this machine (torch.cuda.is_available() "
                             f"is False); use --device cpu")  # fmt: skip
    return device


def _written_by_evaluate(path: Path) -> bool:
    """Whether ``path`` is a results.json (or the results.md beside one) that train.evaluate wrote."""
    record = path.with_name("results.json")
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("written_by") == "train.evaluate"
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: Path, overwrite: bool = False) -> None:
    """Fail now, not after the evaluation, when --out cannot take results.json and results.md, or when they would
    replace files train.evaluate did not write (a training run's results: never, even with --overwrite)."""
    from fastmixste.io.files import check_output
    from train.rundir import run_outputs

    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; expected a folder for results.json and results.md")
    if out.is_dir() and [p for p in run_outputs(out) if p.name not in ("results.json", "results.md")]:
        raise UserInputError(f"--out {out} holds a training run (train.run's outputs): its results.json and "
                             f"results.md stay that run's; choose another --out for train.evaluate")
    for name in ("results.json", "results.md"):
        try:
            check_output(out / name, "--out", ours=_written_by_evaluate, overwrite=overwrite)
        except ValueError as exc:
            raise UserInputError(str(exc)) from None
    try:
        check_writable_folder(out)
    except OSError as exc:
        raise UserInputError(f"--out {out}: cannot write there ({exc.strerror or exc})") from exc


def check_args(args: argparse.Namespace) -> None:
    """Range checks on the flags, before anything is loaded."""
    for flag, value in (("--batch-size", args.batch_size), ("--max-frames", args.max_frames),
                        ("--num-heads", args.num_heads)):  # fmt: skip
        if value is not None and value < 1:
            raise UserInputError(f"{flag} must be >= 1, got {value}")
    if args.heldout_clips < 0:
        raise UserInputError(f"--heldout-clips must be >= 0 (0 skips the held-out set), got {args.heldout_clips}")
    if args.heldout_clips > 1000:
        raise UserInputError(f"--heldout-clips must be at most 1000 clips per pattern, got {args.heldout_clips}")
    if args.batch_size > 65_536:
        raise UserInputError(f"--batch-size must be at most 65536 windows, got {args.batch_size}")
    for flag, values in (("--subjects", args.subjects), ("--actions", args.actions)):
        repeated = sorted({v for v in values or [] if values.count(v) > 1})
        if repeated:
            raise UserInputError(f"{flag} names {', '.join(repeated)} more than once; each would be counted twice")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        raise UserInputError(f"--checkpoint {checkpoint}: no such file")
    if args.data_dir is not None and args.out is not None and Path(args.out).resolve() == Path(args.data_dir).resolve():
        raise UserInputError(f"--out {args.out} is the --data-dir: results are not written into the input data")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        what = "is a file" if Path(args.data_dir).exists() else "does not exist"
        raise UserInputError(f"--data-dir {args.data_dir} {what}; expected the folder with data_3d_h36m.npz and "
                             f"data_2d_h36m_{args.keypoints}.npz")  # fmt: skip


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Evaluate; errors become one-line messages with exit code 2 (fastmixste.io.cli), --debug shows tracebacks."""
    args = parse_args(argv)
    from fastmixste.data.h36m import TEST_SUBJECTS, TRAIN_SUBJECTS, load_h36m

    # Everything that can be checked without the data is checked before it loads and long before evaluating.
    check_args(args)
    device = _device(args.device)
    if args.out:
        _check_out(Path(args.out), args.overwrite)
    model = load_checkpoint(args.checkpoint, attn_backend=args.backend, map_location=device,
                            num_heads=args.num_heads)  # our files keep their stored head count (conflict: error)
    cfg = model.config
    if cfg.num_joints != 17 or cfg.in_chans != 2:
        raise UserInputError(f"--checkpoint {args.checkpoint}: Human3.6M evaluation feeds (T, 17, 2) keypoints; "
                             f"the checkpoint has num_joints={cfg.num_joints}, in_chans={cfg.in_chans}")
    backend = model.resolved_backend(torch.zeros(1, cfg.num_frame, 17, 2, device=device))
    with torch.no_grad():  # weights that are finite but overflow give NaN/inf for any input: say so before the data
        probe = model(torch.zeros(1, cfg.num_frame, 17, 2, device=device))
    if not torch.isfinite(probe).all():
        raise UserInputError(f"--checkpoint {args.checkpoint}: the model outputs NaN/inf even for a still pose at the "
                             f"image centre (its weights overflow); it cannot be evaluated")

    if args.data_dir is None:
        from fastmixste.data.builtin import builtin_data_dir

        data_dir = builtin_data_dir()
        print(f"note: no --data-dir given; using the built-in generated stand-in dataset at {data_dir} "
              f"(not Human3.6M)", file=sys.stderr)
    else:
        data_dir = Path(args.data_dir)
    data = load_h36m(data_dir, keypoints=args.keypoints)
    try:
        sequences = data.sequences(args.subjects or list(TEST_SUBJECTS), args.actions)
    except ValueError as exc:  # unknown subject or action: name the options
        raise UserInputError(f"--subjects/--actions: {exc}") from exc
    if not sequences:
        raise UserInputError(f"no test sequences for subjects {args.subjects or list(TEST_SUBJECTS)} "
                             f"and actions {args.actions or 'all'} in {data_dir}")

    sequences = crop_sequences(sequences, args.max_frames)

    print(f"checkpoint {args.checkpoint}: num_frame={cfg.num_frame}, depth={cfg.depth}, "
          f"embed_dim={cfg.embed_dim_ratio}, heads={cfg.num_heads}; backend {backend} on {device}; "
          f"flip TTA {'off' if args.no_flip else 'on'}; {len(sequences)} sequences", file=sys.stderr)
    try:
        result = evaluate(model, sequences, flip=not args.no_flip, batch_size=args.batch_size, device=device,
                          progress=not args.no_progress)
    except np.linalg.LinAlgError as exc:  # P-MPJPE's alignment of NaN/inf predictions ("SVD did not converge")
        raise UserInputError(f"--checkpoint {args.checkpoint}: the model's predictions are not finite (NaN/inf), so "
                             f"they cannot be scored ({exc})") from None

    baseline = mean_pose = None
    if not args.no_baseline:
        train_subjects = [s for s in TRAIN_SUBJECTS if s in data.subjects]
        train = data.sequences(train_subjects) if train_subjects else []
        if train:
            mean_pose = np.concatenate([s.pose_3d for s in train]).mean(0)
            baseline = evaluate_constant_pose(mean_pose, sequences).protocol1["Avg"]
    heldout = None
    if args.heldout_clips > 0:
        from fastmixste.data.motion import heldout_sequences
        clips = crop_sequences(heldout_sequences(clips_per_pattern=args.heldout_clips), args.max_frames)
        heldout = evaluate_heldout(model, clips, mean_pose, flip=not args.no_flip, batch_size=args.batch_size,
                                   device=device, progress=not args.no_progress)

    title = f"{Path(args.checkpoint).name} ({backend}, flip {'off' if args.no_flip else 'on'})"
    text = format_markdown(result, title=title)
    if baseline is not None:
        text += f"- Baseline (mean training pose for every frame): {baseline:.1f} mm MPJPE\n"
    if heldout is not None:
        text += "\n" + format_heldout_markdown(
            heldout, title="Held-out motion (patterns and subjects outside the built-in fine-tuning set)")
    print(text)
    if args.out:
        out = Path(args.out)
        record = {**results_to_dict(result, baseline), "written_by": "train.evaluate"}
        if heldout is not None:
            record["heldout"] = heldout
        with atomic_write(out / "results.json", "w") as f:
            f.write(json.dumps(record, indent=2) + "\n")
        with atomic_write(out / "results.md", "w") as f:
            f.write(text)
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
