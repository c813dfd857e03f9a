"""Model configuration: the upstream MixSTE2 constructor arguments, as a dataclass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

INPUT_NORMS: tuple[str, ...] = ("screen", "box")
#: The attention backends, in the order ``attn_backend="auto"`` tries them (fastmixste.model.attention dispatches).
BACKENDS: tuple[str, ...] = ("eager", "sdpa", "xformers", "triton")
#: Activation recompute policies for training (fastmixste.model.recompute says what each keeps).
RECOMPUTE_POLICIES: tuple[str, ...] = ("none", "lean", "full")


#: Upper bounds on the sizes (stated, so a config from a file cannot ask for terabytes): far above any model this
#: project trains (the paper's: 243 frames, 17 joints, width 512, depth 8, 33.8 M parameters).
LIMITS: dict[str, int] = {"num_frame": 10_000, "num_joints": 1_000, "in_chans": 16, "embed_dim_ratio": 16_384,
                          "depth": 256, "num_heads": 1_024}
MAX_PARAMETERS = 2_000_000_000  # 8 GB of fp32 weights


@dataclass
class MixSTEConfig:
    """Hyper-parameters of :class:`fastmixste.MixSTE`; names and meanings follow upstream ``MixSTE2``.

    The defaults are the upstream training sizes at 243 frames (33,783,811 parameters).
    """

    num_frame: int = 243
    num_joints: int = 17
    in_chans: int = 2
    embed_dim_ratio: int = 512
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    attn_backend: str = "auto"
    recompute: str = "none"  # activation recompute in training: "none", "lean" or "full" (fastmixste.model.recompute)
    # How the model reads its 2D: "screen" (upstream: normalised screen coordinates as given) or "box" (each window
    # re-centred and scaled by the person's 2D bounding box inside forward; no parameters, so weights stay upstream's).
    input_norm: str = "screen"
    # Hourglass token pruning (HoT, Li et al. CVPR 2024): before block pair ``prune_at`` keep ``token_num``
    # representative frames (DPC-kNN clustering), run the later pairs on them and recover all frames with one
    # cross-attention from learnable full-length queries (fastmixste.model.hot). None: plain MixSTE, no extra
    # parameters.
    token_num: int | None = None
    prune_at: int = 3  # HoT's layer_index: pairs 0..prune_at-1 see every frame

    def __post_init__(self) -> None:
        for name in ("num_frame", "num_joints", "in_chans", "embed_dim_ratio", "depth", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MixSTEConfig.{name} must be a positive int, got {value!r}")
            if value > LIMITS[name]:
                raise ValueError(f"MixSTEConfig.{name} must be at most {LIMITS[name]:,}, got {value:,}")
        for name in ("mlp_ratio", "drop_rate", "attn_drop_rate", "drop_path_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"MixSTEConfig.{name} must be a finite number, got {value!r}")
        if self.qk_scale is not None and (isinstance(self.qk_scale, bool) or not isinstance(self.qk_scale, int | float)
                                          or not math.isfinite(self.qk_scale) or self.qk_scale <= 0):
            raise ValueError(f"MixSTEConfig.qk_scale must be null or a finite number > 0, got {self.qk_scale!r}")
        if not isinstance(self.qkv_bias, bool):
            raise ValueError(f"MixSTEConfig.qkv_bias must be true or false, got {self.qkv_bias!r}")
        if self.embed_dim_ratio % self.num_heads != 0:
            raise ValueError(
                f"MixSTEConfig: embed_dim_ratio ({self.embed_dim_ratio}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.mlp_ratio <= 0 or self.mlp_ratio > 64:
            raise ValueError(f"MixSTEConfig.mlp_ratio must be in (0, 64], got {self.mlp_ratio}")
        params = self.num_parameters()
        if params > MAX_PARAMETERS:
            raise ValueError(f"MixSTEConfig: this model would have about {params:,} parameters, above the limit of "
                             f"{MAX_PARAMETERS:,} (check embed_dim_ratio, depth, mlp_ratio, num_frame)")
        if self.recompute not in RECOMPUTE_POLICIES:
            raise ValueError(f"MixSTEConfig.recompute must be one of {list(RECOMPUTE_POLICIES)}, "
                             f"got {self.recompute!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"MixSTEConfig.input_norm must be one of {list(INPUT_NORMS)}, got {self.input_norm!r}")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"MixSTEConfig.{name} must be in [0, 1), got {value}")
        self._check_pruning()

    def _check_pruning(self) -> None:
        if self.token_num is None:
            return
        t, p = self.token_num, self.prune_at
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= self.num_frame:
            raise ValueError(f"MixSTEConfig.token_num must be null (no pruning) or an int in 1..num_frame "
                             f"({self.num_frame}), got {t!r}")
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p < self.depth:
            raise ValueError(f"MixSTEConfig.prune_at must be an int in 1..depth-1 ({self.depth - 1}): the block pair "
                             f"before which frames are pruned (pair 0 adds the temporal positions), got {p!r}")

    def num_parameters(self) -> int:
        """About how many parameters MixSTE(**self) has (exact up to biases), computed without building it."""
        c = self.embed_dim_ratio
        block = 4 * c * c + 2 * int(self.mlp_ratio * c) * c + 8 * c  # qkv + proj, the MLP, norms and biases
        count = 2 * self.depth * block + (self.num_frame + self.num_joints + self.in_chans + 3) * c
        if self.token_num is not None:  # pos_embed_token, x_token, the recovery's q/k/v/proj Linears
            count += (self.token_num + self.num_frame) * c + 4 * c * c + 4 * c
        return count

    @property
    def head_dim(self) -> int:
        return self.embed_dim_ratio // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MixSTEConfig:
        """Build from a dict, refusing unknown keys (a typo in a YAML file should not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"MixSTEConfig: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**values)
