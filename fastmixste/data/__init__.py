"""Data: Human3.6M in the VideoPose3D format, cameras, windows, the built-in dataset and mocap import.

The names below are imported lazily (PEP 562), so that `python -m fastmixste.data.mocap` and
`python -m fastmixste.data.windows` run their module once, as __main__, without a second copy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "builtin_data_dir": "builtin",
    **dict.fromkeys(
        ["Camera", "camera_to_world", "h36m_cameras", "image_coordinates", "normalize_screen_coordinates",
         "project_to_2d", "world_to_camera"], "cameras"),
    **dict.fromkeys(
        ["ACTIONS", "TEST_SUBJECTS", "TRAIN_SUBJECTS", "H36MData", "Sequence", "action_group", "load_h36m",
         "load_positions_2d", "load_positions_3d"], "h36m"),
    **dict.fromkeys(
        ["MocapClip", "load_mocap_npz", "mocap_npz_fps", "read_asf_amc", "read_bvh", "resample", "save_mocap_npz",
         "to_h36m17"], "mocap"),
    **dict.fromkeys(["TrainWindows", "eval_windows", "make_train_loader", "stitch", "collate_windows"], "windows"),
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
