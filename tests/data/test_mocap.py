from pathlib import Path

import numpy as np
import pytest

from fastmixste.data.mocap import (
    BVH_TO_H36M,
    load_mocap_npz,
    main,
    mocap_npz_fps,
    resample,
    save_mocap_npz,
    to_h36m17,
)
from fastmixste.data.mocap_formats import read_asf_amc, read_bvh
from fastmixste.data.skeleton import bone_lengths

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CMU_ASF, CMU_AMC = FIXTURES / "cmu_excerpt.asf", FIXTURES / "cmu_excerpt.amc"

# A small humanoid in centimetres, Y up, Z forward; the person's left is +X.
BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT RightUpLeg
  {
    OFFSET -10 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT RightLeg
    {
      OFFSET 0 -45 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      JOINT RightFoot
      {
        OFFSET 0 -43 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        End Site
        {
          OFFSET 0 -5 10
        }
      }
    }
  }
  JOINT LeftUpLeg
  {
    OFFSET 10 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT LeftLeg
    {
      OFFSET 0 -45 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      JOINT LeftFoot
      {
        OFFSET 0 -43 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        End Site
        {
          OFFSET 0 -5 10
        }
      }
    }
  }
  JOINT Spine
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT Spine1
    {
      OFFSET 0 13 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      JOINT Neck
      {
        OFFSET 0 25 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        JOINT Head
        {
          OFFSET 0 12 0
          CHANNELS 3 Zrotation Xrotation Yrotation
          End Site
          {
            OFFSET 0 12 0
          }
        }
      }
      JOINT LeftArm
      {
        OFFSET 17 20 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        JOINT LeftForeArm
        {
          OFFSET 28 0 0
          CHANNELS 3 Zrotation Xrotation Yrotation
          JOINT LeftHand
          {
            OFFSET 25 0 0
            CHANNELS 3 Zrotation Xrotation Yrotation
            End Site
            {
              OFFSET 8 0 0
            }
          }
        }
      }
      JOINT RightArm
      {
        OFFSET -17 20 0
        CHANNELS 3 Zrotation Xrotation Yrotation
        JOINT RightForeArm
        {
          OFFSET -28 0 0
          CHANNELS 3 Zrotation Xrotation Yrotation
          JOINT RightHand
          {
            OFFSET -25 0 0
            CHANNELS 3 Zrotation Xrotation Yrotation
            End Site
            {
              OFFSET -8 0 0
            }
          }
        }
      }
    }
  }
}
MOTION
Frames: 4
Frame Time: 0.0083333
"""
# Channel columns: Hips 6, then 3 per joint in file order.
JOINTS = ["RightUpLeg", "RightLeg", "RightFoot", "LeftUpLeg", "LeftLeg", "LeftFoot", "Spine", "Spine1", "Neck",
          "Head", "LeftArm", "LeftForeArm", "LeftHand", "RightArm", "RightForeArm", "RightHand"]  # fmt: skip


def _frame(root=(0, 100, 0), root_rot=(0, 0, 0), **rots) -> str:
    vals = list(root) + list(root_rot)
    for j in JOINTS:
        vals += list(rots.get(j, (0, 0, 0)))  # (Z, X, Y) degrees, the channel order
    return " ".join(f"{v:g}" for v in vals)


@pytest.fixture
def bvh_file(tmp_path) -> Path:
    frames = [
        _frame(),
        _frame(root=(10, 100, 0), RightUpLeg=(0, 90, 0)),  # right thigh swung 90 deg about x
        _frame(root_rot=(0, 0, 90)),  # whole body turned 90 deg about the vertical
        _frame(RightUpLeg=(90, 90, 0)),  # Z then X in the file: R = Rz @ Rx
    ]
    p = tmp_path / "walk.bvh"
    p.write_text(BVH + "\n".join(frames) + "\n")
    return p


def test_read_bvh_forward_kinematics(bvh_file):
    clip = read_bvh(bvh_file)
    assert clip.source == "bvh" and clip.fps == pytest.approx(120, rel=1e-4)
    assert clip.positions.shape == (4, len(clip.names), 3)
    assert "Head_end" in clip.names and "RightFoot_end" in clip.names
    P = clip.positions / 0.01  # auto units: a 165 cm rest pose is centimetres
    ix = clip.names.index
    np.testing.assert_allclose(P[0, ix("Hips")], [0, 100, 0])
    np.testing.assert_allclose(P[0, ix("LeftHand")], [17 + 28 + 25, 100 + 10 + 13 + 20, 0])
    np.testing.assert_allclose(P[0, ix("Head_end")], [0, 172, 0])
    # Rx(90) takes the thigh (0, -45, 0) to (0, 0, -45); the shin follows the thigh.
    np.testing.assert_allclose(P[1, ix("RightLeg")], [0, 100, -45], atol=1e-9)
    np.testing.assert_allclose(P[1, ix("RightFoot")], [0, 100, -88], atol=1e-9)
    # Ry(90) takes the left hip (10, 0, 0) to (0, 0, -10).
    np.testing.assert_allclose(P[2, ix("LeftUpLeg")], [0, 100, -10], atol=1e-9)
    # Rz(90) @ Rx(90) on (0, -45, 0) is (0, 0, -45); the other order would give (45, 0, 0).
    np.testing.assert_allclose(P[3, ix("RightLeg")] - P[3, ix("RightUpLeg")], [0, 0, -45], atol=1e-9)


def test_bvh_to_h36m17(bvh_file):
    x = to_h36m17(read_bvh(bvh_file))
    assert x.shape == (4, 17, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], [0, 0, 1.0], atol=1e-6)  # Y up -> Z up
    np.testing.assert_allclose(x[0, 10], [0, 0, 1.72], atol=1e-6)  # head top = Head's End Site
    assert x[0, 11, 0] > 0 > x[0, 14, 0]  # left shoulder on +x, right on -x
    np.testing.assert_allclose(bone_lengths(x[0])[[0, 1, 2, 11, 12]], [0.10, 0.45, 0.43, 0.28, 0.25], atol=1e-6)
    # The thigh swung backwards (-Z in the file) is +Y after the Y-up -> Z-up rotation.
    np.testing.assert_allclose(x[1, 2] - x[1, 1], [0, 0.45, 0], atol=1e-6)


ASF = """:version 1.10
:name tiny
:units
  mass 1.0
  length 1.0
  angle deg
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name a
     direction 1 0 0
     length 2
     axis 0 0 90 XYZ
    dof rx ry rz
  end
  begin
     id 2
     name b
     direction 0 1 0
     length 1
     axis 0 0 0 XYZ
    dof rx
  end
