"""Human3.6M evaluation with upstream MixSTE's protocol: windows, flip test-time augmentation, per-action tables.

``evaluate(model, sequences)`` lifts every test sequence with the windows of ``fastmixste.data.windows.eval_windows``
(consecutive windows of ``model.config.num_frame`` frames, the last one ending at the sequence end, short sequences
edge-padded), stitches the window predictions back to one prediction per frame, sets the root joint to zero and
scores each sequence. Errors are aggregated per action (``fastmixste.data.h36m.action_group``), frame-weighted over
that action's sequences, and ``"Avg"`` is the mean of the action means -- the number papers report.

Differences from upstream MixSTE's ``evaluate`` (all small, all deliberate): upstream scores the windows themselves,
so the frames shared by the last two windows of a sequence count twice, the edge-padded frames of a sequence shorter
than a window count as frames, and MPJVE takes differences across window boundaries; here each real frame counts
once and velocities are taken along the stitched sequence. Upstream zeroes only the target's root and relies on the
model predicting ~0 there; here both roots are zeroed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from fastmixste.data.h36m import ACTIONS, action_group
from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT, flip_pose
from fastmixste.data.windows import eval_windows, stitch
from fastmixste.eval.metrics import ActionAccumulator, joint_speeds, mean_velocity_error, mpjpe, n_mpjpe, p_mpjpe

# Column titles of the paper's tables, in the paper's order (two rows of 8: 15 actions + Avg).
ACTION_ABBREVIATIONS: dict[str, str] = {
    "Directions": "Dir.", "Discussion": "Disc.", "Eating": "Eat", "Greeting": "Greet", "Phoning": "Phone",
    "Photo": "Photo", "TakingPhoto": "Photo", "Posing": "Pose", "Purchases": "Purch.", "Sitting": "Sit",
    "SittingDown": "SitD.", "Smoking": "Smoke", "Waiting": "Wait", "WalkDog": "WalkD.", "WalkingDog": "WalkD.",
    "Walking": "Walk", "WalkTogether": "WalkT.",
}


@dataclass
class EvalResult:
    """Errors in millimetres (MPJVE in mm per frame); protocol dicts map action names and ``"Avg"`` to mm.

    ``speed_ratio``: median joint speed of the predictions over that of the targets, all sequences and non-root
    joints pooled (``fastmixste.eval.metrics.speed_ratio``); nan when no sequence has two frames. ``speed_ratio_5f``:
    the same over 5-frame displacements (0.1 s at 50 fps), where frame-to-frame jitter weighs 5x less: a still but
    jittery prediction scores near 1 per frame and well below 1 here; nan when no sequence has 6 frames.
    """

    protocol1: dict[str, float]
    protocol2: dict[str, float]
    n_mpjpe: float
    mpjve: float
    num_sequences: int
    seconds: float
    sequences_per_s: float
    speed_ratio: float = float("nan")
    speed_ratio_5f: float = float("nan")


#: Frames of the displacement behind ``EvalResult.speed_ratio_5f``.
SLOW_SPEED_STEP = 5


def _median_ratio(pred: list[np.ndarray], true: list[np.ndarray]) -> float:
    if not true:
        return float("nan")
    t = float(np.median(np.concatenate(true)))
    return float(np.median(np.concatenate(pred))) / t if t > 0 else float("nan")


def _model_device_dtype(model: torch.nn.Module, device: torch.device | str | None) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    return dev, dtype


def _check_input(model: torch.nn.Module, pose_2d: np.ndarray, what: str) -> None:
    cfg = model.config
    if pose_2d.ndim != 3 or pose_2d.shape[0] < 1:
        raise ValueError(f"{what}: expected 2D keypoints of shape (T, J, C) with T >= 1, got {pose_2d.shape}")
    if pose_2d.shape[1] != cfg.num_joints or pose_2d.shape[2] != cfg.in_chans:
        raise ValueError(
            f"{what}: the model expects (T, num_joints={cfg.num_joints}, in_chans={cfg.in_chans}) input, "
            f"got (T, {pose_2d.shape[1]}, {pose_2d.shape[2]})"
        )


@torch.inference_mode()
def predict_sequences(
    model: torch.nn.Module,
    inputs: SequenceOf[np.ndarray],
    *,
    flip: bool = True,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[list[np.ndarray], float]:
    """list of (T_i, J, in_chans) -> (list of (T_i, J, 3) float32 predictions, seconds spent in the model).

    Any length: each input is cut into ``eval_windows`` of ``model.config.num_frame`` frames, windows of all inputs
    are batched together (``batch_size`` windows per forward), and the window outputs are stitched back. With
    ``flip``, the output is the mean of the prediction and the un-flipped prediction on the flipped input (H36M
    left/right joints). The root joint is left as predicted.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_frame = model.config.num_frame
    if flip and model.config.num_joints != 17:
        raise ValueError(f"flip test-time augmentation needs the 17 Human3.6M joints, model has "
                         f"num_joints={model.config.num_joints}; pass flip=False")
    dev, dtype = _model_device_dtype(model, device)
    windows, starts, owner = [], [], []
    for i, x in enumerate(inputs):
        _check_input(model, np.asarray(x), f"input {i}")
        w, s = eval_windows(np.asarray(x, dtype=np.float32), num_frame)
        windows.append(w)
        starts.append(s)
        owner.append(np.full(len(w), i))
    if not windows:
        return [], 0.0
    all_windows = np.concatenate(windows)  # (W, F, J, C)
    out = np.empty(all_windows.shape[:3] + (3,), dtype=np.float32)

    was_training = model.training
    model.eval()
    seconds = 0.0
    try:
        for lo in tqdm(range(0, len(all_windows), batch_size), desc="evaluate", unit="batch", disable=not progress,
                       leave=False):
            t0 = time.perf_counter()
            x = torch.from_numpy(all_windows[lo:lo + batch_size]).to(dev, dtype)
            pred = model(x)
            if flip:
                pred_flip = model(flip_pose(x, H36M_LEFT, H36M_RIGHT))
                pred = (pred + flip_pose(pred_flip, H36M_LEFT, H36M_RIGHT)) / 2
            pred = pred.float().cpu()  # synchronises the device, so the time covers the whole forward
            seconds += time.perf_counter() - t0
            out[lo:lo + len(pred)] = pred.numpy()
    finally:
        model.train(was_training)

    results, lo = [], 0
    for x, w, s in zip(inputs, windows, starts):
        results.append(np.asarray(stitch(out[lo:lo + len(w)], s, len(x)), dtype=np.float32))
        lo += len(w)
    return results, seconds


