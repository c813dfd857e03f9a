"""Where ``benchmarks.gpu_check`` finds the fused ops, their eager references and the inputs to check them on.

One place, so that an op added to the kernel package is checked without editing gpu_check:

- **Discovery**: every module of ``fastmixste.kernels`` is imported (private ``_*`` modules and the tooling modules
  in ``_TOOLING`` excepted); each public function ``name`` that has a reference ``name_ref`` (in the same module or
  in any other kernel module, so references may move) is a fused op.
- **Inputs**: a kernel module may export ``parity_cases()`` returning a list of dicts (protocol below); those are
  used as they are. Otherwise the builders in ``_BUILDERS`` (the attention ops) are used. An op with neither is
  listed as found but without inputs, so a report says so instead of passing silently.

Protocol of one ``parity_cases()`` entry (plain dicts, so kernel modules need not import this file)::

    {"op": "fused_add_layernorm",            # the public function's name
     "fn": fused_add_layernorm, "ref": fused_add_layernorm_ref,
     "inputs": make_inputs,                  # (device, dtype, generator | None) -> (args tuple, kwargs dict);
                                             # must work on device "meta" (zeros/empty there)
     "grad_args": (0, 1),                    # positions of the tensor args to differentiate
     "batch_args": (0, 1),                   # args whose dim 0 is the batch (references run in batch chunks)
     "ref_chunk": 8,                         # batch elements per reference chunk (None: all at once)
     "kernels": 2,                           # Triton kernels it compiles per dtype (for the time estimate)
     "label": "B128-T243 (82,944 programs)",
     "programs": 82944}                      # largest launch grid of the case (None if unknown)

The adapter below is the only code that knows where the attention ops and references live; if the kernel layer
moves them, fix ``fused_function`` / ``reference_function`` here.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

KERNEL_PACKAGE = "fastmixste.kernels"
#: Kernel-package modules that hold tooling, not ops.
_TOOLING = frozenset({"memory", "report"})
#: Modules the plan names when they are absent (the fused block is being added).
EXPECTED_MODULES: tuple[str, ...] = ("spatial", "temporal", "block", "gelu", "cross")

#: Full-scale attention shape: the paper's training batch at 243 frames, MixSTE's width.
FULL_B, FULL_T, JOINTS, EMBED, HEADS = 128, 243, 17, 512, 8
#: HoT's pruned length: the recovery cross-attention attends FULL_T queries over these kept frames.
HOT_KEPT = 81
#: CUDA grid axes 1 and 2 stop here; the fused ops put everything on axis 0 and must go past it.
GRID_YZ_LIMIT = 65_535


@dataclass
class ParityCase:
    """One fused op at one shape: the function, its eager reference and how to make its inputs."""

    op: str
    module: str
    fn: Callable[..., Any]
    ref: Callable[..., Any]
    make_inputs: Callable[[torch.device, torch.dtype, torch.Generator | None], tuple[tuple, dict]]
    grad_args: tuple[int, ...] = (0,)
    batch_args: tuple[int, ...] = (0,)
    ref_chunk: int | None = None
    kernels: int = 2
    label: str = ""
    programs: Callable[[torch.dtype], int | None] | int | None = None
    dtypes: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16, torch.float32)

    def programs_for(self, dtype: torch.dtype) -> int | None:
        return self.programs(dtype) if callable(self.programs) else self.programs


@dataclass
class Discovery:
    """What the kernel package holds: modules, ops with references, ops without inputs, import failures."""

    modules: list[str] = field(default_factory=list)
    cases: list[ParityCase] = field(default_factory=list)
    without_inputs: list[str] = field(default_factory=list)
    import_errors: dict[str, str] = field(default_factory=dict)

    @property
    def missing_modules(self) -> list[str]:
        return [m for m in EXPECTED_MODULES if m not in self.modules and m not in self.import_errors]

    def lines(self) -> list[str]:
        """Human-readable summary for the plan."""
        out = [f"kernel modules: {', '.join(self.modules) or 'none'}"]
        ops = sorted({c.op for c in self.cases})
        out.append(f"fused ops with parity inputs: {', '.join(ops) or 'none'}")
        for op in self.without_inputs:
            out.append(
                f"fused op {op}: found with its reference but no parity inputs (add parity_cases() to its module)"
            )
        for name in self.missing_modules:
            out.append(f"kernels/{name}.py: absent in this build (no {name} ops to check)")
        for name, err in self.import_errors.items():
            out.append(f"kernels/{name}.py: failed to import: {err}")
        return out


# ----------------------------------------------------------------------------------------------------------------
# Adapter: the attention ops and their references
# ----------------------------------------------------------------------------------------------------------------


def fused_function(name: str) -> Callable[..., Any]:
    """The public fused function ``fastmixste.kernels.<name>`` (e.g. spatial_attention), or the kernel module's own
    (ops not re-exported by the package)."""
    pkg = importlib.import_module(KERNEL_PACKAGE)
    if hasattr(pkg, name):
        return getattr(pkg, name)
    for mod in _import_modules()[0].values():
        if callable(getattr(mod, name, None)):
            return getattr(mod, name)
    raise AttributeError(f"no fused op {name!r} in {KERNEL_PACKAGE} or its modules")


def reference_function(name: str, modules: dict[str, Any] | None = None) -> Callable[..., Any] | None:
    """``<name>_ref`` from whichever kernel module defines it (or the package itself); None when none does."""
    ref_name = f"{name}_ref"
    pkg = importlib.import_module(KERNEL_PACKAGE)
    if hasattr(pkg, ref_name):
        return getattr(pkg, ref_name)
    for mod in (modules or _import_modules()[0]).values():
        if hasattr(mod, ref_name):
            return getattr(mod, ref_name)
    return None


def _import_modules() -> tuple[dict[str, Any], dict[str, str]]:
    pkg = importlib.import_module(KERNEL_PACKAGE)
    mods: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in _TOOLING:
            continue
        try:
            mods[info.name] = importlib.import_module(f"{KERNEL_PACKAGE}.{info.name}")
        except Exception as err:  # a broken module is reported by the plan, not fatal to the other checks
            errors[info.name] = f"{type(err).__name__}: {err}"
    return mods, errors


def qkv_inputs(
    B: int, T: int, C: int = EMBED, H: int = HEADS, N: int = JOINTS
) -> Callable[[torch.device, torch.dtype, torch.Generator | None], tuple[tuple, dict]]:
    """Input maker of the attention ops: ((B, T, N, 3*C) qkv, H), unit-scale random values (empty on meta)."""

    def make(device: torch.device, dtype: torch.dtype, gen: torch.Generator | None) -> tuple[tuple, dict]:
        shape = (B, T, N, 3 * C)
        if torch.device(device).type == "meta":
            return (torch.empty(shape, device=device, dtype=dtype), H), {}
        # Drawn in fp32 and rounded once, so every dtype sees unit-scale values (the CPU tests' inputs).
        qkv = torch.randn(shape, device=device, generator=gen, dtype=torch.float32).to(dtype)
        return (qkv, H), {}

    return make


def _spatial_programs(B: int, T: int) -> Callable[[torch.dtype], int | None]:
    def count(dtype: torch.dtype) -> int | None:
        mod = importlib.import_module(f"{KERNEL_PACKAGE}.spatial")
        block_r = getattr(mod, "_block_r", None)
        rows = block_r(JOINTS, dtype) if block_r else getattr(mod, "BLOCK_R", 64)
        return math.ceil(B * T / (rows // JOINTS)) * HEADS

    return count


def _temporal_programs(B: int, T: int) -> Callable[[torch.dtype], int | None]:
    def count(dtype: torch.dtype) -> int | None:
        mod = importlib.import_module(f"{KERNEL_PACKAGE}.temporal")
        plan = getattr(mod, "launch_plan", None)
        if plan is None:
            return None
        shape = (B, T, JOINTS, 3 * EMBED)
        grids = [grid for backward in (False, True) for _, grid in plan(shape, HEADS, dtype, backward)]
        return max(math.prod(grid) for grid in grids) if grids else None

    return count


def _block_inputs(B: int, T: int, width: int, gelu: bool):
    """Input maker of the fused block ops at the model's shape: (B, T, N, C) rows, unit-scale values."""

    def make(device: torch.device, dtype: torch.dtype, gen: torch.Generator | None) -> tuple[tuple, dict]:
        meta = torch.device(device).type == "meta"

        def rand(*shape: int) -> torch.Tensor:
            if meta:
                return torch.empty(shape, device=device, dtype=dtype)
            return torch.randn(shape, device=device, generator=gen, dtype=torch.float32).to(dtype)

        if gelu:  # bias_gelu(u, b): fc1's output without its bias, and the bias
            return (rand(B, T, JOINTS, width), rand(width)), {}
        keep = 0.9  # DropPath: one keep/drop draw per frame, as a spatial block's
        if meta:
            mask = torch.empty((B, T, 1, 1), device=device, dtype=dtype)
        else:
            mask = (torch.rand((B, T, 1, 1), device=device, generator=gen) < keep).to(dtype)
        w1, w2 = (1 + 0.1 * rand(width) for _ in range(2))
        # two norms (the post-norm folded into the next block's pre-norm) with fc2's bias as y_bias: the heaviest
        # variant the model launches (eps, then h_dtype None: w1's dtype, as for the references)
        r, y = rand(B, T, JOINTS, width), rand(B, T, JOINTS, width)
        return (r, y, mask, keep, w1, rand(width), w2, rand(width), 1e-6, None, rand(width)), {}

    return make


