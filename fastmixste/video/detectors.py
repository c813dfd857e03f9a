"""2D pose detectors that run offline: a small interface and two adapters (MediaPipe Pose, a local ONNX model).

A detector takes a chunk of video frames and returns keypoints in its own joint layout::

    frames (T, H, W, 3) uint8 RGB  ->  keypoints (T, P, J, 3) float32 = (x, y in pixels, confidence)

P is the most people the detector can report in one frame; a slot with nobody in it is NaN with confidence 0.
``layout`` names the joint order (one of ``video.keypoints.LAYOUTS``), so ``to_h36m`` can convert it. Detectors
may keep state between chunks of one video (tracking); ``reset()`` forgets it before another video.

- ``MediaPipePose``: MediaPipe's legacy Pose solution (BlazePose-33, one person). mediapipe 0.10.21 wheels carry
  pose_detection.tflite and pose_landmark_full.tflite, so ``model_complexity=1`` runs with no download (0 and 2
  fetch their models at run time and are not offered). Installed by the ``video`` extra, which pins
  mediapipe==0.10.21; that release needs numpy < 2 and protobuf < 5 (fastmixste itself works with numpy 1 and 2).
- ``OnnxPose``: a top-down keypoint model exported to ONNX (RTMPose SimCC outputs, or heatmaps as ViTPose/HRNet)
  from a path on disk, run with onnxruntime (the ``onnx`` extra). Nothing is downloaded: the user brings the file.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fastmixste.video.keypoints import LAYOUTS, NUM_SOURCE_JOINTS

DETECTORS: tuple[str, ...] = ("mediapipe", "onnx")
MEDIAPIPE_VERSION = "0.10.21"


class DetectorError(ValueError):
    """A detector that cannot run as asked: missing model file, unsupported model outputs, bad options."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, what: str) -> Any:
    """Import ``module`` or raise MissingExtraError saying ``pip install "fastmixste[extra]"``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs the Python package {module!r}, which is not installed: "
                                f"pip install \"fastmixste[{extra}]\" ({exc})") from exc


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 (MediaPipe's C++ start-up chatter) for a moment."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (captured or closed): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class PoseDetector(ABC):
    """frames (T, H, W, 3) uint8 RGB -> (T, P, J, 3) float32 keypoints (x, y pixels, confidence) in ``layout``.

    Subclasses set ``name``, ``version`` and ``layout`` and implement ``detect``. Use as a context manager, or call
    ``close()``, to free the model.
    """

    name: str = "detector"
    version: str = ""
    layout: str = "coco"

    @abstractmethod
    def detect(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB -> (T, P, J, 3) float32; absent people are NaN with confidence 0."""

    def reset(self) -> None:
        """Forget any state kept between chunks (tracking), before frames of another video."""
        return None

    def close(self) -> None:
        """Free the model."""
        return None

    def describe(self) -> dict[str, Any]:
        """-> {"name", "version", "layout"}: what the output's metadata records about the detector."""
        return {"name": self.name, "version": self.version, "layout": self.layout}

    def __enter__(self) -> PoseDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_detections(keypoints: np.ndarray, frames: int, layout: str, who: str) -> np.ndarray:
    """Validate a detector's output: (frames, P, J, 3) with J the layout's joint count -> float32 array."""
    if layout not in LAYOUTS:
        raise DetectorError(f"{who}: layout {layout!r} is not one of {list(LAYOUTS)}")
    kp = np.asarray(keypoints, dtype=np.float32)
    joints = NUM_SOURCE_JOINTS[layout]
    if kp.ndim != 4 or kp.shape[0] != frames or kp.shape[2] != joints or kp.shape[3] != 3:
        raise DetectorError(f"{who}: expected keypoints of shape ({frames}, P, {joints}, 3) for {frames} frames in "
                            f"layout {layout!r}, got {kp.shape}")
    return kp


def gives_own_3d(detector: Any) -> bool:
    """Whether ``detector`` makes 3D of its own in the layout the video path converts (BlazePose: MediaPipe's world
    landmarks, ``detect_with_world``)."""
    return callable(getattr(detector, "detect_with_world", None)) and detector.layout == "blazepose"


