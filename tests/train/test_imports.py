"""The train/ modules import in any order: each one imported first in a fresh interpreter, and no import circle
among them (a circle held apart only by an import deferred into a function counts too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "train"
MODULES = sorted(f"train.{p.stem}" for p in TRAIN.glob("*.py") if p.stem != "__init__")


def _imports(path: Path) -> set[str]:
    """The train.* modules ``path`` imports anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # from train import _config
    return {m for m in found if m in MODULES}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_circle_finder_finds_a_deferred_circle() -> None:
    assert _circle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_among_train_modules() -> None:
    graph = {m: _imports(TRAIN / f"{m.removeprefix('train.')}.py") for m in MODULES}
    assert "train._defaults" in graph["train._checks"] and "train._defaults" in graph["train._config"]
    assert _circle(graph) is None, f"import circle: {' -> '.join(_circle(graph))}"


@pytest.mark.slow
@pytest.mark.parametrize("module", ["train._config", "train._checks", "train._defaults"])
def test_each_config_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
