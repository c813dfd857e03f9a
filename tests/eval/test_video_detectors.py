"""Detectors and lifting for video input: output decoding, crops, missing extras, the real detectors when installed."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from fastmixste.eval.evaluation import predict_sequences
from fastmixste.video.decode import absent_runs, fps_fraction, lift
from fastmixste.video.detectors import (
    DetectorError,
    MissingExtraError,
    box_to_affine,
    check_detections,
    decode_heatmaps,
    decode_simcc,
    make_detector,
)

from .conftest import PerFrameModel, WindowProbe, tiny_mixste


def test_decode_simcc_hand_case():
    sx = np.zeros((1, 2, 20), np.float32)
    sy = np.zeros((1, 2, 30), np.float32)
    sx[0, 0, 7], sy[0, 0, 12] = 0.9, 0.6
    sx[0, 1, 19], sy[0, 1, 0] = 0.4, 0.8
    out = decode_simcc(sx, sy, split_ratio=2.0)
    np.testing.assert_allclose(out[0], [[3.5, 6.0, 0.6], [9.5, 0.0, 0.4]])
    with pytest.raises(DetectorError, match="SimCC outputs"):
        decode_simcc(sx[0], sy, 2.0)


def test_decode_heatmaps_peak_and_refinement():
    hm = np.zeros((1, 2, 8, 6), np.float32)
    hm[0, 0, 3, 2] = 1.0
    hm[0, 0, 3, 3] = 0.5  # right neighbour higher than left: quarter pixel to the right
    hm[0, 1, 0, 5] = 0.7  # on the border: no refinement
    out = decode_heatmaps(hm, input_size=(24, 32))  # 4 input pixels per heatmap cell
    np.testing.assert_allclose(out[0, 0], [(2.25 + 0.5) * 4 - 0.5, (3 + 0.5) * 4 - 0.5, 1.0])
    np.testing.assert_allclose(out[0, 1], [(5 + 0.5) * 4 - 0.5, (0 + 0.5) * 4 - 0.5, 0.7], rtol=1e-6)


def test_box_to_affine_keeps_aspect_and_maps_corners():
    a = box_to_affine((100.0, 50.0, 40.0, 40.0), input_size=(20, 40))  # tall input: the box grows to 40 x 80
    s = a[0, 0]
    assert s == pytest.approx(2.0) and a[1, 1] == pytest.approx(2.0) and a[0, 1] == a[1, 0] == 0
    # Input pixel centres -0.5 and W_in - 0.5 are the box's edges.
    np.testing.assert_allclose(a @ [-0.5, -0.5, 1.0], [80.0 - 0.5, 10.0 - 0.5])
    np.testing.assert_allclose(a @ [19.5, 39.5, 1.0], [120.0 - 0.5, 90.0 - 0.5])


def test_check_detections_shapes():
    ok = check_detections(np.zeros((4, 2, 33, 3)), 4, "blazepose", "d")
    assert ok.dtype == np.float32 and ok.shape == (4, 2, 33, 3)
    with pytest.raises(DetectorError, match=r"expected keypoints of shape \(4, P, 17, 3\)"):
        check_detections(np.zeros((4, 2, 33, 3)), 4, "coco", "d")
    with pytest.raises(DetectorError, match=r"\(3, P, 26, 3\)"):
        check_detections(np.zeros((4, 1, 26, 3)), 3, "halpe", "d")


def test_missing_extras_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r'pip install "fastmixste\[video\]"'):
        make_detector("mediapipe")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not checked before the import")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r'pip install "fastmixste\[onnx\]"'):
        make_detector("onnx", onnx_model=str(model))
    with pytest.raises(DetectorError, match="needs --onnx-model"):
        make_detector("onnx")
    with pytest.raises(DetectorError, match="no such ONNX model file"):
        make_detector("onnx", onnx_model=str(tmp_path / "missing.onnx"))


def test_absent_runs_and_fps_fraction():
    assert absent_runs(np.array([0, 0, 1, 1, 0, 1, 0, 0, 0], bool)) == [(0, 1), (4, 4), (6, 8)]
    assert absent_runs(np.ones(3, bool)) == []
    assert fps_fraction(29.97002997) == fps_fraction(30000 / 1001) and fps_fraction(25.0, 3) * 3 == 25


@pytest.mark.parametrize("length", [1, 9, 17, 23])
def test_lift_matches_predict_sequences(length):
    """Flip in the same batch and progress over frames change nothing: same windows, same stitching."""
    torch.manual_seed(0)
    model = tiny_mixste()
    x = np.random.default_rng(length).uniform(-1, 1, (length, 17, 2)).astype(np.float32)
    ours, seconds = lift(model, x, flip=True, batch_size=2, progress=False)
    ref, _ = predict_sequences(model, [x], flip=True, batch_size=3, progress=False)
    np.testing.assert_allclose(ours, ref[0], atol=1e-5, rtol=1e-5)
    assert ours.shape == (length, 17, 3) and seconds > 0
    no_flip, _ = lift(model, x, flip=False, progress=False)
    ref_nf, _ = predict_sequences(model, [x], flip=False, progress=False)
    np.testing.assert_allclose(no_flip, ref_nf[0], atol=1e-5, rtol=1e-5)


def test_lift_stitches_every_frame_once():
    probe = WindowProbe(num_frame=9)
    x = np.zeros((23, 17, 2), np.float32)
    x[..., 0] = np.arange(23)[:, None]
    out, _ = lift(probe, x, flip=False, batch_size=1, progress=False)
    np.testing.assert_array_equal(out[:, 0, 0], np.arange(23))  # frame t comes from frame t of its window
    per_frame = PerFrameModel()
    out, _ = lift(per_frame, x / 23, flip=False, progress=False)
    np.testing.assert_allclose(out, per_frame.per_frame(torch.from_numpy(x / 23)).detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(T >= 1, 17, 2\)"):
        lift(probe, np.zeros((0, 17, 2), np.float32))


# ----------------------------------------------------------------------------------------------------------------
# The real detectors, when their extras are installed
# ----------------------------------------------------------------------------------------------------------------

def test_mediapipe_detector_runs_offline():
    pytest.importorskip("mediapipe", reason='the MediaPipe detector needs pip install "fastmixste[video]"')
    from fastmixste.video.detectors import MediaPipePose

    with MediaPipePose() as det:
        assert det.layout == "blazepose" and det.version == "0.10.21"
        blank = np.zeros((3, 120, 160, 3), np.uint8)
        out = check_detections(det.detect(blank), 3, det.layout, det.name)
        assert out.shape == (3, 1, 33, 3) and np.isnan(out[..., :2]).all() and (out[..., 2] == 0).all()
        kp, world = det.detect_with_world(blank)
        assert world.shape == (3, 1, 33, 3) and np.isnan(world).all() and np.array_equal(kp, out, equal_nan=True)
        clip = os.environ.get("FASTMIXSTE_TEST_VIDEO")  # a real recording of one person, to check detections
        if clip:
            from fastmixste.video.decode import open_video

            source = open_video(clip)
            frames = np.stack([f for _, f in zip(range(30), source.frames())])
            det.reset()
            kp = det.detect(frames)
            seen = np.isfinite(kp[:, 0, :, 0]).all(-1)
            assert seen.mean() > 0.5
            xy = kp[seen, 0, :, :2]
            assert (xy[..., 0] > -0.5 * source.width).all() and (xy[..., 0] < 1.5 * source.width).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter needs no onnxscript
def test_onnx_detector_on_a_model_made_here(tmp_path):
    """A SimCC 'model' whose x/y vectors are the image's column/row brightness finds a bright square, through the
    crop and back: the first frame is read whole, later frames through a crop around the last keypoints."""
    pytest.importorskip("onnxruntime", reason='the ONNX detector needs pip install "fastmixste[onnx]"')
    pytest.importorskip("onnx", reason="exporting the test model needs the onnx package")

    class Profile(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            g = x.mean(1)  # (1, H, W), in [0, 1] with mean 0, std 1/255 below
            col = g.amax(1).repeat_interleave(2, dim=-1)  # (1, 2W): SimCC split ratio 2
            row = g.amax(2).repeat_interleave(2, dim=-1)  # (1, 2H)
            return col[:, None].expand(1, 17, -1).contiguous(), row[:, None].expand(1, 17, -1).contiguous()

    path = tmp_path / "profile.onnx"
    torch.onnx.export(Profile(), torch.zeros(1, 3, 64, 48), str(path), dynamo=False, input_names=["input"],
                      output_names=["simcc_x", "simcc_y"])
    from fastmixste.video.detectors import OnnxPose

    det = OnnxPose(path, "coco", mean=(0, 0, 0), std=(255, 255, 255), min_confidence=0.5, box_scale=8.0)
    assert det.input_size == (48, 64) and det.layout == "coco"
    yy, xx = np.mgrid[0:240, 0:320]
    centres = [(100, 80), (110, 90), (130, 100), (250, 200), (250, 200)]
    frames = np.stack([np.repeat((255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 200.0))[..., None], 3, -1)
                       for cx, cy in centres]).astype(np.uint8)
    out = det.detect(frames)
    assert out.shape == (5, 1, 17, 3)
    # Whole frame: 320 px over 48 input pixels (6.7 px each); in the crops (128 px boxes) 2.7 px each.
    for t, tol in ((0, 7.0), (1, 3.0), (2, 3.0), (4, 7.0)):
        cx, cy = centres[t]
        np.testing.assert_allclose(out[t, 0, :, 0], cx, atol=tol, err_msg=f"frame {t}")
        np.testing.assert_allclose(out[t, 0, :, 1], cy, atol=tol, err_msg=f"frame {t}")
        assert (out[t, 0, :, 2] > 0.5).all()
    # Frame 3 jumped out of the crop around frame 2: nobody there (NaN, confidence 0), then the whole frame again.
    assert np.isnan(out[3, 0, :, :2]).all() and (out[3, 0, :, 2] == 0).all()
    det.reset()
    assert det._box is None
    with pytest.raises(DetectorError, match="layout 'openpose' has 25"):
        OnnxPose(path, "openpose")
