"""HoT token pruning: HoT's state_dict layout and strict loads, parity with an independent HoT reference,
reproducible clustering, config checks, shorter windows, training paths."""

import pytest
import torch

from fastmixste import MixSTE, MixSTEConfig
from fastmixste.model.attention import cross_attention_core
from fastmixste.model.checkpoint import load_checkpoint
from fastmixste.model.hot import cluster_dpc_knn, tie_break_noise

from .hot_reference import RefHoTMixSTE, ref_dpc_knn
from .test_model import upstream_keys

SMALL = dict(num_frame=27, num_joints=17, in_chans=2, embed_dim_ratio=32, depth=4, num_heads=2, mlp_ratio=2.0)
PRUNE = dict(token_num=9, prune_at=3)


def hot_keys(C: int = 512, frames: int = 243, tokens: int = 81) -> dict[str, tuple[int, ...]]:
    """HoT's hot_mixste additions to the MixSTE2 state_dict, written out from its constructor."""
    keys = {"pos_embed_token": (1, tokens, C), "x_token": (1, frames, C)}
    for name in ("linear_q", "linear_k", "linear_v", "proj"):
        keys |= {f"cross_attention.{name}.weight": (C, C), f"cross_attention.{name}.bias": (C,)}
    return keys


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with random values (HoT starts its embeddings at zero, which would hide mix-ups); norm
    gains near 1, so that frames keep distinct features through the blocks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            gain = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2 + gain)
    return module


