"""Evaluation: windowing and stitching of any length, flip TTA, per-action scoring, backends, tables."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastmixste import available_backends
from fastmixste.data.h36m import ACTIONS
from fastmixste.data.skeleton import flip_pose
from fastmixste.eval.evaluation import (
    EvalResult,
    evaluate,
    evaluate_constant_pose,
    format_markdown,
    predict_sequences,
    results_to_dict,
)

from .conftest import PerFrameModel, WindowProbe, make_sequences, tiny_mixste


@pytest.mark.parametrize("length", [1, 5, 8, 9, 10, 17, 18, 23, 27, 40])
def test_windows_stitch_any_length(length):
    f = 9
    x = np.zeros((length, 17, 2), np.float32)
    x[..., 0] = np.arange(length)[:, None]
    (out,), _ = predict_sequences(WindowProbe(f), [x], flip=False, batch_size=2, progress=False)
    assert out.shape == (length, 17, 3)
    np.testing.assert_array_equal(out[:, 0, 0], np.arange(length))  # every frame lands where it belongs
    # Upstream windows: starts 0, F, 2F, ... then the final F frames; each frame from the first window covering it.
    if length <= f:
        starts = [0]
    else:
        starts = list(range(0, length - f + 1, f))
        if starts[-1] + f < length:
            starts.append(length - f)
    first_start = np.array([next(s for s in starts if s <= t < s + f) for t in range(length)])
    np.testing.assert_array_equal(out[:, 0, 1], np.arange(length) - first_start)
    np.testing.assert_array_equal(out[:, 0, 2], first_start)


def test_batches_across_sequences_do_not_mix():
    xs = [np.full((n, 17, 2), float(i), np.float32) for i, n in enumerate([4, 20, 9, 13])]
    outs, seconds = predict_sequences(WindowProbe(9), xs, flip=False, batch_size=3, progress=False)
    assert seconds >= 0
    for i, (x, out) in enumerate(zip(xs, outs)):
        assert out.shape == (len(x), 17, 3)
        assert np.all(out[..., 0] == i)


def reference_scores(model: PerFrameModel, sequences, flip: bool) -> dict[str, dict[str, float]]:
    """Direct computation for a context-free model: predict whole sequences, score with explicit formulas."""
    per_action: dict[str, list[tuple[float, float, int]]] = {}
    for s in sequences:
        x = torch.from_numpy(s.pose_2d)[None]
        with torch.no_grad():
            pred = model.per_frame(x)
            if flip:
                pred = (pred + flip_pose(model.per_frame(flip_pose(x)))) / 2
        pred = pred[0].double().numpy()
        pred[:, 0] = 0
        target = s.pose_3d.astype(np.float64)
        e1 = np.linalg.norm(pred - target, axis=-1).mean()
        ev = np.linalg.norm(np.diff(pred, axis=0) - np.diff(target, axis=0), axis=-1).mean() if len(s) > 1 else 0
        per_action.setdefault(s.action.split(" ")[0], []).append((e1, ev, len(s)))
    p1 = {a: sum(e * n for e, _, n in v) / sum(n for *_, n in v) * 1000 for a, v in per_action.items()}
    vel = {a: sum(e * (n - 1) for _, e, n in v) / sum(n - 1 for *_, n in v) * 1000 for a, v in per_action.items()}
    return {"p1": p1, "vel": vel}


@pytest.mark.parametrize("flip", [True, False])
def test_evaluate_matches_direct_computation(sequences, flip):
    model = PerFrameModel(num_frame=9)
    result = evaluate(model, sequences, flip=flip, batch_size=4, progress=False)
    ref = reference_scores(model, sequences, flip)
    assert [k for k in result.protocol1] == ["Eating", "Photo", "Walking", "Avg"]  # the paper's order
    for action, value in ref["p1"].items():
        assert result.protocol1[action] == pytest.approx(value, rel=1e-6)  # float32 predictions
    assert result.protocol1["Avg"] == pytest.approx(np.mean(list(ref["p1"].values())), rel=1e-6)
    assert result.mpjve == pytest.approx(np.mean(list(ref["vel"].values())), rel=1e-6)
    assert all(result.protocol2[a] <= result.protocol1[a] + 1e-9 for a in ref["p1"])
    assert result.n_mpjpe <= result.protocol1["Avg"] + 1e-9
    assert result.num_sequences == len(sequences)
    assert result.sequences_per_s > 0


def test_flip_changes_the_prediction(sequences):
    model = PerFrameModel()
    on = evaluate(model, sequences, flip=True, progress=False)
    off = evaluate(model, sequences, flip=False, progress=False)
    assert on.protocol1["Avg"] != pytest.approx(off.protocol1["Avg"], rel=1e-6)


def test_constant_pose_baseline(sequences):
    pose = sequences[0].pose_3d[0]
    for s in sequences:  # every frame of every sequence is that pose: the baseline is perfect
        s.pose_3d = np.broadcast_to(pose, s.pose_3d.shape).copy()
    result = evaluate_constant_pose(pose, sequences)
    assert result.protocol1["Avg"] == pytest.approx(0.0, abs=1e-9)
    assert result.protocol2["Avg"] == pytest.approx(0.0, abs=1e-6)
    assert result.mpjve == pytest.approx(0.0, abs=1e-9)
    shifted = evaluate_constant_pose(pose + np.array([0.0, 0.003, 0.004]), sequences)  # 5 mm off, root zeroed
    assert shifted.protocol1["Avg"] == pytest.approx(5.0 * 16 / 17, rel=1e-5)
    with pytest.raises(ValueError, match="pose"):
        evaluate_constant_pose(np.zeros((16, 3)), sequences)


def _backends() -> list[str]:
    ok = available_backends("cpu", head_dim=16, num_joints=17)
    names = [name for name, reasons in ok.items() if not reasons and name != "eager"]
    # the interpreted triton model takes tens of seconds on a CPU: full run only
    return [pytest.param(n, marks=pytest.mark.slow) if n == "triton" and not torch.cuda.is_available() else n
            for n in names]


@pytest.mark.parametrize("backend", _backends())
def test_same_result_with_every_backend(backend):
    seqs = make_sequences({"Walking": [12], "Eating": [5]})  # 3 windows: the Triton interpreter is slow
    ref = evaluate(tiny_mixste(), seqs, progress=False, batch_size=8)
    got = evaluate(tiny_mixste(attn_backend=backend), seqs, progress=False, batch_size=8)
    for key in ref.protocol1:
        assert got.protocol1[key] == pytest.approx(ref.protocol1[key], abs=1e-3)
        assert got.protocol2[key] == pytest.approx(ref.protocol2[key], abs=1e-3)
    assert got.mpjve == pytest.approx(ref.mpjve, abs=1e-3)


@pytest.mark.slow
def test_eager_and_sdpa_scores_agree_to_2e_5_mm(sequences):
    """The README's backend-agreement claim: eager and sdpa scores within 2e-5 mm (Protocol #1, #2 and MPJVE for
    every action). The tiny random model scores ~760 mm here, so 2e-5 mm is ~3e-8 relative: fp32 rounding (measured
    6e-6 mm on one CPU; the margin is for other CPUs' summation orders), while any difference in the attention maths
    (a wrong scale, a missing head) moves scores by whole mm."""
    ref = evaluate(tiny_mixste(), sequences, progress=False, batch_size=8)
    got = evaluate(tiny_mixste(attn_backend="sdpa"), sequences, progress=False, batch_size=8)
    assert ref.protocol1.keys() == got.protocol1.keys()
    for key in ref.protocol1:
        assert abs(got.protocol1[key] - ref.protocol1[key]) <= 2e-5, key
        assert abs(got.protocol2[key] - ref.protocol2[key]) <= 2e-5, key
    assert abs(got.mpjve - ref.mpjve) <= 2e-5


def test_evaluate_real_model_and_mismatched_input(tiny_model, sequences):
    result = evaluate(tiny_model, sequences, progress=False)
    assert np.isfinite(list(result.protocol1.values())).all()
    assert tiny_model.training is False
    with pytest.raises(ValueError, match="in_chans=3"):
        evaluate(tiny_mixste(in_chans=3), sequences, progress=False)
    with pytest.raises(ValueError, match="no sequences"):
        evaluate(tiny_model, [], progress=False)


def full_result() -> EvalResult:
    p1 = {a: 30.0 + i for i, a in enumerate(ACTIONS)}
    p1["Avg"] = float(np.mean(list(p1.values())))
    p2 = {k: v - 8 for k, v in p1.items()}
    return EvalResult(p1, p2, n_mpjpe=35.0, mpjve=2.5, num_sequences=236, seconds=2.0, sequences_per_s=118.0)


def test_results_to_dict_schema():
    d = results_to_dict(full_result(), baseline_mpjpe=250.0)
    assert set(d) == {"protocol1", "protocol2", "n_mpjpe", "mpjve", "baseline_mpjpe", "num_sequences",
                      "sequences_per_s"}
    assert list(d["protocol1"]) == ACTIONS + ["Avg"]
    assert d["baseline_mpjpe"] == 250.0
    assert json.loads(json.dumps(d)) == d
    assert results_to_dict(full_result())["baseline_mpjpe"] is None


def test_markdown_in_the_papers_layout():
    text = format_markdown(full_result(), title="tiny")
    lines = text.splitlines()
    assert lines[0] == "## tiny"
    tables = [[ln for ln in block.splitlines() if ln.startswith("|")] for block in text.split("\n\n")]
    tables = [t for t in tables if t]
    assert len(tables) == 2  # Protocol #1, Protocol #2
    for t, offset in zip(tables, (0, -8)):
        assert len(t) == 5  # header, separator, values, second header, values
        cells = [[c.strip() for c in row.strip("|").split("|")] for row in t]
        assert all(len(r) == 9 for r in cells)  # a row label + 8 columns
        assert cells[0][1:] == ["Dir.", "Disc.", "Eat", "Greet", "Phone", "Photo", "Pose", "Purch."]
        assert cells[3][1:] == ["**Sit**", "**SitD.**", "**Smoke**", "**Wait**", "**WalkD.**", "**Walk**",
                                "**WalkT.**", "**Avg**"]
        assert cells[2][1] == f"{30 + offset:.1f}" and cells[4][8] == f"{37 + offset:.1f}"
    assert "N-MPJPE: 35.0 mm" in text and "118.00 sequences/s" in text


def test_subset_of_actions_in_tables():
    result = evaluate(PerFrameModel(), make_sequences({"Sitting": [10], "Walking": [12]}), progress=False)
    text = format_markdown(result)
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    assert header == ["Protocol #1 (MPJPE)", "Sit", "Walk", "Avg"] + [""] * 5