def detect_checked(
    detector: Any, frames: np.ndarray, who: str, with_world: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """(T, H, W, 3) RGB frames -> (keypoints (T, P, J, 3) checked by :func:`check_detections`, the detector's own 3D
    as a float64 array when ``with_world`` (see :func:`gives_own_3d`), else None); its shape is the caller's to
    check."""
    if with_world:
        kp, world = detector.detect_with_world(frames)
        return check_detections(kp, len(frames), detector.layout, who), np.asarray(world, np.float64)
    return check_detections(detector.detect(frames), len(frames), detector.layout, who), None


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DetectorError(f"expected frames (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    return frames


# ----------------------------------------------------------------------------------------------------------------
# MediaPipe Pose (BlazePose-33)
# ----------------------------------------------------------------------------------------------------------------

class MediaPipePose(PoseDetector):
    """MediaPipe's legacy Pose solution with its bundled full landmark model: (T, H, W, 3) -> (T, 1, 33, 3).

    One person per frame (the solution tracks the person it found first until it loses them). Confidence is the
    landmark's ``visibility``. ``static_image_mode=True`` runs the person detector on every frame instead of
    tracking (slower, no temporal smoothing).
    """

    name = "mediapipe-pose"
    layout = "blazepose"

    def __init__(self, *, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 static_image_mode: bool = False) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging; must be set before import
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        mp = require("mediapipe", "video", "the MediaPipe pose detector")
        self.version = getattr(mp, "__version__", _package_version("mediapipe"))
        solutions = getattr(mp, "solutions", None)
        if solutions is None or not hasattr(solutions, "pose"):
            raise MissingExtraError(f"mediapipe {self.version} has no legacy pose solution (mediapipe 1.x ships no "
                                    f"models): pip install \"fastmixste[video]\" (mediapipe=={MEDIAPIPE_VERSION})")
        root = Path(mp.__file__).parent / "modules"
        missing = [m for m in ("pose_detection/pose_detection.tflite", "pose_landmark/pose_landmark_full.tflite")
                   if not (root / m).is_file()]
        if missing:  # without them the solution would try to download at run time
            raise MissingExtraError(f"mediapipe {self.version} does not carry {missing} in {root}; install "
                                    f"mediapipe=={MEDIAPIPE_VERSION}: pip install \"fastmixste[video]\"")
        self._options = {"static_image_mode": static_image_mode, "model_complexity": 1,
                         "min_detection_confidence": min_detection_confidence,
                         "min_tracking_confidence": min_tracking_confidence}
        self._solutions = solutions
        self._pose = None
        self._fresh = True
        self._open()

    def _open(self) -> None:
        with _quiet_native_stderr():
            self._pose = self._solutions.pose.Pose(**self._options)
        self._fresh = True

    def detect(self, frames: np.ndarray) -> np.ndarray:
        return self.detect_with_world(frames)[0]

    def detect_with_world(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, H, W, 3) uint8 RGB -> (keypoints (T, 1, 33, 3) as ``detect``, world (T, 1, 33, 3) float32).

        ``world`` is MediaPipe's own 3D, ``pose_world_landmarks``: metres, origin between the hips, x right, y down,
        z away from the camera (roughly the camera's axes); NaN where nobody was found.
        """
        frames = _check_frames(frames)
        t, h, w = frames.shape[:3]
        out = np.full((t, 1, 33, 3), np.nan, dtype=np.float32)
        out[..., 2] = 0.0
        world = np.full((t, 1, 33, 3), np.nan, dtype=np.float32)
        for i in range(t):
            if self._fresh:  # the graph logs its set-up warnings on the first frame
                with _quiet_native_stderr():
                    result = self._pose.process(np.ascontiguousarray(frames[i]))
                self._fresh = False
            else:
                result = self._pose.process(np.ascontiguousarray(frames[i]))
            if result.pose_landmarks is None:
                continue
            lm = result.pose_landmarks.landmark
            # Landmarks are normalised to the image: x * width, y * height gives pixels.
            out[i, 0] = [(p.x * w, p.y * h, p.visibility) for p in lm]
            if result.pose_world_landmarks is not None:
                world[i, 0] = [(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark]
        return out, world

    def reset(self) -> None:
        if self._pose is not None and self._fresh:
            return  # nothing seen yet: nothing to forget
        self.close()
        self._open()

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None


# ----------------------------------------------------------------------------------------------------------------
# Local ONNX top-down model (RTMPose SimCC, or heatmaps)
# ----------------------------------------------------------------------------------------------------------------

def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float) -> np.ndarray:
    """(N, J, Wx), (N, J, Hy) SimCC logits -> (N, J, 3): (x, y) in model-input pixels, confidence.

    x = argmax_x / split_ratio, y = argmax_y / split_ratio; confidence = min(max_x, max_y) (mmpose's rule).
    """
    sx, sy = np.asarray(simcc_x, np.float32), np.asarray(simcc_y, np.float32)
    if sx.ndim != 3 or sy.ndim != 3 or sx.shape[:2] != sy.shape[:2]:
        raise DetectorError(f"SimCC outputs must be (N, J, Wx) and (N, J, Hy), got {sx.shape} and {sy.shape}")
    x = sx.argmax(-1).astype(np.float32) / split_ratio
    y = sy.argmax(-1).astype(np.float32) / split_ratio
    conf = np.minimum(sx.max(-1), sy.max(-1))
    return np.stack([x, y, conf], axis=-1)


def decode_heatmaps(heatmaps: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(N, J, h, w) heatmaps -> (N, J, 3): peak (x, y) scaled to the model input (W, H) pixels, peak value.

    A quarter-pixel shift towards the higher neighbour refines the peak (the usual heatmap post-processing).
    """
    hm = np.asarray(heatmaps, np.float32)
    if hm.ndim != 4:
        raise DetectorError(f"heatmap output must be (N, J, h, w), got {hm.shape}")
    n, j, h, w = hm.shape
    flat = hm.reshape(n, j, -1)
    idx = flat.argmax(-1)
    conf = flat.max(-1)
    py, px = np.divmod(idx, w)
    x, y = px.astype(np.float32), py.astype(np.float32)
    nn, jj = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")
    inside_x = (px > 0) & (px < w - 1)
    inside_y = (py > 0) & (py < h - 1)
    dx = hm[nn, jj, py, np.clip(px + 1, 0, w - 1)] - hm[nn, jj, py, np.clip(px - 1, 0, w - 1)]
    dy = hm[nn, jj, np.clip(py + 1, 0, h - 1), px] - hm[nn, jj, np.clip(py - 1, 0, h - 1), px]
    x = x + np.where(inside_x, 0.25 * np.sign(dx), 0.0)
    y = y + np.where(inside_y, 0.25 * np.sign(dy), 0.0)
    # Heatmap cell centres to input pixels.
    sx, sy = input_size[0] / w, input_size[1] / h
    return np.stack([(x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5, conf], axis=-1)


def box_to_affine(box: tuple[float, float, float, float], input_size: tuple[int, int]) -> np.ndarray:
    """(cx, cy, bw, bh) box in image pixels -> (2, 3) affine mapping model-input pixels to image pixels.

    The box is widened or heightened to the input's aspect ratio (no distortion) and mapped onto the whole input.
    """
    cx, cy, bw, bh = box
    in_w, in_h = input_size
    aspect = in_w / in_h
    if bw / bh > aspect:
        bh = bw / aspect
    else:
        bw = bh * aspect
    s = bw / in_w  # image pixels per input pixel (same in x and y)
    return np.array([[s, 0.0, cx - bw / 2 + 0.5 * s - 0.5], [0.0, s, cy - bh / 2 + 0.5 * s - 0.5]])


class OnnxPose(PoseDetector):
    """A top-down keypoint ONNX model from a local file, one person: (T, H, W, 3) -> (T, 1, J, 3).

    The model takes (1, 3, H_in, W_in) float32 (RGB, or BGR with ``bgr=True``; ``(pixel - mean) / std``) and returns
    either SimCC vectors (two outputs (1, J, W_in * r) and (1, J, H_in * r), RTMPose) or heatmaps (one output
    (1, J, h, w), ViTPose/HRNet). No person detector runs: the first frame, and any frame after the person was lost,
    is read whole (padded to the input's aspect ratio); afterwards the crop follows the previous frame's confident
    keypoints, enlarged by ``box_scale``. A frame whose mean confidence is below ``min_confidence`` reports nobody.
    Suits clips with one main person; give a clip cropped to them otherwise.
    """

    name = "onnx"

    def __init__(self, model_path: str | os.PathLike, layout: str = "coco", *,
                 mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
                 std: tuple[float, float, float] = (58.395, 57.12, 57.375), bgr: bool = False,
                 box_scale: float = 1.25, min_confidence: float = 0.3, threads: int | None = None) -> None:
        if layout not in LAYOUTS or layout == "h36m":
            raise DetectorError(f"--onnx-layout must be one of {[x for x in LAYOUTS if x != 'h36m']}, got {layout!r}")
        path = Path(model_path)
        if not path.is_file():
            raise DetectorError(f"{path}: no such ONNX model file (the ONNX detector takes a local model path; "
                                f"nothing is downloaded)")
        ort = require("onnxruntime", "onnx", "the ONNX pose detector")
        self.layout = layout
        self.name = f"onnx:{path.name}"
        self.version = f"onnxruntime {ort.__version__}"
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise DetectorError(f"{path}: onnxruntime cannot load this model ({exc})") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]) or shape[1] != 3:
            raise DetectorError(f"{path}: expected one input (1, 3, H, W) with fixed H and W, got "
                                f"{[(i.name, i.shape) for i in inputs]}")
        self._input_name = inputs[0].name
        self.input_size = (int(shape[3]), int(shape[2]))  # (W_in, H_in)
        joints = NUM_SOURCE_JOINTS[layout]
        out_shapes = [o.shape for o in outputs]
        if len(outputs) == 2 and all(len(s) == 3 for s in out_shapes):
            self._kind = "simcc"
            wx = out_shapes[0][2]
            self._split = float(wx) / self.input_size[0] if isinstance(wx, int) else None
        elif len(outputs) == 1 and len(out_shapes[0]) == 4:
            self._kind = "heatmap"
        else:
            raise DetectorError(f"{path}: outputs {[(o.name, o.shape) for o in outputs]} are neither SimCC "
                                f"(two outputs (1, J, Wx), (1, J, Hy)) nor heatmaps (one output (1, J, h, w))")
        j_out = out_shapes[0][1]
        if isinstance(j_out, int) and j_out != joints:
            raise DetectorError(f"{path}: the model predicts {j_out} joints; layout {layout!r} has {joints} "
                                f"(choose --onnx-layout to match the model)")
        self._mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self._std = np.asarray(std, np.float32).reshape(3, 1, 1)
        self._bgr, self._box_scale, self._min_conf = bgr, box_scale, min_confidence
        self._box: tuple[float, float, float, float] | None = None

    def _crop(self, frame: np.ndarray, affine: np.ndarray) -> np.ndarray:
        from PIL import Image

        # Pillow's affine works in continuous coordinates (pixel i spans [i, i + 1]); ours has centres on integers.
        a = affine
        shift = 0.5 - 0.5 * a[0, 0]
        coeffs = (a[0, 0], a[0, 1], a[0, 2] + shift, a[1, 0], a[1, 1], a[1, 2] + shift)
        img = Image.fromarray(frame).transform(self.input_size, Image.Transform.AFFINE, data=coeffs,
                                               resample=Image.Resampling.BILINEAR)
        x = np.asarray(img, np.float32).transpose(2, 0, 1)  # (3, H_in, W_in)
        if self._bgr:
            x = x[::-1]
        return ((x - self._mean) / self._std)[None]

    def detect(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames)
        t, h, w = frames.shape[:3]
        joints = NUM_SOURCE_JOINTS[self.layout]
        out = np.full((t, 1, joints, 3), np.nan, dtype=np.float32)
        out[..., 2] = 0.0
        for i in range(t):
            box = self._box or (w / 2, h / 2, float(w), float(h))
            affine = box_to_affine(box, self.input_size)
            res = self._session.run(None, {self._input_name: self._crop(frames[i], affine)})
            if self._kind == "simcc":
                split = self._split or res[0].shape[-1] / self.input_size[0]
                kp = decode_simcc(res[0], res[1], split)[0]
            else:
                kp = decode_heatmaps(res[0], self.input_size)[0]
            xy = kp[:, :2] @ affine[:, :2].T + affine[:, 2]  # input pixels -> image pixels
            conf = kp[:, 2]
            if not np.isfinite(conf).all() or conf.mean() < self._min_conf:
                self._box = None  # lost: look at the whole frame next time
                continue
            out[i, 0, :, :2], out[i, 0, :, 2] = xy, conf
            good = xy[conf >= self._min_conf]
            lo, hi = good.min(0), good.max(0)
            size = np.maximum(hi - lo, 0.05 * max(w, h)) * self._box_scale
            self._box = (float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), float(size[0]), float(size[1]))
        return out

    def reset(self) -> None:
        self._box = None


def make_detector(name: str, *, onnx_model: str | None = None, onnx_layout: str = "coco",
                  threads: int | None = None) -> PoseDetector:
    """Detector by name (``DETECTORS``): "mediapipe" or "onnx" (needs ``onnx_model``, a local file)."""
    if name == "mediapipe":
        if onnx_model is not None:
            raise DetectorError("--onnx-model is only used with --detector onnx")
        return MediaPipePose()
    if name == "onnx":
        if onnx_model is None:
            raise DetectorError("--detector onnx needs --onnx-model PATH (a local RTMPose/ViTPose-style .onnx file)")
        return OnnxPose(onnx_model, onnx_layout, threads=threads)
    raise DetectorError(f"unknown detector {name!r}; expected one of {list(DETECTORS)}")