def kept_frames(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record the frame indices each forward keeps (the model's calls of cluster_dpc_knn)."""
    import fastmixste.model.mixste as model_module

    seen: list[torch.Tensor] = []
    inner = model_module.cluster_dpc_knn

    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(inner(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(model_module, "cluster_dpc_knn", recording)
    return seen


def reference_for(model: MixSTE) -> RefHoTMixSTE:
    c = model.config
    ref = RefHoTMixSTE(c.num_frame, c.num_joints, c.in_chans, c.embed_dim_ratio, c.depth, c.num_heads, c.mlp_ratio,
                       c.token_num, c.prune_at)  # fmt: skip
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref.to(next(model.parameters()).dtype).eval()


def test_state_dict_is_hots_at_full_size():
    with torch.device("meta"):
        model = MixSTE(num_frame=243, token_num=81, prune_at=3)
    expected = upstream_keys() | hot_keys()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert not list(model.buffers())
    with torch.device("meta"):
        plain = MixSTE(num_frame=243)
    extra = sum(torch.Size(shape).numel() for shape in hot_keys().values())
    assert model.num_parameters() - plain.num_parameters() == extra
    # the config's estimate (exact up to some biases) counts every HoT parameter
    assert model.config.num_parameters() - plain.config.num_parameters() == extra


def test_strict_load_both_ways_and_through_load_checkpoint(tmp_path):
    ref = randomized(RefHoTMixSTE(**SMALL, token_num=9, layer_index=3)).eval()
    model = MixSTE(**SMALL, **PRUNE, attn_backend="eager")
    model.load_state_dict(ref.state_dict(), strict=True)
    ref2 = RefHoTMixSTE(**SMALL, token_num=9, layer_index=3)
    ref2.load_state_dict(model.state_dict(), strict=True)
    # a bare HoT state_dict with DataParallel prefixes, as HoT's training saves it
    path = tmp_path / "hot_mixste.pth"
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, path)
    loaded = load_checkpoint(path, attn_backend="eager", num_heads=SMALL["num_heads"])
    assert (loaded.config.token_num, loaded.config.prune_at) == (9, 3)
    x = torch.randn(2, 27, 17, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x, noise=tie_break_noise(27)), rtol=0, atol=1e-5)
    # a mismatch is refused, not hidden: plain MixSTE weights into a pruning model
    with pytest.raises(RuntimeError, match="Missing key"):
        MixSTE(**SMALL, **PRUNE).load_state_dict(MixSTE(**SMALL).state_dict(), strict=True)


def test_checkpoint_round_trips_token_num_and_prune_at(tmp_path):
    from fastmixste.model.checkpoint import save_checkpoint

    model = MixSTE(**SMALL, token_num=5, prune_at=2, attn_backend="eager").eval()
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = load_checkpoint(tmp_path / "m.pt", attn_backend="eager")
    assert (loaded.config.token_num, loaded.config.prune_at) == (5, 2)
    x = torch.randn(1, 27, 17, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("prune", [dict(token_num=9, prune_at=3), dict(token_num=14, prune_at=1)])
def test_eager_forward_is_hots(prune, monkeypatch):
    """The eager backend runs HoT's computation: the same kept frames and the same output (fp32, eval)."""
    kept = kept_frames(monkeypatch)
    model = randomized(MixSTE(**SMALL, **prune, attn_backend="eager")).eval()
    ref = reference_for(model)
    for _ in range(3):
        x = torch.randn(3, 27, 17, 2)
        with torch.no_grad():
            out = model(x)
            expected = ref(x, noise=tie_break_noise(27))
        assert out.shape == (3, 27, 17, 3)
        assert torch.equal(kept[-1], ref.last_index)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_sdpa_forward_matches_hot_on_the_frames_it_keeps(monkeypatch):
    """sdpa rounds differently from eager (~1e-7), and the selection is a discontinuous function of the features:
    where two frames' scores are that close, either backend (or HoT on another device) may keep the other one. So
    the output is compared with the reference on the frames this backend kept; the selection is compared too
    (almost always the same), to catch a systematic difference."""
    kept = kept_frames(monkeypatch)
    model = randomized(MixSTE(**SMALL, **PRUNE, attn_backend="sdpa")).eval()
    ref = reference_for(model)
    same = 0
    for _ in range(4):
        x = torch.randn(3, 27, 17, 2)
        with torch.no_grad():
            out = model(x)
            hots = ref(x, noise=tie_break_noise(27))
            hots_index = ref.last_index
            expected = ref(x, index=kept[-1])
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        same += int((kept[-1] == hots_index).all(dim=-1).sum())
        if torch.equal(kept[-1], hots_index):
            torch.testing.assert_close(out, hots, rtol=0, atol=1e-5)
    assert same >= 10  # of 12 sequences


@pytest.mark.slow
def test_forward_matches_hot_reference_float64():
    model = randomized(MixSTE(**SMALL, **PRUNE, attn_backend="eager")).double().eval()
    ref = reference_for(model)
    x = torch.randn(2, 27, 17, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x, noise=tie_break_noise(27, dtype=torch.float64)), rtol=0,
                                   atol=1e-12)  # fmt: skip


def test_clustering_matches_reference_with_the_same_noise():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(4, 81, 16, generator=g)
    noise = torch.rand(4, 81, generator=g) * 1e-6  # HoT's kind of draw, given to both
    ours = cluster_dpc_knn(feats, 27, k=2, noise=noise)
    theirs = ref_dpc_knn(feats, 27, 2, noise).sort(dim=-1).values
    assert torch.equal(ours, theirs)
    assert (ours.diff(dim=-1) > 0).all()  # ascending, distinct


def test_outputs_do_not_depend_on_the_global_rng():
    model = randomized(MixSTE(**SMALL, **PRUNE, attn_backend="sdpa")).eval()
    x = torch.randn(2, 27, 17, 2)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with torch.no_grad():
        a = model(x)
    assert torch.equal(torch.get_rng_state(), state)  # no draw
    torch.manual_seed(12345)
    with torch.no_grad():
        b = model(x)
    assert torch.equal(a, b)


def test_exact_ties_are_broken_deterministically():
    # every frame identical: all densities tie; HoT's random noise would pick any frames, the fixed pattern picks
    # the same ones every time, and they are distinct frames
    feats = torch.ones(2, 27, 8)
    first = cluster_dpc_knn(feats, 9)
    assert torch.equal(first, cluster_dpc_knn(feats, 9))
    assert torch.equal(first[0], first[1])
    assert all(len(set(row.tolist())) == 9 for row in first)
    # the pattern is the reference's computation given the same noise
    assert torch.equal(first, ref_dpc_knn(feats, 9, 2, tie_break_noise(27)).sort(dim=-1).values)
    model = MixSTE(**SMALL, **PRUNE, attn_backend="eager").eval()
    still = torch.zeros(1, 27, 17, 2) + torch.randn(1, 1, 17, 2)  # a person standing still: every frame the same
    with torch.no_grad():
        out = model(still)
    assert torch.isfinite(out).all()


def test_tie_break_noise_is_distinct_and_small():
    n = tie_break_noise(243)
    assert n.shape == (243,) and len(set(n.tolist())) == 243
    assert float(n.min()) >= 0 and float(n.max()) < 1e-6


@pytest.mark.parametrize("frames", [20, 5])
def test_shorter_windows(frames):
    """F < num_frame keeps min(token_num, F) frames and recovers F; the same as the reference given F frames of
    x_token and Temporal_pos_embed (a reference built for F frames)."""
    model = randomized(MixSTE(**SMALL, **PRUNE, attn_backend="eager")).eval()
    x = torch.randn(2, frames, 17, 2)
    keep = min(9, frames)
    ref = RefHoTMixSTE(**{**SMALL, "num_frame": frames}, token_num=keep, layer_index=3).eval()
    sd = model.state_dict()
    sd["x_token"] = sd["x_token"][:, :frames]
    sd["Temporal_pos_embed"] = sd["Temporal_pos_embed"][:, :frames]
    sd["pos_embed_token"] = sd["pos_embed_token"][:, :keep]
    ref.load_state_dict(sd, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x, noise=tie_break_noise(frames)), rtol=0, atol=1e-5)


def test_no_pruning_is_plain_mixste():
    cfg = MixSTEConfig(**SMALL)
    assert cfg.token_num is None
    torch.manual_seed(0)
    plain = MixSTE(**SMALL, attn_backend="eager").eval()
    same = MixSTE(**SMALL, token_num=None, prune_at=1, attn_backend="eager").eval()
    same.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 27, 17, 2)
    with torch.no_grad():
        assert torch.equal(plain(x), same(x))
    assert MixSTEConfig(**SMALL, prune_at=99).num_parameters() == cfg.num_parameters()