def _score(preds: SequenceOf[np.ndarray], sequences: SequenceOf, seconds: float,
           group_of: Callable[[str], str] = action_group) -> EvalResult:
    p1, p2, pn, vel = ActionAccumulator(), ActionAccumulator(), ActionAccumulator(), ActionAccumulator()
    speeds_pred, speeds_true, slow_pred, slow_true = [], [], [], []
    for pred, seq in zip(preds, sequences):
        target = np.array(seq.pose_3d, dtype=np.float64)
        pred = np.array(pred, dtype=np.float64)
        if pred.shape != target.shape:
            raise ValueError(f"{seq.subject} {seq.action}: prediction shape {pred.shape} != target {target.shape}")
        target[:, 0] = 0.0
        pred[:, 0] = 0.0
        group = group_of(seq.action)
        frames = len(target)
        p1.add(group, 1000.0 * mpjpe(pred, target), frames)
        p2.add(group, 1000.0 * p_mpjpe(pred, target), frames)
        pn.add(group, 1000.0 * n_mpjpe(pred, target), frames)
        if frames >= 2:
            vel.add(group, 1000.0 * mean_velocity_error(pred, target), frames - 1)
            speeds_pred.append(joint_speeds(pred[:, 1:]).ravel())
            speeds_true.append(joint_speeds(target[:, 1:]).ravel())
        if frames > SLOW_SPEED_STEP:
            slow_pred.append(joint_speeds(pred[:, 1:], step=SLOW_SPEED_STEP).ravel())
            slow_true.append(joint_speeds(target[:, 1:], step=SLOW_SPEED_STEP).ravel())
    present = set(p1.actions)
    # The paper's order for the 15 actions, then anything outside it (custom data) alphabetically.
    order = [a for a in ACTIONS if a in present] + sorted(present - set(ACTIONS))
    n = len(sequences)
    # Single-frame sequences have no velocity; an action made only of them is left out of MPJVE.
    vel_means = vel.means([a for a in order if a in set(vel.actions)]) if vel.actions else {"Avg": float("nan")}
    return EvalResult(
        protocol1=p1.means(order),
        protocol2=p2.means(order),
        n_mpjpe=pn.means(order)["Avg"],
        mpjve=vel_means["Avg"],
        num_sequences=n,
        seconds=seconds,
        sequences_per_s=n / seconds if seconds > 0 else float("inf"),
        speed_ratio=_median_ratio(speeds_pred, speeds_true),
        speed_ratio_5f=_median_ratio(slow_pred, slow_true),
    )


