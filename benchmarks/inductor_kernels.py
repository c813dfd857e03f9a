"""What torch.compile (Inductor) generates for the sdpa MixSTE: its fused kernels and the bytes each one moves.

``python -m benchmarks.inductor_kernels`` compiles the sdpa model on the CPU backend (bf16 autocast, fp32
parameters, as train.run; a training step and an eval forward), reads the generated code
(``torch._inductor.utils.run_and_get_code``, the same text TORCH_LOGS=output_code prints) and writes
``results/inductor_kernels.json``: per generated kernel its inputs and outputs (pointer roles from the kernel
signature: ``in_ptr`` read, ``out_ptr`` written, ``in_out_ptr`` both) with their sizes, and the extern calls
(GEMMs, attention). The proxies' ``compile`` provider is built from that file (benchmarks/proxies.py).

Compiling the full-size model on 2 CPU cores is out of reach, so this compiles small ones and scales:
- batch: B = 3, T = 27 (1,377 tokens): a buffer whose element count is a multiple of the token count grows with
  the tokens (activations, row statistics, attention rows), any other (weights, their casts and gradients) is fixed;
- depth: depth 1 and depth 2; the second block pair (with DropPath active, as blocks 1..7 of the real model) is the
  difference between the two, and the depth-8 model is depth 1 + 7 such pairs.
Run time: 10-30 minutes on 2 shared cores (four compiles).

The check (``summarize``): counts the generated kernels and classifies them by the aten ops they fuse, so the
assumptions the compile model rests on can be read off the real kernels (kept in the JSON under "check").
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "inductor_kernels.json"
SMALL_B, SMALL_T = 3, 27

_ITEMSIZE = {"float": 4, "at::BFloat16": 2, "bfloat16": 2, "at::Half": 2, "half": 2, "double": 8, "int64_t": 8,
             "int32_t": 4, "bool": 1, "uint8_t": 1, "int8_t": 1}  # fmt: skip
_TORCH_ITEMSIZE = {"torch.float32": 4, "torch.bfloat16": 2, "torch.float16": 2, "torch.float64": 8,
                   "torch.int64": 8, "torch.int32": 4, "torch.bool": 1, "torch.uint8": 1, "torch.int8": 1}  # fmt: skip


@dataclass
class Arg:
    """One pointer argument of a kernel call: role ("in", "out", "in_out"), element count, bytes per element."""

    name: str
    role: str
    numel: int
    itemsize: int

    @property
    def bytes(self) -> int:
        return self.numel * self.itemsize


@dataclass
class KernelCall:
    """One call in the generated ``call()``: a generated kernel (``kind="fused"``) or an extern call."""

    name: str
    kind: str
    args: list[Arg] = field(default_factory=list)
    text: str = ""

    @property
    def bytes_read(self) -> int:
        return sum(a.bytes for a in self.args if a.role in ("in", "in_out"))

    @property
    def bytes_written(self) -> int:
        return sum(a.bytes for a in self.args if a.role in ("out", "in_out"))


# ----------------------------------------------------------------------------------------------------------------
# Parsing Inductor's CPU output code
# ----------------------------------------------------------------------------------------------------------------

_SIG = re.compile(r"^(\w+) = async_compile\.cpp_pybinding\(\[(.*?)\],\s*r'''", re.M)
_PARAMS = re.compile(r'extern "C"\s+void\s+kernel\((.*?)\)\s*\{', re.S)
_ASSIGN_EMPTY = re.compile(r"^\s*(\w+) = empty_strided_\w+\((\(.*?\)), (\(.*?\)), (torch\.\w+)\)", re.M)
_ASSERT = re.compile(r"^\s*assert_size_stride\((\w+), (\(.*?\)), (\(.*?\))", re.M)
_ALIAS = re.compile(r"^\s*(\w+) = (\w+); del \w+\s+# reuse", re.M)
_REINTERPRET_ASSIGN = re.compile(r"^\s*(\w+) = reinterpret_tensor\((\w+), (\(.*?\)), (\(.*?\)), \d+\)", re.M)
_GETITEM = re.compile(r"^\s*(\w+) = (\w+)\[(\d+)\]\s*$")


def _numel(size_text: str) -> int:
    size = ast.literal_eval(size_text)
    return math.prod(size) if isinstance(size, tuple) else int(size)


def _split_args(text: str) -> list[str]:
    """Top-level comma split of a call's argument text (parentheses nest)."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _call_args(line: str, name: str) -> list[str]:
    start = line.index(name + "(") + len(name) + 1
    depth, end = 1, start
    while depth:
        depth += {"(": 1, ")": -1}.get(line[end], 0)
        end += 1
    return _split_args(line[start : end - 1])


