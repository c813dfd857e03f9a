"""Pictures: learning curves and 2D/3D renders produce non-empty images of the expected size."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib import animation
from PIL import Image

from fastmixste.eval.plots import plot_learning_curves, render_pose


def stage_rows(n: int, start: float, with_val_every: int = 2) -> list[dict]:
    return [{"epoch": e, "train_loss": start / (e + 1),
             "val_mpjpe": 80.0 - 2 * e if e % with_val_every == 0 else (None if e % 4 == 1 else math.nan)}
            for e in range(n)]


def assert_nonblank(img: Image.Image) -> None:
    px = np.asarray(img.convert("L"))
    assert px.std() > 1.0, "image is blank"


def test_learning_curves(tmp_path):
    rows = {"pretrain": stage_rows(5, 1.0), "finetune": stage_rows(4, 0.4)}
    out = plot_learning_curves(rows, tmp_path / "sub" / "curves.png",
                               compare={"finetune (no pretraining)": stage_rows(4, 0.6)})
    img = Image.open(out)
    assert img.size == (1200, 450)
    assert_nonblank(img)
    with pytest.raises(ValueError, match="empty"):
        plot_learning_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="without 'epoch'"):
        plot_learning_curves({"s": [{"train_loss": 1.0}]}, tmp_path / "x.png")


def sample_poses(t: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    p3 = rng.normal(scale=0.3, size=(t, 17, 3))
    p3 -= p3[:, :1]
    p2 = rng.uniform(100, 500, size=(t, 17, 2))
    return p2, p3


def test_render_png_size(tmp_path):
    p2, p3 = sample_poses()
    out = render_pose(p2, p3, tmp_path / "frame.png", width=640, height=480, size=(800, 400), frame=2)
    img = Image.open(out)
    assert out.suffix == ".png" and img.size == (800, 400)
    assert_nonblank(img)


def test_render_gif_frames_and_size(tmp_path):
    p2, p3 = sample_poses(7)
    out = render_pose(p2, p3, tmp_path / "seq.gif", width=640, height=480, size=(400, 200), max_frames=4)
    img = Image.open(out)
    assert img.size == (400, 200)
    assert img.n_frames == 4  # every 2nd of 7 frames
    assert_nonblank(img)


def test_mp4_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch):
    monkeypatch.setattr(animation.writers, "is_available", lambda name: False)
    p2, p3 = sample_poses(3)
    with pytest.warns(RuntimeWarning, match="no ffmpeg encoder"):
        out = render_pose(p2, p3, tmp_path / "seq.mp4", width=640, height=480, size=(300, 150))
    assert out == tmp_path / "seq.gif" and not (tmp_path / "seq.mp4").exists()
    assert Image.open(out).size == (300, 150)


@pytest.mark.skipif(not animation.writers.is_available("ffmpeg"), reason="no ffmpeg encoder for matplotlib")
def test_mp4_with_ffmpeg(tmp_path):
    p2, p3 = sample_poses(3)
    out = render_pose(p2, p3, tmp_path / "seq.mp4", width=640, height=480, size=(320, 160))
    assert out.suffix == ".mp4" and out.stat().st_size > 0


def test_render_bad_inputs(tmp_path):
    p2, p3 = sample_poses()
    with pytest.raises(ValueError, match=r"\.png, \.gif or \.mp4"):
        render_pose(p2, p3, tmp_path / "x.jpg", width=10, height=10)
    with pytest.raises(ValueError, match="pose_3d"):
        render_pose(p2, p3[:, :16], tmp_path / "x.png", width=10, height=10)
    with pytest.raises(ValueError, match="out of range"):
        render_pose(p2, p3, tmp_path / "x.png", width=10, height=10, frame=6)


def test_learning_curves_give_each_stage_loss_its_own_panel(tmp_path, monkeypatch):
    from fastmixste.eval import plots

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figure to look at its panels
    rows = {"pretrain": stage_rows(5, 100.0), "finetune": stage_rows(4, 0.4)}
    plot_learning_curves(rows, tmp_path / "curves.png", compare={"scratch": stage_rows(4, 0.6)},
                         title="built-in synthetic data")
    (fig,) = figures
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["pretrain: training loss", "finetune: training loss", "Validation MPJPE"]
    assert fig._suptitle.get_text() == "built-in synthetic data"
    pre, fine, val = fig.axes
    assert [line.get_label() for line in pre.get_lines()] == ["pretrain"]
    assert [line.get_label() for line in fine.get_lines()] == ["finetune", "scratch"]  # compare overlays the last
    # Each loss keeps its own scale: the pretraining loss (100x larger) does not squash the fine-tuning one.
    assert fine.get_ylim()[1] < 1.0 < pre.get_ylim()[1]
    assert len(val.get_lines()) == 3
