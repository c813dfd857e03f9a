"""python -m train.infer --video end to end: clips written here, a fake detector that reads the pictures."""

from __future__ import annotations

import ctypes
import json
import os

import numpy as np
import pytest
from PIL import Image

from fastmixste import save_checkpoint
from fastmixste.data.skeleton import H36M_JOINT_NAMES
from fastmixste.video.detectors import PoseDetector
from fastmixste.video.keypoints import COCO_JOINT_NAMES
from train import infer as infer_cli

from .conftest import tiny_mixste

av = pytest.importorskip("av", reason="PyAV (a dependency of fastmixste: pip install -e .) is not installed here")

from fastmixste.video.decode import VideoError, VideoSource, detect_video, open_video  # noqa: E402 (after the skip: needs PyAV at run time)

W, H, FPS = 160, 120, 25
SQUARE = 16
# A COCO-17 "person" around the square's centre (pixels), so the converted pelvis sits exactly on the centre.
TEMPLATE = np.array([
    [0, -40], [-3, -43], [3, -43], [-6, -41], [6, -41], [-10, -30], [10, -30], [-14, -18], [14, -18],
    [-16, -6], [16, -6], [-6, 0], [6, 0], [-7, 18], [7, 18], [-8, 36], [8, 36],
], dtype=np.float32)


def square_centre(t: int) -> tuple[float, float]:
    return 40.0 + 2.0 * t % 80, 60.0 + 10.0 * np.sin(t / 5)


