"""HoT through the training app: --set model.token_num/prune_at resolve and are checked; a tiny pruned run writes a
checkpoint that loads with its pruning and lifts a sequence longer than its window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastmixste.model.checkpoint import load_checkpoint
from tests.train.conftest import tiny_args
from train._config import build_parser, resolve_config


def _resolve(*argv: str) -> dict:
    return resolve_config(build_parser().parse_args(list(argv)))


def test_set_token_num_resolves_and_bad_values_are_refused():
    cfg = _resolve("--set", "model.token_num=81", "--set", "model.num_frame=243", "--set", "model.depth=8")
    assert (cfg["model"]["token_num"], cfg["model"].get("prune_at", 3)) == (81, 3)
    hot = _resolve("--config", "hot")
    assert (hot["model"]["token_num"], hot["model"]["prune_at"], hot["model"]["num_frame"]) == (27, 2, 81)
    plain = _resolve("--config", "hot", "--set", "model.token_num=null")
    assert plain["model"]["token_num"] is None
    with pytest.raises(ValueError, match=r"prune_at must be an int in 1..depth-1 \(1\).*got 3"):
        _resolve("--set", "model.token_num=9", "--set", "model.depth=2")
    with pytest.raises(ValueError, match=r"token_num must be null \(no pruning\) or an int in 1..num_frame \(27\)"):
        _resolve("--set", "model.token_num=30")


@pytest.mark.slow
def test_tiny_pruned_run_trains_and_its_checkpoint_lifts_long_sequences(tmp_path: Path):
    from fastmixste.eval.evaluation import predict_sequences
    from train.run import main

    out = tmp_path / "hot"
    rc = main(tiny_args(out, "--set", "model.depth=2", "--set", "model.token_num=3", "--set", "model.prune_at=1",
                        "--stage", "finetune", "--epochs", "1", "--max-steps", "2"))  # fmt: skip
    assert rc == 0
    model = load_checkpoint(out / "checkpoints" / "best.pt", attn_backend="sdpa")
    assert (model.config.token_num, model.config.prune_at, model.config.num_frame) == (3, 1, 9)
    x = np.random.default_rng(0).standard_normal((40, 17, 2)).astype(np.float32)  # 40 frames, 9-frame windows
    (y,), _ = predict_sequences(model, [x], progress=False)
    assert y.shape == (40, 17, 3) and np.isfinite(y).all()
