"""Static resource report: compile every kernel configuration the launchers can pick for sm_89 and sm_90.

    python -m fastmixste.kernels.report [--json PATH] [--targets 89,90] [--modules spatial,temporal] [--jobs N]

No GPU is needed: each case is compiled ahead of time with ``triton.compile(ASTSource(...), target=GPUTarget(...))``;
shared memory comes from the compiled metadata, registers and spills (STACK/LOCAL bytes) from the bundled
``cuobjdump --dump-resource-usage``. The compiler does not check the per-block shared-memory limit, so this tool
does. Must run without TRITON_INTERPRET=1 (the interpreter replaces @triton.jit functions, which cannot be
compiled ahead of time). Exit status 1 when any case spills or exceeds the target's per-block shared memory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from ._common import KernelCase, interpreter_active

#: Kernel modules whose ``report_cases()`` are compiled; a module that does not exist (yet) is skipped.
KERNEL_MODULES: tuple[str, ...] = ("spatial", "temporal", "block")


@dataclass(frozen=True)
class TargetSpec:
    """Per-SM limits of one GPU generation (CUDA occupancy calculator values)."""

    cap: int
    name: str
    regs_per_sm: int
    smem_per_sm: int
    smem_per_block: int
    max_threads_per_sm: int
    max_blocks_per_sm: int


TARGETS: dict[int, TargetSpec] = {
    89: TargetSpec(89, "sm_89 (RTX 4090)", 65536, 102400, 101376, 1536, 24),
    90: TargetSpec(90, "sm_90 (H100)", 65536, 233472, 232448, 2048, 32),
}
#: The driver reserves 1 KB of shared memory per resident block (sm_80 and later).
_SMEM_RESERVED_PER_BLOCK = 1024
#: Registers are allocated per warp in units of 256.
_REG_ALLOC_UNIT = 256


@dataclass
class ReportRow:
    kernel: str
    target: str
    cap: int
    dtype: str
    config: str
    num_warps: int
    num_stages: int
    registers: int
    spill_bytes: int
    shared_bytes: int
    shared_limit: int
    blocks_per_sm: int
    occupancy: float
    limited_by: str

    @property
    def problems(self) -> list[str]:
        out = []
        if self.spill_bytes:
            out.append(f"spills {self.spill_bytes} B")
        if self.shared_bytes > self.shared_limit:
            out.append(f"shared {self.shared_bytes} B > {self.shared_limit} B")
        return out


def gather_cases(modules: tuple[str, ...] = KERNEL_MODULES) -> list[KernelCase]:
    """``report_cases()`` of every kernel module present; a missing module is skipped, a broken one raises."""
    cases: list[KernelCase] = []
    for name in modules:
        full = f"{__package__}.{name}"
        try:
            mod = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
            continue
        cases.extend(mod.report_cases())
    return cases


def _cuobjdump() -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(path):
        raise FileNotFoundError(f"cuobjdump not found at {path} (it ships with triton's NVIDIA backend)")
    return path


def _resource_usage(cubin: bytes, kernel: str) -> dict[str, int]:
    """REG / STACK / SHARED / LOCAL of ``kernel`` in ``cubin``, read with cuobjdump."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        text = subprocess.run(
            [_cuobjdump(), "--dump-resource-usage", path], capture_output=True, text=True, check=True
        ).stdout
    # "Function <name>:" then a line "REG:96 STACK:0 SHARED:0 LOCAL:0 ..."
    block = text.split(f"Function {kernel}:", 1)
    if len(block) != 2:
        raise RuntimeError(f"cuobjdump output has no entry for {kernel}:\n{text}")
    usage = dict((k, int(v)) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", block[1].split("Function")[0]))
    missing = {"REG", "STACK", "SHARED", "LOCAL"} - usage.keys()
    if missing:
        raise RuntimeError(f"cuobjdump output for {kernel} lacks {sorted(missing)}:\n{text}")
    return usage


def occupancy(spec: TargetSpec, registers: int, shared: int, num_warps: int) -> tuple[int, float, str]:
    """(resident blocks per SM, fraction of the SM's warp slots used, the limiting resource)."""
    threads = 32 * num_warps
    regs_per_warp = -(-registers * 32 // _REG_ALLOC_UNIT) * _REG_ALLOC_UNIT
    limits = {
        "blocks": spec.max_blocks_per_sm,
        "threads": spec.max_threads_per_sm // threads,
        "registers": spec.regs_per_sm // max(regs_per_warp * num_warps, 1),
        "shared": spec.smem_per_sm // (shared + _SMEM_RESERVED_PER_BLOCK),
    }
    limited_by = min(limits, key=limits.get)
    blocks = limits[limited_by]
    return blocks, blocks * threads / spec.max_threads_per_sm, limited_by


def compile_case(case: KernelCase, spec: TargetSpec) -> ReportRow:
    """Compile ``case`` for ``spec`` and read its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    arg_names = case.fn.arg_names
    attrs = {(arg_names.index(n),): [["tt.divisibility", 16]] for n in case.extra.get("divisible_by_16", ())}
    src = ASTSource(fn=case.fn, signature=case.signature, constexprs=case.constexprs, attrs=attrs)
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", spec.cap, 32),
        options={"num_warps": case.num_warps, "num_stages": case.num_stages},
    )
    usage = _resource_usage(compiled.asm["cubin"], compiled.metadata.name)
    shared = int(compiled.metadata.shared) + usage["SHARED"]
    blocks, occ, limited_by = occupancy(spec, usage["REG"], shared, case.num_warps)
    return ReportRow(
        kernel=case.name,
        target=spec.name,
        cap=spec.cap,
        dtype=case.dtype,
        config=case.label,
        num_warps=case.num_warps,
        num_stages=case.num_stages,
        registers=usage["REG"],
        spill_bytes=usage["STACK"] + usage["LOCAL"],
        shared_bytes=shared,
        shared_limit=spec.smem_per_block,
        blocks_per_sm=blocks,
        occupancy=occ,
        limited_by=limited_by,
    )


_CASES: list[KernelCase] = []


def _compile_indexed(job: tuple[int, int]) -> ReportRow:
    index, cap = job
    return compile_case(_CASES[index], TARGETS[cap])


def build_report(
    targets: tuple[int, ...] = (89, 90), modules: tuple[str, ...] = KERNEL_MODULES, jobs: int = 1
) -> list[ReportRow]:
    """Compile every case of every kernel module for every target, in ``jobs`` processes."""
    if interpreter_active():
        raise RuntimeError(
            "kernels.report needs the real Triton compiler: unset TRITON_INTERPRET (got TRITON_INTERPRET=1)"
        )
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; expected a subset of {sorted(TARGETS)}")
    cases = gather_cases(modules)
    work = [(i, cap) for cap in targets for i in range(len(cases))]
    if jobs <= 1:
        return [compile_case(cases[i], TARGETS[cap]) for i, cap in work]
    # Forked workers inherit the cases (JIT functions do not pickle); compiling is CPU-bound, one case per task.
    _CASES[:] = cases
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(_compile_indexed, work))


def format_table(rows: list[ReportRow]) -> str:
    """Markdown table of the rows."""
    head = (
        "| kernel | target | dtype | config | warps | stages | registers | spills (B) | shared (B) "
        "| shared limit (B) | blocks/SM | occupancy | limited by | ok |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ok = "yes" if not r.problems else "NO: " + ", ".join(r.problems)
        lines.append(
            f"| {r.kernel} | {r.target} | {r.dtype} | {r.config} | {r.num_warps} | {r.num_stages} | {r.registers} "
            f"| {r.spill_bytes} | {r.shared_bytes} | {r.shared_limit} | {r.blocks_per_sm} | {r.occupancy:.0%} "
            f"| {r.limited_by} | {ok} |"
        )
    return "\n".join(lines)


def to_json(rows: list[ReportRow]) -> list[dict[str, Any]]:
    return [dict(asdict(r), problems=r.problems) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmixste.kernels.report", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the table as JSON to PATH")
    parser.add_argument("--targets", default="89,90", help="comma-separated compute capabilities (default 89,90)")
    parser.add_argument(
        "--modules", default=",".join(KERNEL_MODULES), help="comma-separated kernel modules (default: all)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes (default: CPUs)")
    args = parser.parse_args(argv)
    targets = tuple(int(t) for t in args.targets.split(","))
    rows = build_report(targets, tuple(args.modules.split(",")), jobs=args.jobs)
    print(format_table(rows))
    bad = [r for r in rows if r.problems]
    print(f"\n{len(rows)} configurations compiled, {len(bad)} with problems")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(rows), f, indent=2)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
