"""Registers the bad-input matrix's fixtures (defined in common.py beside the inputs they build)."""

from .common import inputs, runner, trained_run  # noqa: F401
