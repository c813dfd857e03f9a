"""Video in, 3D out: streamed decoding, 2D detection per frame, one tracked person in the 17 Human3.6M joints, lifting.

The clip is never held decoded: frames are decoded one at a time (PyAV, which bundles FFmpeg in its wheels, so no
system ffmpeg is needed) and handed to the detector in small chunks; only the keypoints are kept (17 x 3 floats per
person and frame). Renders decode the clip a second time (``fastmixste.video.render``). A folder of images works as a
clip too (files in natural name order, all of one size).

    source = open_video("clip.mp4")                         # VideoSource: width, height, fps, frame count
    raw, stats = detect_video(source, detector)             # RawKeypoints in H36M-17, throughput
    kps = track_and_fill(raw, source)                       # Keypoints2D: one person, gaps filled
    pose_3d, seconds = lift(model, kps.normalized())        # (T, 17, 3), any length, flip averaging
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT, flip_pose
from fastmixste.data.windows import eval_windows, stitch
from fastmixste.video.detectors import MissingExtraError, PoseDetector, detect_checked, gives_own_3d
from fastmixste.video.fusion import blazepose_world_to_h36m
from fastmixste.video.keypoints import KeypointError, Keypoints2D, RawKeypoints, fill_gaps, pick_person, to_h36m

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class VideoError(KeypointError):
    """A clip that cannot be used: unreadable, no video stream, no frames, images of different sizes."""


def import_av() -> Any:
    """PyAV, or MissingExtraError saying how to install it (it is a dependency of fastmixste)."""
    try:
        import av
    except ImportError as exc:
        raise MissingExtraError(f"reading video needs PyAV, which is not installed: pip install av (a dependency "
                                f"of fastmixste: pip install -e . installs it) ({exc})") from exc
    return av


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass
class VideoSource:
    """A clip on disk, probed but not decoded: a video file or a folder of images.

    ``num_frames`` is the container's count (an estimate for some formats; exact for image folders), None when
    unknown. ``fps`` is the stream's average rate (or the ``fps`` given for image folders). ``rotation`` is the
    display rotation in degrees that frames are turned by when decoded (phone videos).
    """

    path: Path
    kind: str
    width: int
    height: int
    fps: float
    num_frames: int | None
    codec: str = ""
    rotation: int = 0
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def frames(self, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Yield (H, W, 3) uint8 RGB frames one at a time, in order; ``size`` = (W, H) scales them while decoding."""
        if self.kind == "images":
            yield from self._image_frames(size)
        else:
            yield from self._video_frames(size)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """Yield (n <= size, H, W, 3) uint8 stacks of consecutive frames."""
        buf: list[np.ndarray] = []
        for frame in self.frames():
            buf.append(frame)
            if len(buf) == size:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)

    def _image_frames(self, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
        from PIL import Image, UnidentifiedImageError

        for f in self.files:
            try:
                with Image.open(f) as im:
                    rgb = im.convert("RGB")
            except (OSError, UnidentifiedImageError) as exc:
                raise VideoError(f"{f}: cannot read this image ({exc})") from exc
            if rgb.size != (self.width, self.height):
                raise VideoError(f"{f}: image is {rgb.width}x{rgb.height} px but the first image of {self.path} is "
                                 f"{self.width}x{self.height}; all frames of a folder must have one size")
            if size is not None and size != rgb.size:
                rgb = rgb.resize(size, Image.Resampling.BILINEAR)
            yield np.asarray(rgb)

    def _video_frames(self, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
        av = import_av()
        k = (self.rotation // 90) % 4
        scale = {}
        if size is not None and size != (self.width, self.height):  # stored frames are unrotated: swap for 90/270
            w, h = size if k % 2 == 0 else size[::-1]
            scale = {"width": w, "height": h, "interpolation": "AREA"}
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame-threaded decoding: decodes ahead a few frames, no more
                for frame in container.decode(stream):
                    a = frame.to_ndarray(format="rgb24", **scale)
                    # A display rotation of r degrees (counter-clockwise) is undone as FFmpeg's players do.
                    yield np.ascontiguousarray(np.rot90(a, k)) if k else a
        except av.FFmpegError as exc:
            raise VideoError(f"{self.path}: decoding failed ({exc})") from exc


def open_video(path: str | Path, fps: float | None = None) -> VideoSource:
    """Probe a video file or an image folder -> VideoSource (nothing decoded beyond the first image).

    ``fps`` overrides the stream's frame rate; an image folder without ``fps`` gets 25 (noted).
    """
    path = Path(path)
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise VideoError(f"--fps must be a positive number, got {fps}")
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.is_dir():
        return _open_image_folder(path, fps)
    av = import_av()
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise VideoError(f"{path}: the video stream has no picture size ({width}x{height})")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        stream_fps = float(rate) if rate else 0.0
        count = int(stream.frames or 0)
        if count <= 0 and stream.duration is not None and stream.time_base and stream_fps > 0:
            count = int(round(float(stream.duration * stream.time_base) * stream_fps))
        elif count <= 0 and container.duration and stream_fps > 0:
            count = int(round(container.duration / 1e6 * stream_fps))  # container duration is in microseconds
        rotation = _rotation(container, stream)
        codec = cc.name
    notes = []
    if fps is None:
        if stream_fps <= 0:
            fps = 25.0
            notes.append(f"{path.name}: the stream states no frame rate; assumed 25 fps (give --fps)")
        else:
            fps = stream_fps
    if rotation % 180:
        width, height = height, width
    if rotation:
        notes.append(f"{path.name}: frames turned by {rotation} degrees as the file's display rotation says")
    return VideoSource(path, "video", width, height, float(fps), count or None, codec, rotation, notes=notes)


def _rotation(container: Any, stream: Any) -> int:
    """Display rotation in degrees (multiple of 90) from the first decoded frame, 0 when absent."""
    try:
        for frame in container.decode(stream):
            r = getattr(frame, "rotation", 0) or 0
            return int(round(r / 90.0)) * 90 % 360
    except Exception:  # noqa: BLE001 (a clip whose first frame does not decode is reported when decoding for real)
        return 0
    return 0


def _open_image_folder(path: Path, fps: float | None) -> VideoSource:
    from PIL import Image, UnidentifiedImageError

    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: _natural_key(p.name))
    if not files:
        raise VideoError(f"{path}: no images in this folder (expected {', '.join(IMAGE_SUFFIXES)} files)")
    try:
        with Image.open(files[0]) as im:
            width, height = im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise VideoError(f"{files[0]}: cannot read this image ({exc})") from exc
    notes = []
    if fps is None:
        fps = 25.0
        notes.append(f"{path.name}: an image folder has no frame rate; assumed 25 fps (give --fps)")
    return VideoSource(path, "images", int(width), int(height), float(fps), len(files), "images", files=files,
                       notes=notes)


@dataclass
class DetectionStats:
    """What detection did: frames seen, frames with anyone, seconds decoding and detecting."""

    frames: int = 0
    frames_with_person: int = 0
    max_people: int = 0
    decode_seconds: float = 0.0
    detect_seconds: float = 0.0

    @property
    def fps(self) -> float:
        total = self.decode_seconds + self.detect_seconds
        return self.frames / total if total > 0 else float("nan")


def detect_video(source: VideoSource, detector: PoseDetector, *, chunk: int = 8, progress: bool = True,
                 min_confidence: float = 0.2) -> tuple[RawKeypoints, DetectionStats]:
    """Stream ``source`` through ``detector`` -> (RawKeypoints of every frame, converted to H36M-17, stats).

    Memory stays at ``chunk`` decoded frames plus the keypoints. Raises VideoError for a clip with no frames.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    detector.reset()
    stats = DetectionStats()
    # Keypoints of all frames in one buffer that doubles when full: (frames, people, 17, 3), NaN where nobody.
    # (Many small per-frame arrays interleaved with the decoded chunks fragment the heap: resident memory then grows
    # with the clip's length although nothing large is kept.)
    store = np.full((1024, 1, 17, 3), np.nan, np.float32)
    counts = np.zeros(1024, np.int64)
    # The detector's own 3D where it gives one (MediaPipe's world landmarks), kept beside the 2D in the same slots.
    with_world = gives_own_3d(detector)
    world = np.full_like(store, np.nan) if with_world else None
    who = f"detector {detector.name!r}"
    bar = tqdm(total=source.num_frames, desc="detect", unit="frame", disable=not progress, leave=False)
    it = source.chunks(chunk)
    try:
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            t1 = time.perf_counter()
            stats.decode_seconds += t1 - t0
            if batch is None:
                break
            kp, w3d = detect_checked(detector, batch, who, with_world)
            if with_world and w3d.shape != kp.shape:
                raise VideoError(f"{who} returned 3D of shape {w3d.shape} beside keypoints {kp.shape}")
            stats.detect_seconds += time.perf_counter() - t1
            present = np.isfinite(kp[..., :2]).all(-1).any(-1) & (kp[..., 2] > 0).any(-1)  # (n, P)
            most = int(present.sum(-1).max(initial=0))
            lo, hi = stats.frames, stats.frames + len(batch)
            if hi > len(store) or most > store.shape[1]:
                grown = np.full((max(len(store), 2 * hi), max(store.shape[1], most), 17, 3), np.nan, np.float32)
                grown[:len(store), :store.shape[1]] = store
                if world is not None:
                    more = np.full_like(grown, np.nan)
                    more[:len(world), :world.shape[1]] = world
                    world = more
                store, counts = grown, np.concatenate([counts, np.zeros(len(grown) - len(counts), np.int64)])
            for i, (people, m) in enumerate(zip(kp, present)):
                found = people[m]
                if len(found):
                    store[lo + i, :len(found)] = to_h36m(found, detector.layout)
                    if world is not None:
                        world[lo + i, :len(found)] = blazepose_world_to_h36m(w3d[i][m])
                counts[lo + i] = len(found)
            stats.frames_with_person += int((present.sum(-1) > 0).sum())
            stats.max_people = max(stats.max_people, most)
            stats.frames = hi
            bar.update(len(batch))
    finally:
        bar.close()
    if stats.frames == 0:
        raise VideoError(f"{source.path}: the clip has no frames")
    frames = [store[t, :counts[t]] for t in range(stats.frames)]
    worlds = None
    if world is not None and np.isfinite(world[:stats.frames]).any():
        worlds = [world[t, :counts[t]] for t in range(stats.frames)]
    raw = RawKeypoints(frames, "h36m", str(source.path), width=float(source.width), height=float(source.height),
                       world=worlds)
    return raw, stats


def absent_runs(present: np.ndarray) -> list[tuple[int, int]]:
    """(T,) bool -> [(first, last)] inclusive frame ranges where ``present`` is False."""
    runs, start = [], None
    for t, p in enumerate(np.asarray(present, dtype=bool)):
        if not p and start is None:
            start = t
        elif p and start is not None:
            runs.append((start, t - 1))
            start = None
    if start is not None:
        runs.append((start, len(present) - 1))
    return runs


def track_and_fill(raw: RawKeypoints, source: VideoSource, *, min_confidence: float = 0.2,
                   gap_seconds: float = 1.0, detector_name: str = "the detector") -> tuple[Keypoints2D, np.ndarray]:
    """H36M-17 detections of a clip -> (one person's Keypoints2D with gaps filled, (T,) bool: person seen).

    The person is picked and followed with ``pick_person``; gaps are filled by ``fill_gaps``. Every stretch of
    at least ``gap_seconds`` without the person gets a note (the pose there is interpolated or held, not seen).
    """
    if not any(len(f) for f in raw.frames):
        raise VideoError(f"{source.path}: {detector_name} found no person in any of the {len(raw.frames)} frames; "
                         f"nothing to lift")
    picked, who = pick_person(raw, None, min_confidence)
    good = np.isfinite(picked[..., :2]).all(-1) & (picked[..., 2] >= min_confidence)
    seen = good.any(-1)
    pose, filled, notes = fill_gaps(picked, min_confidence)
    fps = source.fps
    for a, b in absent_runs(seen):
        if (b - a + 1) / fps >= gap_seconds:
            how = "held from the nearest frame with the person" if a == 0 or b == len(seen) - 1 else "interpolated"
            notes.append(f"no person from {a / fps:.2f} s to {(b + 1) / fps:.2f} s (frames {a}-{b}, "
                         f"{(b - a + 1) / fps:.1f} s): the 2D pose there is {how}, not seen")
    conf = np.where(filled, 0.0, picked[..., 2])
    world = picked_world(raw, picked)
    meta = {
        "input": str(source.path),
        "layout": "h36m",
        "width": float(source.width),
        "height": float(source.height),
        "num_frames": len(pose),
        "person": who,
        "min_confidence": min_confidence,
        "has_confidence": True,
        "filled_fraction": float(filled.mean()),
        "frames_with_person": int(seen.sum()),
        "notes": notes,
    }
    kps = Keypoints2D(pose.astype(np.float32), conf.astype(np.float32), filled, float(source.width),
                      float(source.height), meta, world=world)
    return kps, seen


def picked_world(raw: RawKeypoints, picked: np.ndarray) -> np.ndarray | None:
    """(T, 17, 3) the detections ``pick_person`` chose -> (T, 17, 3) the detector's 3D of the same detections
    (NaN where none was picked or the detector gave none); None when the input carries no 3D."""
    if raw.world is None:
        return None
    out = np.full(picked.shape, np.nan, np.float32)
    for t, (people, worlds) in enumerate(zip(raw.frames, raw.world)):
        for person, w in zip(people, worlds):
            if np.array_equal(person, picked[t], equal_nan=True):
                out[t] = w
                break
    return out if np.isfinite(out).any() else None


@torch.inference_mode()
def lift(model: torch.nn.Module, pose_2d: np.ndarray, *, flip: bool = True, batch_size: int = 8,
         device: torch.device | str | None = None, progress: bool = True) -> tuple[np.ndarray, float]:
    """(T, 17, in_chans) normalised 2D -> ((T, 17, 3) float32 camera-frame 3D, seconds in the model).

    Any length: upstream MixSTE's evaluation windows of ``num_frame`` frames, stitched back (``eval_windows``,
    ``stitch``). With ``flip`` the flipped windows ride in the same batch and the result is the mean of the
    prediction and the un-flipped prediction of the flipped input. The progress bar counts frames.
    """
    cfg = model.config
    x = np.asarray(pose_2d, dtype=np.float32)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1:] != (cfg.num_joints, cfg.in_chans):
        raise ValueError(f"lift: expected (T >= 1, {cfg.num_joints}, {cfg.in_chans}), got {x.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    param = next(model.parameters())
    dev = torch.device(device) if device is not None else param.device
    windows, starts = eval_windows(x, cfg.num_frame)  # (W, F, J, C)
    out = np.empty(windows.shape[:3] + (3,), dtype=np.float32)
    was_training = model.training
    model.eval()
    seconds, covered = 0.0, 0
    bar = tqdm(total=len(x), desc="lift", unit="frame", disable=not progress, leave=False)
    try:
        for lo in range(0, len(windows), batch_size):
            t0 = time.perf_counter()
            w = torch.from_numpy(windows[lo:lo + batch_size]).to(dev, param.dtype)
            n = len(w)
            if flip:
                pred = model(torch.cat([w, flip_pose(w, H36M_LEFT, H36M_RIGHT)]))
                pred = (pred[:n] + flip_pose(pred[n:], H36M_LEFT, H36M_RIGHT)) / 2
            else:
                pred = model(w)
            out[lo:lo + n] = pred.float().cpu().numpy()  # .cpu() synchronises: the time covers the forward
            seconds += time.perf_counter() - t0
            end = min(len(x), int(starts[min(lo + n, len(starts)) - 1]) + cfg.num_frame)
            bar.update(max(0, end - covered))
            covered = max(covered, end)
    finally:
        bar.close()
        model.train(was_training)
    return np.asarray(stitch(out, starts, len(x)), dtype=np.float32), seconds


def fps_fraction(fps: float, every: int = 1) -> Fraction:
    """Frame rate as an exact-enough fraction (29.97 -> 30000/1001), divided by ``every``."""
    return Fraction(fps).limit_denominator(1001) / every