def _block_programs(module: str, op: str, shape: tuple[int, ...]) -> Callable[[torch.dtype], int | None]:
    """The largest forward grid of a block op at ``shape`` (its backward runs a few persistent programs per SM)."""

    def count(dtype: torch.dtype) -> int | None:
        plan = getattr(importlib.import_module(f"{KERNEL_PACKAGE}.{module}"), "launch_plan", None)
        if plan is None:
            return None
        kwargs = {"y_dtype": dtype, "two_norms": True, "y_bias": True} if op == "residual_layernorm" else {}
        grids = [grid for _, grid in plan(shape, dtype, False, **kwargs)]
        return max(math.prod(grid) for grid in grids) if grids else None

    return count


def _block_case(op: str, module: str, ref: Callable[..., Any]) -> ParityCase:
    B, T = FULL_B, FULL_T
    gelu = op == "bias_gelu"
    width = 2 * EMBED if gelu else EMBED
    return ParityCase(
        op=op,
        module=module,
        fn=fused_function(op),
        ref=ref,
        make_inputs=_block_inputs(B, T, width, gelu),
        grad_args=(0, 1) if gelu else (0, 1, 4, 5, 6, 7, 10),
        batch_args=(0,) if gelu else (0, 1, 2),
        ref_chunk=16,
        kernels=2,
        label=f"B{B}-T{T}-N{JOINTS}-C{width}",
        programs=_block_programs(module, op, (B, T, JOINTS, width)),
        # bf16 (what autocast feeds them) and fp32: fp16 runs the same code apart from the conversions and is checked
        # on every CPU test run in the Triton interpreter, which cannot run bf16; this keeps the plan in its budget.
        dtypes=(torch.bfloat16, torch.float32),
    )


