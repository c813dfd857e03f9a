"""Data: Human3.6M in the VideoPose3D format, cameras, windows, the built-in dataset and mocap import."""

from fastmixste.data.builtin import builtin_data_dir
from fastmixste.data.cameras import (
    Camera,
    camera_to_world,
    h36m_cameras,
    image_coordinates,
    normalize_screen_coordinates,
    project_to_2d,
    world_to_camera,
)
from fastmixste.data.h36m import (
    ACTIONS,
    TEST_SUBJECTS,
    TRAIN_SUBJECTS,
    H36MData,
    Sequence,
    action_group,
    load_h36m,
    load_positions_2d,
    load_positions_3d,
)
from fastmixste.data.mocap import (
    MocapClip,
    load_mocap_npz,
    mocap_npz_fps,
    read_asf_amc,
    read_bvh,
    resample,
    save_mocap_npz,
    to_h36m17,
)
from fastmixste.data.windows import TrainWindows, eval_windows, make_train_loader, stitch

__all__ = [
    "ACTIONS", "TEST_SUBJECTS", "TRAIN_SUBJECTS", "Camera", "H36MData", "MocapClip", "Sequence", "TrainWindows",
    "action_group", "builtin_data_dir", "camera_to_world", "eval_windows", "h36m_cameras", "image_coordinates",
    "load_h36m", "load_mocap_npz", "load_positions_2d", "load_positions_3d", "make_train_loader", "mocap_npz_fps",
    "normalize_screen_coordinates", "project_to_2d", "read_asf_amc", "read_bvh", "resample", "save_mocap_npz",
    "stitch", "to_h36m17", "world_to_camera",
]  # fmt: skip
