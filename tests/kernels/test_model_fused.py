"""The whole fused model: MixSTE(attn_backend="triton") against the eager backend, forward, gradients and training.

On a CPU both kernels run in the Triton interpreter, so the configurations are small; the GPU tests use full scale.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastmixste import MixSTE

from .conftest import DEVICE, needs_gpu

# A small config: depth 2, embed 64, 4 heads (D = 16), T = 27, the 17 joints.
SMALL = dict(
    num_frame=27,
    num_joints=17,
    in_chans=2,
    embed_dim_ratio=64,
    depth=2,
    num_heads=4,
    mlp_ratio=2.0,
    drop_path_rate=0.0,
)


def make_pair(**overrides) -> tuple[MixSTE, MixSTE]:
    """The same weights behind the eager and the triton backends."""
    eager = MixSTE(**{**SMALL, **overrides}, attn_backend="eager").to(DEVICE)
    fused = copy.deepcopy(eager).set_attn_backend("triton")
    return eager, fused


def forward_backward(model: MixSTE, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out - target).norm(dim=-1).mean().backward()  # MPJPE
    return out.detach(), {name: p.grad.detach().clone() for name, p in model.named_parameters()}


class OpCounter(TorchDispatchMode):
    """Counts the ops that run below autograd (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.slow
def test_fused_model_matches_eager_forward_and_every_gradient() -> None:
    eager, fused = make_pair()
    x = torch.randn(2, 27, 17, 2, device=DEVICE)
    target = torch.randn(2, 27, 17, 3, device=DEVICE)
    out_e, grads_e = forward_backward(eager, x, target)
    with OpCounter() as ops:
        out_f, grads_f = forward_backward(fused, x, target)
    depth = SMALL["depth"]
    # Both kernels, forward and backward, once per block; no attention matrices built with bmm/softmax.
    for op in ("spatial_attention", "spatial_attention_backward", "temporal_attention", "temporal_attention_backward"):
        assert ops.counts.get(f"fastmixste.{op}") == depth, (op, ops.counts)
    for op in ("aten.bmm", "aten._softmax", "aten._softmax_backward_data"):
        assert op not in ops.counts, (op, ops.counts)
    # The fused block: per block one residual_layernorm after attention and one after the MLP (which also applies
    # the shared post-norm and the next norm1), plus the embedding's and the temporal positions' (STE0 -> TTE0);
    # bias + GELU once per block. The only eager LayerNorm left is the head's; no eager GELU.
    blocks = 2 * depth
    for op, n in (("residual_layernorm", 2 * blocks + 2), ("bias_gelu", blocks)):
        assert ops.counts.get(f"fastmixste.{op}") == n, (op, ops.counts)
        assert ops.counts.get(f"fastmixste.{op}_backward") == n, (op, ops.counts)
    assert ops.counts.get("aten.native_layer_norm") == 1, ops.counts
    assert "aten.gelu" not in ops.counts and "aten.gelu_backward" not in ops.counts, ops.counts

    # fp32 both ways: the two backends agree to within 1e-6 here (measured: outputs 7e-7 apart, every gradient
    # within 2e-7 of its largest entry), as each does with a float64 model; 1e-5 leaves room for summation order,
    # while a wrong gradient term (a missing dV, a wrong scale, a leaked masked key) shows up at 1e-2 or more.
    torch.testing.assert_close(out_f, out_e, rtol=0, atol=1e-5)
    assert grads_f.keys() == grads_e.keys()
    for name, g_e in grads_e.items():
        g_f = grads_f[name]
        scale = g_e.abs().max().item()
        err = (g_f - g_e).abs().max().item()
        assert err <= 1e-5 * scale + 1e-12, f"{name}: gradient differs by {err:.3g} (largest entry {scale:.3g})"


@pytest.mark.slow
def test_fused_model_matches_eager_on_a_shorter_window() -> None:
    """F < num_frame (the temporal kernel sees T = 13) and one sequence: masked tails through the whole model."""
    eager, fused = make_pair(depth=1)
    x = torch.randn(1, 13, 17, 2, device=DEVICE)
    target = torch.randn(1, 13, 17, 3, device=DEVICE)
    out_e, grads_e = forward_backward(eager, x, target)
    out_f, grads_f = forward_backward(fused, x, target)
    torch.testing.assert_close(out_f, out_e, rtol=0, atol=1e-5)
    for name, g_e in grads_e.items():
        err = (grads_f[name] - g_e).abs().max().item()
        assert err <= 1e-5 * g_e.abs().max().item() + 1e-12, f"{name}: gradient differs by {err:.3g}"


@pytest.mark.slow
def test_fused_block_matches_eager_in_train_mode_with_droppath() -> None:
    """Train mode, drop_path_rate=0.2: one seed gives both paths the same DropPath masks, hence the same output and
    every parameter gradient (fp32). A second seed changes the fused output: the masks are live, not skipped."""
    eager, fused = make_pair(num_frame=9, embed_dim_ratio=32, num_heads=2, depth=2, drop_path_rate=0.2)
    eager.train(), fused.train()
    x = torch.randn(2, 9, 17, 2, device=DEVICE)
    target = torch.randn(2, 9, 17, 3, device=DEVICE)
    torch.manual_seed(11)
    out_e, grads_e = forward_backward(eager, x, target)
    torch.manual_seed(11)
    out_f, grads_f = forward_backward(fused, x, target)
    torch.testing.assert_close(out_f, out_e, rtol=0, atol=1e-5)
    assert grads_f.keys() == grads_e.keys()
    for name, g_e in grads_e.items():
        err = (grads_f[name] - g_e).abs().max().item()
        assert err <= 1e-5 * g_e.abs().max().item() + 1e-12, f"{name}: gradient differs by {err:.3g}"
    torch.manual_seed(12)
    with torch.no_grad():
        other = fused(x)
    assert (other - out_f).abs().max().item() > 1e-3, "a different seed should draw different DropPath masks"


def test_fused_block_refuses_dropout_in_training() -> None:
    """drop_rate > 0 (dropout inside the MLP, after proj, on the positions) cannot run fused: refused, not skipped."""
    from fastmixste.model.attention import BackendUnavailableError

    model = MixSTE(**{**SMALL, "depth": 1, "num_frame": 9}, drop_rate=0.1, attn_backend="triton").to(DEVICE)
    x = torch.randn(1, 9, 17, 2, device=DEVICE)
    with pytest.raises(BackendUnavailableError, match="drop_rate=0.1"):
        model.train()(x)
    assert model.eval().resolved_backend(x) == "triton"  # dropout is the identity in eval: fused is fine


@pytest.mark.slow
def test_training_curves_agree_step_by_step() -> None:
    """20 Adam steps from the same weights on the same batches: eager and triton losses agree at every step.

    Tolerance: 1e-5 relative per step. The backends differ by fp32 rounding only (outputs ~1e-7 relative apart, see
    the parity test); Adam carries such differences into the weights, and over these 20 steps the losses drift apart
    by at most 2e-7 relative (measured), so 1e-5 is 50x that. The test calibrates its own sensitivity: the eager
    run repeated with a learning rate 1% higher (a far smaller change than a wrong gradient term) must leave the
    tolerance, proving the comparison can fail. drop_path_rate=0.2 with one seed per step: both backends draw the
    same DropPath masks, so the fused block's DropPath forward and backward are inside the comparison.
    """
    steps, lr, T, J = 20, 1e-3, 9, 5
    rtol = 1e-5
    # Tiny (9 frames, 5 joints, 2 heads of 16) so 20 interpreted steps stay fast; the parity tests above cover the
    # small config with 17 joints and 27 frames.
    eager, fused = make_pair(num_frame=T, num_joints=J, embed_dim_ratio=32, num_heads=2, depth=2, drop_path_rate=0.2)
    control = copy.deepcopy(eager)
    gen = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(2, T, J, 2, generator=gen), torch.randn(2, T, J, 3, generator=gen) * 0.1) for _ in range(steps)
    ]

    def train(model: MixSTE, lr: float) -> list[float]:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        for step, (x, y) in enumerate(batches):
            torch.manual_seed(100 + step)  # the same DropPath masks for every run at this step
            opt.zero_grad(set_to_none=True)
            loss = (model(x.to(DEVICE)) - y.to(DEVICE)).norm(dim=-1).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    curve_e = train(eager.train(), lr)
    curve_f = train(fused.train(), lr)
    curve_c = train(control.train(), lr * 1.01)
    assert curve_e[-1] < 0.9 * curve_e[0], f"eager did not learn: {curve_e}"
    for step, (le, lf) in enumerate(zip(curve_e, curve_f)):
        assert abs(lf - le) <= rtol * abs(le), f"step {step}: triton loss {lf:.8f} vs eager {le:.8f}"
    control_gap = max(abs(lc - le) / abs(le) for le, lc in zip(curve_e, curve_c))
    assert control_gap > rtol, f"a 1% learning-rate change moved the losses by only {control_gap:.3g}"


