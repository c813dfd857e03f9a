"""Activation recompute: same gradients as without it, less kept for backward, clear errors for bad names."""

from __future__ import annotations

import pytest
import torch

from fastmixste import MixSTE
from fastmixste.model.recompute import RECOMPUTE_POLICIES
from fastmixste.perf.memory import retained_bytes


def _small(backend: str, policy: str, **kw: object) -> MixSTE:
    torch.manual_seed(0)
    cfg = dict(num_frame=9, embed_dim_ratio=32, depth=2, num_heads=2, drop_path_rate=0.2, drop_rate=0.1)
    cfg.update(kw)
    return MixSTE(**cfg, attn_backend=backend, recompute=policy).train()


def _grads(model: MixSTE, x: torch.Tensor, seed: int = 7) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)  # DropPath / dropout draws
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("backend", ["eager", pytest.param("sdpa", marks=pytest.mark.slow)])
@pytest.mark.parametrize("policy", ["lean", "full"])
def test_recompute_gives_bitwise_equal_gradients(backend: str, policy: str) -> None:
    x = torch.randn(3, 9, 17, 2, generator=torch.Generator().manual_seed(1))
    ref_out, ref_grads = _grads(_small(backend, "none"), x)
    out, grads = _grads(_small(backend, policy), x)
    assert torch.equal(out, ref_out)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert torch.equal(g, ref_grads[name]), f"{backend}/{policy}: gradient of {name} differs"


def test_drop_path_masks_are_actually_drawn() -> None:
    # guards the test above: with drop paths active, two seeds must give different outputs
    x = torch.randn(2, 9, 17, 2)
    model = _small("eager", "full")
    assert not torch.equal(_grads(model, x, seed=1)[0], _grads(model, x, seed=2)[0])


def test_retained_bytes_shrink_with_each_policy() -> None:
    kept = {}
    for policy in RECOMPUTE_POLICIES:
        with torch.device("meta"):
            model = MixSTE(num_frame=27, embed_dim_ratio=64, depth=2, attn_backend="sdpa", recompute=policy).train()
        x = torch.empty(2, 27, 17, 2, device="meta")
        kept[policy] = retained_bytes(lambda m=model, x=x: m(x))
    assert kept["none"] > kept["lean"] > kept["full"] > 0
    # full keeps the input of each of the 2 block pairs, plus what the head keeps (its LayerNorm input and the
    # Linear's input, outside the pairs), and little else (row statistics)
    act = 2 * 27 * 17 * 64 * 4
    assert 4 * act <= kept["full"] <= 4.1 * act


def test_eval_mode_and_no_grad_ignore_the_policy() -> None:
    model = _small("eager", "full").eval()
    x = torch.randn(1, 9, 17, 2)
    ref = _small("eager", "none").eval()(x)
    assert torch.equal(model(x), ref)


def test_bad_policy_names_are_refused() -> None:
    with pytest.raises(ValueError, match="recompute policy 'half'.*none"):
        MixSTE(num_frame=9, embed_dim_ratio=32, depth=1, recompute="half")
    model = MixSTE(num_frame=9, embed_dim_ratio=32, depth=1)
    with pytest.raises(ValueError, match="expected one of"):
        model.set_recompute("auto")  # "auto" is a train.run choice, resolved before the model sees it
    assert model.set_recompute("lean").recompute == "lean"
    assert model.config.to_dict()["recompute"] == "lean"


def test_choose_recompute_picks_the_cheapest_policy_that_fits() -> None:
    from fastmixste.model.recompute import choose_recompute

    per_seq = {"none": 1000, "lean": 400, "full": 100}.__getitem__
    assert choose_recompute(per_seq, static_bytes=500, batch_size=4, free_bytes=10_000)[0] == "none"
    policy, why = choose_recompute(per_seq, static_bytes=500, batch_size=8, free_bytes=5_000)
    assert policy == "lean" and "batch 8" in why and "fits" in why
    assert choose_recompute(per_seq, static_bytes=500, batch_size=30, free_bytes=5_000)[0] == "full"
    with pytest.raises(ValueError, match=r"largest batch that fits with full is 40"):
        choose_recompute(per_seq, static_bytes=500, batch_size=64, free_bytes=5_000)


def test_static_training_bytes_counts_weights_grads_and_adam() -> None:
    from fastmixste.model.recompute import static_training_bytes

    model = MixSTE(num_frame=9, embed_dim_ratio=32, depth=1)
    assert static_training_bytes(model) == 16 * model.num_parameters()
