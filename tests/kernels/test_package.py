"""The kernels package exposes the op functions, also after their submodules have been imported."""

import importlib

import fastmixste.kernels as kernels


def test_lazy_exports_stay_functions_after_submodule_import():
    importlib.import_module("fastmixste.kernels.spatial_attention")
    importlib.import_module("fastmixste.kernels.temporal_attention")
    for _ in range(2):
        assert callable(kernels.spatial_attention) and kernels.spatial_attention.__name__ == "spatial_attention"
        assert callable(kernels.temporal_attention) and kernels.temporal_attention.__name__ == "temporal_attention"
