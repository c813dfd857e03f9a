"""Streaming (online) lifting: each frame is lifted once its window — the past frames plus L future ones — is there.

    lifter = StreamLifter(model, lookahead=L)     # model: MixSTE or an exported lifter (fastmixste.deploy.export)
    for x in frames_2d:                                    # (17, C) normalised 2D, one frame at a time
        for out in lifter.push(x, stamp):                  # frames whose window is complete: frame t - L
            ...                                            # out.index, out.pose_3d (17, 3), out.stamp
    for out in lifter.finish(): ...                        # end of stream: the last L frames

Windows. Frame t is lifted from the F = num_frame frames ending at t + L (it sits at position F - 1 - L), so its
result comes L frames after it arrives, plus compute. The edges follow the offline path (``eval_windows``):
while fewer than F frames have come, frame t uses frames 0..t+L edge-padded on the right to F (offline's window for
a sequence that short); when the stream ends, the frames still waiting use the last F frames (offline's final
window), or the whole stream padded when it had fewer than F. Where a frame's streaming window is the offline one
(e.g. t = 0, F, 2F, ... with L = F - 1, or L = F - 1 - (t mod F) in general) the outputs are the same, flip averaging
included. Memory: the last F input frames, whatever the length of the stream.

Output: ``StreamWriter`` writes per-frame rows as they come, in chunk files beside the output, and assembles the
``.npz`` atomically when the stream ends or is stopped (Ctrl-C, SIGTERM, a source that fails): the chunks are
copied into the archive one at a time, so memory stays one chunk; nothing lifted is lost. ``OnlineRoot`` adds the
root in the camera frame, each frame solved from its own pose and 2D as it is written.

Live pipeline: decode -> detect (``detected_stream``) -> lift -> write (``run_stream``). ``Background``
(``fastmixste.deploy.pipeline``) runs the first two stages in a second thread, a few frames ahead (a bounded queue),
so detection and lifting overlap on two cores; the frames keep their order and the output is the one-thread output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT, flip_pose
from fastmixste.video.keypoints import KeypointError, normalize_screen

from .pipeline import PIPELINE_DEPTH, Background


class StreamError(KeypointError):
    """A stream that cannot start or continue: bad lookahead, no camera, a source that failed (exit 2)."""


@dataclass
class Lifted:
    """One frame's result: its index in the stream, (J, 3) camera-frame 3D, what was pushed with it."""

    index: int
    pose_3d: np.ndarray
    stamp: Any


def check_lookahead(lookahead: int, num_frame: int) -> None:
    """Refuse a lookahead outside 0 .. num_frame - 1 (the frames after the lifted one within its window)."""
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or not 0 <= lookahead < num_frame:
        raise StreamError(f"--lookahead must be 0..{num_frame - 1} (frames after the lifted one, within the "
                          f"model's {num_frame}-frame window), got {lookahead}")


