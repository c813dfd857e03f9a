"""What every fused op module shares: support checks, refusals, buffers, launch configurations, AOT cases.

Torch, triton-free: the dispatch in ``fastmixste.model.attention`` imports this module on every device, and triton is
imported only by the op modules themselves (``spatial.py``, ``temporal.py``, ...), when the triton path is asked for.

The op template (every op module follows it; a new op copies it):

1. Private ``@triton.jit`` kernels ``_<op>_fwd_kernel`` / ``_<op>_bwd[_<part>]_kernel``.
2. ``launch_plan(shape, ..., backward)``: every (:class:`LaunchConfig`, grid) the launchers run for a problem, in
   launch order; the launchers use nothing else, and ``report_cases()`` compiles what it returns over a grid of
   shapes that reaches every configuration (tests/kernels/test_report.py checks that).
3. Launchers ``<op>_fwd`` / ``<op>_bwd``, each in this order: the op's checks, a function ``_refusals(*inputs,
   num_heads, backward) -> (sizes, refusals)`` run by :func:`check` (input errors raise TypeError or ValueError,
   e.g. from :func:`check_qkv`; then every :class:`Refusal` is raised by :func:`raise_refusals`) -> empty input
   (return the empty result) -> :func:`device_guard` -> :func:`launch`. Buffers come from :func:`new_buffer`.
4. Registration: ``torch.library.custom_op`` + ``register_fake`` + ``register_autograd`` (see the note below),
   plus FLOP formulas.
5. The functional ``<op>(...)`` runs the same checks for the forward and, when autograd will need it, the backward,
   so an unsupported backward fails before the forward runs (:func:`needs_backward`). The module's
   ``unsupported_reasons(...)`` answers without raising (:func:`unsupported_reasons` over the same ``_refusals``);
   dispatch asks it instead of copying limits. The eager reference lives in ``reference.py``.

Registration. ``torch.library.custom_op`` (opaque to tracing), not ``triton_op`` + ``wrap_triton``: under
TRITON_INTERPRET=1, triton_op's functional decomposition runs the interpreted kernel on fake tensors and fails, so
neither opcheck, torch.export nor torch.compile could be checked on a CPU. A custom_op with a fake impl passes all
three under the interpreter and on a GPU; Inductor sees it as one opaque call, and could not fuse into these
hand-tiled kernels anyway.

Names, the same in every kernel: pointers ``<tensor>_ptr`` (``qkv_ptr``, ``q_ptr``, ``o_ptr``, ``do_ptr``,
``dqkv_ptr``, ``dq_ptr``, ``lse_ptr``, ``delta_ptr``); strides ``stride_<tensor>_<dim>`` with dims b, t, n (the
channel dim has unit stride); ``scale`` (fp32, as given: the log2(e) factor is applied in the kernel); problem
sizes ``T`` (``TQ`` / ``TK`` where queries and keys differ in length), ``N``, ``H`` (never specialised, so one
binary serves every shape); constexprs ``D`` (head dim), ``BLOCK_Q`` / ``BLOCK_K`` (query /
key rows of a tile), ``BLOCK_R`` (rows of a tile whose queries are its keys), ``BLOCK_D`` (head-dim slice),
``PRECISION`` (``tl.dot`` input precision), ``G`` (sequences per program). Tile variables follow FLA: ``i_``
program indices, ``o_`` offsets, ``m_`` masks, ``p_`` pointers, ``b_`` blocks (values), ``s_`` sequence ids.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

#: Head dimensions the fused kernels are compiled for (tl.dot needs K >= 16 and a power of two).
SUPPORTED_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)
#: Element types the fused kernels accept.
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
#: Triton's name of each element type, for signatures of ahead-of-time compiled kernels.
TRITON_DTYPES: dict[torch.dtype, str] = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def interpreter_active() -> bool:
    """True when TRITON_INTERPRET=1: kernels then run on the CPU, one program after another."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_unavailable_reasons(device: torch.device | str, dtype: torch.dtype) -> list[str]:
    """Reasons the fused kernels cannot run on ``device`` in ``dtype``; empty when they can.

    CUDA runs compiled kernels. On the CPU they run only in the Triton interpreter
    (TRITON_INTERPRET=1), which computes bf16 arithmetic wrongly without saying so: refused.
    The meta device runs no kernel and is accepted (shapes, FLOPs and saved bytes at full scale).
    """
    device = torch.device(device)
    reasons: list[str] = []
    if not triton_installed():
        reasons.append("triton is not installed (pip install triton; Linux only)")
    if dtype not in SUPPORTED_DTYPES:
        reasons.append(f"dtype {dtype} is not supported (expected one of float32, float16, bfloat16)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reasons.append("CUDA device requested but torch.cuda.is_available() is False")
    elif device.type == "cpu":
        if not interpreter_active():
            reasons.append(
                "device is cpu: the Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 to run them "
                "(slowly) in the Triton interpreter"
            )
        elif dtype == torch.bfloat16:
            reasons.append("the Triton interpreter computes bfloat16 arithmetic incorrectly; use float32/float16")
    elif device.type != "meta":
        reasons.append(f"device type {device.type!r} is not supported (expected cuda, or cpu with TRITON_INTERPRET=1)")
    return reasons


# ----------------------------------------------------------------------------------------------------------------
# Checks and refusals
# ----------------------------------------------------------------------------------------------------------------


def check_4d(t: Any, name: str, layout: str, op: str) -> None:
    """TypeError unless ``t`` is a tensor, ValueError unless it is 4-D (``layout`` names its dims)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{op}: {name} must be 4-D {layout}, got shape {tuple(t.shape)}")


def check_heads(num_heads: Any, op: str) -> None:
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"{op}: num_heads must be a positive int, got {num_heads!r}")


def check_qkv(qkv: torch.Tensor, num_heads: int, op: str) -> tuple[int, int, int, int, int]:
    """Input checks of a (B, T, N, 3*C) qkv tensor's structure; returns (B, T, N, H, D).

    Raises TypeError/ValueError that say what was expected and what came. Size-0 dims are valid (empty input).
    Whether the kernels support the dtype and head dim is a refusal (:func:`support_refusals`), not a check here.
    """
    check_4d(qkv, "qkv", "(B, T, N, 3*C)", op)
    check_heads(num_heads, op)
    B, T, N, C3 = qkv.shape
    if C3 % (3 * num_heads) != 0:
        raise ValueError(
            f"{op}: last dim of qkv must be 3 * num_heads * head_dim; got {C3} with num_heads={num_heads}"
        )
    if qkv.stride(-1) != 1 and qkv.numel() > 0:
        raise ValueError(f"{op}: qkv must be contiguous in its last dim, got strides {qkv.stride()}")
    return B, T, N, num_heads, C3 // (3 * num_heads)


@dataclass(frozen=True)
class Refusal:
    """One reason an op cannot run an input: an element type it lacks (TypeError), a limit of its kernels
    (ValueError) or of the machine (RuntimeError, e.g. a CPU without TRITON_INTERPRET=1)."""

    message: str
    error: type[Exception] = ValueError


def support_refusals(dtype: torch.dtype, head_dim: int, what: str = "qkv") -> list[Refusal]:
    """Refusals every op shares: element types and head dims the kernels are not built for (``what``: the inputs'
    name in the message)."""
    refusals = []
    if dtype not in SUPPORTED_DTYPES:
        refusals.append(Refusal(f"{what} dtype must be float32, float16 or bfloat16, got {dtype}", TypeError))
    if head_dim not in SUPPORTED_HEAD_DIMS:
        refusals.append(Refusal(f"head_dim must be one of {SUPPORTED_HEAD_DIMS}, got head_dim {head_dim}"))
    return refusals


def resolve_scale(op: str, scale: float | None, head_dim: int) -> float:
    """The attention ops' softmax scale: ``head_dim ** -0.5`` by default, else ``scale`` as a finite float."""
    if scale is None:
        return head_dim**-0.5
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"{op}: scale must be a finite float, got {scale}")
    return scale