def _attention_case(op: str, module: str, ref: Callable[..., Any]) -> ParityCase:
    B, T = FULL_B, FULL_T
    spatial = op == "spatial_attention"
    return ParityCase(
        op=op,
        module=module,
        fn=fused_function(op),
        ref=ref,
        make_inputs=qkv_inputs(B, T),
        grad_args=(0,),
        batch_args=(0,),
        # float64 temporal scores of 8 sequences: 8 * 17 * 8 * 243^2 * 8 B = 0.6 GB per buffer.
        ref_chunk=16 if spatial else 8,
        kernels=2 if spatial else 3,
        label=f"B{B}-T{T}-N{JOINTS}-C{EMBED}-H{HEADS}",
        programs=_spatial_programs(B, T) if spatial else _temporal_programs(B, T),
        # bf16 (what autocast feeds them) and fp32 (the IEEE / 3xTF32 dots), as the block ops: fp16 runs the same
        # tiles with the other 16-bit MMA and is checked against float64 and the eager fp16 error on every CPU test
        # run in the Triton interpreter; the GPU check's 420 s cannot hold all three dtypes of every op.
        dtypes=(torch.bfloat16, torch.float32),
    )


def cross_inputs(
    B: int, TQ: int, TK: int, C: int = EMBED, H: int = HEADS, N: int = JOINTS
) -> Callable[[torch.device, torch.dtype, torch.Generator | None], tuple[tuple, dict]]:
    """Input maker of the cross op as HoT calls it: (q, k, v, H) with one (1, Tq, 1, C) query set broadcast over the
    batch and the joints, k and v (B, Tk, N, C); unit-scale random values (empty on meta)."""

    def make(device: torch.device, dtype: torch.dtype, gen: torch.Generator | None) -> tuple[tuple, dict]:
        shapes = [(1, TQ, 1, C), (B, TK, N, C), (B, TK, N, C)]
        if torch.device(device).type == "meta":
            return (*(torch.empty(s, device=device, dtype=dtype) for s in shapes), H), {}
        return (*(torch.randn(s, device=device, generator=gen).to(dtype) for s in shapes), H), {}

    return make


