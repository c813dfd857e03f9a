"""Lift a 2D keypoint sequence from a real video to 3D with a MixSTE checkpoint.

    python -m train.infer --checkpoint PATH --keypoints INPUT --layout {h36m,coco,openpose} --out OUT.npz
                          [--width W --height H] [--render OUT.{png,gif,mp4}]

INPUT is an .npy/.npz array (T, J, 2|3) or (T, P, J, 2|3), a COCO-style keypoint JSON, or a folder of OpenPose
JSON files (see ``fastmixste.keypoints``). The keypoints are converted to the 17 Human3.6M joints, low-confidence
or missing joints are filled by temporal interpolation, one person is picked when several are present, the
sequence is normalised as in training and lifted in windows of the model's num_frame frames (any length), with
flip test-time augmentation unless ``--no-flip``. OUT.npz holds ``pose_3d`` (T, 17, 3) root-relative camera-frame
coordinates in metres, the 2D input actually used and the metadata (JSON string under ``meta``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from fastmixste import BACKENDS, BackendUnavailableError, CheckpointError, load_checkpoint
from fastmixste.evaluation import predict_sequences
from fastmixste.keypoints import LAYOUTS, KeypointError, load_keypoints


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="fastmixste checkpoint or upstream MixSTE .bin")
    p.add_argument("--keypoints", required=True, help=".npy/.npz array, COCO .json, or a folder of OpenPose JSON")
    p.add_argument("--layout", required=True, choices=LAYOUTS,
                   help="joint order of the input: h36m (17), coco (COCO-17) or openpose (BODY_25)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--width", type=float, default=None, help="image width in pixels (overrides the file)")
    p.add_argument("--height", type=float, default=None, help="image height in pixels (overrides the file)")
    p.add_argument("--person", type=int, default=None,
                   help="identity to lift when the input has several people with ids (default: most prominent)")
    p.add_argument("--min-confidence", type=float, default=0.2,
                   help="joints below this confidence count as missing and are interpolated")
    p.add_argument("--no-flip", action="store_true", help="disable flip test-time augmentation")
    p.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS, help="attention backend")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--num-heads", type=int, default=None, help="heads of an upstream checkpoint (default 8)")
    p.add_argument("--render", default=None, help="picture of 2D input and 3D output: .png, .gif or .mp4")
    p.add_argument("--frame", type=int, default=None, help="frame drawn in a .png render (default: middle)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of a .gif/.mp4 render")
    p.add_argument("--max-frames", type=int, default=300, help="at most this many frames in a .gif/.mp4 render")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Do the work of the command; returns the metadata written to the output."""
    out = Path(args.out)
    if out.suffix != ".npz":
        raise KeypointError(f"--out must end in .npz, got {out.name!r}")
    if args.render is not None and Path(args.render).suffix.lower() not in (".png", ".gif", ".mp4"):
        raise KeypointError(f"--render must end in .png, .gif or .mp4, got {Path(args.render).name!r}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_checkpoint(args.checkpoint, attn_backend=args.backend, map_location=device,
                            num_heads=args.num_heads)
    cfg = model.config
    if cfg.num_joints != 17:
        raise KeypointError(f"the checkpoint has num_joints={cfg.num_joints}; inputs are converted to the 17 "
                            f"Human3.6M joints, so only 17-joint models can lift them")
    if cfg.in_chans not in (2, 3):
        raise KeypointError(f"the checkpoint has in_chans={cfg.in_chans}; expected 2 (x, y) or 3 (x, y, confidence)")

    kps = load_keypoints(args.keypoints, args.layout, width=args.width, height=args.height, person=args.person,
                         min_confidence=args.min_confidence)
    x = kps.normalized()  # (T, 17, 2)
    if cfg.in_chans == 3:
        if not kps.meta["has_confidence"]:
            raise KeypointError(f"the checkpoint has in_chans=3 (x, y, confidence) but {args.keypoints} has no "
                                f"confidence channel; give (T, J, 3) keypoints")
        x = np.concatenate([x, kps.confidence[..., None]], axis=-1)
    preds, seconds = predict_sequences(model, [x], flip=not args.no_flip, batch_size=args.batch_size,
                                       device=device, progress=False)
    pose_3d = preds[0]
    pose_3d[:, 0] = 0.0  # root-relative, root at the origin (as in training)

    meta = dict(kps.meta)
    meta.update({
        "checkpoint": str(args.checkpoint),
        "num_frame": cfg.num_frame,
        "in_chans": cfg.in_chans,
        "flip": not args.no_flip,
        "backend": model.resolved_backend(torch.zeros(1, cfg.num_frame, 17, cfg.in_chans, device=device)),
        "device": str(device),
        "model_seconds": seconds,
        "units": "metres, camera axes (x right, y down, z forward), root-relative, root = 0",
        "joint_order": "Human3.6M 17 (fastmixste.skeleton.H36M_JOINT_NAMES)",
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, pose_3d=pose_3d.astype(np.float32), pose_2d=kps.pose, pose_2d_normalized=x.astype(np.float32),
             confidence=kps.confidence, filled=kps.filled, meta=np.array(json.dumps(meta)))
    if args.render is not None:
        from fastmixste.plots import render_pose

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            written = render_pose(kps.pose, pose_3d, args.render, width=kps.width, height=kps.height,
                                  frame=args.frame, fps=args.fps, max_frames=args.max_frames,
                                  title=Path(args.keypoints).name)
        for w in caught:  # e.g. no MP4 encoder: say so plainly, the GIF was written instead
            print(f"note: {w.message}", file=sys.stderr)
        meta["render"] = str(written)
    return meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        meta = run(args)
    except (KeypointError, CheckpointError, BackendUnavailableError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{meta['input']}: {meta['num_frames']} frames ({meta['layout']}, {meta['width']:.0f}x"
          f"{meta['height']:.0f} px); {meta['person']}")
    print(f"filled {100 * meta['filled_fraction']:.1f}% of joint positions by interpolation"
          + "".join(f"; {n}" for n in meta["notes"]))
    print(f"lifted with {meta['backend']} on {meta['device']} in {meta['model_seconds']:.2f} s "
          f"(windows of {meta['num_frame']} frames, flip {'on' if meta['flip'] else 'off'}) -> {args.out}")
    if "render" in meta:
        print(f"render -> {meta['render']}")
    return 0


if __name__ == "__main__":
    from fastmixste.cli import run_cli  # the error boundary: exit 2 bad input, 130 Ctrl-C, tracebacks with --debug

    sys.exit(run_cli(main))
