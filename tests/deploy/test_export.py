"""python -m fastmixste.deploy.export: ONNX / pt2 round trips against PyTorch, the file's contract, and refusals."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fastmixste.deploy.export import (
    TOLERANCE,
    ExportError,
    choose_backend,
    export_checkpoint,
    main,
    read_contract,
    runtime_model,
    weights_digest,
)
from fastmixste.io import cli
from fastmixste.video.decode import lift

from .conftest import tiny_mixste


def test_fused_path_is_refused_with_the_reason_and_sdpa_exported():
    used, note = choose_backend("triton", "onnx", "cpu")
    assert used == "sdpa" and "ONNX has no operator" in note and "exported the sdpa path" in note
    used, note = choose_backend("triton", "pt2", "cpu")
    assert used == "sdpa" and "CUDA GPU" in note
    assert choose_backend("auto", "pt2", "cpu") == ("sdpa", None)


def test_refuses_a_file_it_did_not_make_and_bad_options(tmp_path, checkpoint, capsys):
    theirs = tmp_path / "model.onnx"
    theirs.write_bytes(b"someone else's model")
    base = ["--checkpoint", str(checkpoint), "--format", "onnx"]
    cases = [(base + ["--out", str(theirs)], "not a model this command exported; pass --overwrite"),
             (base + ["--out", str(tmp_path / "m.pt2")], "--out must end in .onnx"),
             (["--checkpoint", str(checkpoint), "--format", "pt2", "--out", str(tmp_path / "m.pt2"),
               "--frames", "10"], "--frames must be 1..9")]
    for argv, phrase in cases:
        assert cli.run_cli(main, argv) == 2
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err, err
    assert theirs.read_bytes() == b"someone else's model"


def test_missing_extra_is_named(tmp_path, checkpoint, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    code = cli.run_cli(main, ["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "fastmixste[export]"' in err and "Traceback" not in err, err
    with pytest.raises(ImportError, match=r"fastmixste\[export\]"):
        runtime_model(tiny_mixste(), "onnx")


@pytest.mark.slow
def test_onnx_round_trip_metadata_and_runtime(tmp_path, checkpoint, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "m.onnx"
    assert cli.run_cli(main, ["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff vs PyTorch" in printed
    model = tiny_mixste()
    meta = read_contract(out)
    assert meta["frames"] == 9 and meta["config"]["embed_dim_ratio"] == 16 and meta["fps"] == 50.0
    assert meta["weights_sha256"] == weights_digest(model) and "dynamo=True" in meta["exporter"]
    assert "x / w * 2 - 1" in meta["input"]["normalisation"]
    # the offline lift on ONNX Runtime: windows, flip, several batch sizes
    lifter = runtime_model(model, "onnx", model_file=out)
    x = np.random.default_rng(0).uniform(-0.8, 0.8, (40, 17, 2)).astype(np.float32)
    ref, _ = lift(model, x, batch_size=3, progress=False)
    got, _ = lift(lifter, x, batch_size=3, progress=False)
    assert np.abs(got - ref).max() <= TOLERANCE
    # another checkpoint's weights are refused; re-exporting over our own file is allowed
    with pytest.raises(ExportError, match="other weights"):
        runtime_model(tiny_mixste().apply(_perturb), "onnx", model_file=out)
    info = export_checkpoint(checkpoint, "onnx", out, frames=5)
    assert info["max_abs_diff"] <= TOLERANCE and read_contract(out)["frames"] == 5


def _perturb(m):
    for p in m.parameters(recurse=False):
        p.data.add_(0.01)


@pytest.mark.slow
def test_upstream_checkpoint_exports(tmp_path):
    """An upstream MixSTE file (weights under model_pos with DataParallel prefixes, no config) exports too."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import torch

    model = tiny_mixste()
    up = tmp_path / "best_epoch.bin"
    torch.save({"epoch": 3, "model_pos": {f"module.{k}": v for k, v in model.state_dict().items()}}, up)
    info = export_checkpoint(up, "onnx", tmp_path / "up.onnx", num_heads=2)
    assert info["max_abs_diff"] <= TOLERANCE
    assert read_contract(tmp_path / "up.onnx")["weights_sha256"] == weights_digest(model)


@pytest.mark.slow
def test_pt2_round_trip_and_contract(tmp_path, checkpoint):
    out = tmp_path / "m.pt2"
    info = export_checkpoint(checkpoint, "pt2", out)
    assert info["max_abs_diff"] <= TOLERANCE
    meta = read_contract(out)
    assert meta["exporter"].startswith("torch.export + AOTInductor") and meta["frames"] == 9
    model = tiny_mixste()
    lifter = runtime_model(model, "pt2", model_file=out)
    x = np.random.default_rng(1).uniform(-0.8, 0.8, (20, 17, 2)).astype(np.float32)
    ref, _ = lift(model, x, batch_size=2, progress=False)
    got, _ = lift(lifter, x, batch_size=2, progress=False)
    assert np.abs(got - ref).max() <= TOLERANCE
    assert json.loads(json.dumps(meta)) == meta


def _hot_checkpoint(tmp_path):
    import torch

    from fastmixste import save_checkpoint

    torch.manual_seed(0)
    model = tiny_mixste(token_num=3, prune_at=1, depth=2)  # 9 frames, 3 kept after the first pair
    path = tmp_path / "hot.pt"
    save_checkpoint(path, model)
    return model, path


def test_pruned_checkpoint_is_refused_by_onnx_with_the_reason(tmp_path, capsys):
    _, path = _hot_checkpoint(tmp_path)
    out = tmp_path / "hot.onnx"
    assert cli.run_cli(main, ["--checkpoint", str(path), "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "prunes tokens (HoT, token_num=3)" in err and "--format pt2" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_pruned_checkpoint_round_trips_through_pt2(tmp_path):
    """HoT pruning (clustering, gather, recovery cross-attention) in an AOTInductor package: the same lift."""
    model, path = _hot_checkpoint(tmp_path)
    out = tmp_path / "hot.pt2"
    info = export_checkpoint(path, "pt2", out)
    assert info["max_abs_diff"] <= TOLERANCE
    assert read_contract(out)["config"]["token_num"] == 3
    lifter = runtime_model(model.eval(), "pt2", model_file=out)
    x = np.random.default_rng(2).uniform(-0.8, 0.8, (30, 17, 2)).astype(np.float32)
    ref, _ = lift(model, x, batch_size=3, progress=False)
    got, _ = lift(lifter, x, batch_size=3, progress=False)
    assert np.abs(got - ref).max() <= TOLERANCE
