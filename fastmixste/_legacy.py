"""The module paths of release 0.1's flat layout, kept importable for one release.

``import fastmixste.metrics`` (now ``fastmixste.eval.metrics``) gives the new module itself, with a
DeprecationWarning naming the new path; ``python -m`` takes the new paths only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

#: old module name -> new module name (``fastmixste.model`` is now the model package and keeps its names).
MOVED: dict[str, str] = {
    f"fastmixste.{old}": f"fastmixste.{new}"
    for old, new in {
        "attention": "model.attention", "config": "model.config", "checkpoint": "model.checkpoint",
        "recompute": "model.recompute", "losses": "eval.losses", "lean": "model.fused",
        "corruption": "data.corruption", "skeleton": "data.skeleton", "surface": "data.surface",
        "video": "video.decode", "detectors": "video.detectors", "keypoints": "video.keypoints",
        "render": "video.render", "trajectory": "video.trajectory",
        "export": "deploy.export", "stream": "deploy.stream",
        "metrics": "eval.metrics", "evaluation": "eval.evaluation", "plots": "eval.plots",
        "profiling": "perf.profiling", "memory": "perf.memory",
        "_io": "io.files", "safeload": "io.safeload", "cli": "io.cli",
    }.items()
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module: types.ModuleType) -> None:
        # The module is the new one, already executed; importlib has bound it under the old name too.
        pass


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())


install()