class StreamLifter:
    """Online lifting with ``lookahead`` future frames (0 .. num_frame - 1); see the module docstring.

    ``model``: anything with ``config`` (num_frame, num_joints, in_chans) that maps a (B, F, J, C) float32 tensor
    to (B, F, J, 3): a MixSTE or an exported lifter. ``flip`` averages with the flipped input, as offline.
    """

    def __init__(self, model: torch.nn.Module, lookahead: int, *, flip: bool = True,
                 device: torch.device | str = "cpu") -> None:
        cfg = model.config
        self.F, self.J, self.C = cfg.num_frame, cfg.num_joints, cfg.in_chans
        check_lookahead(lookahead, self.F)
        self.model, self.L, self.flip, self.device = model, lookahead, flip, torch.device(device)
        self._buf: deque[np.ndarray] = deque(maxlen=self.F)  # the last F frames pushed
        self._stamps: deque[Any] = deque()  # stamps of frames pushed and not yet lifted (at most L + 1)
        self.pushed = 0
        self.emitted = 0
        self.model_seconds = 0.0
        self.forwards = 0

    def push(self, x: np.ndarray, stamp: Any = None) -> list[Lifted]:
        """(J, C) normalised 2D of the next frame -> the frames lifted now (one once L frames are ahead of it)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape != (self.J, self.C):
            raise StreamError(f"stream frame {self.pushed}: expected ({self.J}, {self.C}) 2D, got {x.shape}")
        if not np.isfinite(x).all():
            raise StreamError(f"stream frame {self.pushed}: NaN/inf in the 2D input (fill missing joints first)")
        self._buf.append(x)
        self._stamps.append(stamp)
        self.pushed += 1
        ready = list(range(self.emitted, max(self.emitted, self.pushed - self.L)))
        return self._lift(ready, end=False)

    def finish(self) -> list[Lifted]:
        """End of stream: lift the frames still waiting for future frames, with the offline final window."""
        return self._lift(list(range(self.emitted, self.pushed)), end=True)

    def window(self, t: int, end: bool) -> tuple[int, int]:
        """Frame t -> (first frame of its window, last real frame in it); frames past the last are edge-padded."""
        T = self.pushed
        if end:
            return (0, T - 1) if T <= self.F else (T - self.F, T - 1)
        hi = t + self.L
        return max(0, hi - self.F + 1), hi

    def _lift(self, frames: list[int], end: bool) -> list[Lifted]:
        if not frames:
            return []
        keys = [self.window(t, end) for t in frames]
        unique = list(dict.fromkeys(keys))  # frames that share a window share its forward
        base = self.pushed - len(self._buf)  # stream index of self._buf[0]
        buf = np.stack(self._buf)  # (<= F, J, C)
        rows = [buf[np.minimum(np.arange(self.F) + lo, hi) - base] for lo, hi in unique]
        t0 = time.perf_counter()
        with torch.inference_mode():
            w = torch.from_numpy(np.stack(rows)).to(self.device)  # (W, F, J, C)
            n = len(w)
            if self.flip:
                pred = self.model(torch.cat([w, flip_pose(w, H36M_LEFT, H36M_RIGHT)]))
                pred = (pred[:n] + flip_pose(pred[n:], H36M_LEFT, H36M_RIGHT)) / 2
            else:
                pred = self.model(w)
            pred = pred.float().cpu().numpy()
        self.model_seconds += time.perf_counter() - t0
        self.forwards += 1
        where = {k: i for i, k in enumerate(unique)}
        out = []
        for t, key in zip(frames, keys):
            out.append(Lifted(t, pred[where[key], t - key[0]].copy(), self._stamps.popleft()))
        self.emitted = frames[-1] + 1
        return out


def stream_plan(T: int, num_frame: int, lookahead: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows StreamLifter uses on a T-frame stream, all at once: -> ((T, F) frame indices, edge padding
    included; (T,) position of frame t in its window). For evaluating streaming on recorded clips in big batches."""
    check_lookahead(lookahead, num_frame)
    F, t = num_frame, np.arange(T)
    waiting = t + lookahead >= T  # still waiting when the stream ended: the final window
    lo = np.where(waiting, max(0, T - F), np.maximum(0, t + lookahead - F + 1))
    hi = np.where(waiting, T - 1, t + lookahead)
    return np.minimum(lo[:, None] + np.arange(F), hi[:, None]), t - lo


# ----------------------------------------------------------------------------------------------------------------
# Writing as it goes
# ----------------------------------------------------------------------------------------------------------------

