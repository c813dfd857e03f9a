"""HoT pruning on the fused block path (the triton backend) against the eager backend: forward, every gradient,
each recompute policy. On a CPU the kernels run in the Triton interpreter (tests/conftest.py), so sizes are small."""

from __future__ import annotations

import copy

import pytest
import torch

from fastmixste import MixSTE, kernels
from fastmixste.model import attention

SMALL = dict(num_frame=27, num_joints=17, in_chans=2, embed_dim_ratio=64, depth=2, num_heads=4, mlp_ratio=2.0,
             token_num=9, prune_at=1)


@pytest.fixture
def cross_core(monkeypatch: pytest.MonkeyPatch) -> str:
    """The recovery core the triton backend runs: the fused op when this build has it, else the eager reference
    (then only the block path and the pruning between fused pairs are under test)."""
    if hasattr(kernels, "cross_attention"):
        return "fused"

    def reference(q, k, v, num_heads, scale=None):
        q = q.expand(k.shape[0], q.shape[1], k.shape[2], q.shape[3])
        return attention.eager_cross_attention(q, k, v, num_heads, scale or (q.shape[-1] // num_heads) ** -0.5)

    monkeypatch.setattr(kernels, "cross_attention", reference, raising=False)
    return "eager reference"


def run(model: MixSTE, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out - target).norm(dim=-1).mean().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["none", "lean", "full"])
def test_pruned_fused_model_matches_eager(policy, cross_core, monkeypatch):
    import fastmixste.model.mixste as mixste

    # The clustering is a discrete choice: two mutually nearest frames have equal densities up to rounding, so a
    # last-bit difference in the features can swap which of them is kept (here, seed 0: frames 1 and 14 of sequence
    # 0 score 0.653481 both in eager). So: the features the clustering sees must agree to fp32 tolerance, and both
    # paths then prune the frames eager's clustering chose, so that everything after it is compared like for like.
    kept: list[torch.Tensor] = []
    features: list[torch.Tensor] = []
    inner = mixste.cluster_dpc_knn

    def cluster(x, *a, **k):
        features.append(x.detach().clone())
        if not kept:
            kept.append(inner(x, *a, **k))
        return kept[0]

    monkeypatch.setattr(mixste, "cluster_dpc_knn", cluster)
    torch.manual_seed(0)
    eager = MixSTE(**SMALL, attn_backend="eager", drop_path_rate=0.0, recompute=policy).train()
    fused = copy.deepcopy(eager).set_attn_backend("triton")
    x = torch.randn(2, 27, 17, 2)
    target = torch.randn(2, 27, 17, 3)
    out_e, grads_e = run(eager, x, target)
    out_f, grads_f = run(fused, x, target)
    assert len(features) == 2
    torch.testing.assert_close(features[1], features[0], rtol=1e-5, atol=1e-6, msg="features at the pruning")
    torch.testing.assert_close(out_f, out_e, rtol=1e-4, atol=1e-5)
    for name, g in grads_e.items():
        assert grads_f[name] is not None, name
        torch.testing.assert_close(grads_f[name], g, rtol=1e-3, atol=1e-5, msg=f"{cross_core}: {name}")


@pytest.mark.parametrize("T", [81, 27, 9])
def test_pruned_lengths_launch_configurations_the_aot_report_compiles(T, monkeypatch):
    """The pruned pairs run the temporal kernels at T = token_num: every configuration their launch plans pick on a
    GPU is one the AOT report compiles for sm_89/sm_90 (the spatial kernels do not depend on T)."""
    from fastmixste.kernels import temporal

    monkeypatch.setattr(temporal, "interpreter_active", lambda: False)  # the GPU plan: one sequence per program
    compiled = {(c.name, tuple(sorted(c.constexprs.items())), c.num_warps, c.num_stages, c.dtype)
                for c in temporal.report_cases()}  # fmt: skip
    for dtype in temporal.SUPPORTED_DTYPES:
        for backward in (False, True):
            for cfg, _grid in temporal.launch_plan((128, T, 17, 3 * 512), 8, dtype, backward):
                case = _kernel_case(cfg, dtype)
                key = (case.name, tuple(sorted(case.constexprs.items())), case.num_warps, case.num_stages, case.dtype)
                assert key in compiled, key


def _kernel_case(cfg, dtype):
    from fastmixste.kernels._common import kernel_case

    return kernel_case(cfg, dtype, ("lse_ptr", "delta_ptr"))