def parse_output_code(code: str) -> list[KernelCall]:
    """The kernel calls of one Inductor CPU output module (see :func:`parse_output_code_full`)."""
    return parse_output_code_full(code)[0]


def parse_output_code_full(code: str) -> tuple[list[KernelCall], list[Arg]]:
    """The kernel calls of one Inductor CPU output module, in order, with their pointer arguments' sizes.

    Generated kernels: roles and element types from the C++ signature (``const T* in_ptrN`` read, ``T* out_ptrN``
    written, ``T* in_out_ptrN`` both), element counts from the buffers' declared sizes. Extern calls
    (``extern_kernels.*``, ``torch.ops.*``) are listed with no arguments parsed (the proxies take them elsewhere).
    Also returns the buffers the graph returns after its first output, inputs (``primals_*``) left out: for a
    forward graph of a training step, what it saves for backward (extern results: index 0 taken as bf16, the others
    as fp32 row statistics, as SDPA returns them).
    """
    kernels: dict[str, list[tuple[str, int]]] = {}
    for m in _SIG.finditer(code):
        name = m.group(1)
        body = code[m.end() :]
        params = _PARAMS.search(body)
        if params is None:
            raise ValueError(f"no C++ signature found for generated kernel {name}")
        roles = []
        for p in _split_args(params.group(1)):
            ctype, pname = p.replace("const ", "").rsplit(" ", 1)
            ctype = ctype.rstrip("*").strip()
            pname = pname.lstrip("*")
            role = "in_out" if pname.startswith("in_out_ptr") else "in" if pname.startswith("in_ptr") else "out"
            if not (pname.startswith("in_ptr") or pname.startswith("out_ptr") or pname.startswith("in_out_ptr")):
                role = "scalar"
            roles.append((role, _ITEMSIZE.get(ctype, 4)))
        kernels[name] = roles

    call_start = code.find("def call(")
    if call_start < 0:
        raise ValueError("no call() function in this output code")
    body = code[call_start:]
    sizes: dict[str, int] = {}
    itemsizes: dict[str, int] = {}
    calls: list[KernelCall] = []
    returned: list[Arg] = []
    for line in body.splitlines():
        for m in _ASSERT.finditer(line):
            sizes.setdefault(m.group(1), _numel(m.group(2)))
        m = _ASSIGN_EMPTY.match(line)
        if m:
            sizes[m.group(1)] = _numel(m.group(2))
            itemsizes[m.group(1)] = _TORCH_ITEMSIZE.get(m.group(4), 4)
            continue
        m = _ALIAS.match(line)
        if m:
            sizes[m.group(1)] = sizes.get(m.group(2), 0)
            itemsizes[m.group(1)] = itemsizes.get(m.group(2), 4)
            continue
        m = _REINTERPRET_ASSIGN.match(line)
        if m:
            sizes[m.group(1)] = _numel(m.group(3))
            itemsizes[m.group(1)] = itemsizes.get(m.group(2), 4)
            continue
        m = _GETITEM.match(line)
        if m:
            itemsizes[m.group(1)] = 2 if m.group(3) == "0" else 4
            continue
        stripped = line.strip()
        if stripped.startswith("return ("):
            for text in _split_args(stripped[len("return (") : stripped.rindex(")")])[1:]:
                if text.startswith("reinterpret_tensor("):
                    inner = _split_args(text[len("reinterpret_tensor(") : -1])
                    name, numel = inner[0], _numel(inner[1])
                else:
                    name, numel = text, sizes.get(text, 0)
                # one storage counts once, at its full size (a saved view keeps its whole base alive)
                if not name.startswith("primals_") and all(a.name != name for a in returned):
                    returned.append(Arg(name, "out", max(numel, sizes.get(name, 0)), itemsizes.get(name, 4)))
            continue
        head = stripped.split("(", 1)[0]
        if head in kernels:
            roles = kernels[head]
            texts = _call_args(stripped, head)
            if len(texts) != len(roles):
                raise ValueError(f"{head}: {len(texts)} arguments for {len(roles)} parameters")
            args = []
            for text, (role, itemsize) in zip(texts, roles):
                if role == "scalar":
                    continue
                if text.startswith("reinterpret_tensor("):
                    inner = _split_args(text[len("reinterpret_tensor(") : -1])
                    numel = _numel(inner[1])
                else:
                    numel = sizes.get(text, 0)
                args.append(Arg(text.split("(")[-1].split(",")[0], role, numel, itemsize))
            calls.append(KernelCall(head, "fused", args, stripped[:200]))
        elif head.startswith("extern_kernels.") or head.startswith("torch.ops.") or " = torch.ops." in stripped:
            name = head if not head.startswith("buf") else stripped.split(" = ", 1)[1].split("(", 1)[0]
            calls.append(KernelCall(name, "extern", [], stripped[:200]))
    return calls, returned


