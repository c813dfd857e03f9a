"""The live pipeline of ``python -m benchmarks.realtime``: a 720p clip of a real person, what the detector alone
costs per frame, and decode -> detect -> stream-lift -> write per runtime, lookahead and threading.

- Clip: the real-data check's recording (``benchmarks.realdata_scene.ensure_demo``: Pose2Sim's Demo_MultiPerson,
  cam01, 1088x1920 at 60 fps, 100 frames, two people on a treadmill) scaled to 720 pixels high, centred on a black
  1280x720 frame, played forwards and backwards to ``frames`` frames, written as H.264 at 30 fps (PyAV). Without the
  recording (or without MediaPipe) a synthetic clip and a stand-in detector are used, and the rows say so.
- Detector alone: decode and MediaPipe per frame (wall median / p95, CPU ms of the process), at 720p and decoded
  straight to 640x360 (MediaPipe's pose model sees a 256x256 crop of the person either way), with how far the
  keypoints of the smaller decode land from the 720p ones.
- Pipeline: ``fastmixste.deploy.stream`` as ``train.infer --stream`` runs it: one thread (decode, detect, lift,
  write in turn) or two (``Background``: decode + detect a few frames ahead of lift + write). "as fast as it
  decodes" reads the file flat out (throughput); "paced" hands the frames over at ``camera_fps`` (default 25, the
  target rate), as a camera does (latency from the frame's capture: the lookahead's frames at that rate plus
  compute, plus any wait when the pipeline falls behind). The two-thread output is compared with the one-thread
  output, array by array.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CLIP_SIZE = (1280, 720)
CLIP_FPS = 30


def _load() -> float:
    return os.getloadavg()[0]


def make_person_clip(path: Path, frames: int, *, download: bool = True) -> str:
    """Write the 720p clip of a real person (see the module docstring) -> a description of it.

    Raises ``benchmarks.realdata_scene.RealDataError`` when the recording is not cached and ``download`` is off.
    """
    import av
    from PIL import Image

    from benchmarks.realdata_scene import ensure_demo

    demo = ensure_demo(download=download)
    w, h = CLIP_SIZE
    source = []
    with av.open(str(demo / "videos" / "cam01.mp4")) as c:
        for f in c.decode(video=0):
            img = f.to_image()
            scaled = img.resize((round(img.width * h / img.height), h), Image.Resampling.BILINEAR)
            canvas = Image.new("RGB", (w, h))
            canvas.paste(scaled, ((w - scaled.width) // 2, 0))
            source.append(np.asarray(canvas))
    order = np.concatenate([np.arange(len(source)), np.arange(len(source) - 2, 0, -1)])  # forwards, backwards
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=CLIP_FPS)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            for pkt in s.encode(av.VideoFrame.from_ndarray(source[order[i % len(order)]], format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return (f"{w}x{h} H.264 {CLIP_FPS} fps, {frames} frames: the real-data recording (Demo_MultiPerson cam01, "
            f"two people) scaled to {h} px high, forwards and backwards")


def make_synthetic_clip(path: Path, frames: int) -> str:
    """A synthetic 720p H.264 clip (a moving bright box, nobody in it) -> a description of it."""
    import av

    w, h = CLIP_SIZE
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=CLIP_FPS)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            a = np.zeros((h, w, 3), np.uint8)
            x0 = (40 + 7 * i) % (w - 200)
            a[200:600, x0:x0 + 150] = 220
            for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return f"{w}x{h} H.264 {CLIP_FPS} fps, {frames} frames: synthetic (a moving box)"


class FixedPose:
    """Stand-in detector (no model): one person, a fixed H36M pose swaying a little, confidence 1."""

    name, version, layout = "fixed-pose stand-in", "", "h36m"

    def __init__(self) -> None:
        from fastmixste.data.skeleton import H36M_PARENTS

        rng = np.random.default_rng(0)
        self.pose = np.zeros((17, 2), np.float32)
        for j, p in enumerate(H36M_PARENTS):
            if p >= 0:
                self.pose[j] = self.pose[p] + rng.normal(0, 40, 2)
        self.pose += (640, 360)
        self.t = 0

    def detect(self, frames: np.ndarray) -> np.ndarray:
        out = np.ones((len(frames), 1, 17, 3), np.float32)
        for i in range(len(frames)):
            out[i, 0, :, :2] = self.pose + 10 * np.sin(0.1 * self.t)
            self.t += 1
        return out

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "layout": self.layout}

    def close(self) -> None:
        return None


def make_detector(real: bool) -> tuple[Any, str]:
    """-> (a fresh detector, its description): MediaPipe Pose when ``real``, else the stand-in."""
    if real:
        from fastmixste.video.detectors import MediaPipePose

        d = MediaPipePose()
        return d, f"MediaPipe Pose {d.version} (BlazePose full, tracking)"
    return FixedPose(), "fixed-pose stand-in (no MediaPipe here: decode + lift + write only)"


def mediapipe_available() -> bool:
    try:
        from fastmixste.video.detectors import MediaPipePose

        MediaPipePose().close()
    except ImportError:  # MissingExtraError: the video extra is not installed
        return False
    return True


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95))}


def bench_detector(clip: Path, real: bool, small: tuple[int, int] = (640, 360)) -> list[dict]:
    """Decode and detect frame by frame, at the clip's size and decoded straight to ``small`` -> rows: wall
    median/p95 and CPU ms per frame of each stage; for ``small`` the keypoint distance to the full-size run."""
    from fastmixste.video.decode import open_video

    rows, full_kp = [], None
    for size in (None, small):
        source = open_video(clip)
        detector, what = make_detector(real)
        scale = 1.0 if size is None else source.width / size[0]
        dec_wall, dec_cpu, det_wall, det_cpu, kps = [], [], [], [], []
        load0 = _load()
        frames = source.frames(size)
        while True:
            w0, c0 = time.perf_counter(), time.process_time()
            rgb = next(frames, None)
            w1, c1 = time.perf_counter(), time.process_time()
            if rgb is None:
                break
            kp = detector.detect(rgb[None])[0, 0]  # (J, 3)
            dec_wall.append(1e3 * (w1 - w0))
            dec_cpu.append(1e3 * (c1 - c0))
            det_wall.append(1e3 * (time.perf_counter() - w1))
            det_cpu.append(1e3 * (time.process_time() - c1))
            kps.append(kp[:, :2] * scale)
        detector.close()
        kps = np.stack(kps)
        row = {"decode_size": "x".join(map(str, size or (source.width, source.height))), "frames": len(kps),
               "decode": _stats(dec_wall) | {"cpu_ms": float(np.mean(dec_cpu))},
               "detect": _stats(det_wall) | {"cpu_ms": float(np.mean(det_cpu))},
               "detector": what, "load_average": [load0, _load()]}
        if full_kp is None:
            full_kp = kps
        else:
            d = np.linalg.norm(kps - full_kp, axis=-1)
            row["keypoint_shift_px"] = {"median": float(np.nanmedian(d)), "p95": float(np.nanpercentile(d, 95))}
        rows.append(row)
        print(f"decode {row['decode_size']}: {row['decode']['median_ms']:.1f} ms ({row['decode']['cpu_ms']:.1f} CPU), "
              f"detect {row['detect']['median_ms']:.1f} ms median, p95 {row['detect']['p95_ms']:.1f} "
              f"({row['detect']['cpu_ms']:.1f} CPU) per frame; load {load0:.1f}", flush=True)
    return rows


class Paced:
    """(frame, time) pairs handed over no faster than ``fps``, as a camera delivers them: frame i at start + i / fps.

    ``captured(frames)`` sets each Frame2D's arrival to that time (when a camera would have captured it), so the
    latency written counts the time a frame waits when the pipeline falls behind.
    """

    def __init__(self, frames: Iterator[tuple[np.ndarray, float]], fps: float) -> None:
        self.frames, self.fps, self.start = frames, fps, None

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        self.start = time.perf_counter()
        for i, item in enumerate(self.frames):
            delay = self.start + i / self.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield item

    def captured(self, frames: Iterator[Any]) -> Iterator[Any]:
        for i, f in enumerate(frames):
            f.arrival = self.start + i / self.fps
            yield f


def run_pipeline(lifter: Any, clip: Path, out: Path, *, lookahead: int, two_threads: bool, pace: float | None,
                 real: bool) -> dict:
    """One streaming run over ``clip`` (``train.infer --stream``'s pipeline) -> its row (frames/s, latency)."""
    from fastmixste.deploy.stream import PIPELINE_DEPTH, Background, detected_stream, run_stream, video_frames
    from fastmixste.video.decode import open_video

    source = open_video(clip)
    detector, what = make_detector(real)
    raw = video_frames(source)
    camera = Paced(raw, pace) if pace else None
    frames = detected_stream(iter(camera) if camera else raw, detector, source.width, source.height)
    if camera is not None:
        frames = camera.captured(frames)
    if two_threads:
        frames = Background(frames, depth=PIPELINE_DEPTH)
    load0 = _load()
    w0, c0 = time.perf_counter(), time.process_time()
    meta = run_stream(lifter, frames, out, lookahead=lookahead)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    detector.close()
    n = meta["num_frames"]
    return {"threads": 2 if two_threads else 1, "paced": pace, "lookahead": lookahead, "frames": n,
            "frames_per_s": n / wall, "cpu_ms_per_frame": 1e3 * cpu / n,
            "latency_median_ms": 1e3 * meta["latency_median_s"], "latency_p95_ms": 1e3 * meta["latency_p95_s"],
            "model_ms_per_frame": 1e3 * meta["model_seconds"] / n, "detector": what,
            "load_average": [load0, _load()]}


def _same_output(a: Path, b: Path) -> bool:
    with np.load(a) as x, np.load(b) as y:
        return all(np.array_equal(x[k], y[k]) for k in x.files if k not in ("latency", "meta"))


def bench_pipeline(lifters: dict, clip: Path, lookaheads: list[int], workdir: Path, real: bool,
                   camera_fps: float = 25.0) -> list[dict]:
    """Per runtime and lookahead: one thread and two, as fast as the file decodes and paced at ``camera_fps``; the
    two-thread output checked against the one-thread one."""
    rows = []
    for L in lookaheads:
        for rt, m in lifters.items():
            for two, pace in ((False, None), (True, None), (False, camera_fps), (True, camera_fps)):
                out = workdir / f"stream_{rt}_{L}_{int(two)}{int(bool(pace))}.npz"
                row = {"runtime": rt} | run_pipeline(m, clip, out, lookahead=L, two_threads=two, pace=pace, real=real)
                if two and not pace:
                    row["same_output_as_one_thread"] = _same_output(out, workdir / f"stream_{rt}_{L}_00.npz")
                rows.append(row)
                print(f"pipeline {rt} L={L} {row['threads']} thread(s){f' paced {pace:g} fps' if pace else ''}: "
                      f"{row['frames_per_s']:.1f} frames/s, {row['cpu_ms_per_frame']:.1f} CPU ms/frame, latency "
                      f"median {row['latency_median_ms']:.1f} ms p95 {row['latency_p95_ms']:.1f} ms, load "
                      f"{row['load_average'][0]:.1f}", flush=True)
    return rows


def prepare_clip(workdir: Path, frames: int, download: bool) -> tuple[Path, str, bool]:
    """-> (clip path, its description, whether the real detector runs on it)."""
    from benchmarks.realdata_scene import RealDataError

    clip = workdir / "clip.mp4"
    if mediapipe_available():
        try:
            return clip, make_person_clip(clip, frames, download=download), True
        except RealDataError as exc:
            print(f"no real recording ({exc}): a synthetic clip and the stand-in detector", flush=True)
    return clip, make_synthetic_clip(clip, frames), False
