"""Lift a person in a video to 3D with a MixSTE checkpoint: from the video itself, or from 2D keypoints made elsewhere.

    python -m train.infer [--checkpoint PATH] --video CLIP --out OUT.npz [--render OUT.{mp4,gif,png}]
                          [--detector {mediapipe,onnx}] [--onnx-model M.onnx --onnx-layout L] [--render-every K]
    python -m train.infer [--checkpoint PATH] --keypoints INPUT --layout {h36m,coco,openpose,halpe,blazepose}
                          --out OUT.npz [--width W --height H] [--render OUT.{png,gif,mp4}]
    (either, or --camera N:)    [--runtime {torch,onnx,pt2} [--model-file F]] [--stream [--lookahead L]]

CLIP is a video file (anything FFmpeg reads; decoded with PyAV, one frame at a time) or a folder of images. Its
frames go through an offline 2D detector (``fastmixste.video.detectors``: MediaPipe Pose from the ``video`` extra, or a
local ONNX model from the ``onnx`` extra), one person is picked and tracked, converted to the 17 Human3.6M joints,
and gaps are filled. INPUT is an .npy/.npz array (T, J, 2|3) or (T, P, J, 2|3), a COCO-style keypoint JSON, or a
folder of OpenPose JSON files (see ``fastmixste.video.keypoints``). Either way the sequence is normalised as in training
and lifted in windows of the model's num_frame frames (any length), with flip test-time augmentation unless
``--no-flip``. OUT.npz holds ``pose_3d`` (T, 17, 3) root-relative camera-frame coordinates in metres (with
``--video`` and a detector that makes 3D of its own, MediaPipe, blended with it unless ``--detector-3d off``:
``fastmixste.video.fusion``; the lifter's alone is ``pose_3d_lifter``), the 2D input actually used, confidences, the
filled mask and the metadata (JSON string under ``meta``: fps, detector, person,
throughput). ``--runtime onnx|pt2`` lifts with a file made by ``python -m fastmixste.deploy.export`` (or exports the
checkpoint first); ``--stream`` lifts online, each frame once L more have come (``fastmixste.deploy.stream``). OUT and
video renders are written atomically: a failed run leaves no partial file at either path (when
only the render fails, the finished OUT stays and the message says so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fastmixste import BACKENDS, BackendUnavailableError, CheckpointError, load_checkpoint, shipped_models
from fastmixste.deploy.export import RUNTIMES, ExportError, runtime_model
from fastmixste.eval.evaluation import predict_sequences
from fastmixste.io.files import atomic_write, check_writable_folder
from fastmixste.video.detectors import DETECTORS, DetectorError, MissingExtraError, make_detector
from fastmixste.video.keypoints import LAYOUTS, KeypointError, Keypoints2D, load_keypoints

DEFAULT_MODEL = "wild"  # the shipped model lifted with when no --checkpoint is given


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None,
                   help=f"fastmixste checkpoint, upstream MixSTE .bin, or the name of a shipped model (default: "
                        f"{DEFAULT_MODEL!r}, trained for real video; README 'Real video')")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="video file or folder of images: detect 2D keypoints, then lift")
    src.add_argument("--keypoints", help=".npy/.npz array, COCO .json, or a folder of OpenPose JSON")
    src.add_argument("--camera", type=int, default=None,
                     help="stream a live camera N (PyAV device input: /dev/videoN on Linux); implies --stream")
    p.add_argument("--layout", default=None, choices=LAYOUTS,
                   help="joint order of --keypoints: h36m (17), coco (COCO-17), openpose (BODY_25), halpe "
                        "(Halpe-26, AlphaPose) or blazepose (BlazePose-33, MediaPipe)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out/--render file that is not an earlier output of train.infer")
    p.add_argument("--detector", default="mediapipe", choices=DETECTORS,
                   help="2D detector for --video: mediapipe (pip install \"fastmixste[video]\") or onnx (a local "
                        "model file given by --onnx-model; pip install \"fastmixste[onnx]\")")
    p.add_argument("--onnx-model", default=None, help="local top-down keypoint model (.onnx) for --detector onnx")
    p.add_argument("--onnx-layout", default="coco", choices=[x for x in LAYOUTS if x != "h36m"],
                   help="joint order the ONNX model predicts (RTMPose/ViTPose body models: coco; AlphaPose: halpe)")
    p.add_argument("--render-every", type=int, default=1,
                   help="with --video: draw every K-th frame into an .mp4/.gif render (long clips)")
    p.add_argument("--render-height", type=int, default=480, help="with --video: render height in pixels")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--width", type=float, default=None, help="image width in pixels (overrides the file)")
    p.add_argument("--height", type=float, default=None, help="image height in pixels (overrides the file)")
    p.add_argument("--person", type=int, default=None,
                   help="identity to lift when the input has several people with ids (default: most prominent)")
    p.add_argument("--min-confidence", type=float, default=0.2,
                   help="joints below this confidence count as missing and are interpolated")
    p.add_argument("--no-flip", action="store_true", help="disable flip test-time augmentation")
    p.add_argument("--detector-3d", default="blend", choices=("blend", "off"),
                   help="with --video or --camera: blend the lifted 3D with the detector's own 3D where it gives one "
                        "(MediaPipe's world landmarks; fastmixste.video.fusion; online with --stream), as measured "
                        "best on a real recording (default); off: the lifter's 3D alone. pose_3d_lifter keeps the "
                        "lifter's either way")
    p.add_argument("--fov", type=float, default=60.0,
                   help="camera field of view across the image's longer side in degrees, for the root trajectory in "
                        "camera space (default 60: a typical phone or webcam)")
    p.add_argument("--no-trajectory", action="store_true",
                   help="video renders keep the root at the centre instead of moving the person through the scene")
    p.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS, help="attention backend")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default 16; with --video on CPU about 243 frames per pass: one "
                        "243-frame window and its flip per pass measured faster than larger batches on 2 cores)")
    p.add_argument("--num-heads", type=int, default=None, help="heads of an upstream checkpoint (default 8)")
    p.add_argument("--render", default=None, help="picture of 2D input and 3D output: .png, .gif or .mp4")
    p.add_argument("--frame", type=int, default=None, help="frame drawn in a .png render (default: middle)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate: of the clip for --video (default: the video's own; 25 for image folders), "
                        "of a .gif/.mp4 render for --keypoints (default 25)")
    p.add_argument("--max-frames", type=int, default=300,
                   help="at most this many frames in a .gif render (and in --keypoints .mp4 renders)")
    # Deployment (fastmixste.deploy.export, fastmixste.deploy.stream)
    p.add_argument("--runtime", default="torch", choices=RUNTIMES,
                   help="run the lifter in PyTorch, ONNX Runtime or an AOTInductor package (pip install "
                        "\"fastmixste[export]\"); without --model-file the checkpoint is exported first")
    p.add_argument("--model-file", default=None,
                   help="with --runtime onnx|pt2: a file made by python -m fastmixste.deploy.export from --checkpoint")
    p.add_argument("--stream", action="store_true",
                   help="lift online: each frame once its window (past frames + --lookahead future) is there; "
                        "OUT.npz is written as it goes and closed cleanly on Ctrl-C")
    p.add_argument("--lookahead", type=int, default=None,
                   help="with --stream: future frames each frame waits for (0..num_frame-1; default half the window)")
    p.add_argument("--serial", action="store_true",
                   help="with --stream from --video/--camera: decode, detect, lift and write in one thread (default: "
                        "decode + detect in a second thread, a few frames ahead of lift + write; same output)")
    return p.parse_args(argv)


def _check_writable(path: Path, what: str) -> None:
    """Fail before the work starts when ``path`` cannot be written (missing permissions, a file in the way)."""
    try:
        check_writable_folder(path.parent)
    except OSError as exc:
        raise KeypointError(f"cannot write {what} {path}: {exc.strerror or exc}") from exc
    if path.is_dir():
        raise KeypointError(f"cannot write {what} {path}: it is a folder")


def _write_npz(out: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    try:
        with atomic_write(out) as f:
            np.savez(f, **arrays, meta=np.array(json.dumps(meta)))
    except OSError as exc:
        raise KeypointError(f"cannot write {out}: {exc.strerror or exc}") from exc


def _check_args(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise KeypointError(f"--out must end in .npz, got {out.name!r}")
    if args.render is not None and Path(args.render).suffix.lower() not in (".png", ".gif", ".mp4"):
        raise KeypointError(f"--render must end in .png, .gif or .mp4, got {Path(args.render).name!r}")
    if args.keypoints is not None and args.layout is None:
        raise KeypointError("--keypoints needs --layout (the joint order of the file)")
    if args.video is not None and args.layout is not None:
        raise KeypointError("--layout describes --keypoints files; with --video the detector gives the layout")
    if args.video is not None and (args.width is not None or args.height is not None):
        raise KeypointError("--width/--height describe --keypoints files; a video gives its own size")
    if args.video is not None and args.person is not None:
        raise KeypointError("--person picks an identity of a --keypoints file; with --video the most prominent "
                            "person is picked and tracked")
    for name in ("render_every", "render_height", "batch_size", "max_frames"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise KeypointError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (isinstance(args.fov, float) and 1.0 <= args.fov <= 170.0):
        raise KeypointError(f"--fov must be a field of view in degrees between 1 and 170, got {args.fov}")
    if args.threads is not None and args.threads < 1:
        raise KeypointError(f"--threads must be >= 1, got {args.threads}")
    if args.batch_size is not None and args.batch_size > 65_536:
        raise KeypointError(f"--batch-size must be at most 65536 windows, got {args.batch_size}")
    if args.fps is not None and not (math.isfinite(args.fps) and 0 < args.fps <= 1000):
        raise KeypointError(f"--fps must be a frame rate in (0, 1000] frames per second, got {args.fps:g}")
    _check_writable(out, "the output")
    if args.render is not None:
        _check_writable(Path(args.render), "the render")
    _check_outputs(args)


def _is_infer_output(path: Path) -> bool:
    """Whether ``path`` is an npz train.infer wrote (pose_3d and meta; only the archive's names are read)."""
    from fastmixste.io.safeload import DataFileError, read_npz_keys

    try:
        return {"pose_3d", "meta"} <= set(read_npz_keys(path))
    except (DataFileError, OSError):
        return False


def _rendered_into(out: Path) -> str | None:
    """The render path recorded in an earlier train.infer output at ``out`` (None when there is none)."""
    from fastmixste.io.safeload import DataFileError, read_npz

    if not out.is_file() or not _is_infer_output(out):
        return None
    try:
        meta = json.loads(str(read_npz(out, keys=["meta"])["meta"]))
    except (DataFileError, OSError, KeyError, ValueError):
        return None
    return meta.get("render") if isinstance(meta, dict) else None


def _check_outputs(args: argparse.Namespace) -> None:
    """No output is an input; an existing output is replaced only when train.infer made it (or --overwrite)."""
    from fastmixste.io.files import check_output, same_file

    out = Path(args.out)
    inputs = {"--checkpoint": args.checkpoint, "--keypoints": args.keypoints, "--video": args.video,
              "--onnx-model": args.onnx_model}
    check_output(out, "--out", inputs=inputs, ours=_is_infer_output, overwrite=args.overwrite)
    if args.render is not None:
        rendered = _rendered_into(out)
        check_output(args.render, "--render", inputs={**inputs, "--out": args.out}, overwrite=args.overwrite,
                     ours=lambda p: rendered is not None and same_file(p, rendered))
        gif = Path(args.render).with_suffix(".gif")
        if args.keypoints is not None and Path(args.render).suffix.lower() == ".mp4" and gif.exists():
            from matplotlib import animation

            if not animation.writers.is_available("ffmpeg"):  # the render would fall back to this GIF
                check_output(gif, "--render (no MP4 encoder here: the GIF written instead)", inputs=inputs,
                             overwrite=args.overwrite, ours=lambda p: rendered is not None and same_file(p, rendered))


def _may_replace_render(args: argparse.Namespace) -> Callable[[Path], bool]:
    """For a render's fallback path (a .gif for an .mp4 without encoder): --overwrite, or an earlier render of ours."""
    from fastmixste.io.files import same_file

    rendered = _rendered_into(Path(args.out))
    return lambda p: args.overwrite or (rendered is not None and same_file(p, rendered))


def _check_finite_output(pose_3d: np.ndarray, checkpoint: str) -> None:
    bad = int((~np.isfinite(pose_3d)).sum())
    if bad:
        raise KeypointError(f"the model gave NaN/inf for {bad} of {pose_3d.size} output values (checkpoint "
                            f"{checkpoint}); nothing was written")


def run(args: argparse.Namespace) -> dict:
    """Do the work of the command; returns the metadata written to the output."""
    _check_args(args)
    out = Path(args.out)
    may_replace = _may_replace_render(args)  # read before this run replaces --out
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.checkpoint is None:
        if DEFAULT_MODEL not in shipped_models():
            raise CheckpointError(f"this install has no shipped model {DEFAULT_MODEL!r}: pass --checkpoint")
        args.checkpoint = DEFAULT_MODEL
        print(f"using the shipped model {DEFAULT_MODEL!r} (no --checkpoint given; README 'Real video' says what it "
              f"was trained on)", file=sys.stderr)
    model = load_checkpoint(args.checkpoint, attn_backend=args.backend, map_location=device,
                            num_heads=args.num_heads)
    cfg = model.config
    if cfg.num_joints != 17:
        raise KeypointError(f"the checkpoint has num_joints={cfg.num_joints}; inputs are converted to the 17 "
                            f"Human3.6M joints, so only 17-joint models can lift them")
    if cfg.in_chans not in (2, 3):
        raise KeypointError(f"the checkpoint has in_chans={cfg.in_chans}; expected 2 (x, y) or 3 (x, y, confidence)")
    progress = not args.no_progress
    model = runtime_model(model, args.runtime, model_file=args.model_file, threads=args.threads,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.stream or args.camera is not None:
        from fastmixste.deploy.stream import infer_stream

        return infer_stream(args, model, device, progress)
    if args.lookahead is not None:
        raise KeypointError("--lookahead is the streaming delay: it needs --stream")
    if args.serial:
        raise KeypointError("--serial runs a streaming pipeline in one thread: it needs --stream")
    if args.video is not None:
        return _run_video(args, model, device, progress)

    kps = load_keypoints(args.keypoints, args.layout, width=args.width, height=args.height, person=args.person,
                         min_confidence=args.min_confidence)
    x = kps.normalized()  # (T, 17, 2)
    if cfg.in_chans == 3:
        if not kps.meta["has_confidence"]:
            raise KeypointError(f"the checkpoint has in_chans=3 (x, y, confidence) but {args.keypoints} has no "
                                f"confidence channel; give (T, J, 3) keypoints")
        x = np.concatenate([x, kps.confidence[..., None]], axis=-1)
    preds, seconds = predict_sequences(model, [x], flip=not args.no_flip, batch_size=args.batch_size or 16,
                                       device=device, progress=False)
    pose_3d = preds[0]
    _check_finite_output(pose_3d, args.checkpoint)
    pose_3d[:, 0] = 0.0  # root-relative, root at the origin (as in training)

    root, intrinsics = camera_space(pose_3d, kps, args.fov)
    meta = dict(kps.meta)
    meta.update(_model_meta(args, model, device, seconds))
    meta["intrinsics"] = intrinsics
    arrays = {"pose_3d": pose_3d.astype(np.float32), "root_trajectory": root,
              "pose_3d_camera": (pose_3d + root[:, None]).astype(np.float32), "pose_2d": kps.pose,
              "pose_2d_normalized": x.astype(np.float32), "confidence": kps.confidence, "filled": kps.filled}
    _write_npz(out, arrays, meta)
    if args.render is not None:
        from fastmixste.eval.plots import render_pose

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            written = render_pose(kps.pose, pose_3d, args.render, width=kps.width, height=kps.height,
                                  frame=args.frame, fps=args.fps or 25.0, max_frames=args.max_frames,
                                  title=Path(args.keypoints).name, may_replace=may_replace)
        for w in caught:  # e.g. no MP4 encoder: say so plainly, the GIF was written instead
            print(f"note: {w.message}", file=sys.stderr)
        meta["render"] = str(written)
        _write_npz(out, arrays, meta)  # records the render: a rerun may replace it
    return meta


def _model_meta(args: argparse.Namespace, model: torch.nn.Module, device: torch.device, seconds: float) -> dict:
    cfg = model.config
    return {
        "checkpoint": str(args.checkpoint),
        "num_frame": cfg.num_frame,
        "in_chans": cfg.in_chans,
        "flip": not args.no_flip,
        "backend": model.resolved_backend(torch.zeros(1, cfg.num_frame, 17, cfg.in_chans, device=device)),
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "model_seconds": seconds,
        "units": "metres, camera axes (x right, y down, z forward); pose_3d root-relative (root = 0), "
                 "root_trajectory the root in the camera frame (intrinsics assumed unless known), pose_3d_camera both",
        "joint_order": "Human3.6M 17 (fastmixste.data.skeleton.H36M_JOINT_NAMES)",
    }


def lift_keypoints(model: torch.nn.Module, kps: Keypoints2D, *, flip: bool = True, batch_size: int | None = None,
                   device: torch.device | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """One person's detected 2D (``Keypoints2D``, 17 H36M joints, gaps filled) -> the video path's 3D.

    -> (pose_3d (T, 17, 3) float32 root-relative camera-frame metres with the root at 0, the model input
    (T, 17, in_chans) float32, seconds in the model). ``--video`` lifts through this; so does the real-data check
    (``benchmarks.realdata``), so what it scores is what the command writes.
    """
    from fastmixste.video.decode import lift

    device = device if device is not None else next(model.parameters()).device
    x = kps.normalized()  # (T, 17, 2)
    if model.config.in_chans == 3:
        x = np.concatenate([x, kps.confidence[..., None]], axis=-1)
    # On CPU about 243 frames per pass (one full-size window and its flip) measured fastest; more only adds memory.
    batch_size = batch_size or (max(1, 243 // model.config.num_frame) if device.type == "cpu" else 16)
    pose_3d, seconds = lift(model, x, flip=flip, batch_size=batch_size, device=device, progress=progress)
    pose_3d[:, 0] = 0.0  # root-relative, root at the origin (as in training)
    return pose_3d, x, seconds


def camera_space(pose_3d: np.ndarray, kps: Keypoints2D, fov_degrees: float) -> tuple[np.ndarray, dict]:
    """(T, 17, 3) root-relative metres + the 2D they were lifted from -> ((T, 3) root in the camera frame, metres;
    the intrinsics used). Solved per frame by ``fastmixste.video.trajectory.root_trajectory`` (weighted by the
    detection confidence, lightly smoothed), with a pinhole camera of ``fov_degrees`` across the longer side."""
    from fastmixste.video.trajectory import default_intrinsics, root_trajectory

    focal, centre = default_intrinsics(kps.width, kps.height, fov_degrees)
    conf = np.where(kps.filled, 0.0, np.nan_to_num(kps.confidence, nan=0.0)) + 1e-3  # seen joints weigh most
    root = root_trajectory(pose_3d, kps.pose[..., :2], focal, centre, confidence=conf, smooth_frames=2)
    return root.astype(np.float32), {"focal_px": focal, "centre_px": list(centre), "fov_degrees": fov_degrees,
                                      "assumed": True}


def _run_video(args: argparse.Namespace, model: torch.nn.Module, device: torch.device, progress: bool) -> dict:
    from fastmixste.video.decode import detect_video, open_video, track_and_fill

    out = Path(args.out)
    source = open_video(args.video, fps=args.fps)
    with make_detector(args.detector, onnx_model=args.onnx_model, onnx_layout=args.onnx_layout,
                       threads=args.threads) as detector:
        raw, stats = detect_video(source, detector, progress=progress, min_confidence=args.min_confidence)
        described = detector.describe()
    kps, seen = track_and_fill(raw, source, min_confidence=args.min_confidence, detector_name=detector.name)
    cpu0 = time.process_time()  # CPU seconds of all threads: on a shared machine wall time says little
    pose_3d, x, seconds = lift_keypoints(model, kps, flip=not args.no_flip, batch_size=args.batch_size,
                                         device=device, progress=progress)
    cpu_seconds = time.process_time() - cpu0
    _check_finite_output(pose_3d, args.checkpoint)
    lifted, fusion = pose_3d, {"fused": False, "reason": "--detector-3d off"}
    if args.detector_3d == "blend":
        if kps.world is None:
            fusion["reason"] = f"the detector ({detector.name}) gives no 3D of its own"
        else:
            from fastmixste.video.fusion import fuse_with_detector_3d

            pose_3d, fusion = fuse_with_detector_3d(lifted, kps.world, source.fps)

    meta = dict(kps.meta)
    meta["notes"] = source.notes + meta["notes"]
    meta.update({
        "kind": "video" if source.kind == "video" else "image folder",
        "fps": source.fps,
        "codec": source.codec,
        "detector": described,
        "frames_decoded": stats.frames,
        "most_people_in_a_frame": stats.max_people,
        "detector_3d": fusion,
    })
    meta.update(_model_meta(args, model, device, seconds))
    meta["throughput"] = {
        "detection_fps": stats.fps,
        "decode_seconds": stats.decode_seconds,
        "detect_seconds": stats.detect_seconds,
        "lifting_fps": len(x) / seconds if seconds > 0 else float("nan"),
        "lifting_seconds": seconds,
        "lifting_cpu_seconds": cpu_seconds,
        "machine": _machine(device),
    }
    root, meta["intrinsics"] = camera_space(pose_3d, kps, args.fov)
    arrays = {"pose_3d": pose_3d.astype(np.float32), "root_trajectory": root,
              "pose_3d_camera": (pose_3d + root[:, None]).astype(np.float32), "pose_2d": kps.pose,
              "pose_2d_normalized": x.astype(np.float32), "confidence": kps.confidence, "filled": kps.filled,
              "detected": seen, "pose_3d_lifter": lifted.astype(np.float32)}
    if kps.world is not None:
        arrays["pose_3d_detector"] = kps.world.astype(np.float32)
    _write_npz(out, arrays, meta)
    if args.render is not None:
        from fastmixste.video.render import render_video

        try:
            r = render_video(source, kps.pose, pose_3d, args.render, filled=kps.filled, seen=seen,
                             every=args.render_every, frame=args.frame, height=args.render_height,
                             max_gif_frames=args.max_frames, progress=progress,
                             trajectory=None if args.no_trajectory else root)
        except OSError as exc:
            raise KeypointError(f"cannot write the render {args.render}: {exc.strerror or exc} (the 3D result is "
                                f"in {out})") from exc
        except ValueError as exc:  # e.g. --frame past the end, no encoder in this FFmpeg build
            raise KeypointError(f"{exc} (nothing written at {args.render}; the 3D result is in {out})") from exc
        meta["render"] = str(r.path)
        meta["render_frames"] = r.frames
        meta["render_size"] = list(r.size)
        meta["render_fps"] = r.fps
        meta["throughput"]["render_fps"] = r.frames_per_second
        meta["throughput"]["render_seconds"] = r.seconds
        _write_npz(out, arrays, meta)
    return meta


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        meta = run(args)
    except (KeypointError, CheckpointError, BackendUnavailableError, FileNotFoundError, DetectorError,
            MissingExtraError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if meta.get("stream"):
        from fastmixste.deploy.stream import print_stream_summary

        print_stream_summary(args, meta)
    elif "throughput" not in meta:
        _print_keypoints_summary(args, meta)
    else:
        _print_video_summary(args, meta)
    return 0


def _print_keypoints_summary(args: argparse.Namespace, meta: dict) -> None:
    print(f"{meta['input']}: {meta['num_frames']} frames ({meta['layout']}, {meta['width']:.0f}x"
          f"{meta['height']:.0f} px); {meta['person']}")
    print(f"filled {100 * meta['filled_fraction']:.1f}% of joint positions by interpolation"
          + "".join(f"; {n}" for n in meta["notes"]))
    print(f"lifted with {meta['backend']} on {meta['device']} in {meta['model_seconds']:.2f} s "
          f"(windows of {meta['num_frame']} frames, flip {'on' if meta['flip'] else 'off'}) -> {args.out}")
    if "render" in meta:
        print(f"render -> {meta['render']}")


def _print_video_summary(args: argparse.Namespace, meta: dict) -> None:
    tp, det = meta["throughput"], meta["detector"]
    print(f"{meta['input']}: {meta['num_frames']} frames, {meta['width']:.0f}x{meta['height']:.0f} px, "
          f"{meta['fps']:.2f} fps ({meta['codec']})")
    print(f"detection ({det['name']} {det['version']}, {det['layout']}): a person in {meta['frames_with_person']} "
          f"of {meta['num_frames']} frames; {tp['detection_fps']:.1f} frames/s (decoding {tp['decode_seconds']:.1f} s, "
          f"detection {tp['detect_seconds']:.1f} s)")
    print(f"{meta['person']}")
    print(f"filled {100 * meta['filled_fraction']:.1f}% of joint positions by interpolation")
    for note in meta["notes"]:
        print(f"note: {note}")
    fusion = meta.get("detector_3d", {})
    if fusion.get("fused"):
        print(f"3D: the lifter's ({100 * fusion['lifter_weight']:.0f}%) blended with the detector's own 3D "
              f"({fusion['detector_3d_frames']} of {fusion['frames']} frames; --detector-3d off for the lifter's "
              f"alone, kept as pose_3d_lifter)")
    else:
        print(f"3D: the lifter's alone ({fusion.get('reason', 'no detector 3D')})")
    print(f"lifted with {meta['backend']} on {meta['device']} ({tp['machine']}): {meta['num_frames']} frames in "
          f"{tp['lifting_seconds']:.2f} s ({tp['lifting_cpu_seconds']:.1f} CPU-s), {tp['lifting_fps']:.1f} frames/s "
          f"(windows of {meta['num_frame']} frames, flip {'on' if meta['flip'] else 'off'}) -> {args.out}")
    if "render" in meta:
        w, h = meta["render_size"]
        print(f"render: {meta['render_frames']} frames in {tp['render_seconds']:.1f} s ({tp['render_fps']:.1f} "
              f"frames/s), {w}x{h} px at {meta['render_fps']:.2f} fps -> {meta['render']}")


if __name__ == "__main__":
    from fastmixste.io.cli import run_cli  # the error boundary: exit 2 bad input, 130 Ctrl-C, tracebacks with --debug

    sys.exit(run_cli(main))