# ----------------------------------------------------------------------------------------------------------------
# Scaling to the full size
# ----------------------------------------------------------------------------------------------------------------


def scale_bytes(args: Iterable[Arg], tokens_small: int, tokens_full: int) -> tuple[float, float]:
    """(read, written) bytes at ``tokens_full`` tokens: per-token buffers (element count a multiple of the small
    run's token count) grow with the tokens, the others (weights, their casts and gradients) stay."""
    read = written = 0.0
    for a in args:
        b = a.bytes * (tokens_full / tokens_small if a.numel % tokens_small == 0 else 1.0)
        if a.role in ("in", "in_out"):
            read += b
        if a.role in ("out", "in_out"):
            written += b
    return read, written


#: Width of the LayerNorms in the compiled model (embed 512): dgamma and dbeta have this many elements.
LN_WIDTH = 512


def column_reductions(call: KernelCall, tokens_small: int) -> list[int]:
    """Element counts of the column reductions (sums over the tokens: bias, LayerNorm-weight and position-embedding
    gradients, accumulated in fp32) a kernel produces: the distinct sizes of its fp32 outputs that do not grow with
    the tokens, when it also reads per-token data, leaving out casts: an fp32 output as large as a narrower input
    that does not grow with the tokens either (a bf16 weight gradient from a GEMM converted to fp32, a bias gradient
    summed elsewhere) is a cast, not a reduction over per-token input."""
    if not any(a.numel % tokens_small == 0 and a.role != "out" for a in call.args):
        return []
    casts = {a.numel for a in call.args if a.role != "out" and a.numel % tokens_small != 0 and a.itemsize < 4}
    sizes: list[int] = []
    for a in call.args:
        fixed = a.numel % tokens_small != 0
        if a.role == "out" and a.itemsize == 4 and fixed and a.numel not in casts and a.numel not in sizes:
            sizes.append(a.numel)
    return sizes


def column_reduction_passes(call: KernelCall, tokens_small: int, mix_order: bool = False) -> int:
    """How many column reductions a kernel produces that a GPU runs as extra passes re-reading per-token input
    (see :func:`column_reductions`). The CPU backend computes them in the same loop nest as the row work; a GPU
    kernel reduces along one axis, so Inductor's GPU backend gives each its own pass. ``mix_order``: Inductor's GPU
    mix-order reduction (``torch._inductor.config.triton.mix_order_reduction``, on by default in torch 2.13) fuses
    a LayerNorm backward's dX row reduction with its dgamma/dbeta column reduction, so in a kernel that computes a
    LayerNorm backward the reduction of the LayerNorm's width (:data:`LN_WIDTH`) costs no extra pass."""
    sizes = column_reductions(call, tokens_small)
    if mix_order and "native_layer_norm_backward" in call.name:
        sizes = [n for n in sizes if n != LN_WIDTH]
    return len(sizes)


