"""Hostile data files: pickled payloads in every slot the project reads must never run, and must say why.

Each payload, if unpickled, would create a marker file (through os.system, exec, or a numpy function that is not
on the allowlist). Every test loads a poisoned file through the public loaders and checks that the marker is
absent and that the error names the file and the foreign object. test_payloads_are_live proves the payloads do
run when unpickled the ordinary way, so the absence of the marker means something.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastmixste.data import builtin
from fastmixste.data.h36m import load_h36m, load_positions_2d, load_positions_3d
from fastmixste.data.mocap import load_mocap_npz, save_mocap_npz
from fastmixste.io.safeload import CorruptFileError, DataFileError, UnsafeFileError, read_npy, read_npz
from fastmixste.video.keypoints import KeypointError, load_keypoints, read_keypoints

from .conftest import METADATA, make_vp3d_data, write_vp3d


class SystemPayload:
    """Unpickles as os.system("touch <marker>")."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class ExecPayload:
    """Unpickles as exec("open(<marker>, 'w').close()")."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def handmade_pickle(marker: Path, protocol0_global: tuple[str, str] = ("os", "system")) -> bytes:
    """A protocol-0 pickle calling module.name("touch <marker>") through GLOBAL + REDUCE, written by hand."""
    module, name = protocol0_global
    return f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode()


def npy_bytes_with_pickle(payload: bytes) -> bytes:
    """An .npy file: an object-array header followed by arbitrary pickle bytes (what np.save writes for objects)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + payload


