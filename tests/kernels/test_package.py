"""The kernels package: its exports, and the layering (kernels depend on torch and triton only; the eager and sdpa
paths never import triton)."""

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import fastmixste.kernels as kernels


def test_exports_are_the_op_functions_after_submodule_import():
    spatial = importlib.import_module("fastmixste.kernels.spatial")
    temporal = importlib.import_module("fastmixste.kernels.temporal")
    for _ in range(2):
        assert kernels.spatial_attention is spatial.spatial_attention
        assert kernels.temporal_attention is temporal.temporal_attention


def test_kernels_import_only_torch_triton_and_the_standard_library():
    files = sorted(Path(kernels.__file__).parent.glob("*.py"))
    assert {"_common.py", "reference.py", "report.py", "spatial.py", "temporal.py"} <= {f.name for f in files}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue  # relative imports stay inside the package
            for root in roots:
                assert root in ("torch", "triton") or root in sys.stdlib_module_names, f"{path.name} imports {root}"


def test_eager_and_sdpa_never_import_triton():
    """A forward with eager and sdpa, and the backend table on a CPU, leave triton unimported (it may be absent)."""
    code = (
        "import sys, torch\n"
        "from fastmixste import MixSTE, available_backends\n"
        "m = MixSTE(num_frame=9, embed_dim_ratio=32, depth=1, num_heads=2, attn_backend='eager').eval()\n"
        "x = torch.randn(1, 9, 17, 2)\n"
        "torch.testing.assert_close(m(x), m.set_attn_backend('sdpa')(x))\n"
        "m.set_attn_backend('auto')(x)\n"
        "assert available_backends('cpu', head_dim=16, num_joints=17)['triton']\n"
        "loaded = sorted(k for k in sys.modules if k == 'triton' or k.startswith('triton.'))\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTMIXSTE_ATTN_BACKEND")}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
