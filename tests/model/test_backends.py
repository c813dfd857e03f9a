"""Attention backends: eager vs sdpa parity (forward and every gradient), dispatch and its error messages."""

import pytest
import torch

from fastmixste import BackendUnavailableError, MixSTE, available_backends
from fastmixste.model.attention import ENV_BACKEND, resolve_backend

SMALL = dict(num_frame=16, embed_dim_ratio=64, depth=2, num_heads=4)


def _grads(model: MixSTE, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # same drop-path draws for both backends
    out = model(x)
    (out.square().mean() + out.sum() * 1e-3).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("train", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_eager_and_sdpa_agree_forward_and_all_gradients(train):
    model = MixSTE(**SMALL, drop_path_rate=0.3 if train else 0.0).train(train)
    x = torch.randn(3, 16, 17, 2)
    model.set_attn_backend("eager")
    out_e, g_e = _grads(model, x, seed=1)
    model.set_attn_backend("sdpa")
    out_s, g_s = _grads(model, x, seed=1)
    torch.testing.assert_close(out_s, out_e, rtol=1e-5, atol=1e-5)
    assert g_e.keys() == g_s.keys() and len(g_e) == len(list(model.parameters()))
    for name in g_e:
        torch.testing.assert_close(g_s[name], g_e[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_drop_path_is_active_in_training_and_off_in_eval():
    model = MixSTE(**SMALL, drop_path_rate=0.5, attn_backend="sdpa")
    x = torch.randn(2, 16, 17, 2)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_set_attn_backend_keeps_weights_and_validates_name():
    model = MixSTE(**SMALL, attn_backend="eager")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.set_attn_backend("sdpa") is model
    assert model.attn_backend == "sdpa"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        model.set_attn_backend("flash")
    with pytest.raises(ValueError, match="unknown attention backend"):
        MixSTE(**SMALL, attn_backend="cuda")


def test_available_backends_lists_every_backend_with_reasons(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    table = available_backends("cpu", torch.float32, training=True)
    assert set(table) == {"eager", "sdpa", "xformers", "triton"}
    assert table["eager"] == [] and table["sdpa"] == []
    assert any("CUDA" in r for r in table["xformers"])
    assert any("TRITON_INTERPRET=1" in r for r in table["triton"])


def test_triton_limits_are_reported(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    table = available_backends("cpu", torch.bfloat16, True, head_dim=24, num_joints=80, attn_drop=0.1)
    reasons = " | ".join(table["triton"])
    for needle in ("bfloat16", "head_dim 24", "64 joints", "attention dropout"):
        assert needle in reasons


def test_unavailable_backend_error_lists_all_backends(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = MixSTE(**SMALL, attn_backend="triton")
    with pytest.raises(BackendUnavailableError) as info:
        model(torch.randn(1, 16, 17, 2))
    msg = str(info.value)
    assert "'triton'" in msg
    for name in ("eager: available", "sdpa: available", "xformers:", "triton:"):
        assert name in msg
    assert "TRITON_INTERPRET=1" in msg


def test_auto_picks_sdpa_on_cpu_and_env_overrides(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    assert resolve_backend("auto", "cpu", torch.float32, False) == "sdpa"
    monkeypatch.setenv(ENV_BACKEND, "eager")
    assert resolve_backend("auto", "cpu", torch.float32, False) == "eager"
    # an explicit request is not overridden
    assert resolve_backend("sdpa", "cpu", torch.float32, False) == "sdpa"
    monkeypatch.setenv(ENV_BACKEND, "xformers")
    with pytest.raises(BackendUnavailableError, match=f"set by {ENV_BACKEND}"):
        resolve_backend("auto", "cpu", torch.float32, False)
    monkeypatch.setenv(ENV_BACKEND, "nonsense")
    with pytest.raises(ValueError, match="unknown attention backend 'nonsense'"):
        resolve_backend("auto", "cpu", torch.float32, False)


def test_activations_stay_btnc_between_blocks():
    # Outside eager, the tensors flowing between blocks are (B, T, N, C) and contiguous: no layout round trips.
    model = MixSTE(**SMALL, attn_backend="sdpa").eval()
    seen = []
    for blk in list(model.STEblocks) + list(model.TTEblocks):
        blk.register_forward_hook(lambda m, inp, out: seen.append((tuple(out.shape), out.is_contiguous())))
    model(torch.randn(2, 16, 17, 2))
    assert seen and all(s == ((2, 16, 17, 64), True) for s in seen)


# ---------------------------------------------------------------------------------------------------------------
# torch.compile: the same dispatch rule, resolved while tracing
# ---------------------------------------------------------------------------------------------------------------


class GraphCapture:
    """A torch.compile backend that records each FX graph dynamo hands it and runs it as traced."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs.append(gm)
        return gm.forward

    def targets(self) -> set[str]:
        return {
            getattr(n.target, "__name__", str(n.target))
            for g in self.graphs
            for n in g.graph.nodes
            if n.op in ("call_function", "call_method")
        }


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("env", ["eager", None])
def test_compiled_model_follows_the_environment_variable(env, monkeypatch, fresh_dynamo):
    """FASTMIXSTE_ATTN_BACKEND=eager: the compiled graph has the eager softmax attention and no SDPA call; unset,
    auto picks sdpa on the CPU, in the compiled graph as in eager mode."""
    if env is None:
        monkeypatch.delenv(ENV_BACKEND, raising=False)
    else:
        monkeypatch.setenv(ENV_BACKEND, env)
    model = MixSTE(**SMALL, attn_backend="auto").eval()
    x = torch.randn(2, 16, 17, 2)
    capture = GraphCapture()
    out = torch.compile(model, backend=capture, fullgraph=True)(x)
    torch.testing.assert_close(out, model(x))
    targets = capture.targets()
    if env == "eager":
        assert "softmax" in targets and "scaled_dot_product_attention" not in targets, targets
        assert model.resolved_backend(x) == "eager"
    else:
        assert "scaled_dot_product_attention" in targets and "softmax" not in targets, targets


def test_compiled_model_refuses_what_eager_refuses(monkeypatch, fresh_dynamo):
    """triton requested in training with attention dropout: refused when traced, as in eager mode (never dropped)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = MixSTE(**SMALL, attn_drop_rate=0.1, attn_backend="triton").train()
    x = torch.randn(1, 16, 17, 2)
    with pytest.raises(BackendUnavailableError, match="attention dropout"):
        model(x)
    with pytest.raises(Exception) as info:
        torch.compile(model, backend=GraphCapture(), fullgraph=True)(x)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    refusal = [e for e in chain if isinstance(e, BackendUnavailableError)]
    assert refusal and "attention dropout" in str(refusal[0]), [type(e).__name__ for e in chain]


def test_compiled_model_keeps_attention_dropout(fresh_dynamo):
    """auto with attention dropout in training: the compiled graph runs sdpa with the dropout probability."""
    model = MixSTE(**SMALL, attn_drop_rate=0.25, drop_path_rate=0.0, attn_backend="auto").train()
    capture = GraphCapture()
    torch.compile(model, backend=capture, fullgraph=True)(torch.randn(1, 16, 17, 2))
    sdpa = [
        n
        for g in capture.graphs
        for n in g.graph.nodes
        if getattr(n.target, "__name__", "") == "scaled_dot_product_attention"
    ]
    assert sdpa and all(n.kwargs.get("dropout_p") == 0.25 for n in sdpa), [n.kwargs for n in sdpa]


def test_dispatch_is_marked_as_torch_marks_constant_results():
    """model._resolve carries the marker torch.compiler.assume_constant_result sets (set by hand to keep
    torch._dynamo out of `import fastmixste`)."""
    from fastmixste.model import mixste as model

    def probe() -> None: ...

    marked = torch.compiler.assume_constant_result(probe)
    flags = {k: v for k, v in vars(marked).items() if k.startswith("_dynamo")}
    assert flags and all(getattr(model._resolve, k, None) == v for k, v in flags.items()), flags


def _backward_node_names(out: torch.Tensor) -> set[str]:
    seen, names, stack = set(), set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    return names


@pytest.fixture
def xformers_stub(monkeypatch):
    """``xformers.ops.memory_efficient_attention`` as the math it computes ((batch, seq, heads, D) layout), so the
    xformers core's own layout code runs and is differentiated on the CPU."""
    import sys
    import types

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
        assert attn_bias is None and p == 0.0
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale
        )
        return out.transpose(1, 2)

    pkg, ops = types.ModuleType("xformers"), types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    pkg.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", pkg)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)


@pytest.mark.parametrize("backend", ["sdpa", "xformers"])
@pytest.mark.parametrize("axis", ["spatial", "temporal"])
def test_peer_cores_split_qkv_without_select_copies(backend, axis, xformers_stub):
    # q, k, v come from one unbind: its backward writes one qkv-sized gradient. Three `select`s would each write a
    # zero-filled qkv-sized gradient (SelectBackward) and add them up.
    from fastmixste.model.attention import _sdpa_core, _xformers_core, eager_attention_core

    torch.manual_seed(0)
    B, T, N, H, D = 2, 9, 17, 4, 8
    qkv = torch.randn(B, T, N, 3 * H * D, dtype=torch.float64, requires_grad=True)
    core = _sdpa_core if backend == "sdpa" else _xformers_core
    out = core(qkv, H, D**-0.5, axis, 0.0)
    names = _backward_node_names(out)
    assert not any(n.startswith("SelectBackward") for n in names), names
    assert any(n.startswith("UnbindBackward") for n in names), names
    grad_out = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, qkv, grad_out)
    ref = eager_attention_core(qkv, H, D**-0.5, axis)
    (g_ref,) = torch.autograd.grad(ref, qkv, grad_out)
    assert out.shape == (B, T, N, H * D)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