def write_npz_members(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "PAYLOAD_RAN"
    yield m
    assert not m.exists(), "a payload ran"


@pytest.fixture(scope="module")
def vp3d():
    return make_vp3d_data()


PAYLOADS = {"os.system": SystemPayload, "exec": ExecPayload}


def test_payloads_are_live(tmp_path):
    """Control: the payloads used below do run when loaded with np.load(allow_pickle=True) or pickle."""
    for name, cls in PAYLOADS.items():
        m = tmp_path / f"ran_{name}"
        np.savez(tmp_path / "x.npz", positions_3d=np.array({"S1": {"W": [cls(m)]}}, dtype=object))
        with np.load(tmp_path / "x.npz", allow_pickle=True) as z:
            z["positions_3d"]
        assert m.exists(), name
    m = tmp_path / "ran_handmade"
    pickle.loads(handmade_pickle(m))
    assert m.exists()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_positions_3d_payload_nested_deep(tmp_path, marker, vp3d, payload):
    p3 = {s: dict(a) for s, a in vp3d[0].items()}
    p3["S9"]["Evil"] = [{"deep": {"deeper": [PAYLOADS[payload](marker)]}}]
    path = write_vp3d(tmp_path / "data_3d_h36m.npz", positions_3d=p3)
    with pytest.raises(UnsafeFileError) as info:
        load_positions_3d(path)
    msg = str(info.value)
    assert str(path) in msg and "'positions_3d'" in msg and "refusing to unpickle" in msg
    assert ("system" in msg) if payload == "os.system" else ("builtins.exec" in msg)


@pytest.mark.parametrize("slot", ["positions_2d", "metadata"])
def test_positions_2d_and_metadata_payloads(tmp_path, marker, vp3d, slot):
    cpn = {s: {a: list(c) for a, c in acts.items()} for s, acts in vp3d[1].items()}
    meta = dict(METADATA)
    if slot == "positions_2d":
        cpn["S1"]["Walking"][2] = SystemPayload(marker)  # one camera of one take
    else:
        meta["extra"] = {"note": ExecPayload(marker)}  # valid metadata plus a hidden payload
    path = write_vp3d(tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d=cpn, metadata=meta)
    with pytest.raises(UnsafeFileError, match=f"{slot}.*refusing to unpickle"):
        load_positions_2d(path)
    write_vp3d(tmp_path / "data_3d_h36m.npz", positions_3d=vp3d[0])
    with pytest.raises(UnsafeFileError):
        load_h36m(tmp_path)


@pytest.mark.parametrize(
    "global_name", [("os", "system"), ("builtins", "eval"), ("subprocess", "call"), ("numpy", "load"),
                    ("numpy.core.multiarray", "_not_allowed"), ("__builtin__", "open")],
)  # fmt: skip
def test_handmade_pickles_refused_by_exact_name(tmp_path, marker, global_name):
    """Only the exact allowlisted globals resolve: other numpy functions and py2 spellings are refused too."""
    path = write_npz_members(tmp_path / "data_3d_h36m.npz",
                             {"positions_3d": npy_bytes_with_pickle(handmade_pickle(marker, global_name))})
    with pytest.raises(UnsafeFileError) as info:
        load_positions_3d(path)
    module = {"__builtin__": "builtins"}.get(global_name[0], global_name[0])
    assert f"{module}.{global_name[1]}" in str(info.value)


def test_raw_pickle_named_npz_or_npy(tmp_path, marker):
    raw = pickle.dumps({"positions_3d": SystemPayload(marker)})
    for name in ("data_3d_h36m.npz", "data_2d_h36m_gt.npz", "kp.npz", "kp.npy"):
        (tmp_path / name).write_bytes(raw)
    with pytest.raises(DataFileError, match="raw Python pickle; pickles are never loaded"):
        load_positions_3d(tmp_path / "data_3d_h36m.npz")
    with pytest.raises(DataFileError, match="raw Python pickle"):
        load_positions_2d(tmp_path / "data_2d_h36m_gt.npz")
    for name in ("kp.npz", "kp.npy"):
        with pytest.raises(KeypointError, match=f"{name}.*raw Python pickle"):
            read_keypoints(tmp_path / name, "coco")


@pytest.mark.parametrize("form", ["videopose3d", "keypoints-object", "npy-object", "width-object"])
def test_keypoint_files_for_inference(tmp_path, marker, form):
    good = np.random.default_rng(0).uniform(0, 100, (5, 17, 3))
    if form == "videopose3d":  # VideoPose3D custom-dataset layout, payload next to the real keypoints
        path = tmp_path / "kp.npz"
        np.savez(path, positions_2d=np.array({"clip.mp4": {"custom": [good, SystemPayload(marker)]}}, dtype=object),
                 metadata=np.array({"video_metadata": {"clip.mp4": {"w": 100, "h": 100}}}, dtype=object))
    elif form == "keypoints-object":
        path = tmp_path / "kp.npz"
        np.savez(path, keypoints=np.array([good, ExecPayload(marker)], dtype=object))
    elif form == "width-object":
        path = tmp_path / "kp.npz"
        np.savez(path, keypoints=good, width=np.array(ExecPayload(marker), dtype=object), height=np.array(100))
    else:
        path = tmp_path / "kp.npy"
        np.save(path, np.array([SystemPayload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(KeypointError, match="refusing to unpickle") as info:
        load_keypoints(path, "coco", width=100, height=100)
    assert str(path) in str(info.value)


def test_plain_npz_files_still_load(tmp_path, vp3d):
    """The restricted reader loads what VideoPose3D and numpy write: no false refusals."""
    write_vp3d(tmp_path / "data_3d_h36m.npz", positions_3d=vp3d[0])
    write_vp3d(tmp_path / "data_2d_h36m_cpn_ft_h36m_dbb.npz", positions_2d=vp3d[1], metadata=METADATA)
    data = load_h36m(tmp_path)
    assert data.positions_3d["S1"]["Walking"].shape == (60, 17, 3)
    # numpy scalars, tuples, sets, complex, bytes and nested object arrays inside the dict
    odd = {"a": np.float32(1.5), "b": (1, "x"), "c": {2, 3}, "d": 1 + 2j, "e": b"raw",
           "f": np.array([np.zeros(2), "s"], dtype=object)}  # fmt: skip
    np.savez(tmp_path / "odd.npz", odd=np.array(odd, dtype=object))
    back = read_npz(tmp_path / "odd.npz")["odd"].item()
    assert back["a"] == np.float32(1.5) and back["b"] == (1, "x") and back["c"] == {2, 3} and back["d"] == 1 + 2j
    assert back["e"] == b"raw" and back["f"][1] == "s"
    # a protocol 2 pickle (as older numpy/Python wrote), numpy scalars arriving through _codecs.encode
    arr = np.array({"k": np.arange(3.0), "s": np.int64(4)}, dtype=object)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    pickle.dump(arr, buf, protocol=2)
    write_npz_members(tmp_path / "p2.npz", {"x": buf.getvalue()})
    back = read_npz(tmp_path / "p2.npz")["x"].item()
    np.testing.assert_array_equal(back["k"], np.arange(3.0))
    assert back["s"] == 4


def test_corrupt_and_wrong_files_say_so(tmp_path, vp3d):
    path = write_vp3d(tmp_path / "data_3d_h36m.npz", positions_3d=vp3d[0])
    good = path.read_bytes()
    np.savez(tmp_path / "stored.npz", positions_3d=np.array(vp3d[0], dtype=object))  # uncompressed: CRC is the check
    stored = (tmp_path / "stored.npz").read_bytes()
    cases = {
        # a damaged deflate stream fails in zlib or at the CRC check, depending on where the byte sits
        "compressed-damaged": (good[:300] + bytes([good[300] ^ 0xFF]) + good[301:], CorruptFileError,
                               "is corrupt or truncated"),
        "truncated": (good[: len(good) // 2], CorruptFileError, "is corrupt or truncated"),
        "crc": (stored[:5000] + bytes([stored[5000] ^ 0xFF]) + stored[5001:], CorruptFileError, "Bad CRC-32"),
        "empty": (b"", DataFileError, "it is empty"),
        "json": (b'{"positions_3d": 1}', DataFileError, "looks like JSON"),
        "npy": (npy_bytes_with_pickle(b"N."), DataFileError, "single .npy array"),
    }
    for name, (data, exc, phrase) in cases.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(data)
        with pytest.raises(exc, match=phrase) as info:
            load_positions_3d(p)
        assert str(p) in str(info.value), name
    # a cut-off pickle inside an intact archive
    write_npz_members(tmp_path / "cut.npz", {"positions_3d": npy_bytes_with_pickle(pickle.dumps(vp3d[0])[:50])})
    with pytest.raises(CorruptFileError, match="cut.npz.*'positions_3d'.*is corrupt"):
        load_positions_3d(tmp_path / "cut.npz")
    # an object-array slot that holds something other than an array
    write_npz_members(tmp_path / "odd.npz", {"positions_3d": npy_bytes_with_pickle(pickle.dumps({"S1": 1}))})
    with pytest.raises(CorruptFileError, match="holds a pickled dict, not an array"):
        read_npz(tmp_path / "odd.npz")
    with pytest.raises(DataFileError, match="is a folder"):
        read_npy(tmp_path)


def test_mocap_corpus_reader(tmp_path, marker):
    save_mocap_npz(tmp_path / "c.npz", {"walk": np.zeros((4, 17, 3))}, fps=50)
    assert load_mocap_npz(tmp_path / "c.npz")["walk"].shape == (4, 17, 3)
    np.savez(tmp_path / "evil.npz", names=np.array(["walk"]), fps=np.array(50.0),
             format=np.array("fastmixste-mocap-v1"), clip_00000=np.array([SystemPayload(marker)], dtype=object))
    with pytest.raises(UnsafeFileError, match="clip_00000"):
        load_mocap_npz(tmp_path / "evil.npz")


# ------------------------------------------------------------------------------------------ built-in data cache
@pytest.fixture
def tiny_builtin(monkeypatch, vp3d):
    """builtin_data_dir with generate_builtin swapped for the small fixture data (seconds, not minutes)."""
    calls = []

    def generate():
        calls.append(1)
        return vp3d

    monkeypatch.setattr(builtin, "generate_builtin", generate)
    return calls


def _poison(path: Path, marker: Path) -> None:
    np.savez_compressed(path, positions_3d=np.array({"S1": {"Walking": SystemPayload(marker)}}, dtype=object))


def test_cache_first_use_says_what_and_where(tmp_path, tiny_builtin, capsys):
    out = builtin.builtin_data_dir(tmp_path)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "generating the built-in synthetic dataset" in err and str(out) in err
    assert builtin.builtin_data_dir(tmp_path) == out and len(tiny_builtin) == 1  # verified, not regenerated
    assert capsys.readouterr().err == ""


def test_poisoned_cache_is_regenerated_or_refused(tmp_path, tiny_builtin, marker, capsys):
    out = builtin.builtin_data_dir(tmp_path)
    _poison(out / "data_3d_h36m.npz", marker)
    capsys.readouterr()
    with pytest.raises(DataFileError, match="data_3d_h36m.npz does not match the sha256 in manifest.json"):
        builtin.builtin_data_dir(tmp_path, regenerate=False)
    assert builtin.builtin_data_dir(tmp_path) == out and len(tiny_builtin) == 2
    assert "does not match the sha256 in manifest.json" in capsys.readouterr().err
    load_h36m(out)  # the regenerated files load
    # A poisoned file whose hash was also written into the manifest passes the hash check, then the reader
    # refuses it: the hash protects against damage, the restricted unpickler against code.
    _poison(out / "data_3d_h36m.npz", marker)
    info = json.loads((out / "manifest.json").read_text())
    info["file_sha256"]["data_3d_h36m.npz"] = builtin._file_sha256(out / "data_3d_h36m.npz")
    (out / "manifest.json").write_text(json.dumps(info))
    assert builtin.builtin_data_dir(tmp_path) == out
    with pytest.raises(UnsafeFileError, match="refusing to unpickle"):
        load_h36m(out)


def test_cache_with_old_manifest_checks_content_hashes(tmp_path, tiny_builtin, marker, capsys):
    """Manifests without file hashes (written by earlier versions) are checked by reading the arrays safely."""
    out = builtin.builtin_data_dir(tmp_path)
    info = json.loads((out / "manifest.json").read_text())
    del info["file_sha256"]
    (out / "manifest.json").write_text(json.dumps(info))
    assert builtin.builtin_data_dir(tmp_path) == out and len(tiny_builtin) == 1  # content matches: kept
    assert "file_sha256" in json.loads((out / "manifest.json").read_text())  # and now fast to check
    (out / "manifest.json").write_text(json.dumps(info))
    _poison(out / "data_2d_h36m_gt.npz", marker)
    capsys.readouterr()
    assert builtin.builtin_data_dir(tmp_path) == out and len(tiny_builtin) == 2
    assert "data_2d_h36m_gt.npz cannot be read" in capsys.readouterr().err
    (out / "manifest.json").write_text("{not json")
    assert builtin.builtin_data_dir(tmp_path) == out and len(tiny_builtin) == 3
    assert "manifest.json is unreadable" in capsys.readouterr().err
