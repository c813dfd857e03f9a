"""Bytes kept for backward by the attention cores and blocks, measured on the meta device at full scale (no GPU).

Every tensor autograd saves passes through ``torch.autograd.graph.saved_tensors_hooks``; tensors are counted once
per storage, so a tensor saved by two ops (the attention output ``o``, saved by the fused op and by the proj Linear
for its weight gradient) costs once, as it does on a GPU. Parameters are left out: they live anyway.

    python -m fastmixste.perf.memory        # prints the attention-core and layer-pair tables
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .profiling import SavedTensorCounter

__all__ = [
    "saved_bytes",
    "spatial_attention_saved_bytes",
    "temporal_attention_saved_bytes",
    "layer_pair_saved_bytes",
]

FULL_SCALE = dict(B=128, T=243, N=17, C=512, H=8)


def saved_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves while running ``fn()``, minus the storages of ``exclude``.

    Works on meta tensors (see :class:`fastmixste.perf.profiling.SavedTensorCounter`, which does the counting).
    """
    with SavedTensorCounter(exclude=exclude) as counter:
        out = fn()
    del out
    return counter.bytes


def spatial_attention_saved_bytes(
    B: int = 128, T: int = 243, N: int = 17, C: int = 512, H: int = 8, dtype: torch.dtype = torch.float16
) -> dict[str, int]:
    """Bytes kept for backward by the spatial attention core, (B, T, N, 3*C) qkv -> (B, T, N, C), on meta.

    Returns {"eager": upstream q k^T / softmax / @ v math, "fused": the fused op (qkv only), "qkv": bytes of qkv}.
    qkv itself is among the saved tensors in both.
    """
    from ..kernels.reference import spatial_attention_ref
    from ..kernels.spatial import spatial_attention

    qkv = torch.empty((B, T, N, 3 * C), dtype=dtype, device="meta", requires_grad=True)
    return {
        "eager": saved_bytes(lambda: spatial_attention_ref(qkv, H)),
        "fused": saved_bytes(lambda: spatial_attention(qkv, H)),
        "qkv": B * T * N * 3 * C * torch.empty((), dtype=dtype).element_size(),
    }


def temporal_attention_saved_bytes(
    B: int = 128, T: int = 243, N: int = 17, C: int = 512, H: int = 8, dtype: torch.dtype = torch.float16
) -> dict[str, int]:
    """Bytes saved for backward by the temporal attention core alone, (B, T, N, 3*C) qkv -> (B, T, N, C).

    Returns {"eager": upstream q k^T / softmax / @ v math (:func:`temporal_attention_ref`), "triton": the fused op
    (qkv, o, fp32 lse), "qkv": bytes of qkv, "o": bytes of o, "lse": bytes of the lse rows}.
    """
    from ..kernels.reference import temporal_attention_ref
    from ..kernels.temporal import temporal_attention

    qkv = torch.empty((B, T, N, 3 * C), dtype=dtype, device="meta", requires_grad=True)
    item = torch.empty((), dtype=dtype).element_size()
    return {
        "eager": saved_bytes(lambda: temporal_attention_ref(qkv, H)),
        "triton": saved_bytes(lambda: temporal_attention(qkv, H)),
        "qkv": B * T * N * 3 * C * item,
        "o": B * T * N * C * item,
        "lse": B * N * H * T * 4,
    }


def layer_pair_saved_bytes(
    B: int = 128,
    T: int = 243,
    N: int = 17,
    C: int = 512,
    H: int = 8,
    dtype: torch.dtype = torch.float16,
    backends: tuple[str, ...] = ("eager", "triton"),
) -> dict[str, int]:
    """Bytes saved for backward by one spatial + temporal block pair (STE then TTE) of MixSTE, per backend.

    The blocks are the model's own (:class:`fastmixste.model.mixste.Block`, mlp_ratio 2, qkv bias, no dropout),
    built on the meta device; the input (B, T, N, C) is not counted when it is saved (the previous layer's output).
    """
    from ..model.mixste import Block

    with torch.device("meta"):
        blocks = [Block(C, H, 2.0, True, None, 0.0, 0.0, 0.0, axis=axis).to(dtype) for axis in ("spatial", "temporal")]
    params = [p for b in blocks for p in b.parameters()]
    x = torch.empty((B, T, N, C), dtype=dtype, device="meta", requires_grad=True)

    def run(backend: str) -> torch.Tensor:
        return blocks[1](blocks[0](x, backend), backend)

    return {name: saved_bytes(lambda name=name: run(name), exclude=[*params, x]) for name in backends}


def _gib(n: int) -> str:
    return f"{n / 2**30:.3f} GiB"


def main() -> None:
    for dtype in (torch.float16, torch.float32):
        spatial = spatial_attention_saved_bytes(**FULL_SCALE, dtype=dtype)
        attn = temporal_attention_saved_bytes(**FULL_SCALE, dtype=dtype)
        pair = layer_pair_saved_bytes(**FULL_SCALE, dtype=dtype)
        print(f"B=128 T=243 N=17 C=512 H=8 {dtype}")
        print(f"  spatial attention core:  eager {_gib(spatial['eager'])}, triton {_gib(spatial['fused'])} (qkv only)")
        print(
            f"  temporal attention core: eager {_gib(attn['eager'])}, triton {_gib(attn['triton'])} "
            f"(qkv {_gib(attn['qkv'])} + o {_gib(attn['o'])} + lse {_gib(attn['lse'])})"
        )
        print(
            f"  STE+TTE layer pair:      eager {_gib(pair['eager'])}, triton {_gib(pair['triton'])} "
            f"(saves {_gib(pair['eager'] - pair['triton'])}, {pair['eager'] / pair['triton']:.2f}x less)"
        )


if __name__ == "__main__":
    main()
