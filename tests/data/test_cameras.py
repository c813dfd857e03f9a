import numpy as np
import pytest
import torch

from fastmixste.data.cameras import (
    camera_to_world,
    h36m_cameras,
    image_coordinates,
    normalize_screen_coordinates,
    project_to_2d,
    quaternion_to_matrix,
    world_to_camera,
)

SUBJECTS = ["S1", "S5", "S6", "S7", "S8", "S9", "S11"]


def _reference_projection(X, fx, fy, cx, cy, k, p):
    """One point, written out: VideoPose3D's distortion model in plain Python."""
    x, y = max(-1.0, min(1.0, X[0] / X[2])), max(-1.0, min(1.0, X[1] / X[2]))
    r2 = x * x + y * y
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * x + p[1] * y
    xd = x * (radial + tan) + p[0] * r2
    yd = y * (radial + tan) + p[1] * r2
    return fx * xd + cx, fy * yd + cy


def test_published_cameras():
    cams = h36m_cameras("S9")
    assert [c.id for c in cams] == ["54138969", "55011271", "58860488", "60457274"]
    assert [(c.res_w, c.res_h) for c in cams] == [(1000, 1002), (1000, 1000), (1000, 1000), (1000, 1002)]
    assert cams[0].focal_length[0] == pytest.approx(1145.0494384765625)
    assert cams[1].translation == pytest.approx([1.990959716796875, -5.123810546875, 1.5688048095703125])
    with pytest.raises(KeyError, match="S2"):
        h36m_cameras("S2")


@pytest.mark.parametrize("subject", SUBJECTS)
def test_extrinsics_look_at_the_capture_area(subject):
    for cam in h36m_cameras(subject):
        R = cam.R
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(world_to_camera(cam.translation, R, cam.translation), 0.0, atol=1e-12)
        # A person standing in the middle of the room is in front of every camera and inside its image.
        centre = world_to_camera(np.array([0.0, 0.4, 1.0]), R, cam.translation)
        assert 3.0 < centre[2] < 7.0
        u, v = project_to_2d(centre, cam, pixels=True)
        assert 0 < u < cam.res_w and 0 < v < cam.res_h


def test_world_camera_round_trip_numpy_and_torch():
    cam = h36m_cameras("S11")[2]
    X = np.random.default_rng(0).normal(0, 1.5, (10, 17, 3))
    Xc = world_to_camera(X, cam.R, cam.translation)
    np.testing.assert_allclose(camera_to_world(Xc, cam.R, cam.translation), X, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(Xc[:, 1] - Xc[:, 0], axis=-1), np.linalg.norm(X[:, 1] - X[:, 0], axis=-1))
    Xt = world_to_camera(torch.from_numpy(X).float(), cam.orientation, cam.translation)  # quaternion accepted
    assert Xt.dtype == torch.float32
    np.testing.assert_allclose(Xt.numpy(), Xc, atol=1e-5)


def test_quaternion_to_matrix_matches_axis_angle():
    a = 0.7
    q = np.array([np.cos(a / 2), 0.0, 0.0, np.sin(a / 2)])  # rotation by a about z
    R = quaternion_to_matrix(q)
    np.testing.assert_allclose(R, [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]], atol=1e-12)


def test_projection_matches_reference_formula():
    cam = h36m_cameras("S1")[3]
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.uniform(-1.5, 1.5, (50, 2)), rng.uniform(2.0, 6.0, (50, 1))], axis=1)
    X[0] = [5.0, 0.5, 1.0]  # far outside the field of view: clamped
    got = project_to_2d(X, cam, pixels=True)
    (fx, fy), (cx, cy) = cam.focal_length, cam.center
    for i in range(len(X)):
        ref = _reference_projection(X[i], fx, fy, cx, cy, cam.radial_distortion, cam.tangential_distortion)
        np.testing.assert_allclose(got[i], ref, rtol=1e-12)
    # Normalised intrinsics give normalised screen coordinates of the same points; torch agrees with numpy.
    norm = project_to_2d(X, cam)
    np.testing.assert_allclose(norm, normalize_screen_coordinates(got, cam.res_w, cam.res_h), atol=1e-6)
    tor = project_to_2d(torch.from_numpy(X), torch.from_numpy(cam.intrinsic_pixels))
    np.testing.assert_allclose(tor.numpy(), got, rtol=1e-12)


def test_projection_without_distortion_is_pinhole_and_batches():
    params = np.array([[2.0, 3.0, 0.1, -0.2, 0, 0, 0, 0, 0], [1.0, 1.0, 0.0, 0.0, 0, 0, 0, 0, 0]])
    X = np.random.default_rng(2).uniform(0.1, 0.5, (2, 7, 17, 3)) + [0, 0, 2]
    out = project_to_2d(X, params)  # (B, 9) against (B, T, J, 3)
    expect = X[..., :2] / X[..., 2:] * params[:, None, None, :2] + params[:, None, None, 2:4]
    np.testing.assert_allclose(out, expect)
    with pytest.raises(ValueError, match="9 entries"):
        project_to_2d(X, np.zeros(8))


def test_screen_normalisation_round_trip():
    px = np.array([[0.0, 0.0], [1000.0, 1002.0], [500.0, 501.0]])
    s = normalize_screen_coordinates(px, 1000, 1002)
    np.testing.assert_allclose(s[0], [-1.0, -1.002])
    np.testing.assert_allclose(s[1], [1.0, 1.002])
    np.testing.assert_allclose(s[2], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(image_coordinates(s, 1000, 1002), px)
    t = normalize_screen_coordinates(torch.tensor(px, dtype=torch.float32), 1000, 1002)
    np.testing.assert_allclose(t.numpy(), s, atol=1e-6)