class StreamWriter:
    """Per-frame rows (``fields``: name -> (per-frame shape, dtype)) written in chunks beside ``out``;
    ``close(meta)`` assembles ``out`` (.npz: one (T, ...) array per field plus ``meta``, a JSON string) atomically.

    Chunk files live in a hidden folder next to ``out`` until the archive is complete, then go. Memory: one chunk.
    """

    def __init__(self, out: str | os.PathLike, fields: dict[str, tuple[tuple[int, ...], Any]], chunk: int = 256):
        self.out = Path(out)
        self.fields = {k: (tuple(s), np.dtype(d)) for k, (s, d) in fields.items()}
        self.chunk = chunk
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.stream-"))
        self._rows: dict[str, list[np.ndarray]] = {k: [] for k in self.fields}
        self._chunks: list[Path] = []
        self.frames = 0
        self.closed = False

    def write(self, **row: Any) -> None:
        """One frame: every field, in its per-frame shape."""
        for k, (shape, dtype) in self.fields.items():
            v = np.asarray(row[k], dtype=dtype)
            if v.shape != shape:
                raise ValueError(f"StreamWriter: field {k!r} expects {shape}, got {v.shape}")
            self._rows[k].append(v)
        self.frames += 1
        if len(self._rows[next(iter(self.fields))]) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Write the rows held so far as one chunk file."""
        n = len(self._rows[next(iter(self.fields))])
        if n == 0:
            return
        path = self.dir / f"chunk_{len(self._chunks):06d}.npz"
        with open(path, "wb") as f:
            np.savez(f, **{k: np.stack(v) for k, v in self._rows.items()})
        self._chunks.append(path)
        self._rows = {k: [] for k in self.fields}

    def close(self, meta: dict[str, Any]) -> Path:
        """Flush, assemble ``out`` atomically (chunk by chunk), remove the chunk folder; -> ``out``."""
        if self.closed:
            return self.out
        self.flush()
        from fastmixste.io.files import atomic_write

        with atomic_write(self.out) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for k, (shape, dtype) in self.fields.items():
                with zf.open(f"{k}.npy", "w", force_zip64=True) as member:
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": (self.frames, *shape)}
                    np.lib.format.write_array_header_2_0(member, header)
                    for path in self._chunks:
                        with np.load(path) as z:
                            member.write(np.ascontiguousarray(z[k], dtype=dtype).tobytes())
            with zf.open("meta.npy", "w") as member:
                np.lib.format.write_array(member, np.array(json.dumps(meta)))
        self.discard()
        self.closed = True
        return self.out

    def discard(self) -> None:
        """Remove the chunk folder (after assembly, or to abandon the stream)."""
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what ``timeout``, SLURM and Kubernetes send) stops the stream as Ctrl-C does: cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------------------------------------------
# 2D, online: one person, gaps held, normalised
# ----------------------------------------------------------------------------------------------------------------

class OnlinePose:
    """Detections of one frame (P, 17, 3) H36M pixels -> (17, 2) normalised 2D of one tracked person, online.

    The person: the one nearest the last frame's (the most confident first). Joints below ``min_confidence`` hold
    their last seen position; a joint never seen yet takes the centre of the joints seen in that frame.
    """

    def __init__(self, width: float, height: float, min_confidence: float = 0.2) -> None:
        self.width, self.height, self.min_conf = float(width), float(height), min_confidence
        self.last: np.ndarray | None = None  # (17, 2) pixels
        self.picked: int | None = None  # which of the last update's people was followed (None: nobody)

    def update(self, people: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """-> ((17, 2) normalised 2D, or None while no person has been seen yet; (17,) confidence; (17,) filled)."""
        people = np.asarray(people, dtype=np.float32).reshape(-1, 17, 3)
        good = np.isfinite(people[..., :2]).all(-1) & (people[..., 2] >= self.min_conf)  # (P, 17)
        present = good.any(-1)
        self.picked = None
        if not present.any():
            if self.last is None:
                return None, np.zeros(17, np.float32), np.ones(17, bool)
            return normalize_screen(self.last, self.width, self.height), np.zeros(17, np.float32), np.ones(17, bool)
        idx = np.flatnonzero(present)
        if self.last is not None and len(idx) > 1:
            centres = np.array([np.nanmean(np.where(good[i, :, None], people[i, :, :2], np.nan), 0) for i in idx])
            i = idx[int(np.argmin(np.linalg.norm(centres - self.last.mean(0), axis=-1)))]
        else:
            i = idx[int(np.argmax([people[j, :, 2][good[j]].mean() for j in idx]))]
        g = good[i]
        self.picked = int(i)
        pose = people[i, :, :2].copy()
        held = self.last if self.last is not None else np.broadcast_to(pose[g].mean(0), (17, 2))
        pose[~g] = held[~g]
        self.last = pose
        conf = np.where(g, people[i, :, 2], 0.0).astype(np.float32)
        return normalize_screen(pose, self.width, self.height), conf, ~g


# ----------------------------------------------------------------------------------------------------------------
# Sources and the streaming run
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Frame2D:
    """One frame ready for lifting: media time (s), wall-clock arrival (perf_counter, when it was decoded), the
    (17, C) normalised model input, (17, 2) pixels, (17,) confidence, (17,) filled; ``world`` (17, 3) the
    detector's own 3D of the person (metres) where it makes one, else None."""

    timestamp: float
    arrival: float
    x: np.ndarray
    pose_2d: np.ndarray
    confidence: np.ndarray
    filled: np.ndarray
    world: np.ndarray | None = None


