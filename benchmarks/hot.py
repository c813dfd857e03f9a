"""HoT token pruning, pruned vs unpruned MixSTE at full size (T = 243, C = 512, 8 pairs): counted FLOPs and measured
CPU time, side by side in one run.

    python -m benchmarks.hot                  # FLOPs (meta device) + CPU timings, writes benchmarks/results/hot.json
    python -m benchmarks.hot --flops-only     # the counted part only (seconds)
    python -m benchmarks.hot --modelled       # + the modelled GPU training step, fused + pruned vs every peer

FLOPs are counted on the meta device by ``fastmixste.perf.profiling.count`` (torch's FLOP formulas: matmuls and
attention; the clustering's cdist, ~0.06 GFLOP per sequence, has no formula and is left out). CPU times are
measured with the sdpa backend, ``torch.set_num_threads(threads)``, best of ``repeats``, pruned and unpruned
interleaved so that a busy machine slows both alike: forward at B = 1 (eval, no_grad) and a training step at B = 2
(forward, MPJPE, backward, AdamW). The modelled GPU step is the headline tool's (benchmarks.proxies), the same
counting and efficiency rules as for every provider there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fastmixste import MixSTE
from fastmixste.perf import profiling

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS: dict[str, dict[str, Any]] = {"MixSTE": {}, "HoT (81 of 243 at pair 3)": {"token_num": 81, "prune_at": 3}}


def build(device: str, **hot: Any) -> MixSTE:
    """The full-size model (upstream sizes, 243 frames) with the sdpa backend; ``hot``: token_num, prune_at."""
    with torch.device(device):
        return MixSTE(num_frame=243, attn_backend="sdpa", **hot)


def counted_flops(hot: dict[str, Any], batch: int, train: bool) -> int:
    """FLOPs of one forward (eval) or one forward + backward (train) at ``batch`` x 243 frames, counted on meta."""
    model = build("meta", **hot).train(train)
    x = torch.zeros(batch, 243, 17, 2, device="meta")

    def step() -> None:
        if train:
            model(x).square().mean().backward()
        else:
            with torch.no_grad():
                model(x)

    return profiling.count(step).totals()["flops"]


def _seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measured_cpu(repeats: int, threads: int) -> dict[str, dict[str, float]]:
    """Best-of-``repeats`` seconds per variant: {"forward_b1": s, "train_step_b2": s}."""
    torch.set_num_threads(threads)
    models = {name: build("cpu", **hot) for name, hot in VARIANTS.items()}
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(1, 243, 17, 2, generator=g), torch.randn(2, 243, 17, 2, generator=g)
    y2 = torch.randn(2, 243, 17, 3, generator=g) * 0.2
    optims = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in models.items()}

    def forward(name: str) -> None:
        with torch.no_grad():
            models[name].eval()(x1)

    def train_step(name: str) -> None:
        model, opt = models[name].train(), optims[name]
        opt.zero_grad(set_to_none=True)
        (model(x2) - y2).norm(dim=-1).mean().backward()
        opt.step()

    best: dict[str, dict[str, float]] = {name: {"forward_b1": float("inf"), "train_step_b2": float("inf")}
                                         for name in models}  # fmt: skip
    for name in models:  # warm-up (allocator, thread pool)
        forward(name)
    for _ in range(repeats):
        for name in models:
            best[name]["forward_b1"] = min(best[name]["forward_b1"], _seconds(lambda n=name: forward(n)))
        for name in models:
            best[name]["train_step_b2"] = min(best[name]["train_step_b2"], _seconds(lambda n=name: train_step(n)))
    return best


@contextlib.contextmanager
def _pruned_model() -> Iterator[str]:
    """Inside: the headline tool's "model" scope is HoT's (token_num 81 at pair 3). Yields how the recovery core is
    counted: the fused ``fastmixste.kernels.cross_attention`` where this build has it, else (labelled) the sdpa core,
    which the headline tool models as FlashAttention-2 (one op of 33 attention cores; 243 queries x 81 keys)."""
    from benchmarks import cases
    from fastmixste import kernels
    from fastmixste.model import attention

    stand_in = not hasattr(kernels, "cross_attention")
    if stand_in:
        def sdpa_cross(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                       scale: float | None = None) -> torch.Tensor:
            q = q.expand(k.shape[0], q.shape[1], k.shape[2], q.shape[3])
            return attention._sdpa_cross(q, k, v, num_heads, scale or (q.shape[-1] // num_heads) ** -0.5, 0.0)

        kernels.cross_attention = sdpa_cross
    cases.MODEL_EXTRA.update(VARIANTS["HoT (81 of 243 at pair 3)"])
    try:
        yield "sdpa core modelled as FlashAttention-2 (stand-in)" if stand_in else "fused cross_attention"
    finally:
        cases.MODEL_EXTRA.clear()
        if stand_in:
            del kernels.cross_attention


def modelled_gpu(device: str = "rtx4090", T: int = 243) -> dict[str, Any]:
    """The headline tool's modelled training step (B = 128, T frames, its precision and efficiency rules) in ms per
    level: every peer on MixSTE, and triton and sdpa on HoT's pruned model; ratios peer / (triton, pruned)."""
    from benchmarks import cases, proxies

    shape = cases.Shape(cases.TRAIN_BATCH, T)
    levels = {label: field_ for _, label, field_ in proxies.LEVEL_FIELDS[:3]}

    def ms(result: dict[str, Any]) -> dict[str, float]:
        return {label: round(result["modelled"][device][f] * 1e3, 1) for label, f in levels.items()}

    table = {p: ms(proxies.proxy_case("model", p, "train", shape)) for p in proxies.MODELLED_PROVIDERS}
    with _pruned_model() as recovery:
        for p in ("triton", "sdpa"):
            table[f"{p} + HoT"] = ms(proxies.proxy_case("model", p, "train", shape))
    fused = table["triton + HoT"]
    ratios = {p: {lv: round(t[lv] / fused[lv], 2) for lv in levels} for p, t in table.items() if p != "triton + HoT"}
    return {"device": device, "batch": shape.B, "T": T, "ms": table, "peer_over_triton_hot": ratios,
            "recovery_core": recovery, "precision": proxies.PRECISION}  # fmt: skip