# ----------------------------------------------------------------------------------------------------------------
# Compiling
# ----------------------------------------------------------------------------------------------------------------


def compile_codes(depth: int, mode: str, B: int = SMALL_B, T: int = SMALL_T) -> list[str]:
    """Inductor's output code for the sdpa MixSTE(depth, num_frame=T) at batch B on the CPU, bf16 autocast:
    ``mode="train"``: forward + backward graphs of one training step; ``"forward"``: the eval no-grad forward."""
    from torch._inductor.utils import run_and_get_code

    from fastmixste import MixSTE

    torch.manual_seed(0)
    model = MixSTE(num_frame=T, depth=depth, attn_backend="sdpa")
    x = torch.randn(B, T, 17, 2)
    compiled = torch.compile(model, dynamic=False)

    def train() -> None:
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = compiled(x)
        out.float().backward(torch.ones(out.shape))

    def forward() -> None:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            compiled(x)

    torch._dynamo.reset()
    _, codes = run_and_get_code(train if mode == "train" else forward)
    return codes


_LAYOUT_ONLY = r"cpp_fused_(clone_|permute_|unbind_|view_|_unsafe_view_|stack_|transpose_)+\d+"


def summarize(calls: list[KernelCall], tokens_small: int, saved: list[Arg] | None = None) -> dict:
    """The check: generated kernels by the aten ops they fuse, extern calls by name, column reductions; and the
    saved-for-backward buffers (``[[numel, itemsize], ...]``) when given."""
    fused = [c for c in calls if c.kind == "fused"]
    extern: dict[str, int] = {}
    for c in calls:
        if c.kind == "extern":
            extern[c.name] = extern.get(c.name, 0) + 1
    tags = {
        "layer_norm_forward": lambda n: re.search(r"native_layer_norm_(?!backward)", n) is not None,
        "layer_norm_with_add": lambda n: "native_layer_norm" in n and "add" in n,
        "gelu_forward": lambda n: "gelu" in n and "gelu_backward" not in n,
        "gelu_backward": lambda n: "gelu_backward" in n,
        "layout_copies_only": lambda n: re.fullmatch(_LAYOUT_ONLY, n) is not None,
        "casts_only": lambda n: re.fullmatch(r"cpp_fused__to_copy_(view_|t_)*\d+", n) is not None,
    }  # fmt: skip
    return {
        "saved": [[a.numel, a.itemsize] for a in saved or []],
        "generated_kernels": len(fused),
        "extern_calls": extern,
        "kernels_by_tag": {tag: sum(1 for c in fused if f(c.name)) for tag, f in tags.items()},
        "column_reduction_passes": sum(column_reduction_passes(c, tokens_small) for c in fused),
        "kernels": [
            {"name": c.name, "read": c.bytes_read, "written": c.bytes_written,
             "args": [[a.role, a.numel, a.itemsize] for a in c.args]}
            for c in fused
        ],  # fmt: skip
    }