def keypoint_stream(x: np.ndarray, pose: np.ndarray, confidence: np.ndarray, filled: np.ndarray,
                    fps: float) -> Iterator[Frame2D]:
    """Frames of a keypoint sequence, one at a time ((T, 17, C) normalised, (T, 17, 2) px, (T, 17), (T, 17))."""
    for t in range(len(x)):
        yield Frame2D(t / fps, time.perf_counter(), x[t], pose[t], confidence[t], filled[t])


def detected_stream(frames: Iterator[tuple[np.ndarray, float]], detector: Any, width: float, height: float,
                    min_confidence: float = 0.2, in_chans: int = 2) -> Iterator[Frame2D]:
    """(RGB frame, media time) pairs -> Frame2D: detection, conversion to H36M-17, one person (``OnlinePose``)."""
    from fastmixste.video.detectors import detect_checked, gives_own_3d
    from fastmixste.video.fusion import blazepose_world_to_h36m
    from fastmixste.video.keypoints import to_h36m

    track = OnlinePose(width, height, min_confidence)
    with_world = gives_own_3d(detector)
    # (timestamp, arrival) of frames before the first person (16 bytes a frame: their pose will be the first one)
    waiting: list[tuple[float, float]] = []
    who = f"detector {detector.name!r}"
    for rgb, stamp in frames:
        arrival = time.perf_counter()
        kp, w3d = detect_checked(detector, rgb[None], who, with_world)
        kp = kp[0]  # (P, J, 3)
        w3d = w3d[0] if with_world else None
        ok = np.isfinite(kp[..., :2]).all(-1).any(-1) & (kp[..., 2] > 0).any(-1)
        people = to_h36m(kp[ok], detector.layout) if ok.any() else np.zeros((0, 17, 3), np.float32)
        x, conf, filled = track.update(people)
        world = None
        if with_world and track.picked is not None and w3d.shape == kp.shape:
            world = blazepose_world_to_h36m(w3d[ok][track.picked])
        if x is None:
            waiting.append((stamp, arrival))
            continue
        px = track.last.copy()
        if in_chans == 3:
            x = np.concatenate([x, conf[:, None]], axis=-1)
        for ts, arr in waiting:  # frames before the first person: that person's first pose, marked filled
            yield Frame2D(ts, arr, x, px, np.zeros(17, np.float32), np.ones(17, bool))
        waiting = []
        yield Frame2D(stamp, arrival, x, px, conf, filled, world)


def video_frames(source: Any) -> Iterator[tuple[np.ndarray, float]]:
    """(RGB frame, media time i / fps) of a ``fastmixste.video.decode.VideoSource``, decoded one at a time."""
    for i, rgb in enumerate(source.frames()):
        yield rgb, i / source.fps


CAMERA_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}


