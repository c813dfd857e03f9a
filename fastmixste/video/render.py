"""Renders over the footage: each video frame with the 2D skeleton drawn on it, beside the lifted 3D skeleton.

The 3D panel keeps one fixed viewpoint and one set of axis limits for the whole clip (centred on the root, sized
to the clip's largest extent), with a ground plane at the clip's usual height of the lower foot. Output: MP4 (H.264
through PyAV's bundled FFmpeg, streamed frame by frame), GIF (Pillow; its frames are held until the file is written,
so long clips are thinned to ``max_gif_frames``) or PNG (one frame). The clip is decoded again while rendering, one
frame at a time. Files appear only when complete (``atomic_write``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fastmixste.data.skeleton import H36M_LEFT, H36M_PARENTS, H36M_RIGHT  # noqa: E402
from fastmixste.io.files import atomic_write  # noqa: E402
from fastmixste.video.decode import VideoSource, fps_fraction, import_av  # noqa: E402

RENDER_SUFFIXES: tuple[str, ...] = (".mp4", ".gif", ".png")
_LEFT, _RIGHT, _CENTRE = (214, 39, 40), (31, 119, 180), (60, 60, 60)  # matplotlib's tab:red, tab:blue, dark grey
_FOOT_JOINTS = (3, 6)  # r_ankle, l_ankle


def _bone_rgb(j: int) -> tuple[int, int, int]:
    return _LEFT if j in H36M_LEFT else _RIGHT if j in H36M_RIGHT else _CENTRE


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


@dataclass
class RenderStats:
    path: Path
    frames: int
    seconds: float
    size: tuple[int, int]
    fps: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


class SkeletonPanel:
    """The 3D side: one matplotlib figure reused for every frame -> (S, S, 3) uint8 images.

    Camera coordinates (x right, y down, z forward) are drawn as (x, z, -y) so that up is up; the view looks at the
    person from the camera's side, a little from above.
    """

    def __init__(self, pose_3d: np.ndarray, size: int, *, elev: float = 12.0, azim: float = -75.0,
                 trajectory: np.ndarray | None = None) -> None:
        disp = self.display(np.asarray(pose_3d, dtype=np.float64))  # (T, 17, 3)
        disp = disp - disp[:, :1]  # root-relative
        # With a root trajectory (T, 3) in the camera frame, the view is fixed on the scene (the median root) and
        # the person moves through it, leaving a trail on the ground; without one, the root stays at the centre.
        self.root = np.zeros((len(disp), 3))
        if trajectory is not None:
            root = self.display(np.asarray(trajectory, dtype=np.float64))
            if root.shape != (len(disp), 3):
                raise ValueError(f"render: trajectory must be (T, 3) = ({len(disp)}, 3), got {root.shape}")
            good = np.isfinite(root).all(-1)
            if good.any():
                root = np.where(good[:, None], root, np.nanmedian(root[good], axis=0))
                self.root = root - np.median(root, axis=0)
        ext = np.abs(disp + self.root[:, None]).reshape(-1, 3)
        ext = ext[np.isfinite(ext).all(-1)]
        # One radius for the clip: the 99.5th percentile keeps a single wild frame from shrinking everything.
        radius = max(float(np.percentile(ext, 99.5)) if len(ext) else 1.0, 0.3) * 1.15
        # Ground: the median over frames of the lower ankle's height, so the standing foot touches the plane in most
        # frames (the lowest ankle of the whole clip belongs to one odd frame more often than to the floor).
        feet = np.nanmin(disp[:, list(_FOOT_JOINTS), 2] + self.root[:, None, 2], axis=1)
        ground = float(np.nanmedian(feet)) if np.isfinite(feet).any() else -radius
        self.fig = plt.figure(figsize=(size / 100, size / 100), dpi=100)
        ax = self.fig.add_axes((0.0, 0.0, 1.0, 1.0), projection="3d")
        ax.set(xlim=(-radius, radius), ylim=(-radius, radius), zlim=(-radius, radius))
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()  # panes, ticks and grid would double the drawing time; the ground plane gives the scale
        view = "camera side view, moving root" if trajectory is not None else "camera side view"
        self.fig.text(0.02, 0.02, f"3D ({view}), grid {2 * radius / 6:.2f} m", fontsize=8, color="0.3")
        # Ground plane: a grid at the lowest foot height of the clip.
        g = np.linspace(-radius, radius, 7)
        gx, gy = np.meshgrid(g, g)
        self.ground = max(ground, -radius)
        ax.plot_surface(gx, gy, np.full_like(gx, self.ground), color="0.85", alpha=0.5, linewidth=0, shade=False)
        ax.plot_wireframe(gx, gy, np.full_like(gx, self.ground), color="0.6", linewidth=0.5)
        self.trail = ax.plot([], [], [], color="0.35", lw=1.5)[0] if trajectory is not None else None
        self.ax = ax
        self.disp = disp
        self.lines = []
        for j, parent in enumerate(H36M_PARENTS):
            if parent >= 0:
                colour = tuple(c / 255 for c in _bone_rgb(j))
                self.lines.append((j, parent, ax.plot([], [], [], color=colour, lw=3)[0]))
        self.size = size

    @staticmethod
    def display(p: np.ndarray) -> np.ndarray:
        return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)

    def draw(self, t: int) -> np.ndarray:
        k = self.disp[t] + self.root[t]  # root-relative pose, moved along the trajectory (if any)
        if self.trail is not None:
            path = self.root[: t + 1]
            self.trail.set_data_3d(path[:, 0], path[:, 1], np.full(len(path), self.ground))
        for j, parent, line in self.lines:
            line.set_data_3d([k[j, 0], k[parent, 0]], [k[j, 1], k[parent, 1]], [k[j, 2], k[parent, 2]])
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()

    def close(self) -> None:
        plt.close(self.fig)


def draw_skeleton_2d(frame: np.ndarray, pose_2d: np.ndarray, filled: np.ndarray | None, label: str) -> Image.Image:
    """(H, W, 3) frame, (17, 2) pixels of that frame -> PIL image with the bones drawn (interpolated ones thin)."""
    im = Image.fromarray(frame)
    d = ImageDraw.Draw(im)
    p = np.asarray(pose_2d, dtype=np.float64)
    width = max(2, round(im.height / 120))
    for j, parent in enumerate(H36M_PARENTS):
        if parent < 0 or not (np.isfinite(p[j]).all() and np.isfinite(p[parent]).all()):
            continue
        guessed = filled is not None and (filled[j] or filled[parent])
        d.line([tuple(p[parent]), tuple(p[j])], fill=_bone_rgb(j), width=1 if guessed else width)
    r = width
    for j in range(len(p)):
        if np.isfinite(p[j]).all():
            guessed = filled is not None and filled[j]
            d.ellipse([p[j, 0] - r, p[j, 1] - r, p[j, 0] + r, p[j, 1] + r], outline=(255, 255, 255),
                      fill=None if guessed else (255, 255, 255))
    d.rectangle([0, 0, 8 + 7 * len(label), 18], fill=(0, 0, 0))
    d.text((4, 4), label, fill=(255, 255, 255))
    return im


def compose_frames(source: VideoSource, pose_2d: np.ndarray, pose_3d: np.ndarray, *, filled: np.ndarray | None,
                   seen: np.ndarray | None, frames: list[int], height: int,
                   trajectory: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (t, (height, W_out, 3) uint8) for the frame indices ``frames`` (ascending), decoding the clip once."""
    height = _even(height)
    left_w = _even(source.width * height / source.height)
    scale = np.array([left_w / source.width, height / source.height])
    panel = SkeletonPanel(pose_3d, height, trajectory=trajectory)
    wanted = iter(frames)
    nxt = next(wanted, None)
    try:
        for t, frame in enumerate(source.frames(size=(left_w, height))):  # scaled while decoding
            if nxt is None or t >= len(pose_2d):
                break
            if t != nxt:
                continue
            label = f"frame {t}  {t / source.fps:.2f} s" + ("" if seen is None or seen[t] else "  (no detection)")
            left = draw_skeleton_2d(frame, pose_2d[t] * scale, None if filled is None else filled[t], label)
            yield t, np.concatenate([np.asarray(left), panel.draw(t)], axis=1)
            nxt = next(wanted, None)
    finally:
        panel.close()


