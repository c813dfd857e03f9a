"""DeepMimic clips: forward kinematics on known angles, the URDF reader, format detection, refused files."""

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastmixste.data import deepmimic
from fastmixste.data.deepmimic import DEFAULT_HUMANOID, extract_motions, read_deepmimic, read_humanoid_urdf
from fastmixste.data.mocap import import_files, load_mocap_npz, mocap_npz_fps, sniff_format, to_h36m17
from fastmixste.data.mocap import main as mocap_main
from fastmixste.data.skeleton import H36M_JOINT_NAMES

S = 0.25  # metres per URDF unit of the stock humanoid
# The stock humanoid's movable joints in frame order, with their value counts.
LAYOUT = [("chest", 4), ("neck", 4), ("right_hip", 4), ("right_knee", 1), ("right_ankle", 4), ("right_shoulder", 4),
          ("right_elbow", 1), ("left_hip", 4), ("left_knee", 1), ("left_ankle", 4), ("left_shoulder", 4),
          ("left_elbow", 1)]  # fmt: skip
C45 = math.cos(math.pi / 4)


def frame(duration=1 / 30, root=(0.0, 0.9, 0.0), root_q=(1.0, 0.0, 0.0, 0.0), **joints) -> list[float]:
    """One DeepMimic frame of the stock humanoid; joints default to identity / 0 rad."""
    row = [duration, *root, *root_q]
    for name, n in LAYOUT:
        row += list(joints.get(name, (1.0, 0.0, 0.0, 0.0) if n == 4 else (0.0,)))
    return row


def write_clip(path: Path, frames: list[list[float]]) -> Path:
    path.write_text(json.dumps({"Loop": "none", "Frames": frames}))
    return path


def test_forward_kinematics_known_angles(tmp_path):
    # Frame 0: rest pose, right knee bent 90 degrees, left arm raised forward (90 degrees about the chest's Z).
    # Frame 1: the whole body turned 90 degrees left about Y (root quaternion), root moved 0.5 m along X.
    bend = {"right_knee": (-math.pi / 2,), "left_shoulder": (C45, 0.0, 0.0, C45)}
    f = write_clip(tmp_path / "humanoid3d_test.txt",
                   [frame(**bend), frame(root=(0.5, 0.9, 0.0), root_q=(C45, 0.0, C45, 0.0), duration=0, **bend)])
    clip = read_deepmimic(f)
    assert clip.fps == pytest.approx(30, rel=1e-9) and clip.up == "y" and clip.positions.shape[0] == 2
    p = {n: clip.joint(n)[0] for n in clip.names}
    root = np.array([0.0, 0.9, 0.0])
    np.testing.assert_allclose(p["root"], root)
    np.testing.assert_allclose(p["right_hip"], root + [0, 0, 0.339548 * S])  # the right side is +Z
    np.testing.assert_allclose(p["right_knee"], p["right_hip"] + [0, -1.686184 * S, 0])
    np.testing.assert_allclose(p["right_ankle"], p["right_knee"] + [-1.639480 * S, 0, 0], atol=1e-12)  # shin back
    np.testing.assert_allclose(p["left_ankle"], root + [0, -(1.686184 + 1.639480) * S, -0.339548 * S])
    chest = root + [0, 0.944604 * S, 0]
    np.testing.assert_allclose(p["left_shoulder"], chest + np.array([-0.0962, 0.974, -0.73244]) * S)
    np.testing.assert_allclose(p["left_elbow"], p["left_shoulder"] + [1.099152 * S, 0, 0], atol=1e-12)  # forward
    np.testing.assert_allclose(p["left_wrist"], p["left_elbow"] + [1.035788 * S, 0, 0], atol=1e-12)
    neck = chest + [0, 0.895576 * S, 0]
    np.testing.assert_allclose(p["head_top"], neck + [0, (0.7 + 0.41) * S, 0])
    np.testing.assert_allclose(p["neck_nose"], neck + [0, (0.7 + 0.41) * S / 2, 0])
    # Turned left 90 degrees about +Y: +X (facing) -> -Z, +Z (right side) -> +X.
    q = {n: clip.joint(n)[1] for n in clip.names}
    root1 = np.array([0.5, 0.9, 0.0])
    np.testing.assert_allclose(q["right_hip"], root1 + [0.339548 * S, 0, 0], atol=1e-12)
    np.testing.assert_allclose(q["right_ankle"] - q["right_knee"], [0, 0, 1.639480 * S], atol=1e-12)
    # Bones keep their lengths between the frames.
    d = np.linalg.norm(clip.positions[:, 1:] - clip.positions[:, np.array(clip.parents[1:])], axis=-1)
    np.testing.assert_allclose(d[0], d[1], atol=1e-12)