def run(repeats: int = 3, threads: int = 2, flops_only: bool = False, modelled: bool = False) -> dict[str, Any]:
    rows = []
    for name, hot in VARIANTS.items():
        with torch.device("meta"):
            params = MixSTE(num_frame=243, **hot).num_parameters()
        rows.append({"model": name, "parameters": params,
                     "forward_gflops_b1": counted_flops(hot, 1, train=False) / 1e9,
                     "train_gflops_b2": counted_flops(hot, 2, train=True) / 1e9})  # fmt: skip
    if not flops_only:
        times = measured_cpu(repeats, threads)
        for row in rows:
            row |= {f"cpu_{k}_s": v for k, v in times[row["model"]].items()}
    base, pruned = rows
    ratios = {"forward_flops": pruned["forward_gflops_b1"] / base["forward_gflops_b1"],
              "train_flops": pruned["train_gflops_b2"] / base["train_gflops_b2"]}  # fmt: skip
    if not flops_only:
        ratios |= {"cpu_forward_speedup": base["cpu_forward_b1_s"] / pruned["cpu_forward_b1_s"],
                   "cpu_train_step_speedup": base["cpu_train_step_b2_s"] / pruned["cpu_train_step_b2_s"]}  # fmt: skip
    from benchmarks.proxies import environment

    where = ("FLOPs counted on the meta device; CPU times measured on this machine (shared with other jobs), "
             f"{threads} threads, best of {repeats}, sdpa backend, fp32")  # fmt: skip
    out = {"rows": rows, "ratios": ratios, "where": where, "environment": environment()}
    if modelled:
        out["modelled_gpu"] = modelled_gpu()
    return out


def modelled_table(m: dict[str, Any]) -> str:
    """The modelled step as markdown: ms per level and each peer's time over fused + pruned."""
    levels = list(next(iter(m["ms"].values())))
    lines = ["| provider | " + " | ".join(f"{lv} ms" for lv in levels) + " | vs triton + HoT (expected) |",
             "|---|" + "---|" * (len(levels) + 1)]  # fmt: skip
    for p, t in m["ms"].items():
        ratio = m["peer_over_triton_hot"].get(p, {}).get("expected")
        lines.append(f"| {p} | " + " | ".join(f"{t[lv]:.1f}" for lv in levels)
                     + f" | {'' if ratio is None else f'{ratio:.2f}x'} |")  # fmt: skip
    lines.append(f"({m['device']}, training step B={m['batch']}, T={m['T']}, {m['precision']}; recovery core: "
                 f"{m['recovery_core']})")  # fmt: skip
    return "\n".join(lines)


def table(result: dict[str, Any]) -> str:
    """The README table (markdown)."""
    rows, r = result["rows"], result["ratios"]
    timed = "cpu_forward_b1_s" in rows[0]
    head = "| model | parameters | forward GFLOP (B=1) | train step GFLOP (B=2) |"
    head += " CPU forward B=1 (s) | CPU train step B=2 (s) |" if timed else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        line = (f"| {row['model']} | {row['parameters'] / 1e6:.2f} M | {row['forward_gflops_b1']:.0f} | "
                f"{row['train_gflops_b2']:.0f} |")  # fmt: skip
        if timed:
            line += f" {row['cpu_forward_b1_s']:.2f} | {row['cpu_train_step_b2_s']:.2f} |"
        lines.append(line)
    ratio = f"| pruned / unpruned | | {r['forward_flops']:.3f}x | {r['train_flops']:.3f}x |"
    if timed:
        ratio += f" {r['cpu_forward_speedup']:.2f}x faster | {r['cpu_train_step_speedup']:.2f}x faster |"
    lines.append(ratio)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant (the best is kept)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--flops-only", action="store_true", help="count FLOPs, skip the CPU timings")
    p.add_argument("--modelled", action="store_true", help="also the modelled GPU training step (headline tool)")
    p.add_argument("--out", type=Path, default=RESULTS / "hot.json", help="result file (JSON)")
    args = p.parse_args(argv)
    result = run(args.repeats, args.threads, args.flops_only, args.modelled)
    print(table(result))
    print(result["where"])
    if args.modelled:
        print(modelled_table(result["modelled_gpu"]))
    if not args.flops_only:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
