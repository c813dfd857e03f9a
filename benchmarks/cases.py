"""What the benchmarks compare: scopes (what runs), modes (forward / training step), providers (attention paths),
shapes, and one builder shared by the timing suite and the meta-device proxies.

Scopes, from the smallest to the whole network, all at MixSTE's real width (C = 512, 8 heads, 17 joints):
- ``spatial_attention``: one spatial Attention module (qkv Linear -> core over the 17 joints -> proj Linear);
- ``temporal_attention``: one temporal Attention module (core over the T frames);
- ``layer_pair``: one STE block then one TTE block (LayerNorm, attention, MLP, residuals);
- ``model``: the whole MixSTE (depth 8: 8 STE + 8 TTE blocks, embedding, shared norms, head).

Providers: ``eager`` (upstream math), ``sdpa`` (torch SDPA), ``triton`` (fused kernels), ``xformers``
(memory_efficient_attention), ``compile`` (torch.compile of the sdpa model: the peer a user would try first; on the
eager model Inductor pattern-matches the attention into SDPA anyway) and ``triton+compile`` (torch.compile of the
triton model: Inductor fuses around the fused ops).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastmixste import BACKENDS, MixSTE
from fastmixste.model.attention import Attention
from fastmixste.model.mixste import Block

SCOPES: tuple[str, ...] = ("spatial_attention", "temporal_attention", "layer_pair", "model")
MODES: tuple[str, ...] = ("forward", "train")
#: The attention backends (fastmixste.BACKENDS), xformers last: an optional install, listed after what always runs.
ATTN_BACKENDS: tuple[str, ...] = tuple(sorted(BACKENDS, key=lambda b: b == "xformers"))
#: The attention backend each compiled provider compiles.
COMPILED: dict[str, str] = {"compile": "sdpa", "triton+compile": "triton"}
PROVIDERS: tuple[str, ...] = (*ATTN_BACKENDS, *COMPILED)

EMBED, HEADS, JOINTS, DEPTH, MLP_RATIO = 512, 8, 17, 8, 2.0

#: Sequence lengths of the released MixSTE models.
FULL_T: tuple[int, ...] = (27, 81, 243)
#: Training batch (sequences) of the paper's recipe: 128 x 243 = 31,104 frames per step.
TRAIN_BATCH = 128
#: Inference batch: 32 windows (7,776 frames at T=243), a sliding-window evaluation or a small serving batch.
INFER_BATCH = 32

#: GPU timing batches: what fits a 24 GB RTX 4090 in a bf16 training step (the full-scale training batch, 128 x 243,
#: keeps ~115-160 GB of activations for backward on every path: modelled only).
GPU_TRAIN_BATCH: dict[int, int] = {27: 128, 81: 48, 243: 16}
GPU_INFER_BATCH: dict[int, int] = {27: 256, 81: 96, 243: 32}

#: CPU timing sizes: real width (512, 8 heads, 17 joints, depth 8), but few frames, so that
#: ``pytest benchmarks/ --benchmark-only`` finishes in minutes on 2 cores. Not a GPU proxy: a smoke-level timing.
CPU_T: tuple[int, ...] = (27, 81)
CPU_BATCH = 1


@dataclass(frozen=True)
class Shape:
    """Batch (sequences) and frames per sequence."""

    B: int
    T: int

    @property
    def frames(self) -> int:
        return self.B * self.T

    def __str__(self) -> str:
        return f"B{self.B}-T{self.T}"


def full_shapes(mode: str) -> list[Shape]:
    """The full-scale shapes of ``mode`` (training batch for ``train``, inference batch for ``forward``)."""
    batch = TRAIN_BATCH if mode == "train" else INFER_BATCH
    return [Shape(batch, T) for T in FULL_T]


def gpu_shapes(mode: str) -> list[Shape]:
    """The shapes timed on a GPU (bf16 autocast)."""
    table = GPU_TRAIN_BATCH if mode == "train" else GPU_INFER_BATCH
    return [Shape(table[T], T) for T in FULL_T]


def cpu_shapes(scope: str) -> list[Shape]:
    """The shapes timed on a CPU (fp32): T in CPU_T for the attention modules, T = 27 for the bigger scopes."""
    Ts = CPU_T if scope in ("spatial_attention", "temporal_attention") else CPU_T[:1]
    return [Shape(CPU_BATCH, T) for T in Ts]


@dataclass
class Workload:
    """A module, its input, and ``call(x)`` that runs the module with the chosen attention backend."""

    module: nn.Module
    x: torch.Tensor
    call: Callable[[torch.Tensor], torch.Tensor]


class _Pair(nn.Module):
    """One STE block followed by one TTE block, (B, T, N, C) -> (B, T, N, C)."""

    def __init__(self) -> None:
        super().__init__()
        kw = dict(dim=EMBED, num_heads=HEADS, mlp_ratio=MLP_RATIO, qkv_bias=True, qk_scale=None, drop=0.0)
        self.ste = Block(**kw, attn_drop=0.0, drop_path=0.0, axis="spatial")
        self.tte = Block(**kw, attn_drop=0.0, drop_path=0.0, axis="temporal")

    def forward(self, x: torch.Tensor, backend: str = "eager") -> torch.Tensor:
        return self.tte(self.ste(x, backend), backend)


#: Extra MixSTE arguments for the "model" scope (benchmarks.hot sets token_num/prune_at while it counts HoT).
MODEL_EXTRA: dict[str, Any] = {}


def _module(scope: str, T: int) -> nn.Module:
    if scope == "spatial_attention":
        return Attention(EMBED, HEADS, qkv_bias=True, axis="spatial")
    if scope == "temporal_attention":
        return Attention(EMBED, HEADS, qkv_bias=True, axis="temporal")
    if scope == "layer_pair":
        return _Pair()
    if scope == "model":
        return MixSTE(
            num_frame=T,
            num_joints=JOINTS,
            embed_dim_ratio=EMBED,
            depth=DEPTH,
            num_heads=HEADS,
            mlp_ratio=MLP_RATIO,
            attn_backend="eager",
            **MODEL_EXTRA,
        )
    raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")


def build(
    scope: str,
    provider: str,
    shape: Shape,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    compile_kwargs: dict | None = None,
) -> Workload:
    """Module + input + call for one (scope, provider, shape) on ``device`` (meta included) in ``dtype``.

    ``provider="compile"`` wraps the sdpa path in ``torch.compile(**compile_kwargs)``, ``"triton+compile"`` the
    triton path. The input is random
    (zeros on meta); the model input is (B, T, 17, 2), the other scopes take (B, T, 17, 512) activations.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    device = torch.device(device)
    with torch.device(device):
        module = _module(scope, shape.T)
    module = module.to(dtype)
    feat = 2 if scope == "model" else EMBED
    if device.type == "meta":
        x = torch.empty(shape.B, shape.T, JOINTS, feat, device=device, dtype=dtype)
    else:
        x = torch.randn(shape.B, shape.T, JOINTS, feat, device=device, dtype=dtype)
    backend = COMPILED.get(provider, provider)

    if isinstance(module, MixSTE):
        module.set_attn_backend(backend)
        fn: Callable[[torch.Tensor], torch.Tensor] = module
    else:

        def fn(inp: torch.Tensor, _m: nn.Module = module, _b: str = backend) -> torch.Tensor:
            return _m(inp, _b)

    if provider in COMPILED:
        fn = torch.compile(fn, **(compile_kwargs or {}))
    return Workload(module=module, x=x, call=fn)


def step_fn(work: Workload, mode: str) -> Callable[[], torch.Tensor]:
    """A no-argument function running one forward (no grad, eval mode) or one training step (train mode:
    zero grads, forward, backward with a fixed output gradient made here, outside the step). The module is put in
    the matching mode here."""
    if mode == "forward":
        work.module.eval()

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return work.call(work.x)

        return forward
    if mode == "train":
        work.module.train()
        out_shape = (*work.x.shape[:-1], 3 if isinstance(work.module, MixSTE) else EMBED)
        grad = torch.ones(out_shape, device=work.x.device, dtype=work.x.dtype)
        if not isinstance(work.module, MixSTE):
            # Inside the network a layer's input carries a gradient: its backward computes dX too.
            work.x.requires_grad_(True)

        def train() -> torch.Tensor:
            work.module.zero_grad(set_to_none=True)
            work.x.grad = None
            out = work.call(work.x)
            out.backward(grad)
            return out

        return train
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