def test_h36m_mapping_left_is_left(tmp_path):
    f = write_clip(tmp_path / "c.txt", [frame(), frame(duration=0)])
    x = to_h36m17(read_deepmimic(f))  # Z up; the humanoid faces +X, so its left is +Y
    j = {n: x[0, i] for i, n in enumerate(H36M_JOINT_NAMES)}
    for side in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"):
        assert j[f"l_{side}"][1] > j[f"r_{side}"][1] + 0.1, side
    assert j["head"][2] > j["neck_nose"][2] > j["thorax"][2] > j["spine"][2] > j["pelvis"][2] > j["r_knee"][2]
    # Standing straight: head top to ankle 1.57 m (the humanoid stands ~1.62 m with its feet).
    assert j["head"][2] - j["r_ankle"][2] == pytest.approx((1.686184 + 1.639480 + 0.944604 + 0.895576 + 1.11) * S)


def test_uneven_durations_go_onto_a_regular_grid(tmp_path):
    # Durations 0.1 s, 0.2 s: root X 0 -> 1 -> 3 (1 m per 0.1 s) gives 4 frames at 10 fps, X = 0, 1, 2, 3.
    f = write_clip(tmp_path / "c.txt", [frame(0.1, (0, 0.9, 0)), frame(0.2, (1, 0.9, 0)), frame(0, (3, 0.9, 0))])
    clip = read_deepmimic(f)
    assert clip.fps == pytest.approx(10)
    np.testing.assert_allclose(clip.joint("root")[:, 0], [0, 1, 2, 3], atol=1e-12)


URDF = """<robot name="tiny">
  <link name="base"/>
  <link name="pelvis"/>
  <link name="hand"/>
  <link name="arm"/>
  <link name="neck"><collision><origin xyz="0 0.5 0"/><geometry><sphere radius="0.25"/></geometry></collision></link>
  <joint name="root" type="fixed"><parent link="base"/><child link="pelvis"/><origin xyz="0 0 0"/></joint>
  <joint name="hand" type="fixed"><parent link="arm"/><child link="hand"/><origin xyz="1 1 0"/></joint>
  <joint name="neck" type="spherical"><parent link="pelvis"/><child link="neck"/><origin xyz="0 1 0"/></joint>
  <joint name="arm" type="revolute"><parent link="pelvis"/><child link="arm"/>
    <origin rpy="0 0 1.5707963267948966" xyz="0 0 1"/><axis xyz="1 0 0"/></joint>
</robot>
\x00"""


def test_urdf_reader_and_its_forward_kinematics(tmp_path):
    (tmp_path / "tiny.urdf").write_text(URDF)  # trailing NUL byte, as pybullet's own humanoid.urdf has
    body = read_humanoid_urdf(tmp_path / "tiny.urdf")
    assert body.root == "pelvis" and [j.name for j in body.joints] == ["hand", "neck", "arm"]
    # Columns: duration, root xyz, root quaternion, neck quaternion (4), arm angle (1); 'hand' is fixed.
    rows = [[0.02, 1, 2, 3, 1, 0, 0, 0, 1, 0, 0, 0, math.pi / 2], [0, 1, 2, 3, 1, 0, 0, 0, 1, 0, 0, 0, 0]]
    f = write_clip(tmp_path / "c.txt", rows)
    clip = read_deepmimic(f, urdf=tmp_path / "tiny.urdf", link_scale=1.0)
    assert clip.fps == pytest.approx(50)
    p = {n: clip.joint(n)[0] for n in clip.names}
    np.testing.assert_allclose(p["arm"], [1, 2, 4])
    # hand = arm + Rz(90) Rx(90) (1, 1, 0) = arm + (0, 1, 1): origin rpy, then the joint's angle about its axis.
    np.testing.assert_allclose(p["hand"], [1, 3, 5], atol=1e-12)
    np.testing.assert_allclose(clip.joint("hand")[1], [0, 3, 4], atol=1e-12)  # angle 0: Rz(90) (1, 1, 0)
    np.testing.assert_allclose(p["head_top"], [1, 3.75, 3])
    assert clip.parents[clip.names.index("hand")] == clip.names.index("arm")