def write_clip(path, n: int, absent: range | None = None, size: tuple[int, int] = (W, H), fps: int = FPS) -> None:
    """An H.264 clip of n frames: a white square on black at square_centre(t), none in the ``absent`` frames."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        for t in range(n):
            a = np.zeros((size[1], size[0], 3), np.uint8)
            if absent is None or t not in absent:
                cx, cy = square_centre(t)
                x0, y0 = round(cx - SQUARE / 2), round(cy - SQUARE / 2)
                a[y0:y0 + SQUARE, x0:x0 + SQUARE] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


class SquareDetector(PoseDetector):
    """Deterministic: finds the bright square in each frame and puts TEMPLATE around its centre (COCO-17)."""

    name, version, layout = "square", "1", "coco"

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.resets = 0

    def detect(self, frames: np.ndarray) -> np.ndarray:
        self.calls.append(len(frames))
        out = np.full((len(frames), 2, 17, 3), np.nan, np.float32)  # slot 1 stays empty: nobody
        out[..., 2] = 0.0
        for i, f in enumerate(frames):
            ys, xs = np.nonzero(f[..., 0] > 128)
            if len(xs) < SQUARE:
                continue
            # Centroid in pixel-centre coordinates.
            out[i, 0, :, :2] = TEMPLATE + [xs.mean(), ys.mean()]
            out[i, 0, :, 2] = 0.9
        return out

    def reset(self) -> None:
        self.resets += 1


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny_mixste())
    return path


@pytest.fixture
def fake(monkeypatch):
    det = SquareDetector()
    monkeypatch.setattr(infer_cli, "make_detector", lambda *a, **k: det)
    return det


def video_args(checkpoint, clip, out, *extra: str) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--video", str(clip), "--out", str(out), "--no-progress", *extra]


def count_frames(path) -> tuple[int, tuple[int, int], float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return n, (s.codec_context.width, s.codec_context.height), float(s.average_rate)


def test_video_pipeline_with_fake_detector_and_mp4_render(tmp_path, checkpoint, fake, capsys):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 23)
    out, render = tmp_path / "res" / "pose.npz", tmp_path / "res" / "render.mp4"
    assert infer_cli.main(video_args(checkpoint, clip, out, "--render", str(render), "--render-height", "100")) == 0
    printed = capsys.readouterr().out
    assert "23 frames, 160x120 px, 25.00 fps" in printed and "a person in 23 of 23 frames" in printed
    assert fake.resets == 1 and sum(fake.calls) == 23 and max(fake.calls) <= 8
    with np.load(out) as z:
        meta = json.loads(str(z["meta"]))
        pose_2d, pose_3d, detected = z["pose_2d"], z["pose_3d"], z["detected"]
        assert z["filled"].sum() == 0 and z["confidence"].min() == pytest.approx(0.9)
    assert pose_3d.shape == (23, 17, 3) and np.isfinite(pose_3d).all() and detected.all()
    np.testing.assert_array_equal(pose_3d[:, 0], 0.0)
    # The decoded frames reached the detector in order: the pelvis follows the square (lossy video: 1 px).
    centres = np.array([square_centre(t) for t in range(23)]) - 0.5
    np.testing.assert_allclose(pose_2d[:, H36M_JOINT_NAMES.index("pelvis")], centres, atol=1.0)
    nose = COCO_JOINT_NAMES.index("nose")
    np.testing.assert_allclose(pose_2d[:, H36M_JOINT_NAMES.index("neck_nose")], centres + TEMPLATE[nose], atol=1.0)
    assert meta["fps"] == 25.0 and meta["detector"] == {"name": "square", "version": "1", "layout": "coco"}
    assert meta["num_frames"] == 23 and meta["frames_with_person"] == 23 and meta["most_people_in_a_frame"] == 1
    assert "one person per frame" in meta["person"]
    for key in ("detection_fps", "lifting_fps", "render_fps"):
        assert meta["throughput"][key] > 0
    # Render: every frame, the clip's fps, the video frame scaled to 100 px high beside a 100 x 100 3D panel.
    n, size, fps = count_frames(render)
    assert (n, size, fps) == (23, (134 + 100, 100), 25.0)
    assert meta["render_frames"] == 23 and meta["render_size"] == [234, 100]
    assert sorted(p.name for p in out.parent.iterdir()) == ["pose.npz", "render.mp4"]  # no temporary files left


def test_render_every_gif_and_png(tmp_path, checkpoint, fake):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 20)
    out = tmp_path / "o.npz"
    assert infer_cli.main(video_args(checkpoint, clip, out, "--render", str(tmp_path / "r.mp4"),
                                     "--render-every", "3")) == 0
    n, size, fps = count_frames(tmp_path / "r.mp4")
    assert n == 7 and size == (640 + 480, 480) and fps == pytest.approx(25 / 3)
    assert infer_cli.main(video_args(checkpoint, clip, out, "--render", str(tmp_path / "r.gif"),
                                     "--render-every", "2", "--render-height", "60")) == 0
    gif = Image.open(tmp_path / "r.gif")
    assert gif.n_frames == 10 and gif.size == (80 + 60, 60) and gif.info["duration"] == 80
    assert infer_cli.main(video_args(checkpoint, clip, out, "--render", str(tmp_path / "r.png"), "--frame", "4",
                                     "--render-height", "120")) == 0
    still = np.asarray(Image.open(tmp_path / "r.png").convert("RGB"))
    assert still.shape == (120, 160 + 120, 3)
    # The video side of the still is frame 4: the square is there (white pixels near its centre).
    cx, cy = square_centre(4)
    assert still[round(cy) + 4, round(cx) + 4].min() > 200


def test_image_folder_as_clip(tmp_path, checkpoint, fake):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(12):
        a = np.zeros((H, W, 3), np.uint8)
        cx, cy = square_centre(t)
        a[round(cy - 8):round(cy + 8), round(cx - 8):round(cx + 8)] = 255
        Image.fromarray(a).save(folder / f"img_{t}.png")  # natural order: img_2 before img_10
    out = tmp_path / "o.npz"
    assert infer_cli.main(video_args(checkpoint, folder, out, "--fps", "10")) == 0
    with np.load(out) as z:
        meta = json.loads(str(z["meta"]))
        pelvis = z["pose_2d"][:, 0]
    assert meta["fps"] == 10.0 and meta["kind"] == "image folder" and meta["num_frames"] == 12
    np.testing.assert_allclose(pelvis, np.array([square_centre(t) for t in range(12)]) - 0.5, atol=0.6)


def test_person_leaving_for_seconds_is_noted_and_interpolated(tmp_path, checkpoint, fake, capsys):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 60, absent=range(10, 45))  # 35 frames = 1.4 s without anyone
    out = tmp_path / "o.npz"
    assert infer_cli.main(video_args(checkpoint, clip, out)) == 0
    printed = capsys.readouterr().out
    assert "note: no person from 0.40 s to 1.80 s (frames 10-44, 1.4 s)" in printed and "interpolated" in printed
    with np.load(out) as z:
        detected, filled, pose_2d = z["detected"], z["filled"], z["pose_2d"]
        meta = json.loads(str(z["meta"]))
    assert not detected[10:45].any() and detected[:10].all() and detected[45:].all()
    assert filled[10:45].all() and not filled[:10].any()
    # Linear in time between the last frame before and the first frame after the gap.
    a, b = pose_2d[9, 0], pose_2d[45, 0]
    np.testing.assert_allclose(pose_2d[27, 0], a + (b - a) * (27 - 9) / (45 - 9), atol=1e-4)
    assert meta["frames_with_person"] == 25 and any("no person from 0.40 s" in n for n in meta["notes"])


def test_no_person_ever_exits_2_and_writes_nothing(tmp_path, checkpoint, fake, capsys):
    clip = tmp_path / "empty.mp4"
    write_clip(clip, 15, absent=range(15))
    out, render = tmp_path / "out" / "o.npz", tmp_path / "out" / "r.mp4"
    assert infer_cli.main(video_args(checkpoint, clip, out, "--render", str(render))) == 2
    err = capsys.readouterr().err
    assert "found no person in any of the 15 frames" in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []


def test_bad_clips_and_outputs_exit_2_with_a_message(tmp_path, checkpoint, fake, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    out = tmp_path / "o.npz"
    assert infer_cli.main(video_args(checkpoint, garbage, out)) == 2
    assert "garbage.mp4: not a readable video" in capsys.readouterr().err

    empty = tmp_path / "zero.mp4"  # an MP4 written with no frames: FFmpeg leaves no video stream in it
    with av.open(str(empty), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()
    assert infer_cli.main(video_args(checkpoint, empty, out)) == 2
    assert "zero.mp4: the file has no video stream" in capsys.readouterr().err
    with pytest.raises(VideoError, match="zero_frames: the clip has no frames"):  # a stream that decodes to nothing
        detect_video(VideoSource(tmp_path / "zero_frames", "images", W, H, 25.0, 0), SquareDetector())

    assert infer_cli.main(video_args(checkpoint, tmp_path / "missing.mp4", out)) == 2
    assert "missing.mp4: no such file or folder" in capsys.readouterr().err
    (tmp_path / "no_images").mkdir()
    assert infer_cli.main(video_args(checkpoint, tmp_path / "no_images", out)) == 2
    assert "no images in this folder" in capsys.readouterr().err
    assert not out.exists() and fake.calls == []

    clip = tmp_path / "clip.mp4"
    write_clip(clip, 5)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert infer_cli.main(video_args(checkpoint, clip, out, "--render", str(blocker / "r.mp4"))) == 2
    assert "cannot write the render" in capsys.readouterr().err
    assert infer_cli.main(video_args(checkpoint, clip, blocker / "o.npz")) == 2
    assert "cannot write the output" in capsys.readouterr().err
    assert infer_cli.main(video_args(checkpoint, clip, out, "--render-every", "0")) == 2
    assert "--render-every must be >= 1" in capsys.readouterr().err
    assert infer_cli.main(video_args(checkpoint, clip, out, "--layout", "coco")) == 2
    assert "--layout describes --keypoints files" in capsys.readouterr().err
    assert infer_cli.main(video_args(checkpoint, clip, out, "--person", "1")) == 2
    assert "--person picks an identity of a --keypoints file" in capsys.readouterr().err
    assert infer_cli.main(video_args(checkpoint, clip, out, "--width", "640")) == 2
    assert "a video gives its own size" in capsys.readouterr().err

    j16 = tmp_path / "j16.pt"
    save_checkpoint(j16, tiny_mixste(num_joints=16))
    assert infer_cli.main(video_args(j16, clip, out)) == 2
    assert "num_joints=16" in capsys.readouterr().err
    assert not out.exists() and fake.calls == []  # all refused before any detection

    # A render that fails after the lifting: the 3D result stays, nothing at the render path.
    assert infer_cli.main(video_args(checkpoint, clip, out, "--render", str(tmp_path / "r.png"), "--frame", "5")) == 2
    err = capsys.readouterr().err
    assert "frame 5 out of range for 5 frames (nothing written at" in err and "Traceback" not in err
    assert out.exists() and not (tmp_path / "r.png").exists()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc), so that resident memory starts from what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssProbe(SquareDetector):
    """Also records the process's resident memory at every call."""

    def __init__(self) -> None:
        super().__init__()
        self.rss: list[int] = []

    def detect(self, frames: np.ndarray) -> np.ndarray:
        self.rss.append(rss_bytes())
        return super().detect(frames)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc (Linux)")