# ---------------------------------------------------------------------------------------------------------------
# GPU only
# ---------------------------------------------------------------------------------------------------------------


@needs_gpu
def test_compiled_fused_model_matches_eager() -> None:
    eager, fused = make_pair()
    x = torch.randn(4, 27, 17, 2, device=DEVICE)
    target = torch.randn(4, 27, 17, 3, device=DEVICE)
    out_e, grads_e = forward_backward(eager, x, target)
    compiled = torch.compile(fused)
    compiled.zero_grad(set_to_none=True)
    out_c = compiled(x)
    (out_c - target).norm(dim=-1).mean().backward()
    torch.testing.assert_close(out_c.detach(), out_e, rtol=0, atol=1e-4)
    for name, p in fused.named_parameters():
        g_e = grads_e[name]
        assert (p.grad - g_e).abs().max() <= 1e-4 * g_e.abs().max() + 1e-12, name


@needs_gpu
def test_bf16_fused_model_at_full_scale() -> None:
    """Full-scale model (243 frames, 512 channels, 8 heads) in bf16: fused vs eager in bf16, both against fp32."""
    model = MixSTE(num_frame=243, depth=2, drop_path_rate=0.0, attn_backend="eager").to(DEVICE)
    x = torch.randn(2, 243, 17, 2, device=DEVICE)
    with torch.no_grad():
        ref = model(x).double()
        out_e = model.to(torch.bfloat16)(x.bfloat16()).double()
        out_f = model.set_attn_backend("triton")(x.bfloat16()).double()
    err_e = (out_e - ref).abs().max().item()
    err_f = (out_f - ref).abs().max().item()
    assert err_f <= 2 * err_e, f"fused bf16 error {err_f:.3g} > 2 x eager bf16 error {err_e:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["lean", "full"])
def test_fused_model_recompute_keeps_output_and_gradients(policy: str) -> None:
    """Activation recompute on the fused path: same output, same gradients as without it (drop paths on, so the
    replayed forward must draw the same masks), and less kept for backward."""
    from fastmixste.perf.memory import retained_bytes

    torch.manual_seed(0)
    base = MixSTE(**{**SMALL, "num_frame": 9, "depth": 2, "drop_path_rate": 0.2}, attn_backend="triton").to(DEVICE)
    other = copy.deepcopy(base).set_recompute(policy)
    x = torch.randn(2, 9, 17, 2, device=DEVICE)
    target = torch.randn(2, 9, 17, 3, device=DEVICE)
    results = []
    for model in (base.train(), other.train()):
        torch.manual_seed(11)
        results.append(forward_backward(model, x, target))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=1e-6)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    kept = []
    for model in (base, other):
        torch.manual_seed(11)
        kept.append(retained_bytes(lambda m=model: m(x)))
    assert kept[1] < kept[0], kept