def test_urdf_reader_refuses(tmp_path):
    bad = tmp_path / "bad.urdf"
    for text, match in [
        ("<robot><link", "not valid XML"),
        ('<!DOCTYPE r [<!ENTITY a "b">]><robot/>', "DOCTYPE"),
        ("<model/>", "expected a <robot>"),
        (URDF.replace('type="revolute"', 'type="prismatic"'), "'prismatic'"),
        (URDF.replace('xyz="1 1 0"', 'xyz="1 nan 0"'), "finite"),
        (URDF.replace("<sphere", "<box"), "no collision sphere"),
        (URDF.replace('<child link="hand"/>', '<child link="arm"/>'), "'arm' is the child of two joints"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_humanoid_urdf(bad)


def test_format_detection(tmp_path):
    clip = write_clip(tmp_path / "walk.txt", [frame(), frame(duration=0)])
    assert sniff_format(clip) == "deepmimic"
    (tmp_path / "m.json").write_text(clip.read_text())
    assert sniff_format(tmp_path / "m.json") == "deepmimic"
    (tmp_path / "b.txt").write_text("\n HIERARCHY\nROOT Hips\n")
    assert sniff_format(tmp_path / "b.txt") == "bvh"
    (tmp_path / "notes.txt").write_text("walk, 2 s")
    with pytest.raises(ValueError, match=r"notes.txt: not a DeepMimic motion .* starts with b'walk"):
        sniff_format(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        sniff_format(tmp_path / "x.csv")


@pytest.mark.parametrize("content, match", [
    ('{"Loop": "wrap", "Frames": [[0.1, 0, 0.9', "not valid JSON"),
    (json.dumps({"Frames": [frame(), frame()]}).replace("0.9", "NaN", 1), "NaN is not a finite number"),
    (json.dumps({"Frames": [frame(), frame()]}).replace("0.9", "1e999", 1), "frame 0, value 2 is not finite"),
    (json.dumps({"Frames": [frame(), frame()[:-1]]}), "frame 1 has 43 values, expected 44"),
    (json.dumps({"Frames": [frame(), frame()[:-1] + ["0"]]}), "frame 1: expected numbers, got '0'"),
    (json.dumps({"Frames": [frame(), frame()[:-1] + [True]]}), "frame 1: expected numbers, got True"),
    (json.dumps({"Frames": [frame()]}), "at least 2 frames"),
    (json.dumps({"frames": []}), 'expected a JSON object with "Frames"'),
    (json.dumps([1, 2]), 'expected a JSON object with "Frames".*list'),
    (json.dumps({"Frames": [frame(), frame(root_q=(0, 0, 0, 0))]}), "frame 1: the root has a zero quaternion"),
    (json.dumps({"Frames": [frame(0.0), frame()]}), "frame 0 has duration 0 s"),
    ("[" * 100000 + "]" * 100000, "nested too deeply|expected a JSON object"),
])  # fmt: skip
def test_bad_clips_are_refused_naming_the_file(tmp_path, content, match):
    f = tmp_path / "humanoid3d_bad.txt"
    f.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        read_deepmimic(f)
    assert str(info.value).startswith(f"{f}: not a valid DeepMimic motion file (")
    assert mocap_main([str(f), "--out", str(tmp_path / "c.npz")]) == 2  # the CLI: one line, exit code 2
    assert not (tmp_path / "c.npz").exists()


def test_mocap_cli_takes_deepmimic_clips(tmp_path, capsys):
    walk = [frame(root=(0.03 * t, 0.9, 0), right_knee=(-0.1 * t,)) for t in range(31)]  # 1 s at 30 fps
    a = write_clip(tmp_path / "humanoid3d_walk.txt", walk)
    b = write_clip(tmp_path / "humanoid3d_still.txt", [frame(0.5), frame(0)])
    out = tmp_path / "corpus.npz"
    assert mocap_main([str(a), str(b), "--out", str(out)]) == 0
    assert "2 clip(s)" in capsys.readouterr().out
    corpus = load_mocap_npz(out)
    assert mocap_npz_fps(out) == 50 and list(corpus) == ["humanoid3d_walk", "humanoid3d_still"]
    assert corpus["humanoid3d_walk"].shape == (51, 17, 3) and corpus["humanoid3d_still"].shape == (26, 17, 3)
    # Z up, metres: walking +X at 0.9 m/s with the pelvis 0.9 m up.
    np.testing.assert_allclose(corpus["humanoid3d_walk"][[0, -1], 0], [[0, 0, 0.9], [0.9, 0, 0.9]], atol=1e-6)


def test_convert_from_a_wheel(tmp_path, capsys):
    clip = json.dumps({"Loop": "wrap", "Frames": [frame(), frame(duration=0)]})
    wheel = tmp_path / "pybullet-3.2.7-cp311-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pybullet_data/data/motions/humanoid3d_still.txt", clip)
        z.writestr("pybullet_data/data/motions/../../../evil.txt", clip)  # not a name the reader takes
        z.writestr("pybullet_data/data/motions/humanoid3d_x.json", clip)
        z.writestr("pybullet_data/humanoid/humanoid.urdf", stock_urdf())
    files, urdf = extract_motions(wheel, tmp_path / "extracted")
    assert [p.name for p in files] == ["humanoid3d_still.txt"] and urdf.name == "humanoid.urdf"
    assert sorted(p.name for p in (tmp_path / "extracted").iterdir()) == ["humanoid.urdf", "humanoid3d_still.txt"]
    assert not (tmp_path / "evil.txt").exists()
    out = tmp_path / "dm.npz"
    assert deepmimic.main(["--wheel", str(wheel), "--cache", str(tmp_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "humanoid3d_still" in text and "licence" in text
    assert list(load_mocap_npz(out)) == ["humanoid3d_still"]
    assert deepmimic.main(["--cache", str(tmp_path / "empty"), "--out", str(out)]) == 2  # no wheel, no --download


def stock_urdf() -> str:
    """DEFAULT_HUMANOID written as URDF text (the reader must give back the same body)."""
    joints = "".join(
        f'<joint name="{j.name}" type="{j.kind}"><parent link="{j.parent}"/><child link="{j.name}"/>'
        f'<origin xyz="{" ".join(map(str, j.origin))}"/><axis xyz="{" ".join(map(str, j.axis))}"/></joint>'
        for j in DEFAULT_HUMANOID.joints)  # fmt: skip
    links = "".join(f'<link name="{j.name}"/>' for j in DEFAULT_HUMANOID.joints if j.name != "neck")
    head = ('<link name="neck"><collision><origin xyz="0 0.7 0"/><geometry><sphere radius="0.41"/></geometry>'
            "</collision></link>")  # fmt: skip
    return f'<robot name="h"><link name="root"/>{links}{head}{joints}</robot>'


def test_stock_urdf_text_gives_the_built_in_body(tmp_path):
    (tmp_path / "h.urdf").write_text(stock_urdf())
    assert read_humanoid_urdf(tmp_path / "h.urdf") == DEFAULT_HUMANOID
    f = write_clip(tmp_path / "c.txt", [frame(), frame(duration=0)])
    assert import_files([f], urdf=tmp_path / "h.urdf")["c"].shape == (2, 17, 3)  # 1/30 s at 50 fps -> 2 frames


def test_resampling_interpolates_the_pose(tmp_path):
    # The left arm swings from hanging to pointing forward (90 degrees about Z) in 1 s; the end quaternion is stored
    # negated (the same rotation), so the short arc must be taken. At 4 fps, frame 2 (0.5 s) is the 45-degree pose.
    f = write_clip(tmp_path / "c.txt", [frame(1.0), frame(0, left_shoulder=(-C45, 0, 0, -C45), left_knee=(-1.0,))])
    clip = read_deepmimic(f, fps=4)
    assert clip.fps == 4 and clip.positions.shape[0] == 5
    s, e = clip.joint("left_shoulder"), clip.joint("left_elbow")
    upper = 1.099152 * S
    np.testing.assert_allclose(e[2] - s[2], [upper * C45, -upper * C45, 0], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(e - s, axis=1), upper)  # a swinging bone keeps its length
    k, a = clip.joint("left_knee"), clip.joint("left_ankle")
    np.testing.assert_allclose(a[1] - k[1], 1.639480 * S * np.array([-np.sin(0.25), -np.cos(0.25), 0]), atol=1e-12)
