"""Checkpoint I/O: upstream .bin files, our own files, the pickle allowlist, atomic writes."""

import numpy as np
import pytest
import torch

from fastmixste import CheckpointError, MixSTE, load_checkpoint, read_checkpoint, save_checkpoint

SMALL = dict(num_frame=27, embed_dim_ratio=64, depth=2, num_heads=4)


def write_upstream_checkpoint(path, model: MixSTE) -> None:
    """A file shaped like upstream MixSTE's best_epoch_cpn_243f.bin: DataParallel prefixes, optimizer, RandomState."""
    opt = torch.optim.AdamW(model.parameters(), lr=4e-5, weight_decay=0.1)
    model(torch.randn(1, 27, 17, 2)).sum().backward()
    opt.step()
    torch.save(
        {
            "epoch": 120,
            "lr": 4e-5 * 0.99**120,
            "random_state": np.random.RandomState(1234),
            "optimizer": opt.state_dict(),
            "model_pos": {"module." + k: v for k, v in model.state_dict().items()},
        },
        path,
    )


def test_upstream_checkpoint_loads_strict_and_reproduces_outputs(tmp_path):
    model = MixSTE(**SMALL, attn_backend="eager")
    path = tmp_path / "best_epoch_cpn_27f.bin"
    write_upstream_checkpoint(path, model)
    loaded = load_checkpoint(path, attn_backend="eager")
    cfg = loaded.config
    assert (cfg.num_frame, cfg.num_joints, cfg.in_chans, cfg.embed_dim_ratio, cfg.depth) == (27, 17, 2, 64, 2)
    assert cfg.num_heads == 8  # the upstream default; not recoverable from shapes
    assert not loaded.training
    x = torch.randn(2, 27, 17, 2)
    model.eval()
    # num_heads differs (8 vs 4), so outputs only match once the heads match
    loaded4 = load_checkpoint(path, attn_backend="eager", num_heads=4)
    torch.testing.assert_close(loaded4(x), model(x), rtol=0, atol=0)
    raw = read_checkpoint(path)
    assert isinstance(raw["random_state"], np.random.RandomState)
    assert raw["epoch"] == 120


def test_own_checkpoint_roundtrip_keeps_config_and_extras(tmp_path):
    model = MixSTE(**SMALL, attn_backend="sdpa", drop_path_rate=0.05).eval()
    path = save_checkpoint(tmp_path / "ck" / "last.pt", model, epoch=3, rng=torch.get_rng_state())
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    loaded = load_checkpoint(path, attn_backend="eager")
    assert loaded.config.drop_path_rate == 0.05 and loaded.config.num_heads == 4
    x = torch.randn(1, 20, 17, 2)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-6)
    raw = read_checkpoint(path)
    assert raw["epoch"] == 3 and raw["format"] == "fastmixste"


class Payload:
    def __reduce__(self):
        return (print, ("this ran at load time",))