:hierarchy
  begin
    root a
    a b
  end
"""
AMC = """:FULLY-SPECIFIED
:DEGREES
1
root 1 2 3 0 0 0
a 0 0 0
b 0
2
root 0 0 0 0 0 90
a 0 0 0
b 90
3
root 0 0 0 0 0 0
a 90 0 0
b 0
"""


def test_read_asf_amc_forward_kinematics(tmp_path):
    (tmp_path / "t.asf").write_text(ASF)
    (tmp_path / "t.amc").write_text(AMC)
    clip = read_asf_amc(tmp_path / "t.asf", tmp_path / "t.amc", fps=60, length_to_m=1.0)
    assert clip.names == ["root", "a", "b"] and clip.fps == 60
    P = clip.positions
    np.testing.assert_allclose(P[0], [[1, 2, 3], [3, 2, 3], [3, 3, 3]], atol=1e-12)
    # Root turned 90 deg about z; b bends 90 deg about its x axis.
    np.testing.assert_allclose(P[1], [[0, 0, 0], [0, 2, 0], [0, 2, 1]], atol=1e-12)
    # rx of a is about a's own x axis, which its 'axis 0 0 90' puts along world y: (1, 0, 0) -> (0, 0, -1).
    np.testing.assert_allclose(P[2, 1], [0, 0, -2], atol=1e-12)
    # Default units: 'length 1.0' means inches.
    inches = read_asf_amc(tmp_path / "t.asf", tmp_path / "t.amc")
    np.testing.assert_allclose(inches.positions, P * 0.0254)


def test_cmu_clip_bone_lengths_are_human():
    clip = read_asf_amc(CMU_ASF, CMU_AMC)
    assert clip.positions.shape[0] == 240 and clip.fps == 120
    x = to_h36m17(clip)
    b = bone_lengths(x)  # (T, 16)
    assert b.std(axis=0)[[1, 2, 4, 5, 11, 12, 14, 15]].max() < 1e-5  # legs and arms are rigid
    m = b.mean(axis=0)
    thighs, shins, upper_arms, forearms = m[[1, 4]], m[[2, 5]], m[[11, 14]], m[[12, 15]]
    assert ((0.35 < thighs) & (thighs < 0.50)).all() and ((0.35 < shins) & (shins < 0.50)).all()
    assert ((0.22 < upper_arms) & (upper_arms < 0.35)).all() and ((0.18 < forearms) & (forearms < 0.30)).all()
    # hip joint centres: ~0.15-0.2 m anatomically (CMU), ~0.26 m in H36M's marker-based skeleton
    assert 0.12 < np.linalg.norm(x[:, 1] - x[:, 4], axis=-1).mean() < 0.32
    # ASF 'length 0.45' = 0.45 units per inch: the left femur is 7.1578 units.
    assert m[4] == pytest.approx(7.1578 / 0.45 * 0.0254, rel=1e-6)
    # Z up after conversion: head over pelvis over ankles, and a human height.
    assert (x[:, 10, 2] > x[:, 0, 2]).all() and (x[:, 0, 2] > x[:, [3, 6], 2].max(axis=1)).all()
    height = (x[:, 10, 2] - x[:, [3, 6], 2].min(axis=1)).max() + 0.08  # ankle to floor
    assert 1.5 < height < 2.0


def test_resample():
    t = np.arange(121, dtype=np.float64)
    x = np.stack([t, 2 * t + 1], axis=-1)[:, None, :]  # linear in time: interpolation is exact
    y = resample(x, 120, 50)
    assert y.shape == (51, 1, 2)
    np.testing.assert_allclose(y[:, 0, 0], np.arange(51) * 2.4)
    np.testing.assert_allclose(y[:, 0, 1], 2 * np.arange(51) * 2.4 + 1)
    assert resample(x.astype(np.float32), 50, 100).shape[0] == 241
    np.testing.assert_array_equal(resample(x, 50, 50), x)
    assert resample(x[:1], 120, 50).shape[0] == 1
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 50)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    clips = {"a": rng.standard_normal((30, 17, 3)), "b b": rng.standard_normal((5, 17, 3)).astype(np.float32)}
    save_mocap_npz(tmp_path / "c.npz", clips, fps=50)
    out = load_mocap_npz(tmp_path / "c.npz")
    assert list(out) == ["a", "b b"] and mocap_npz_fps(tmp_path / "c.npz") == 50
    assert out["a"].dtype == np.float32
    np.testing.assert_allclose(out["a"], clips["a"], rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temp files left


def test_npz_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"'x'.*\(T, 17, 3\), got \(10, 16, 3\)"):
        save_mocap_npz(tmp_path / "c.npz", {"x": np.zeros((10, 16, 3))}, fps=50)
    nan = np.zeros((10, 17, 3))
    nan[3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_mocap_npz(tmp_path / "c.npz", {"x": nan}, fps=50)
    with pytest.raises(FileNotFoundError, match="python -m fastmixste.data.mocap"):
        load_mocap_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", positions=np.zeros(3))
    with pytest.raises(KeyError, match="'names'"):
        load_mocap_npz(tmp_path / "other.npz")


def test_cli(tmp_path, bvh_file, capsys):
    out = tmp_path / "corpus.npz"
    assert main([str(CMU_ASF), str(CMU_AMC), str(bvh_file), "--out", str(out), "--fps", "50"]) == 0
    assert "2 clip(s)" in capsys.readouterr().out
    corpus = load_mocap_npz(out)
    assert set(corpus) == {"cmu_excerpt", "walk"}
    assert corpus["cmu_excerpt"].shape == (100, 17, 3)  # 240 frames at 120 fps -> 2 s at 50 fps
    assert mocap_npz_fps(out) == 50


def test_import_errors(tmp_path, bvh_file):
    with pytest.raises(FileNotFoundError, match="nope.bvh"):
        read_bvh(tmp_path / "nope.bvh")
    with pytest.raises(FileNotFoundError, match="nope.amc"):
        read_asf_amc(CMU_ASF, tmp_path / "nope.amc")
    with pytest.raises(ValueError, match="needs its .asf"):
        main.__wrapped__([str(CMU_AMC), "--out", str(tmp_path / "x.npz")])
    assert main([str(CMU_AMC), "--out", str(tmp_path / "x.npz")]) == 2  # the CLI: a message, exit code 2
    bad = tmp_path / "bad.amc"
    bad.write_text(CMU_AMC.read_text().replace("lfemur", "lthigh", 1))
    with pytest.raises(ValueError, match="'lthigh'"):
        read_asf_amc(CMU_ASF, bad)
    short = tmp_path / "short.bvh"
    short.write_text(bvh_file.read_text().rsplit("\n", 2)[0])
    with pytest.raises(ValueError, match="expected 4 frames"):
        read_bvh(short)
    clip = read_bvh(bvh_file)
    with pytest.raises(ValueError, match="cannot map 1 H36M joint.*pelvis"):
        to_h36m17(clip, mapping=dict(BVH_TO_H36M, pelvis=["Root"]))
