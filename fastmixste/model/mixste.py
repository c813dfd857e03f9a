"""MixSTE: the mixed spatio-temporal encoder of Zhang et al. (CVPR 2022), weight-compatible with upstream MixSTE2.

Parameter names, shapes and the forward computation follow upstream ``MixSTE2`` exactly, so upstream checkpoints
load with ``strict=True``. The difference is the layout: activations stay (B, T, N, C) through the whole network
(LayerNorm, Linear and MLP act per token), and only the attention cores know which axis they attend over.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .attention import Attention, Axis, check_backend_name, resolve_backend
from .config import MixSTEConfig
from .hot import CrossAttention, cluster_dpc_knn, select_frames
from .recompute import check_recompute, run_checkpointed


def _resolve(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    training: bool,
    head_dim: int,
    num_joints: int,
    attn_drop: float,
    drop: float,
    dim: int,
) -> str:
    # Under torch.compile this runs while the graph is traced, outside it, and its answer is a constant of the
    # graph: auto, FASTMIXSTE_ATTN_BACKEND and every refusal apply exactly as in eager mode (a backend that cannot
    # run raises). Device, dtype and train/eval mode are guarded, so changing one traces again; the environment
    # variable is read when tracing.
    return resolve_backend(
        name, device, dtype, training, head_dim=head_dim, num_joints=num_joints, attn_drop=attn_drop, drop=drop, dim=dim
    )


# What torch.compiler.assume_constant_result(_resolve) does, without importing torch._dynamo (seconds, and it
# imports triton) when the model module is imported; tests/model/test_backends.py checks the two agree.
_resolve._dynamo_marked_constant = True  # type: ignore[attr-defined]


#: The dtypes of the ``perf.profiling.AutocastEmulation`` contexts now active, innermost last. The perf layer pushes
#: and pops; the model only reads (see :func:`emulated_autocast_dtype`).
EMULATED_AUTOCAST: list[torch.dtype] = []


def emulated_autocast_dtype() -> torch.dtype | None:
    """The lower-precision dtype of the innermost active ``perf.profiling.AutocastEmulation``, or None.

    Code that asks ``torch.is_autocast_enabled(device)`` to choose its own dtypes (the fused block emits its GEMM
    inputs in the autocast dtype) gets no answer for meta tensors; it asks here, so a count on meta runs what CUDA
    autocast would run.
    """
    return EMULATED_AUTOCAST[-1] if EMULATED_AUTOCAST else None


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs GEMMs in on ``device_type``, or None without autocast. On the meta device (counting at
    full scale) that is the dtype of an active ``perf.profiling.AutocastEmulation``: autocast has no meta key."""
    if device_type in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    if device_type == "meta":
        return emulated_autocast_dtype()
    return None


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf) -> dropout -> fc2 -> dropout, as upstream."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth with upstream's sample granularity: one draw per frame (spatial blocks, whose upstream
    samples are (B*T, N, C)) or per joint (temporal blocks, (B*N, T, C)), in the same order as upstream's draws."""

    def __init__(self, drop_prob: float, axis: Axis) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.axis = axis

    def draw_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B, T, N, C) x -> the keep mask, (B, T, 1, 1) spatial or (B, 1, N, 1) temporal, values 0/1 in x's dtype;
        None when nothing is dropped (eval, or drop_prob 0). The fused block draws through this too, so one seed
        gives both paths the same masks."""
        if self.drop_prob == 0.0 or not self.training:
            return None
        B, T, N, _ = x.shape
        shape = (B, T, 1, 1) if self.axis == "spatial" else (B, 1, N, 1)
        return (1.0 - self.drop_prob + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.draw_mask(x)
        if mask is None:
            return x
        return x.div(1.0 - self.drop_prob) * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, axis={self.axis}"


class Block(nn.Module):
    """Pre-norm transformer block: x + drop_path(attn(norm1(x))); x + drop_path(mlp(norm2(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: float,
        axis: Axis,
    ) -> None:
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop, axis=axis)
        self.drop_path = DropPath(drop_path, axis)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, backend: str = "eager") -> torch.Tensor:
        """(B, T, N, C) -> (B, T, N, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x), backend))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


def box_normalize(x: torch.Tensor) -> torch.Tensor:
    """(B, F, J, C) 2D windows -> the same with channels 0-1 re-centred and scaled by each window's 2D box.

    Per window, x and y become ``(xy - centre) / half_side`` where the box spans every valid point of every frame
    and ``half_side`` is half its larger side, so the person fills [-1, 1] whatever the image size, framing or
    distance (MotionBERT's in-the-wild normalisation, per window). Points at exactly (0, 0) are masked entries
    (pretraining's masking zeroes them): they are ignored by the box and stay 0. Further channels (confidence)
    pass through. Equivalent per window ``w`` with valid points ``p``::

        lo, hi = p.min(0), p.max(0); w[..., :2] = (w[..., :2] - (lo + hi) / 2) / ((hi - lo).max() / 2)
    """
    xy = x[..., :2]
    valid = (xy != 0).any(dim=-1, keepdim=True)  # (B, F, J, 1)
    big = torch.finfo(xy.dtype).max
    lo = torch.where(valid, xy, big).amin(dim=(1, 2), keepdim=True)  # (B, 1, 1, 2)
    hi = torch.where(valid, xy, -big).amax(dim=(1, 2), keepdim=True)
    some = valid.any(dim=(1, 2), keepdim=True)  # a window with no valid point is left as it is
    centre = torch.where(some, (lo + hi) / 2, torch.zeros_like(lo))
    half = torch.where(some, (hi - lo).amax(dim=-1, keepdim=True) / 2, torch.ones_like(lo[..., :1]))
    out = torch.where(valid, (xy - centre) / half.clamp_min(1e-4), torch.zeros_like(xy))
    return torch.cat([out, x[..., 2:]], dim=-1) if x.shape[-1] > 2 else out


class MixSTE(nn.Module):
    """MixSTE 2D-to-3D pose lifter; constructor arguments and state_dict are those of upstream ``MixSTE2``.

    Input (B, F, J, in_chans) with F <= num_frame -> output (B, F, J, 3).

    ``attn_backend`` selects the attention cores ("eager", "sdpa", "xformers", "triton" or "auto"); all backends
    share the same weights. It is resolved at every forward for the input's device and dtype, so a model can be
    built on the CPU and moved to a GPU.

    ``token_num`` (default None: off) turns on HoT's token pruning (:mod:`fastmixste.model.hot`): from block pair
    ``prune_at`` on, only ``token_num`` representative frames are processed, and a cross-attention recovers all F
    frames before the head; the state_dict is then HoT's ``hot_mixste``.
    """

    def __init__(
        self,
        num_frame: int = 243,
        num_joints: int = 17,
        in_chans: int = 2,
        embed_dim_ratio: int = 512,
        depth: int = 8,
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        attn_backend: str = "auto",
        recompute: str = "none",
        input_norm: str = "screen",
        token_num: int | None = None,
        prune_at: int = 3,
    ) -> None:
        super().__init__()
        self.config = MixSTEConfig(
            num_frame=num_frame,
            num_joints=num_joints,
            in_chans=in_chans,
            embed_dim_ratio=embed_dim_ratio,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            attn_backend=check_backend_name(attn_backend),
            recompute=check_recompute(recompute),
            input_norm=input_norm,
            token_num=token_num,
            prune_at=prune_at,
        )
        C = embed_dim_ratio
        self.block_depth = depth
        self.Spatial_patch_to_embedding = nn.Linear(in_chans, C)
        self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, num_joints, C))
        self.Temporal_pos_embed = nn.Parameter(torch.zeros(1, num_frame, C))
        self.pos_drop = nn.Dropout(p=drop_rate)
        # as upstream; index i is shared by STEblocks[i] and TTEblocks[i] (cpu: also builds under a meta device)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        make = partial(
            Block,
            dim=C,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            drop=drop_rate,
            attn_drop=attn_drop_rate,
        )
        self.STEblocks = nn.ModuleList([make(drop_path=dpr[i], axis="spatial") for i in range(depth)])
        self.TTEblocks = nn.ModuleList([make(drop_path=dpr[i], axis="temporal") for i in range(depth)])
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.Spatial_norm = norm_layer(C)
        self.Temporal_norm = norm_layer(C)
        self.head = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, 3))
        if token_num is not None:
            # HoT (fastmixste.model.hot): positions of the kept frames, the full-length recovery queries and the
            # recovery cross-attention; names and shapes are those of HoT's hot_mixste.
            self.pos_embed_token = nn.Parameter(torch.zeros(1, token_num, C))
            self.x_token = nn.Parameter(torch.zeros(1, num_frame, C))
            self.cross_attention = CrossAttention(C, num_heads, qkv_bias, qk_scale, attn_drop_rate, drop_rate)
        self._init_weights()

    @classmethod
    def from_config(cls, config: MixSTEConfig) -> MixSTE:
        return cls(**config.to_dict())

    def _init_weights(self) -> None:
        # Upstream leaves the positional embeddings at zero and Linear/LayerNorm at PyTorch defaults; small random
        # positional embeddings break the symmetry between joints/frames from the first step.
        nn.init.trunc_normal_(self.Spatial_pos_embed, std=0.02)
        nn.init.trunc_normal_(self.Temporal_pos_embed, std=0.02)
        if self.config.token_num is not None:
            # HoT starts both at zero; zero queries would give every recovered frame the same output at the start.
            nn.init.trunc_normal_(self.pos_embed_token, std=0.02)
            nn.init.trunc_normal_(self.x_token, std=0.02)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def attn_backend(self) -> str:
        """The requested backend name (possibly "auto")."""
        return self.config.attn_backend

    def set_attn_backend(self, name: str) -> MixSTE:
        """Switch the attention backend in place (same weights); returns self."""
        self.config.attn_backend = check_backend_name(name)
        return self

    @property
    def recompute(self) -> str:
        """The activation recompute policy used in training ("none", "lean" or "full")."""
        return self.config.recompute

    def set_recompute(self, policy: str) -> MixSTE:
        """Switch the activation recompute policy in place (see :mod:`fastmixste.model.recompute`); returns self."""
        self.config.recompute = check_recompute(policy)
        return self

    def resolved_backend(self, x: torch.Tensor) -> str:
        """The backend that a forward on ``x`` (in this train/eval mode) will use; raises if it cannot run."""
        dtype = _autocast_dtype(x.device.type) or x.dtype
        c = self.config
        return _resolve(
            c.attn_backend, x.device, dtype, self.training, c.head_dim, c.num_joints, c.attn_drop_rate, c.drop_rate,
            c.embed_dim_ratio,
        )

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        expected = f"(B, F<={cfg.num_frame}, {cfg.num_joints}, {cfg.in_chans})"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"MixSTE input must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"MixSTE input must be 4-D {expected}, got {x.dim()}-D shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"MixSTE input must be a floating-point tensor, got dtype {x.dtype}")
        _, F_, J, Cin = x.shape
        if J != cfg.num_joints:
            raise ValueError(f"MixSTE input has {J} joints, expected {cfg.num_joints}: shape {tuple(x.shape)}")
        if Cin != cfg.in_chans:
            raise ValueError(f"MixSTE input has {Cin} channels, expected {cfg.in_chans}: shape {tuple(x.shape)}")
        if not 1 <= F_ <= cfg.num_frame:
            raise ValueError(
                f"MixSTE input has {F_} frames, expected 1..{cfg.num_frame} (num_frame): shape {tuple(x.shape)}"
            )
        bad = ~torch.isfinite(x) if x.device.type != "meta" else None
        if bad is not None and bool(bad.any()):
            b, f, jnt, _ = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"MixSTE input has {int(bad.sum())} NaN/inf values (first at batch {b}, frame {f}, joint {jnt}): one "
                f"would spread to every frame through temporal attention; fill missing keypoints first "
                f"(fastmixste.video.keypoints.fill_gaps) or drop those frames"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, J, in_chans) -> (B, F, J, C): per-joint features before the regression head (for backbones)."""
        if not torch.compiler.is_compiling():
            self._check_input(x)
        backend = self.resolved_backend(x)  # under torch.compile: resolved when tracing, by the same rule
        if self.config.input_norm == "box":
            x = box_normalize(x)
        if backend == "triton":
            from .fused import forward_features_fused  # imports triton: only when the fused path runs

            return self._recover(forward_features_fused(self, x), x.shape[1], backend)
        x = self.Spatial_patch_to_embedding(x) + self.Spatial_pos_embed  # (B, F, J, C)
        x = self.pos_drop(x)
        policy = self.config.recompute if self.training else "none"
        frames = x.shape[1]
        for i in range(self.block_depth):
            if i == self.config.prune_at and self.config.token_num is not None:
                x = self._select(x)
                x = x + self.pos_embed_token[:, : x.shape[1]].unsqueeze(2)  # (1, K, 1, C)
            x = run_checkpointed(partial(self._block_pair, i, backend=backend), x, policy=policy)
        return self._recover(x, frames, backend)

    def _select(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, J, C) features -> (B, K, J, C): the frames HoT keeps, K = min(token_num, F), in time order.

        Clustered on the features averaged over the joints (fastmixste.model.hot.cluster_dpc_knn, k = 2)."""
        index = cluster_dpc_knn(x.mean(dim=2), min(self.config.token_num, x.shape[1]), k=2)  # (B, K)
        return select_frames(x, index)

    def _recover(self, x: torch.Tensor, frames: int, backend: str) -> torch.Tensor:
        """(B, K, J, C) pruned features -> (B, frames, J, C): x_token + cross_attention(x_token, x, x) (HoT); x
        itself without pruning."""
        if self.config.token_num is None:
            return x
        query = self.x_token[:, :frames]  # (1, F, C): shorter windows take the first F queries
        return query.unsqueeze(2) + self.cross_attention(query, x, backend)

    def _block_pair(self, i: int, x: torch.Tensor, backend: str) -> torch.Tensor:
        """(B, F, J, C) -> (B, F, J, C): STE_i, Spatial_norm, (at i = 0: temporal positions), TTE_i, Temporal_norm.

        The unit of activation recompute: under "full" only its input is kept for backward.
        """
        x = self.Spatial_norm(self.STEblocks[i](x, backend))
        if i == 0:
            x = x + self.Temporal_pos_embed[:, : x.shape[1]].unsqueeze(2)  # (1, F, 1, C): shorter windows slice it
            x = self.pos_drop(x)
        return self.Temporal_norm(self.TTEblocks[i](x, backend))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, J, in_chans) -> (B, F, J, 3) root-relative 3D joints (metres, as trained upstream)."""
        return self.head(self.forward_features(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"num_frame={c.num_frame}, num_joints={c.num_joints}, embed={c.embed_dim_ratio}, depth={c.depth}, "
            f"heads={c.num_heads}, attn_backend={c.attn_backend!r}, recompute={c.recompute!r}, "
            + (f"token_num={c.token_num}, prune_at={c.prune_at}, " if c.token_num is not None else "")
            + f"params={self.num_parameters() / 1e6:.2f}M"
        )