def test_unexpected_pickled_object_is_refused(tmp_path):
    model = MixSTE(**SMALL)
    path = tmp_path / "evil.bin"
    torch.save({"model_pos": model.state_dict(), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="trust_checkpoint=True"):
        load_checkpoint(path)
    # explicitly trusted: loads (and the payload runs, as the caller accepted)
    assert load_checkpoint(path, trust_checkpoint=True, num_heads=4).config.depth == 2


def test_mismatched_weights_give_a_clear_error(tmp_path):
    model = MixSTE(**SMALL)
    sd = model.state_dict()
    sd["STEblocks.0.attn.extra"] = torch.zeros(1)
    path = tmp_path / "bad.bin"
    torch.save({"model_pos": sd}, path)
    with pytest.raises(CheckpointError, match="Unexpected key"):
        load_checkpoint(path)
    torch.save({"weights": 1}, tmp_path / "empty.bin")
    with pytest.raises(CheckpointError, match="no model weights"):
        load_checkpoint(tmp_path / "empty.bin")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.bin")


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = MixSTE(**SMALL)
    path = save_checkpoint(tmp_path / "last.pt", model, epoch=1)
    good = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == good
    assert not list(tmp_path.glob(".*tmp"))


def test_save_rejects_non_model_and_reserved_keys(tmp_path):
    with pytest.raises(TypeError, match="expects a MixSTE"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", MixSTE(**SMALL), config={})


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy-pickle"])
def test_random_state_round_trips_through_the_safe_reader(tmp_path, zipfile):
    """Upstream files carry a numpy RandomState: read_checkpoint's allowlist rebuilds it with its exact state, in
    both torch.save formats (guards numpy renaming what a RandomState pickles to), and load_checkpoint takes it."""
    rs = np.random.RandomState(7)
    rs.randint(1 << 30, size=5)  # a state other than the seed's
    path = tmp_path / "upstream.bin"
    torch.save({"random_state": rs, "model_pos": MixSTE(**SMALL).state_dict()}, path,
               _use_new_zipfile_serialization=zipfile)  # fmt: skip
    got = read_checkpoint(path)["random_state"]
    assert isinstance(got, np.random.RandomState)
    assert (got.randint(1 << 30, size=8) == rs.randint(1 << 30, size=8)).all()
    assert load_checkpoint(path, num_heads=4).config.depth == SMALL["depth"]


# ---------------------------------------------------------------------------------------------- truthful errors
@pytest.fixture
def good_checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "good.pt", MixSTE(**SMALL))


def _damaged(kind: str, good: bytes) -> bytes:
    if kind == "empty":
        return b""
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "random":
        return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if kind == "random-after-pickle-magic":  # looks like a legacy torch.save pickle, then garbage
        return b"\x80\x02" + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    if kind == "flipped-byte":  # damaged inside a tensor's bytes: torch.load alone would load it silently
        data = bytearray(good)
        data[len(data) // 2] ^= 0xFF
        return bytes(data)
    if kind == "text":
        return b"model: mixste\nepochs: 3\n"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [
        ("empty", "is empty (0 bytes), not a checkpoint"),
        ("truncated", "is truncated or corrupt"),
        ("random", "is not a checkpoint: neither a PyTorch zip archive nor a legacy PyTorch pickle"),
        ("random-after-pickle-magic", "is truncated or corrupt, or not a PyTorch checkpoint"),
        ("flipped-byte", "fails its CRC-32 check"),
        ("text", "is not a checkpoint"),
    ],
)
def test_damaged_files_say_what_they_are_not_allowlist(tmp_path, good_checkpoint, kind, phrase):
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(_damaged(kind, good_checkpoint.read_bytes()))
    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            load(path)
        msg = str(info.value)
        assert phrase in msg and str(path) in msg
        assert "allowlist" not in msg and "trust_checkpoint" not in msg and "arbitrary code" not in msg


def test_missing_folder_npz_and_non_dict_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint"):
        read_checkpoint(tmp_path)
    np.savez(tmp_path / "data.npz", positions_3d=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"zip archive without the data.pkl.*positions_3d.npy"):
        read_checkpoint(tmp_path / "data.npz")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor, expected a dict"):
        load_checkpoint(tmp_path / "tensor.pt")


def test_foreign_object_gets_the_allowlist_message_and_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    model = MixSTE(**SMALL)
    path = tmp_path / "evil.bin"
    torch.save({"model_pos": model.state_dict(), "extra": {"deep": [SystemPayload(marker)]}}, path)
    with pytest.raises(CheckpointError, match=r"outside the allowlist.*(posix|nt)\.system"):
        load_checkpoint(path)
    assert not marker.exists()


class SystemPayload:
    """Pickles as a call of os.system that would create `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_cuda_map_location_without_cuda_says_so(good_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", torch.device("cuda:0")):
        with pytest.raises(CheckpointError, match="CUDA is not available on this machine") as info:
            load_checkpoint(good_checkpoint, map_location=device)
        assert "allowlist" not in str(info.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CheckpointError, match=r"onto cuda:3: this machine has 1 CUDA device"):
        load_checkpoint(good_checkpoint, map_location="cuda:3")


def test_own_checkpoint_head_count_wins_and_conflicts_are_refused(tmp_path):
    model = MixSTE(**SMALL).eval()  # stores num_heads=4
    path = save_checkpoint(tmp_path / "own.pt", model)
    assert load_checkpoint(path).config.num_heads == 4
    assert load_checkpoint(path, num_heads=4).config.num_heads == 4  # agreeing value: fine
    with pytest.raises(CheckpointError, match=r"stores num_heads=4, but num_heads=8 was given") as info:
        load_checkpoint(path, num_heads=8)
    assert "upstream" in str(info.value)
    # Upstream files do not store it: num_heads applies, and a value that cannot fit says so.
    upstream = tmp_path / "up.bin"
    write_upstream_checkpoint(upstream, MixSTE(**SMALL, attn_backend="eager"))
    assert load_checkpoint(upstream, num_heads=2).config.num_heads == 2
    with pytest.raises(CheckpointError, match="num_heads=7 does not fit"):
        load_checkpoint(upstream, num_heads=7)
    with pytest.raises(CheckpointError, match="positive int"):
        load_checkpoint(upstream, num_heads=0)
