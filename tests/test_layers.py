"""The package's layers, read from the import statements of every module (lazy imports inside functions included).

fastmixste/ is the library: it never imports the applications (train/, benchmarks/). Inside it, each layer imports
only the layers listed for it below, so the tree reads as README's architecture diagram; kernels/ (tested in
tests/kernels/test_package.py) imports torch and triton only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastmixste"

#: layer -> the fastmixste layers it may import (besides itself and fastmixste.kernels).
ALLOWED: dict[str, set[str]] = {
    "io": set(),
    "model": {"io"},
    "data": {"io"},
    "eval": {"io", "data", "model"},
    "video": {"io", "data", "model"},
    "perf": {"io", "model"},
    "deploy": {"io", "data", "model", "video"},
}
TOP_LEVEL = {"__init__", "_checkout", "_legacy"}  # the package's front door: it may import any layer


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved), top level and inside functions."""
    name = _module_name(path)
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    text = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import x`` / ``from fastmixste import x``: x may be a module
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "fastmixste" and len(parts) > 1 else None


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "weights" not in p.parts)


def test_every_module_belongs_to_a_layer():
    stray = [str(p.relative_to(ROOT)) for p in MODULES
             if p.parent == PACKAGE and p.stem not in TOP_LEVEL]  # fmt: skip
    assert not stray, f"modules outside the layer folders: {stray}"
    assert {p.parent.name for p in MODULES if p.parent != PACKAGE} == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path):
    apps = sorted(m for m in imported_modules(path) if m.split(".")[0] in ("train", "benchmarks", "tests"))
    assert not apps, f"{path.relative_to(ROOT)} imports the applications: {apps}"
    if path.parent == PACKAGE:
        return
    layer = path.parent.name
    allowed = ALLOWED[layer] | {layer, "kernels"}
    wrong = sorted(m for m in imported_modules(path) if _layer(m) and _layer(m) not in allowed
                   and m != "fastmixste")  # fmt: skip
    assert not wrong, f"{path.relative_to(ROOT)} ({layer}) imports {wrong}; {layer} may import {sorted(allowed)}"


def test_the_rule_sees_relative_and_lazy_imports():
    """The reader finds what the rule needs: relative imports resolved, imports inside functions, from-imports."""
    src = ("from ..video import decode\n\n"
           "def f():\n    from fastmixste.eval.metrics import mpjpe\n    import train.run\n")
    found = imported_modules(PACKAGE / "model" / "probe.py", source=src)
    assert {"fastmixste.video", "fastmixste.video.decode", "fastmixste.eval.metrics", "train.run"} <= found


def test_the_flat_layout_paths_still_import_for_one_release():
    """``fastmixste.metrics`` (0.1) is ``fastmixste.eval.metrics`` itself, with a DeprecationWarning naming the move;
    every old path maps to a module that exists."""
    import importlib
    import importlib.util
    import sys
    import warnings

    from fastmixste._legacy import MOVED

    for old, new in MOVED.items():
        assert importlib.util.find_spec(new) is not None, (old, new)
    sys.modules.pop("fastmixste.metrics", None)
    with pytest.warns(DeprecationWarning, match="fastmixste.metrics moved to fastmixste.eval.metrics"):
        old = importlib.import_module("fastmixste.metrics")
    assert old is importlib.import_module("fastmixste.eval.metrics")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastmixste.checkpoint import load_checkpoint  # the 0.1 spelling of a documented import
    from fastmixste import load_checkpoint as current
    assert load_checkpoint is current


def test_bias_gelu_still_resolves_from_its_old_module_for_one_release():
    """bias + GELU moved from kernels/block.py to kernels/gelu.py: the 0.1 names resolve to the new objects with a
    DeprecationWarning naming the move; anything else block lacks is still an AttributeError."""
    from fastmixste.kernels import block, gelu

    for name in ("bias_gelu", "bias_gelu_fwd", "bias_gelu_bwd", "check_gelu"):
        with pytest.warns(DeprecationWarning, match=f"kernels.block.{name} moved to fastmixste.kernels.gelu.{name}"):
            assert getattr(block, name) is getattr(gelu, name)
    with pytest.raises(AttributeError, match="no attribute 'gelu_bias'"):
        block.gelu_bias  # noqa: B018