def device_refusals(t: torch.Tensor) -> list[Refusal]:
    """The machine-level refusals for a tensor (see :func:`triton_unavailable_reasons`), as RuntimeError."""
    dtype = t.dtype if t.dtype in SUPPORTED_DTYPES else torch.float32  # an unsupported dtype is refused already
    return [Refusal(r, RuntimeError) for r in triton_unavailable_reasons(t.device, dtype)]


def raise_refusals(op: str, refusals: Sequence[Refusal]) -> None:
    """Raise the first refusal's error type with every reason, or return when there is none."""
    if refusals:
        what = "cannot run the Triton kernel here" if refusals[0].error is RuntimeError else "unsupported input"
        raise refusals[0].error(f"{op}: {what}: " + "; ".join(r.message for r in refusals))


def reasons_of(check: Any, *args: Any, **kwargs: Any) -> list[str]:
    """``unsupported_reasons`` from a raising check: its input errors and refusals as strings (empty: it can run)."""
    try:
        refusals = check(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        return [str(exc)]
    return [r.message for r in refusals]


def tensor_arg(t: object, what: str, op: str) -> torch.Tensor:
    """``t`` when it is a tensor, else a TypeError naming the op and the argument."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {what} must be a torch.Tensor, got {type(t).__name__}")
    return t


def dtype_refusals(named: Sequence[tuple[str, torch.dtype]]) -> list[Refusal]:
    """Element types the kernels are not built for, as TypeError refusals (``named``: (argument, dtype) pairs)."""
    return [
        Refusal(f"{what} dtype must be float32, float16 or bfloat16, got {dtype}", TypeError)
        for what, dtype in named
        if dtype not in SUPPORTED_DTYPES
    ]


def machine_refusals(like: torch.Tensor, dtypes: Sequence[torch.dtype]) -> list[Refusal]:
    """:func:`device_refusals` for every element type an op reads or writes (on ``like``'s device), each reason
    once."""
    refusals: dict[str, Refusal] = {}
    for dtype in dict.fromkeys(d for d in dtypes if d in SUPPORTED_DTYPES):
        for refusal in device_refusals(like.new_empty(0, dtype=dtype)):
            refusals.setdefault(refusal.message, refusal)
    return list(refusals.values())


#: An attention op's checks: ``(*inputs, num_heads, backward) -> (sizes, refusals)``; input errors raise
#: TypeError/ValueError, every reason the kernels cannot run a valid input is a :class:`Refusal`.
Checks = Callable[..., tuple[tuple[int, ...], list[Refusal]]]


def check(op: str, checks: Checks, *args: Any) -> tuple[int, ...]:
    """Run an op's ``checks(*args)``: raise its input errors and refusals (:func:`raise_refusals`), else return the
    sizes it read (the launchers' and the functional's first step)."""
    sizes, refusals = checks(*args)
    raise_refusals(op, refusals)
    return sizes


def unsupported_reasons(checks: Checks, *args: Any) -> list[str]:
    """What an op module's ``unsupported_reasons`` returns: ``checks(*args)``'s input errors and refusals as strings,
    empty when the op can run; never raises."""
    return reasons_of(lambda *a: checks(*a)[1], *args)


def needs_backward(*tensors: Any) -> bool:
    """Whether autograd will call an op's backward: grad mode is on and some input tensor requires grad."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensor's (no-op off CUDA)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def unit_channel_stride(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or a contiguous copy where its channel (last) dim has no unit stride: the kernels honour any
    strides on the other dims (0 included), and read the channels of a row as one contiguous slice."""
    return t if t.stride(-1) == 1 else t.contiguous()


def as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in a kernel pointer's element type: itself, or a cast (lossless where launchers use it: a float32 copy
    of 16-bit values, or a value already in that type)."""
    return t if t.dtype == dtype else t.to(dtype)


#: Persistent programs of a backward that sums partial gradients in the Triton interpreter (which runs programs one
#: by one; more than one tile per program keeps the persistent loop exercised). A GPU runs 4 per SM.
CPU_PROGRAMS = 4


def backward_programs(device: torch.device) -> int:
    """Cap on a partial-sum backward's persistent programs: 4 per SM on a GPU (enough to fill it, few enough that the
    (programs, C) partial buffer stays small), :data:`CPU_PROGRAMS` in the interpreter."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return CPU_PROGRAMS


def new_buffer(shape: Sequence[int], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every buffer a launcher hands to a kernel (outputs, gradients, statistics) comes from here, uninitialised.

    Tests replace it with a NaN-filled allocation, so a row or slice a kernel forgets to write fails.
    """
    return torch.empty(tuple(shape), device=like.device, dtype=like.dtype if dtype is None else dtype)


# ----------------------------------------------------------------------------------------------------------------
# Launch configurations and ahead-of-time cases
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchConfig:
    """One kernel launch configuration: the jit function, its constexpr arguments, warps and pipeline stages."""

    fn: Any
    constexprs: tuple[tuple[str, Any], ...]
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        return self.fn.__name__

    def constexpr(self, name: str) -> Any:
        return dict(self.constexprs)[name]

    def key(self, dtype: torch.dtype) -> tuple:
        """What makes a compiled binary differ (besides the target): kernel, element type, constexprs, options."""
        return (self.name, TRITON_DTYPES[dtype], self.constexprs, self.num_warps, self.num_stages)


def launch(cfg: LaunchConfig, grid: tuple[int, ...], *args: Any) -> None:
    """Launch ``cfg.fn`` on ``grid`` with the runtime ``args`` (in the kernel's order) and ``cfg``'s constexprs."""
    cfg.fn[grid](*args, **dict(cfg.constexprs), num_warps=cfg.num_warps, num_stages=cfg.num_stages)


@dataclass(frozen=True)
class KernelCase:
    """One kernel configuration a launcher can pick, for ahead-of-time compilation by ``kernels.report``.

    ``signature`` maps every argument of ``fn`` to a Triton type string ("*fp16", "i32", "fp32", "constexpr");
    ``constexprs`` gives the value of each constexpr argument.
    """

    name: str
    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    dtype: str
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def kernel_case(cfg: LaunchConfig, dtype: torch.dtype, fp32_ptrs: Sequence[str] = ()) -> KernelCase:
    """The ahead-of-time case of ``cfg`` for ``dtype`` inputs, typed as the launchers call it.

    Arguments follow the naming scheme above: ``*_ptr`` are pointers to ``dtype`` (or fp32 for ``fp32_ptrs``),
    ``scale`` is fp32, every other runtime argument an i32 (sizes unspecialised; strides of contiguous
    (B, T, N, 3*C) / (B, T, N, C) tensors, multiples of 16 like the pointers: listed in ``divisible_by_16``).
    """
    ty = TRITON_DTYPES[dtype]
    constexprs = dict(cfg.constexprs)
    signature: dict[str, str] = {}
    for name in cfg.fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in fp32_ptrs else f"*{ty}"
        elif name == "scale":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    aligned = [n for n in signature if n.endswith("_ptr") or n.startswith("stride_")]
    label = " ".join(f"{k}={v}" for k, v in cfg.constexprs if k != "PRECISION")
    return KernelCase(
        name=cfg.name,
        fn=cfg.fn,
        signature=signature,
        constexprs=constexprs,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        dtype=ty,
        label=label,
        extra={"divisible_by_16": aligned},
    )


def report_cases_from(plans: Any) -> list[KernelCase]:
    """Unique :class:`KernelCase` s of an iterable of ``(dtype, [(LaunchConfig, grid), ...], fp32_ptrs)``."""
    seen: dict[tuple, KernelCase] = {}
    for dtype, plan, fp32_ptrs in plans:
        for cfg, _grid in plan:
            key = cfg.key(dtype)
            if key not in seen:
                seen[key] = kernel_case(cfg, dtype, fp32_ptrs)
    return list(seen.values())


@dataclass(frozen=True)
class TypedLaunchConfig(LaunchConfig):
    """A :class:`LaunchConfig` whose pointers do not all share the op's element type (e.g. a float32 residual stream
    beside 16-bit activations): ``ptr_types`` gives every pointer argument's Triton type, in the kernel's argument
    order, and ``fp32_args`` the runtime scalars passed as fp32. Both change the compiled binary, so the pointer
    types are part of :meth:`key`. Launchers cast each tensor to its pointer's type before :func:`launch`.
    """

    ptr_types: tuple[tuple[str, str], ...] = ()
    fp32_args: tuple[str, ...] = ()

    def key(self, dtype: torch.dtype) -> tuple:
        return super().key(dtype) + (self.ptr_types,)


def typed_config(
    fn: Any, constexprs: dict[str, Any], num_warps: int, types: dict[str, torch.dtype], fp32_args: Sequence[str] = ()
) -> TypedLaunchConfig:
    """A :class:`TypedLaunchConfig` of ``fn`` (one stage) whose pointer arguments named in ``types`` have those
    element types, in the kernel's argument order."""
    ptr_types = tuple((name, TRITON_DTYPES[types[name]]) for name in fn.arg_names if name in types)
    constexprs_ = tuple(constexprs.items())
    return TypedLaunchConfig(
        fn, constexprs_, num_warps=num_warps, num_stages=1, ptr_types=ptr_types, fp32_args=tuple(fp32_args)
    )


def typed_report_cases_from(plans: Any) -> list[KernelCase]:
    """Unique :class:`KernelCase` s of an iterable of ``(dtype, [(TypedLaunchConfig, grid), ...])``, each typed by its
    configuration's ``ptr_types`` and ``fp32_args`` (``extra["ptr_types"]`` records them; where the pointers mix
    types, the label names those of type ``dtype``)."""
    seen: dict[tuple, KernelCase] = {}
    for dtype, plan in plans:
        for cfg, _grid in plan:
            key = cfg.key(dtype)
            if key in seen:
                continue
            case = kernel_case(cfg, dtype)
            ty = TRITON_DTYPES[dtype]
            for name, ptr_ty in cfg.ptr_types:
                case.signature[name] = f"*{ptr_ty}"
            for name in cfg.fp32_args:
                case.signature[name] = "fp32"
            own = [name[: -len("_ptr")] for name, t in cfg.ptr_types if t == ty]
            mixed = len(own) < len(cfg.ptr_types)
            label = f"{case.label} [{ty}: {','.join(own) or '-'}; others fp32]" if mixed else case.label
            seen[key] = dataclasses.replace(case, label=label, extra=case.extra | {"ptr_types": cfg.ptr_types})
    return list(seen.values())