def evaluate(
    model: torch.nn.Module,
    sequences: SequenceOf,
    *,
    flip: bool = True,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
    group_of: Callable[[str], str] = action_group,
) -> EvalResult:
    """list of ``fastmixste.data.h36m.Sequence`` -> EvalResult (mm): Protocol #1/#2 per action, N-MPJPE, MPJVE.

    ``group_of`` maps a sequence's ``action`` to the row it is averaged in (default: the Human3.6M action; the
    held-out motion set passes ``str``, its actions being pattern names).

    Each sequence's normalised ``pose_2d`` (T, 17, 2) is lifted by ``predict_sequences`` (upstream windows, flip
    TTA when ``flip``); the root joint of prediction and ``pose_3d`` target is set to zero and MPJPE includes it.
    ``seconds`` is the wall time of the model forwards (transfers included), ``sequences_per_s`` = sequences /
    seconds.
    """
    if len(sequences) == 0:
        raise ValueError("evaluate: no sequences given")
    preds, seconds = predict_sequences(model, [s.pose_2d for s in sequences], flip=flip, batch_size=batch_size,
                                       device=device, progress=progress)
    return _score(preds, sequences, seconds, group_of)


def evaluate_constant_pose(pose: np.ndarray, sequences: SequenceOf,
                           group_of: Callable[[str], str] = action_group) -> EvalResult:
    """(17, 3) root-relative pose in metres -> EvalResult of predicting that pose for every frame (a baseline,
    e.g. the training-set mean pose, that a trained model must beat by a wide margin)."""
    pose = np.asarray(pose, dtype=np.float64)
    if len(sequences) == 0:
        raise ValueError("evaluate_constant_pose: no sequences given")
    if pose.ndim != 2 or pose.shape[1] != 3 or pose.shape[0] != np.asarray(sequences[0].pose_3d).shape[1]:
        raise ValueError(f"evaluate_constant_pose: expected a (J, 3) pose with J = "
                         f"{np.asarray(sequences[0].pose_3d).shape[1]}, got {pose.shape}")
    t0 = time.perf_counter()
    preds = [np.broadcast_to(pose, np.asarray(s.pose_3d).shape) for s in sequences]
    return _score(preds, sequences, time.perf_counter() - t0, group_of)


def results_to_dict(result: EvalResult, baseline_mpjpe: float | None = None) -> dict:
    """EvalResult -> JSON-ready dict (the schema of a training run's results.json)."""
    return {
        "protocol1": {k: float(v) for k, v in result.protocol1.items()},
        "protocol2": {k: float(v) for k, v in result.protocol2.items()},
        "n_mpjpe": float(result.n_mpjpe),
        "mpjve": float(result.mpjve),
        "baseline_mpjpe": None if baseline_mpjpe is None else float(baseline_mpjpe),
        "num_sequences": int(result.num_sequences),
        "sequences_per_s": float(result.sequences_per_s),
    }