def open_camera(index: int) -> tuple[Iterator[tuple[np.ndarray, float]], int, int, float, str]:
    """A live camera through PyAV's device input -> (frames with their capture time, width, height, fps, name).

    Linux: ``/dev/video<index>`` (v4l2); macOS: AVFoundation device ``<index>``. Refuses, saying why, where PyAV
    has no device input or the camera is not there.
    """
    import sys

    from fastmixste.video.decode import import_av

    av = import_av()
    fmt = CAMERA_FORMATS.get(sys.platform)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise StreamError(f"--camera must be a camera number >= 0, got {index!r}")
    if fmt is None or fmt == "dshow":
        raise StreamError(f"--camera is supported on Linux (v4l2) and macOS (avfoundation); this is {sys.platform}: "
                          f"stream a video file with --video instead")
    if fmt not in getattr(av, "formats_available", set()):
        raise StreamError(f"--camera: this PyAV build ({av.__version__}) has no {fmt!r} device input; stream a "
                          f"video file with --video instead")
    name = f"/dev/video{index}" if fmt == "v4l2" else str(index)
    if fmt == "v4l2" and not Path(name).exists():
        raise StreamError(f"--camera {index}: no camera at {name} on this machine")
    try:
        container = av.open(name, format=fmt)
    except av.FFmpegError as exc:
        raise StreamError(f"--camera {index}: cannot open {name} ({exc})") from exc
    stream = container.streams.video[0]
    width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 30.0

    def frames() -> Iterator[tuple[np.ndarray, float]]:
        t0 = None
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else time.perf_counter()
                t0 = t if t0 is None else t0
                yield frame.to_ndarray(format="rgb24"), t - t0
        except av.FFmpegError as exc:
            raise StreamError(f"--camera {index}: capture failed ({exc})") from exc
        finally:
            container.close()

    return frames(), width, height, fps, name


