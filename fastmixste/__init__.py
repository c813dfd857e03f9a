"""fastmixste: a fast, weight-compatible MixSTE stack for 3D human pose estimation.

>>> from fastmixste import MixSTE
>>> model = MixSTE(num_frame=243)            # upstream MixSTE2 arguments, attn_backend="auto"
>>> pose3d = model(keypoints_2d)            # (B, F, 17, 2) -> (B, F, 17, 3)
"""

from . import (
    _checkout,  # noqa: F401  (first: binds kernels/ in a source checkout)
    _legacy,  # noqa: F401  (the flat layout's module paths, for one release)
)
from .model.attention import BACKENDS, BackendUnavailableError, available_backends
from .model.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint, shipped_models
from .model.config import RECOMPUTE_POLICIES, MixSTEConfig
from .model.mixste import MixSTE

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "CheckpointError",
    "MixSTE",
    "MixSTEConfig",
    "RECOMPUTE_POLICIES",
    "available_backends",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "shipped_models",
    "__version__",
]
