"""The kernels package exposes the op functions, whatever was imported first."""

import importlib

import fastmixste.kernels as kernels


def test_exports_are_the_op_functions_after_submodule_import():
    spatial = importlib.import_module("fastmixste.kernels.spatial")
    temporal = importlib.import_module("fastmixste.kernels.temporal")
    for _ in range(2):
        assert kernels.spatial_attention is spatial.spatial_attention
        assert kernels.temporal_attention is temporal.temporal_attention