def evaluate_heldout(
    model: torch.nn.Module,
    sequences: SequenceOf,
    mean_pose: np.ndarray | None,
    *,
    flip: bool = True,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict:
    """Held-out motion (``fastmixste.data.motion.heldout_sequences``) -> JSON-ready dict, errors in mm.

    Keys: protocol1 / protocol2 (per pattern and "Avg"), mpjve, speed_ratio (predicted over true median joint
    speed) and speed_ratio_5f (the same over 5-frame displacements, see :class:`EvalResult`), baseline_mpjpe /
    baseline_p_mpjpe (``mean_pose`` (17, 3), the mean training pose, predicted for every frame; None when
    ``mean_pose`` is None), num_sequences. Rows are the clips' focus patterns.
    """
    res = evaluate(model, sequences, flip=flip, batch_size=batch_size, device=device, progress=progress,
                   group_of=str)
    base = None if mean_pose is None else evaluate_constant_pose(mean_pose, sequences, group_of=str)
    return {
        "protocol1": {k: float(v) for k, v in res.protocol1.items()},
        "protocol2": {k: float(v) for k, v in res.protocol2.items()},
        "mpjve": float(res.mpjve),
        "speed_ratio": float(res.speed_ratio),
        "speed_ratio_5f": float(res.speed_ratio_5f),
        "baseline_mpjpe": None if base is None else float(base.protocol1["Avg"]),
        "baseline_p_mpjpe": None if base is None else float(base.protocol2["Avg"]),
        "num_sequences": int(res.num_sequences),
    }


def format_heldout_markdown(result: dict, title: str = "Held-out motion") -> str:
    """``evaluate_heldout``'s dict -> Markdown: per-pattern MPJPE / P-MPJPE tables, speed ratio and baseline."""
    lines = [f"## {title} ({result['num_sequences']} sequences)", ""]
    lines += _table("Protocol #1 (MPJPE)", result["protocol1"]) + [""]
    lines += _table("Protocol #2 (P-MPJPE)", result["protocol2"]) + [""]
    lines += [
        f"- MPJPE: **{result['protocol1']['Avg']:.1f} mm**; P-MPJPE: **{result['protocol2']['Avg']:.1f} mm**; "
        f"MPJVE {result['mpjve']:.2f} mm/frame",
        f"- Speed ratio (predicted / true median joint speed): **{result['speed_ratio']:.2f}** per frame, "
        f"**{result['speed_ratio_5f']:.2f}** over 5 frames (0.1 s; frame-to-frame jitter weighs 5x less there)",
    ]
    if result.get("baseline_mpjpe") is not None:
        lines.append(f"- Mean training pose baseline: MPJPE {result['baseline_mpjpe']:.1f} mm, P-MPJPE "
                     f"{result['baseline_p_mpjpe']:.1f} mm")
    return "\n".join(lines) + "\n"


def _table(name: str, values: dict[str, float]) -> list[str]:
    actions = [k for k in values if k != "Avg"]
    cells = [(ACTION_ABBREVIATIONS.get(a, a), values[a]) for a in actions] + [("Avg", values["Avg"])]
    rows = [cells[i:i + 8] for i in range(0, len(cells), 8)]
    lines = []
    for r, row in enumerate(rows):
        pad = 8 - len(row)
        header = [name if r == 0 else ""] + [c[0] for c in row] + [""] * pad
        body = ["mm"] + [f"{c[1]:.1f}" for c in row] + [""] * pad
        if r == 0:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * 9)
        else:
            lines.append("| " + " | ".join(f"**{h}**" if h else "" for h in header) + " |")
        lines.append("| " + " | ".join(body) + " |")
    return lines


def format_markdown(result: EvalResult, title: str = "") -> str:
    """EvalResult -> Markdown: Protocol #1 (MPJPE) and #2 (P-MPJPE) tables in the paper's layout (two rows of 8
    columns, 15 actions + Avg), then N-MPJPE, MPJVE and throughput."""
    lines = [f"## {title}", ""] if title else []
    lines += _table("Protocol #1 (MPJPE)", result.protocol1) + [""]
    lines += _table("Protocol #2 (P-MPJPE)", result.protocol2) + [""]
    lines += [
        f"- MPJPE (Protocol #1): **{result.protocol1['Avg']:.1f} mm**; P-MPJPE (Protocol #2): "
        f"**{result.protocol2['Avg']:.1f} mm**",
        f"- N-MPJPE: {result.n_mpjpe:.1f} mm; MPJVE: {result.mpjve:.2f} mm/frame",
        f"- {result.num_sequences} sequences in {result.seconds:.2f} s of model time "
        f"({result.sequences_per_s:.2f} sequences/s)",
    ]
    return "\n".join(lines) + "\n"
