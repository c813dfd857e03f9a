"""train.ship puts a run's best model into a weights folder; load_checkpoint(NAME) checks its size and sha256."""

import hashlib
import json

import pytest
import torch

import fastmixste.model.checkpoint as ckpt
from fastmixste import CheckpointError, MixSTE, load_checkpoint, save_checkpoint, shipped_models
from fastmixste.io.cli import UserInputError
from train.ship import ship


@pytest.fixture()
def run_dir(tmp_path):
    torch.manual_seed(0)
    model = MixSTE(num_frame=9, embed_dim_ratio=16, depth=1, num_heads=2, drop_path_rate=0.0, input_norm="box")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run / "checkpoints" / "best.pt", model, stage="pretrain", step=7, val_mpjpe=1.5)
    (run / "results.json").write_text(json.dumps({"train_seconds": 12.5, "protocol1": {"Avg": 50.0},
                                                  "protocol2": {"Avg": 40.0}, "data": "built-in"}))
    return run, model


def test_ship_then_load_by_name_gives_the_same_model(run_dir, tmp_path, monkeypatch):
    run, model = run_dir
    weights = tmp_path / "weights"
    rec = ship(run, "tiny", "python -m train.run --config x", weights)
    pt = weights / "tiny.pt"
    assert rec["sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest() and rec["bytes"] == pt.stat().st_size
    assert rec["config"]["input_norm"] == "box" and rec["train_seconds"] == 12.5
    monkeypatch.setattr(ckpt, "WEIGHTS_DIR", weights)
    assert set(shipped_models()) == {"tiny"}
    loaded = load_checkpoint("tiny")
    x = torch.randn(2, 9, 17, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    # A file changed after shipping is refused, naming both hashes.
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint("tiny")
    with pytest.raises(CheckpointError, match="no shipped model named 'nope'"):
        ckpt.shipped_checkpoint("nope")


def test_ship_refuses_to_replace_and_bad_runs(run_dir, tmp_path):
    run, _ = run_dir
    weights = tmp_path / "weights"
    ship(run, "tiny", "cmd", weights)
    before = (weights / "tiny.pt").read_bytes()
    with pytest.raises(UserInputError, match="exists: pass --overwrite"):
        ship(run, "tiny", "cmd", weights)
    assert (weights / "tiny.pt").read_bytes() == before
    with pytest.raises(UserInputError, match="no checkpoints/best.pt"):
        ship(tmp_path, "other", "cmd", weights)
    with pytest.raises(UserInputError, match="plain identifier"):
        ship(run, "../evil", "cmd", weights)


def test_the_shipped_wild_model_loads_by_name_and_matches_its_record():
    models = shipped_models()
    assert "wild" in models, "the package ships the real-video model 'wild' (fastmixste/weights/wild.json)"
    rec = models["wild"]
    path = ckpt.WEIGHTS_DIR / rec["file"]
    data = path.read_bytes()
    assert len(data) == rec["bytes"] <= 25 * 1024 * 1024
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    model = load_checkpoint("wild")
    assert model.config.to_dict() == {**rec["config"], "attn_backend": "auto"}
    assert model.config.input_norm == "box" and model.num_parameters() == rec["parameters"]
    assert rec["command"].startswith("python -m train.run --config wild")
    x = torch.randn(1, model.config.num_frame, 17, 2)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, model.config.num_frame, 17, 3) and torch.isfinite(y).all()


def test_infer_without_checkpoint_uses_the_shipped_model(tmp_path, capsys):
    import numpy as np

    from train import infer

    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(200, 800, size=(30, 17, 2)), np.ones((30, 17, 1))], axis=-1)
    np.save(tmp_path / "kp.npy", kp.astype(np.float32))
    rc = infer.main(["--keypoints", str(tmp_path / "kp.npy"), "--layout", "coco", "--width", "1000", "--height",
                     "1000", "--out", str(tmp_path / "o.npz")])
    assert rc == 0
    assert "using the shipped model 'wild'" in capsys.readouterr().err
    with np.load(tmp_path / "o.npz") as z:
        assert z["pose_3d"].shape == (30, 17, 3)