def run(depths: tuple[int, int] = (1, 2), verbose: bool = True) -> dict:
    """Compile both modes at both depths; returns the JSON written to results/inductor_kernels.json."""
    out: dict = {
        "kind": "generated code (Inductor CPU backend), parsed; bytes are per kernel call at the small size",
        "B": SMALL_B,
        "T": SMALL_T,
        "tokens": SMALL_B * SMALL_T * 17,
        "depths": list(depths),
        "precision": "bf16-autocast (CPU autocast; fp32 parameters)",
        "torch": torch.__version__,
        "modes": {},
    }
    for mode in ("train", "forward"):
        out["modes"][mode] = {}
        for depth in depths:
            t0 = time.perf_counter()
            codes = compile_codes(depth, mode)
            parsed = [parse_output_code_full(code) for code in codes]
            calls = [c for p in parsed for c in p[0]]
            # the first graph is the forward: what it returns beyond the output is kept for backward
            saved = parsed[0][1] if mode == "train" else []
            out["modes"][mode][str(depth)] = summarize(calls, out["tokens"], saved)
            if verbose:
                print(f"{mode} depth {depth}: {len(codes)} graphs, {len(calls)} calls, "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    out["check"] = check(out)
    return out


_EXTERN_OK = ("extern_kernels.mm", "extern_kernels.addmm", "extern_kernels.bmm", "extern_kernels.baddbmm",
              "torch.ops.aten._scaled_dot_product_flash_attention")  # fmt: skip


def check(data: dict) -> dict:
    """The assumptions the compile model rests on, read off the generated kernels (True where they hold), and
    the per-block-pair counts (depth 2 minus depth 1).

    - ``only_gemm_and_attention_extern``: Inductor leaves only the GEMMs and the attention op to library kernels;
      everything else is in generated kernels (so the compile model takes exactly those from the sdpa count);
    - ``layer_norms_fused_with_residual_add``: every generated kernel that computes a LayerNorm forward also does
      the residual add feeding it (the per-pair delta: as many "layer_norm + add" kernels as LayerNorm kernels);
    - ``gelu_fused_with_cast``: the GELU kernels also write the bf16 GEMM input (no standalone activation cast);
    - ``bias_and_weight_grads_folded``: on the CPU backend the bias / LayerNorm-weight gradient sums sit in the
      row kernels (column reductions > 0), which the GPU model charges as separate passes.
    """
    out: dict = {}
    for mode, by_depth in data["modes"].items():
        one, two = by_depth["1"], by_depth["2"]
        pair_tags = {k: two["kernels_by_tag"][k] - one["kernels_by_tag"][k] for k in one["kernels_by_tag"]}
        externs = set(one["extern_calls"]) | set(two["extern_calls"])
        gelu = [k["name"] for k in two["kernels"] if "gelu" in k["name"] and "gelu_backward" not in k["name"]]
        out[mode] = {
            "generated_kernels_per_block_pair": two["generated_kernels"] - one["generated_kernels"],
            "extern_calls_per_block_pair": {k: two["extern_calls"].get(k, 0) - one["extern_calls"].get(k, 0)
                                            for k in two["extern_calls"]},  # fmt: skip
            "kernels_by_tag_per_block_pair": pair_tags,
            "only_gemm_and_attention_extern": all(e.startswith(_EXTERN_OK) for e in externs),
            "layer_norms_fused_with_residual_add": pair_tags["layer_norm_with_add"] >= pair_tags["layer_norm_forward"],
            "gelu_fused_with_cast": all("_to_copy" in n for n in gelu),
        }
        if mode == "train":
            out[mode]["bias_and_weight_grads_folded"] = two["column_reduction_passes"] > 0
    return out


def load(path: Path = OUT) -> dict | None:
    """The stored results, or None when they were never generated."""
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check-only", action="store_true",
                        help="re-count the column reductions and re-run the check on the stored table")
    args = parser.parse_args(argv)
    if args.check_only:
        stored = load(args.out)
        if stored is None:
            raise SystemExit(f"{args.out} does not exist: run `python -m benchmarks.inductor_kernels` first")
        for by_depth in stored["modes"].values():
            for entry in by_depth.values():
                calls = [KernelCall(k["name"], "fused", [Arg("", *a) for a in k["args"]]) for k in entry["kernels"]]
                entry["column_reduction_passes"] = sum(column_reduction_passes(c, stored["tokens"]) for c in calls)
        data = {**stored, "check": check(stored)}
    else:
        data = run()
    print(json.dumps(data["check"], indent=1))
    from fastmixste.io.files import atomic_write

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, "w") as fh:
        fh.write(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()


__all__ = ["Arg", "KernelCall", "parse_output_code", "scale_bytes", "column_reductions", "column_reduction_passes",
           "summarize", "run",
           "check", "load", "asdict"]  # fmt: skip
