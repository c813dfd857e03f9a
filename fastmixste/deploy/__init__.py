"""Deployment: export to ONNX / AOTInductor (``python -m fastmixste.deploy.export``) and streaming lifting."""
