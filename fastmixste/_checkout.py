"""Binds a source checkout's top-level ``kernels/`` folder as ``fastmixste.kernels``.

Installs map the folder there (setup.py ``package_dir``). From a plain checkout (``PYTHONPATH=.``) or a second git
work tree nothing does, and the name would resolve to nothing, or to another checkout's editable install.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path


class _CheckoutKernels(importlib.abc.MetaPathFinder):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != "fastmixste.kernels":
            return None
        return importlib.util.spec_from_file_location(
            name, self.folder / "__init__.py", submodule_search_locations=[str(self.folder)]
        )


def bind() -> None:
    here = Path(__file__).resolve().parent
    folder = here.parent / "kernels"
    # Only our own checkout: no installed fastmixste/kernels, setup.py beside the package, our files in kernels/.
    if (here / "kernels").is_dir() or not (here.parent / "setup.py").is_file():
        return
    if not (folder / "_common.py").is_file():
        return
    if not any(isinstance(f, _CheckoutKernels) for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutKernels(folder))


bind()