@pytest.mark.parametrize("values, match", [
    (dict(token_num=28), r"token_num must be null \(no pruning\) or an int in 1..num_frame \(27\), got 28"),
    (dict(token_num=0), "token_num must be null"),
    (dict(token_num=True), "token_num must be null"),
    (dict(token_num=9, prune_at=4), r"prune_at must be an int in 1..depth-1 \(3\).*got 4"),
    (dict(token_num=9, prune_at=0), "prune_at must be an int in 1..depth-1"),
])  # fmt: skip
def test_config_refuses_bad_pruning(values, match):
    with pytest.raises(ValueError, match=match):
        MixSTEConfig(**{**SMALL, **values})


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_cross_attention_core_matches_float64(backend):
    g = torch.Generator().manual_seed(3)
    B, Tq, Tk, N, C, H = 2, 27, 9, 5, 32, 2
    q = torch.randn(1, Tq, 1, C, generator=g).expand(B, Tq, N, C)  # broadcast queries, as the model passes them
    kv = torch.randn(B, Tk, N, 2 * C, generator=g)
    k, v = kv[..., :C], kv[..., C:]  # column slices of one packed projection
    out = cross_attention_core(q, k, v, H, (C // H) ** -0.5, backend)
    # float64, written per joint and head as plain loops over the definition
    q64, k64, v64 = (t.double() for t in (q, k, v))
    want = torch.empty(B, Tq, N, C, dtype=torch.float64)
    D = C // H
    for b in range(B):
        for n in range(N):
            for h in range(H):
                s = slice(h * D, (h + 1) * D)
                w = torch.softmax(q64[b, :, n, s] @ k64[b, :, n, s].T * D**-0.5, dim=-1)
                want[b, :, n, s] = w @ v64[b, :, n, s]
    torch.testing.assert_close(out.double(), want, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_gradients_reach_every_parameter_and_recompute_agrees():
    torch.manual_seed(0)
    model = MixSTE(**SMALL, **PRUNE, attn_backend="sdpa", drop_path_rate=0.1).train()
    x = torch.randn(2, 27, 17, 2)
    grads = {}
    for policy in ("none", "lean", "full"):
        model.set_recompute(policy)
        model.zero_grad()
        torch.manual_seed(5)
        model(x).square().mean().backward()
        grads[policy] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, g in grads["none"].items():
        assert g.abs().sum() > 0, n
        for policy in ("lean", "full"):
            torch.testing.assert_close(grads[policy][n], g, rtol=1e-5, atol=1e-6, msg=f"{policy}: {n}")


@pytest.mark.slow
def test_torch_compile_traces_the_pruning_in_one_graph():
    """Clustering, gather and recovery trace with fullgraph=True (no graph break), forward equal in eval, and the
    HoT parameters get gradients through the compiled training graph."""
    model = randomized(MixSTE(**SMALL, token_num=9, prune_at=2, attn_backend="sdpa")).eval()
    x = torch.randn(2, 27, 17, 2)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-6)
    model.train()
    torch.compile(model, backend="aot_eager", fullgraph=True)(x).square().mean().backward()
    for name in ("x_token", "pos_embed_token", "cross_attention.linear_q.weight", "STEblocks.3.attn.qkv.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