def render_video(source: VideoSource, pose_2d: np.ndarray, pose_3d: np.ndarray, out: str | Path, *,
                 filled: np.ndarray | None = None, seen: np.ndarray | None = None, every: int = 1,
                 frame: int | None = None, height: int = 480, max_gif_frames: int = 300,
                 progress: bool = True, trajectory: np.ndarray | None = None) -> RenderStats:
    """Clip + (T, 17, 2) pixels + (T, 17, 3) metres -> MP4/GIF at the clip's fps / ``every``, or a PNG of ``frame``.

    Frames are ``height`` pixels high: the video frame scaled to that height, then a square 3D panel. MP4 is H.264
    (yuv420p) through PyAV; GIF keeps at most ``max_gif_frames`` frames (a larger ``every`` is chosen and noted in
    the returned stats' fps). ``trajectory`` (T, 3), the root in the camera frame (metres), moves the 3D skeleton
    through a fixed view instead of keeping its root at the centre. Written atomically: on any error nothing is left
    at ``out``.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in RENDER_SUFFIXES:
        raise ValueError(f"render: output must end in {', '.join(RENDER_SUFFIXES)}, got {out.name!r}")
    if every < 1:
        raise ValueError(f"--render-every must be >= 1, got {every}")
    T = len(pose_2d)
    if pose_3d.shape[:2] != pose_2d.shape[:2]:
        raise ValueError(f"render: pose_2d {pose_2d.shape} and pose_3d {pose_3d.shape} differ in frames/joints")
    t0 = time.perf_counter()
    if suffix == ".png":
        t = T // 2 if frame is None else frame
        if not 0 <= t < T:
            raise ValueError(f"render: frame {t} out of range for {T} frames")
        images = list(compose_frames(source, pose_2d, pose_3d, filled=filled, seen=seen, frames=[t], height=height,
                                     trajectory=trajectory))
        img = images[0][1]
        with atomic_write(out) as f:
            Image.fromarray(img).save(f, format="PNG")
        return RenderStats(out, 1, time.perf_counter() - t0, (img.shape[1], img.shape[0]), 0.0)
    if suffix == ".gif":
        every = max(every, math.ceil(T / max_gif_frames))
    frames = list(range(0, T, every))
    rate = fps_fraction(source.fps, every)
    bar = tqdm(total=len(frames), desc="render", unit="frame", disable=not progress, leave=False)
    gen = compose_frames(source, pose_2d, pose_3d, filled=filled, seen=seen, frames=frames, height=height,
                         trajectory=trajectory)
    count, size = 0, (0, 0)
    try:
        if suffix == ".mp4":
            av = import_av()
            with atomic_write(out) as f, av.open(f, "w", format="mp4") as container:
                stream = None
                for _, img in gen:
                    if stream is None:
                        stream = _h264_stream(av, container, rate, img.shape[1], img.shape[0])
                        size = (img.shape[1], img.shape[0])
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                    count += 1
                    bar.update(1)
                if stream is not None:
                    for packet in stream.encode():
                        container.mux(packet)
                if count == 0:  # inside atomic_write: an empty file never replaces what is at `out`
                    raise ValueError(f"render: no frame of {source.path} could be drawn")
        else:
            pics = []
            for _, img in gen:
                pics.append(Image.fromarray(img).quantize(256, dither=Image.Dither.NONE))
                size = (img.shape[1], img.shape[0])
                bar.update(1)
            count = len(pics)
            if pics:
                with atomic_write(out) as f:
                    pics[0].save(f, format="GIF", save_all=True, append_images=pics[1:], loop=0,
                                 duration=max(20, round(1000 / float(rate))))
    finally:
        bar.close()
        gen.close()
    if count == 0:  # nothing was written: atomic_write only renames a finished file over `out`
        raise ValueError(f"render: no frame of {source.path} could be drawn")
    return RenderStats(out, count, time.perf_counter() - t0, size, float(rate))


def _h264_stream(av, container, rate, width: int, height: int):  # noqa: ANN001, ANN202 (PyAV objects)
    """An H.264 stream when the FFmpeg build has an encoder for it (PyAV's wheels do), else MPEG-4 Part 2."""
    for codec, options in (("libx264", {"crf": "20", "preset": "veryfast"}), ("h264", {}), ("mpeg4", {"qscale": "3"})):
        try:
            stream = container.add_stream(codec, rate=rate)
        except (av.FFmpegError, ValueError):
            continue
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        return stream
    raise ValueError("render: this FFmpeg build has no H.264 or MPEG-4 encoder; render to .gif instead")