def test_long_clip_streams_with_bounded_memory(tmp_path):
    """Detection holds one chunk of decoded frames at a time: memory does not grow with the clip's length."""
    n, size = 1000, (256, 192)
    frame_bytes = size[0] * size[1] * 3
    clip = tmp_path / "long.mp4"
    write_clip(clip, n, size=size)
    source = open_video(clip)
    assert (source.num_frames, source.width, source.height, source.fps) == (n, *size, FPS)

    # The measurement can fail: holding 300 decoded frames shows up in resident memory.
    trim_heap()
    before = rss_bytes()
    held = [f for _, f in zip(range(300), source.frames())]
    grown = rss_bytes() - before
    del held
    assert grown >= 0.5 * 300 * frame_bytes, grown / frame_bytes

    trim_heap()
    det = RssProbe()
    raw, stats = detect_video(source, det, chunk=8, progress=False)
    assert stats.frames == n and len(raw.frames) == n and stats.frames_with_person == n
    assert max(det.calls) == 8 and sum(det.calls) == n
    # The whole clip decoded is n * frame_bytes = 147 MB. After the first chunks, resident memory stays flat.
    settled = det.rss[len(det.rss) // 10:]
    assert max(settled) - settled[0] < 60 * frame_bytes, (max(settled) - settled[0]) / frame_bytes