class OnlineRoot:
    """The person's root in the camera frame, online: each frame's from its own lifted pose and 2D.

    ``update((17, 3) root-relative metres, (17, 2) pixels, (17,) weights) -> (3,)`` solves the frame alone with
    ``fastmixste.video.trajectory.root_trajectory`` (pinhole ``focal``, ``centre`` in pixels; weights as there).
    A frame that cannot be solved (fewer than two weighted joints) holds the last root (NaN before the first).
    ``smooth_frames`` > 0 averages the frame's root with the past ones under a one-sided Gaussian of that standard
    deviation (the frames seen so far only: offline centres its Gaussian on the frame, which needs the future).
    """

    def __init__(self, focal: float | tuple[float, float], centre: tuple[float, float], smooth_frames: float = 0.0):
        if smooth_frames < 0:
            raise ValueError(f"OnlineRoot: smooth_frames must be >= 0, got {smooth_frames}")
        self.focal, self.centre = focal, centre
        radius = int(np.ceil(3 * smooth_frames)) if smooth_frames > 0 else 0
        k = np.arange(radius + 1)
        self._weights = np.exp(-0.5 * (k / smooth_frames) ** 2) if radius else np.ones(1)  # [0] = this frame
        self._past: deque[np.ndarray] = deque(maxlen=radius + 1)  # raw roots, newest first
        self.last: np.ndarray | None = None

    def update(self, pose_3d: np.ndarray, keypoints: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(17, 3) root-relative metres, (17, 2) pixels, (17,) weights -> (3,) root in the camera frame, metres."""
        from fastmixste.video.trajectory import root_trajectory

        root = root_trajectory(np.asarray(pose_3d)[None], np.asarray(keypoints)[None, :, :2], self.focal,
                               self.centre, confidence=np.asarray(weights)[None])[0]
        if not np.isfinite(root).all():  # not solvable on its own: hold the last
            root = self.last if self.last is not None else np.full(3, np.nan)
        self.last = root
        if not np.isfinite(root).all():
            return root
        self._past.appendleft(root)
        w = self._weights[:len(self._past)]
        return (w[:, None] * np.stack(self._past)).sum(0) / w.sum()


def run_stream(model: torch.nn.Module, frames: Iterator[Frame2D], out: str | os.PathLike, *, lookahead: int,
               flip: bool = True, meta: dict[str, Any] | None = None, device: torch.device | str = "cpu",
               chunk: int = 256, progress: Any = None, camera: tuple[float, tuple[float, float]] | None = None,
               smooth_root: float = 0.0, fusion: Any = None) -> dict[str, Any]:
    """Lift ``frames`` online into ``out`` (.npz written as it goes, assembled at the end) -> the metadata written.

    The npz holds per frame: ``pose_3d`` (T, 17, 3) (root set to 0), ``pose_2d`` pixels, ``pose_2d_normalized``,
    ``confidence``, ``filled``, ``timestamp`` (media seconds) and ``latency`` (seconds from the frame's arrival to
    its 3D being written: lookahead plus compute). With ``camera`` = (focal, (cx, cy)) in pixels also
    ``root_trajectory`` (T, 3), the root in the camera frame solved online (``OnlineRoot``; ``smooth_root`` > 0
    averages over the past frames, which lags: on the real recording sigma 2 changed the root error by under 1 mm,
    so the default is none), and ``pose_3d_camera`` = pose_3d + root_trajectory. With ``fusion`` (a
    ``fastmixste.video.fusion.OnlineFusion``) ``pose_3d`` is the lifted pose blended with the frames' detector 3D
    (``Frame2D.world``) and ``pose_3d_lifter`` the lifter's alone. Ctrl-C or SIGTERM ends the stream
    as its end does (frames already detected in a ``Background`` source are lifted too, then the frames waiting for
    their lookahead with the final window) and then stops with exit 130; a source that fails part-way has what came
    before it written, and the error says so (StreamError). ``frames`` is closed when the stream stops.
    """
    from fastmixste.io.cli import defer_interrupts, on_interrupt

    lifter = StreamLifter(model, lookahead, flip=flip, device=device)
    c = lifter.C
    fields = {"pose_3d": ((17, 3), np.float32), "pose_2d": ((17, 2), np.float32),
              "pose_2d_normalized": ((17, c), np.float32), "confidence": ((17,), np.float32),
              "filled": ((17,), bool), "timestamp": ((), np.float64), "latency": ((), np.float64)}
    if fusion is not None:
        fields["pose_3d_lifter"] = ((17, 3), np.float32)
    roots = None
    if camera is not None:
        roots = OnlineRoot(camera[0], camera[1], smooth_root)
        fields.update({"root_trajectory": ((3,), np.float32), "pose_3d_camera": ((17, 3), np.float32)})
    writer = StreamWriter(out, fields, chunk=chunk)
    latencies: list[float] = []  # kept for the summary only: 8 bytes a frame
    meta = dict(meta or {})
    meta.update({"stream": True, "lookahead": lookahead, "num_frame": lifter.F, "flip": flip})
    if camera is not None:
        meta["root_smoothing"] = (f"one-sided Gaussian over the past frames, sigma {smooth_root:g} frames"
                                  if smooth_root > 0 else "none: each frame's own solve")

    def emit(done: list[Lifted]) -> None:
        for o in done:
            f: Frame2D = o.stamp
            pose = o.pose_3d.copy()
            pose[0] = 0.0  # root-relative, root at the origin (as in training)
            extra = {}
            if fusion is not None:
                extra["pose_3d_lifter"] = pose
                pose = fusion.fuse(o.index, pose)
            if roots is not None:
                # seen joints weigh by their confidence; held (filled) ones barely count (as offline)
                weight = np.where(f.filled, 0.0, np.nan_to_num(f.confidence, nan=0.0)) + 1e-3
                root = roots.update(pose, f.pose_2d, weight)
                extra.update({"root_trajectory": root, "pose_3d_camera": pose + root})
            lat = time.perf_counter() - f.arrival
            latencies.append(lat)
            writer.write(pose_3d=pose, pose_2d=f.pose_2d, pose_2d_normalized=f.x, confidence=f.confidence,
                         filled=f.filled, timestamp=f.timestamp, latency=lat, **extra)
            if progress is not None:
                progress(o.index)

    def close(stopped: str) -> dict[str, Any]:
        emit(lifter.finish())
        lat = np.asarray(latencies) if latencies else np.full(1, np.nan)
        if fusion is not None:
            meta["detector_3d"] = ({"fused": True, "online": True, "lifter_weight": fusion.lifter_weight,
                                    "smooth_radius_frames": fusion.radius, "detector_3d_frames": fusion.frames_with_3d,
                                    "frames": lifter.pushed} if fusion.frames_with_3d
                                   else {"fused": False, "reason": "the detector gave no 3D of its own"})
        meta.update({"stopped": stopped, "num_frames": writer.frames, "model_seconds": lifter.model_seconds,
                     "forwards": lifter.forwards, "latency_median_s": float(np.median(lat)),
                     "latency_p95_s": float(np.percentile(lat, 95)), "wall_seconds": time.perf_counter() - t0})
        writer.close(meta)
        return meta

    def stop_source() -> None:
        stop = getattr(frames, "close", None)
        if stop is not None:
            stop()

    t0 = time.perf_counter()
    try:
        with sigterm_as_interrupt():
            for f in frames:
                if fusion is not None:
                    fusion.add(f.world)
                emit(lifter.push(f.x, f))
    except KeyboardInterrupt:
        with defer_interrupts():
            for f in frames.pending() if isinstance(frames, Background) else []:  # detected before the stop
                if fusion is not None:
                    fusion.add(f.world)
                emit(lifter.push(f.x, f))
            stop_source()
            if lifter.pushed:
                close("interrupted")
            else:
                writer.discard()
        note = f"the {writer.frames} frames lifted before it are in {out}" if lifter.pushed else "no frame had come"
        on_interrupt(lambda: note)
        raise
    except (ValueError, OSError) as exc:  # a source that fails part-way (decoding, the detector, a file)
        stop_source()
        if not lifter.pushed:
            writer.discard()
            raise
        close(f"source failed: {exc}")
        raise StreamError(f"{exc} (the stream stopped there: the {writer.frames} frames before it were lifted and "
                          f"written to {out})") from exc
    except BaseException:
        stop_source()
        writer.discard()
        raise
    stop_source()
    if not lifter.pushed:
        writer.discard()
        raise StreamError("the stream ended before its first frame: nothing to lift")
    return close("end of stream")


# ----------------------------------------------------------------------------------------------------------------
# train.infer --stream
# ----------------------------------------------------------------------------------------------------------------

def infer_stream(args: Any, model: torch.nn.Module, device: torch.device, progress: bool) -> dict[str, Any]:
    """``train.infer --stream`` (``--video``, ``--keypoints`` or ``--camera``): the streaming run and its metadata."""
    from contextlib import ExitStack

    from tqdm import tqdm

    cfg = model.config
    lookahead = cfg.num_frame // 2 if args.lookahead is None else args.lookahead
    check_lookahead(lookahead, cfg.num_frame)
    if args.threads is None and device.type == "cpu":
        # One window per frame is a small pass: on a shared 2-core machine a second thread spinning for work measured
        # up to 60x slower per pass (16 ms vs 1 s median, the default-run model); --threads sets it.
        torch.set_num_threads(1)
    if args.render is not None:
        raise StreamError("--render draws a finished clip and is not made while streaming; render from a run "
                          "without --stream")
    meta: dict[str, Any] = {"checkpoint": str(args.checkpoint), "runtime": args.runtime, "device": str(device),
                            "backend": model.resolved_backend(torch.zeros(1, cfg.num_frame, 17, cfg.in_chans,
                                                                          device=device)),
                            "units": "metres, camera axes (x right, y down, z forward); pose_3d root-relative "
                                     "(root = 0), root_trajectory the root in the camera frame (intrinsics "
                                     "assumed), pose_3d_camera both",
                            "joint_order": "Human3.6M 17 (fastmixste.data.skeleton.H36M_JOINT_NAMES)"}
    with ExitStack() as stack:
        total = None
        if args.keypoints is not None:
            from fastmixste.video.keypoints import load_keypoints

            kps = load_keypoints(args.keypoints, args.layout, width=args.width, height=args.height,
                                 person=args.person, min_confidence=args.min_confidence)
            x = kps.normalized()
            if cfg.in_chans == 3:
                x = np.concatenate([x, kps.confidence[..., None]], axis=-1)
            fps = args.fps or 50.0
            frames = keypoint_stream(x, kps.pose, kps.confidence, kps.filled, fps)
            total = len(x)
            meta.update({"input": str(args.keypoints), "kind": "keypoints", "fps": fps, "width": kps.width,
                         "height": kps.height})
        else:
            from fastmixste.video.detectors import make_detector

            if args.camera is not None:
                raw, width, height, fps, name = open_camera(args.camera)
                meta.update({"input": name, "kind": "camera"})
            else:
                from fastmixste.video.decode import open_video

                source = open_video(args.video, fps=args.fps)
                raw, width, height, fps = video_frames(source), source.width, source.height, source.fps
                total = source.num_frames
                meta.update({"input": str(source.path), "kind": source.kind, "codec": source.codec,
                             "notes": source.notes})
            detector = stack.enter_context(make_detector(args.detector, onnx_model=args.onnx_model,
                                                         onnx_layout=args.onnx_layout, threads=args.threads))
            frames = detected_stream(raw, detector, width, height, args.min_confidence, cfg.in_chans)
            meta.update({"fps": fps, "width": float(width), "height": float(height),
                         "detector": detector.describe()})
            if not args.serial:  # decode + detect in a second thread, lift + write here: the stages overlap
                frames = Background(frames, depth=PIPELINE_DEPTH)
            meta["pipeline"] = ("one thread" if args.serial else
                                f"two threads: decode + detect | lift + write, {PIPELINE_DEPTH} frames between them")
        from fastmixste.video.trajectory import default_intrinsics

        focal, centre = default_intrinsics(meta["width"], meta["height"], args.fov)
        meta["intrinsics"] = {"focal_px": focal, "centre_px": list(centre), "fov_degrees": args.fov, "assumed": True}
        fusion = None
        if getattr(args, "detector_3d", "off") == "blend" and args.keypoints is None:
            from fastmixste.video.fusion import OnlineFusion

            fusion = OnlineFusion(meta["fps"], lookahead)  # frames without detector 3D: the lifter's pose alone
        else:
            meta["detector_3d"] = {"fused": False, "reason": "--detector-3d off" if args.keypoints is None
                                   else "keypoint input carries no detector 3D"}
        bar = stack.enter_context(tqdm(total=total, desc="stream", unit="frame", disable=not progress, leave=False))
        return run_stream(model, frames, args.out, lookahead=lookahead, flip=not args.no_flip, meta=meta,
                          device=device, progress=lambda i: bar.update(1), camera=(focal, centre), fusion=fusion)


def print_stream_summary(args: Any, meta: dict[str, Any]) -> None:
    """What a streaming run did, for the terminal."""
    fps = meta["num_frames"] / meta["wall_seconds"] if meta["wall_seconds"] > 0 else float("nan")
    print(f"{meta['input']}: streamed {meta['num_frames']} frames ({meta['stopped']}), lookahead {meta['lookahead']} "
          f"of a {meta['num_frame']}-frame window, flip {'on' if meta['flip'] else 'off'}, {meta['backend']}")
    print(f"{fps:.1f} frames/s end to end; latency from a frame's arrival to its 3D: median "
          f"{1e3 * meta['latency_median_s']:.1f} ms, p95 {1e3 * meta['latency_p95_s']:.1f} ms (the lookahead's "
          f"{meta['lookahead']} frames included); model {meta['model_seconds']:.2f} s in {meta['forwards']} passes"
          + (f"; {meta['pipeline']}" if "pipeline" in meta else "") + f" -> {args.out}")
    fusion = meta.get("detector_3d", {})
    if fusion.get("fused"):
        print(f"3D: the lifter's ({100 * fusion['lifter_weight']:.0f}%) blended online with the detector's own 3D "
              f"({fusion['detector_3d_frames']} of {fusion['frames']} frames; pose_3d_lifter keeps the lifter's)")
    elif fusion:
        print(f"3D: the lifter's alone ({fusion['reason']})")