def _cross_programs(B: int, TQ: int, TK: int) -> Callable[[torch.dtype], int | None]:
    def count(dtype: torch.dtype) -> int | None:
        plan = getattr(importlib.import_module(f"{KERNEL_PACKAGE}.cross"), "launch_plan", None)
        if plan is None:
            return None
        q, kv = (1, TQ, 1, EMBED), (B, TK, JOINTS, EMBED)
        # As on a GPU: the interpreter stacks G sequences per program, a GPU runs one.
        plans = [cfg_grid for backward in (False, True) for cfg_grid in plan(q, kv, HEADS, dtype, backward)]
        return max(math.prod(grid) * cfg.constexpr("G") for cfg, grid in plans) if plans else None

    return count


def _cross_case(op: str, module: str, ref: Callable[..., Any]) -> ParityCase:
    B, TQ, TK = FULL_B, FULL_T, HOT_KEPT
    return ParityCase(
        op=op,
        module=module,
        fn=fused_function(op),
        ref=ref,
        make_inputs=cross_inputs(B, TQ, TK),
        grad_args=(0, 1, 2),
        batch_args=(1, 2),  # q is broadcast: the check sums its reference gradient over the batch chunks
        ref_chunk=16,
        kernels=3,
        label=f"HoT recovery B{B}-Tq{TQ}-Tk{TK}-N{JOINTS}-C{EMBED}-H{HEADS}, q broadcast",
        programs=_cross_programs(B, TQ, TK),
        # bf16 only (HoT trains and runs under autocast): the kernels are the temporal op's, whose fp32 path is
        # checked at full scale above; the cross-specific code (separate k/v, Tq != Tk, the broadcast dQ sum) is
        # checked in fp32 and fp16 on every CPU test run in the interpreter.
        dtypes=(torch.bfloat16,),
    )


#: Inputs for the ops that do not bring their own ``parity_cases()``: op name -> case builder(op, module, ref).
_BUILDERS: dict[str, Callable[[str, str, Callable[..., Any]], ParityCase]] = {
    "spatial_attention": _attention_case,
    "temporal_attention": _attention_case,
    "cross_attention": _cross_case,
    "residual_layernorm": _block_case,
    "bias_gelu": _block_case,
}


def _from_protocol(entry: dict[str, Any], module: str) -> ParityCase:
    required = ("op", "fn", "ref", "inputs")
    missing = [k for k in required if k not in entry]
    if missing:
        raise ValueError(f"kernels/{module}.py parity_cases(): entry lacks {missing} (needs {required})")
    return ParityCase(
        op=entry["op"],
        module=module,
        fn=entry["fn"],
        ref=entry["ref"],
        make_inputs=entry["inputs"],
        grad_args=tuple(entry.get("grad_args", (0,))),
        batch_args=tuple(entry.get("batch_args", (0,))),
        ref_chunk=entry.get("ref_chunk"),
        kernels=int(entry.get("kernels", 2)),
        label=str(entry.get("label", "")),
        programs=entry.get("programs"),
        dtypes=tuple(entry.get("dtypes", (torch.bfloat16, torch.float16, torch.float32))),
    )


def discover() -> Discovery:
    """Every fused op of the kernel package with its reference and parity inputs (see the module docstring)."""
    mods, errors = _import_modules()
    found = Discovery(modules=sorted(mods), import_errors=errors)
    for name, mod in sorted(mods.items()):
        provided = getattr(mod, "parity_cases", None)
        covered: set[str] = set()
        if callable(provided):
            for entry in provided():
                case = _from_protocol(entry, name)
                found.cases.append(case)
                covered.add(case.op)
        public = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for attr in public:
            fn = getattr(mod, attr, None)
            if attr.endswith("_ref") or attr in covered or not callable(fn) or isinstance(fn, type):
                continue
            if getattr(fn, "__module__", None) != mod.__name__:
                continue  # re-exported from elsewhere (torch, typing, ...)
            ref = reference_function(attr, mods)
            if ref is None:
                continue
            if attr in _BUILDERS:
                found.cases.append(_BUILDERS[attr](attr, name, ref))
            else:
                found.without_inputs.append(f"{attr} ({name}.py)")
    return found
