"""Pictures: learning curves of a training run, and the 2D input next to the lifted 3D skeleton (PNG, GIF, MP4).

All drawing uses matplotlib's Agg backend (no display needed). A figure of ``size=(W, H)`` pixels is saved at
exactly that size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402

from fastmixste.data.skeleton import H36M_LEFT, H36M_PARENTS, H36M_RIGHT  # noqa: E402
from fastmixste.io.files import atomic_path, atomic_write  # noqa: E402

_DPI = 100
_LEFT_COLOUR, _RIGHT_COLOUR, _CENTRE_COLOUR = "tab:red", "tab:blue", "0.2"


def _value(row: dict, key: str) -> float:
    v = row.get(key)
    return float("nan") if v is None else float(v)


def plot_learning_curves(
    rows_by_stage: dict[str, list[dict]],
    out_png: str | Path,
    compare: dict[str, list[dict]] | None = None,
    title: str = "",
) -> Path:
    """{stage: [per-epoch rows]} -> PNG: one training-loss panel per stage, then validation MPJPE (mm) per epoch.

    Each row needs ``"epoch"``, ``"train_loss"`` and ``"val_mpjpe"`` (None/NaN for epochs without validation).
    Stages optimise different objectives (pretraining and fine-tuning losses have different terms and scales), so
    each stage's loss gets its own panel and axis, over its own epochs. Validation MPJPE means the same in every
    stage: one panel where each stage continues the epoch axis after the one before (whatever its first epoch
    number), so a pretraining + fine-tuning run reads left to right. ``compare`` overlays a second set of runs,
    dashed: a stage named like one of ``rows_by_stage`` sits on that stage, any other on the last stage (the
    paper's "fine-tuning with vs without pretraining"). ``title`` (e.g. the data the run used) heads the figure.
    """
    if not rows_by_stage:
        raise ValueError("plot_learning_curves: rows_by_stage is empty")
    for runs in (rows_by_stage, compare or {}):
        for stage, rows in runs.items():
            for row in rows:
                if "epoch" not in row:
                    raise ValueError(f"plot_learning_curves: stage {stage!r} has a row without 'epoch': {row}")
    stages = [name for name, rows in rows_by_stage.items() if rows] or list(rows_by_stage)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(stages) + 1, figsize=(12, 4.5), dpi=_DPI)
    loss_axes = dict(zip(stages, axes[:-1]))
    ax_val = axes[-1]
    offsets: dict[str, float] = {}
    colours: dict[str, str] = {}

    def draw(runs: dict[str, list[dict]], style: str, compare_set: bool) -> None:
        next_start = 1.0  # epochs are numbered from 1: the first stage keeps its own numbers
        for stage, rows in runs.items():
            if not rows:
                continue
            home = stage if stage in loss_axes else stages[-1]  # the panel (and stage) this curve belongs to
            epochs = np.array([float(r["epoch"]) for r in rows])
            # Stages follow each other on the validation axis; a compared curve overlays the stage it belongs to.
            if compare_set and home in offsets:
                offset = offsets[home]
            else:
                offset = next_start - epochs.min()
                offsets[stage] = offset
            x = epochs + offset
            next_start = float(x.max()) + 1.0
            loss = np.array([_value(r, "train_loss") for r in rows])
            val = np.array([_value(r, "val_mpjpe") for r in rows])
            label = f"{stage} (compare)" if compare_set and stage in rows_by_stage else stage
            colour = colours.setdefault(label, f"C{len(colours)}")
            marker = "o" if len(rows) < 30 else None  # a stage capped at a few steps has a single point
            loss_axes[home].plot(epochs, loss, style, marker=marker, markersize=3, label=label, color=colour)
            finite = np.isfinite(val)
            if finite.any():
                ax_val.plot(x[finite], val[finite], style, marker="o", markersize=3, label=label, color=colour)

    draw(rows_by_stage, "-", False)
    if compare:
        draw(compare, "--", True)
    for stage, ax in loss_axes.items():
        ax.set(xlabel=f"{stage} epoch", ylabel="training loss", title=f"{stage}: training loss")
        losses = [line.get_ydata() for line in ax.get_lines()]
        if losses and all(np.all(np.asarray(y)[np.isfinite(y)] > 0) for y in losses):
            ax.set_yscale("log")
    xlabel = "epoch" if len(stages) == 1 else "epoch (" + " then ".join(stages) + ")"
    ax_val.set(xlabel=xlabel, ylabel="MPJPE (mm)", title="Validation MPJPE")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(out_png) as f:  # curves.png of a run: never half-written
        fig.savefig(f, format="png")
    plt.close(fig)
    return out_png


def _bone_colour(j: int) -> str:
    return _LEFT_COLOUR if j in H36M_LEFT else _RIGHT_COLOUR if j in H36M_RIGHT else _CENTRE_COLOUR


class _PoseFigure:
    """Two panels: 2D keypoints in image coordinates (left), 3D skeleton (right)."""

    def __init__(self, pose_2d: np.ndarray, pose_3d: np.ndarray, width: float, height: float,
                 size: tuple[int, int], title: str) -> None:
        self.pose_2d, self.pose_3d = pose_2d, pose_3d
        self.fig = plt.figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI)
        if title:
            self.fig.suptitle(title)
        self.ax2 = self.fig.add_subplot(1, 2, 1)
        self.ax3 = self.fig.add_subplot(1, 2, 2, projection="3d")
        self.ax2.set(xlim=(0, width), ylim=(height, 0), aspect="equal", title="2D input")
        self.ax2.set_xticks([])
        self.ax2.set_yticks([])
        # Camera coordinates are x right, y down, z forward; draw (x, z, -y) so that up is up.
        disp = self._display(pose_3d)
        centre = np.nanmean(disp.reshape(-1, 3), axis=0)
        radius = max(float(np.nanmax(np.abs(disp.reshape(-1, 3) - centre))), 1e-3) * 1.1
        self.ax3.set(xlim=(centre[0] - radius, centre[0] + radius), ylim=(centre[1] - radius, centre[1] + radius),
                     zlim=(centre[2] - radius, centre[2] + radius), title="3D prediction")
        self.ax3.set_box_aspect((1, 1, 1))
        self.ax3.view_init(elev=15.0, azim=-70.0)
        self.ax3.set_xticklabels([])
        self.ax3.set_yticklabels([])
        self.ax3.set_zticklabels([])
        self.lines2, self.lines3 = [], []
        for j, parent in enumerate(H36M_PARENTS):
            if parent < 0:
                continue
            colour = _bone_colour(j)
            self.lines2.append((j, parent, self.ax2.plot([], [], color=colour, lw=2)[0]))
            self.lines3.append((j, parent, self.ax3.plot([], [], [], color=colour, lw=2)[0]))
        self.points2 = self.ax2.scatter([], [], s=8, c="k", zorder=3)

    @staticmethod
    def _display(p: np.ndarray) -> np.ndarray:
        return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)

    def draw(self, t: int) -> list:
        k2 = self.pose_2d[t]
        k3 = self._display(self.pose_3d[t])
        for j, parent, line in self.lines2:
            line.set_data([k2[j, 0], k2[parent, 0]], [k2[j, 1], k2[parent, 1]])
        for j, parent, line in self.lines3:
            line.set_data_3d([k3[j, 0], k3[parent, 0]], [k3[j, 1], k3[parent, 1]], [k3[j, 2], k3[parent, 2]])
        self.points2.set_offsets(k2[:, :2])
        self.ax2.set_xlabel(f"frame {t}")
        return [line for _, _, line in self.lines2 + self.lines3] + [self.points2]


def render_pose(
    pose_2d: np.ndarray,
    pose_3d: np.ndarray,
    out: str | Path,
    *,
    width: float,
    height: float,
    frame: int | None = None,
    fps: float = 25.0,
    size: tuple[int, int] = (1000, 500),
    title: str = "",
    max_frames: int | None = None,
    may_replace: Callable[[Path], bool] | None = None,
) -> Path:
    """(T, 17, >=2) pixels, (T, 17, 3) metres -> picture of the 2D input next to the 3D skeleton; returns the path.

    ``.png`` draws one frame (``frame``, default the middle one); ``.gif`` and ``.mp4`` animate the sequence at
    ``fps`` (every ``ceil(T / max_frames)``-th frame when ``max_frames`` is set). MP4 needs matplotlib's ffmpeg
    writer: without it a warning says so and a GIF is written next to the requested path instead (returned); an
    existing file there is replaced only when ``may_replace(path)`` says so (else ValueError). Files are written
    atomically (a failed render leaves nothing at the path). Pictures are exactly ``size`` = (width, height) pixels.
    """
    pose_2d, pose_3d = np.asarray(pose_2d, dtype=np.float64), np.asarray(pose_3d, dtype=np.float64)
    joints = len(H36M_PARENTS)
    if pose_2d.ndim != 3 or pose_2d.shape[1] != joints or pose_2d.shape[2] < 2:
        raise ValueError(f"render_pose: expected pose_2d (T, {joints}, 2 or 3), got {pose_2d.shape}")
    if pose_3d.shape != pose_2d.shape[:2] + (3,):
        raise ValueError(f"render_pose: expected pose_3d {pose_2d.shape[:2] + (3,)}, got {pose_3d.shape}")
    if len(pose_2d) == 0:
        raise ValueError("render_pose: empty sequence")
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".gif", ".mp4"):
        raise ValueError(f"render_pose: output must end in .png, .gif or .mp4, got {out.name!r}")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or not 0 < fps <= 1000:
        raise ValueError(f"render_pose: the frame rate (--fps) must be a number in (0, 1000], got {fps!r}")
    gif = out.with_suffix(".gif")
    if suffix == ".mp4" and not animation.writers.is_available("ffmpeg") and gif.exists() and not (
            may_replace is not None and may_replace(gif)):
        raise ValueError(f"render: no MP4 encoder here, and the GIF it would write instead, {gif}, already exists "
                         f"(not made by this command); render to another path or move that file")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = _PoseFigure(pose_2d, pose_3d, width, height, size, title)
    try:
        if suffix == ".png":
            t = len(pose_2d) // 2 if frame is None else frame
            if not 0 <= t < len(pose_2d):
                raise ValueError(f"render_pose: frame {t} out of range for {len(pose_2d)} frames")
            fig.draw(t)
            with atomic_write(out) as f:
                fig.fig.savefig(f, format="png")
            return out
        step = 1 if not max_frames else max(1, math.ceil(len(pose_2d) / max_frames))
        frames = list(range(0, len(pose_2d), step))
        anim = animation.FuncAnimation(fig.fig, fig.draw, frames=frames, blit=False)
        if suffix == ".mp4":
            if animation.writers.is_available("ffmpeg"):
                with atomic_path(out) as tmp:
                    anim.save(tmp, writer=animation.FFMpegWriter(fps=fps / step), dpi=_DPI)
                return out
            gif = out.with_suffix(".gif")
            warnings.warn(f"no ffmpeg encoder available to matplotlib: writing {gif} instead of {out}",
                          RuntimeWarning, stacklevel=2)
            out = gif
        with atomic_path(out) as tmp:
            anim.save(tmp, writer=animation.PillowWriter(fps=fps / step), dpi=_DPI)
        return out
    finally:
        plt.close(fig.fig)
