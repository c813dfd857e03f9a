"""Markdown tables and derived figures of the benchmark results: modelled time and bytes per provider, the
whole-model headline, measured timings, skip reasons, kernel resources, and every case the fused path does not win."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from benchmarks._results import PEERS, PROVIDER_ORDER, SCOPE_LABEL, TIE, gb, ms


def index(results: list[dict]) -> dict[tuple, dict[str, dict]]:
    table: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in results:
        table[(r["scope"], r["mode"], r["B"], r["T"])][r["provider"]] = r
    return table


def modelled_table(proxies: dict, device: str, full_only: bool = True, T: int | None = None) -> str:
    """Markdown: per case, modelled time per provider on ``device`` and triton's speedup over each peer."""
    idx = index([r for r in proxies["results"] if r["full_scale"] or not full_only])
    providers = [p for p in PROVIDER_ORDER if p in {r["provider"] for r in proxies["results"]}]
    head = "| scope | mode | B x T | " + " | ".join(f"{p} (ms)" for p in providers)
    head += " | triton vs eager | triton vs sdpa | triton vs xformers |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (scope, mode, B, Tc), row in sorted(
        idx.items(), key=lambda kv: (kv[0][1], list(SCOPE_LABEL).index(kv[0][0]), kv[0][3])
    ):
        if T is not None and Tc != T:
            continue
        t = {p: row[p]["modelled"][device]["seconds"] for p in providers if p in row}
        sp = [f"{t[p] / t['triton']:.2f}x" if "triton" in t and p in t else "-" for p in PEERS]
        lines.append(
            f"| {SCOPE_LABEL[scope]} | {mode} | {B} x {Tc} | "
            + " | ".join(ms(t.get(p)) for p in providers)
            + " | "
            + " | ".join(sp)
            + " |"
        )
    return "\n".join(lines)


def bytes_table(proxies: dict, T: int) -> str:
    """Markdown: bytes moved, FLOPs, launches and saved bytes per provider at full scale, sequence length T."""
    head = "| scope | mode | B x T | provider | bytes moved (GB) | GFLOP | launches | saved for backward (GB) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = [r for r in proxies["results"] if r["full_scale"] and r["T"] == T]
    rows.sort(key=lambda r: (r["mode"], list(SCOPE_LABEL).index(r["scope"]), PROVIDER_ORDER.index(r["provider"])))
    for r in rows:
        saved = gb(r["saved_bytes"]) if r["mode"] == "train" else "-"
        lines.append(
            f"| {SCOPE_LABEL[r['scope']]} | {r['mode']} | {r['B']} x {r['T']} | {r['provider']} | {gb(r['bytes'])} "
            f"| {r['flops'] / 1e9:.0f} | {r['launches']} | {saved} |"
        )
    return "\n".join(lines)


def longest_full_scale_T(proxies: dict) -> int:
    """The longest sequence length modelled at full scale (243, the paper's window, in the recorded proxies)."""
    return max(r["T"] for r in proxies["results"] if r["full_scale"])


def headline(proxies: dict, T: int | None = None) -> dict[str, Any]:
    """The whole-model training step at full scale (longest T unless given): modelled speedups of triton per
    device, bytes/saved/launch ratios, and per-provider time (ms, per device), bytes and saved bytes (GB)."""
    T = longest_full_scale_T(proxies) if T is None else T
    idx = index(proxies["results"])
    keys = [
        k
        for k in idx
        if k[0] == "model" and k[1] == "train" and k[3] == T and "eager" in idx[k] and idx[k]["eager"]["full_scale"]
    ]
    if not keys or not all(p in idx[keys[0]] for p in (*PEERS, "triton")):
        return {}
    key = keys[0]
    row = idx[key]
    out: dict[str, Any] = {"B": key[2], "T": T}
    for dev in proxies["devices"]:
        for peer in PEERS:
            out[f"{dev}_speedup_vs_{peer}"] = (
                row[peer]["modelled"][dev]["seconds"] / row["triton"]["modelled"][dev]["seconds"]
            )
            out[f"{dev}_padded_speedup_vs_{peer}"] = (
                row[peer]["modelled"][dev]["seconds_padded_tiles"]
                / row["triton"]["modelled"][dev]["seconds_padded_tiles"]
            )
            out[f"{dev}_launch_speedup_vs_{peer}"] = (
                row[peer]["modelled"][dev]["seconds_with_launch_overhead"]
                / row["triton"]["modelled"][dev]["seconds_with_launch_overhead"]
            )
            for level in ("expected", "pessimistic"):
                if f"seconds_{level}" in row["triton"]["modelled"][dev]:
                    out[f"{dev}_{level}_speedup_vs_{peer}"] = (
                        row[peer]["modelled"][dev][f"seconds_{level}"]
                        / row["triton"]["modelled"][dev][f"seconds_{level}"]
                    )
    for peer in PEERS:
        out[f"bytes_ratio_{peer}"] = row[peer]["bytes"] / row["triton"]["bytes"]
        out[f"saved_ratio_{peer}"] = row[peer]["saved_bytes"] / row["triton"]["saved_bytes"]
        out[f"launch_ratio_{peer}"] = row[peer]["launches"] / row["triton"]["launches"]
    for dev in proxies["devices"]:
        out[f"{dev}_ms"] = {p: row[p]["modelled"][dev]["seconds"] * 1e3 for p in row}
    out["bytes_gb"] = {p: row[p]["bytes"] / 1e9 for p in row}
    out["saved_gb"] = {p: row[p]["saved_bytes"] / 1e9 for p in row}
    return out


def fused_not_winning(proxies: dict | None, runs: list[dict]) -> list[str]:
    """Every modelled or measured case where triton is not at least TIE faster than the best other provider.

    Modelled cases are grouped per (scope, mode, B, T): one line lists the devices/variants and the peers that
    tie with (within TIE) or beat triton.
    """
    out = []
    if proxies:
        for (scope, mode, B, T), row in sorted(
            index(proxies["results"]).items(), key=lambda kv: (kv[0][1], list(SCOPE_LABEL).index(kv[0][0]), kv[0][3])
        ):
            if "triton" not in row:
                continue
            hits = []
            for dev in proxies["devices"]:
                for variant, label in (
                    ("seconds", "roofline"),
                    ("seconds_with_launch_overhead", f"+{proxies['launch_overhead_variant_s'] * 1e6:g} us/launch"),
                    ("seconds_padded_tiles", "padded tiles"),
                ):
                    tt = row["triton"]["modelled"][dev][variant]
                    peers = {p: r["modelled"][dev][variant] for p, r in row.items() if p != "triton"}
                    close = {p: t for p, t in peers.items() if tt > t * (1 - TIE)}
                    if close:
                        verdict = "loses to" if any(tt > t * (1 + TIE) for t in close.values()) else "ties with"
                        peer_text = ", ".join(f"{p} {ms(t)} ms" for p, t in sorted(close.items()))
                        hits.append(f"{dev} {label}: triton {ms(tt)} ms {verdict} {peer_text}")
            if hits:
                out.append(f"MODELLED {SCOPE_LABEL[scope]} {mode} B={B} T={T}: " + "; ".join(hits))
    for run in runs:
        idx: dict[tuple, dict[str, dict]] = defaultdict(dict)
        for r in run["rows"]:
            idx[(r["scope"], r["mode"], r["B"], r["T"], r["dtype"])][r["provider"]] = r
        for (scope, mode, B, T, dtype), row in sorted(idx.items()):
            if "triton" not in row or len(row) < 2:
                continue
            tt = row["triton"]["median"]
            peers = {p: r["median"] for p, r in row.items() if p != "triton"}
            best = min(peers, key=peers.get)
            if tt > peers[best] * (1 - TIE):
                out.append(
                    f"MEASURED {run['info']['device']} ({run['file']}): {SCOPE_LABEL[scope]} {mode} B={B} T={T} "
                    f"{dtype}: triton {ms(tt)} ms vs {best} {ms(peers[best])} ms"
                )
    return out


def measured_table(run: dict) -> str:
    head = (
        "| scope | mode | B x T | dtype | provider | median (ms) | p20-p80 (ms) | vs eager | peak memory (GB) "
        "| rounds |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    eager = {(r["scope"], r["mode"], r["B"], r["T"]): r["median"] for r in run["rows"] if r["provider"] == "eager"}
    rows = sorted(
        run["rows"],
        key=lambda r: (r["mode"], list(SCOPE_LABEL).index(r["scope"]), r["T"], PROVIDER_ORDER.index(r["provider"])),
    )
    for r in rows:
        e = eager.get((r["scope"], r["mode"], r["B"], r["T"]))
        vs = f"{e / r['median']:.2f}x" if e else "-"
        mem = gb(r["peak_memory_bytes"]) if r["peak_memory_bytes"] is not None else "n/a (CPU)"
        lines.append(
            f"| {SCOPE_LABEL[r['scope']]} | {r['mode']} | {r['B']} x {r['T']} | {r['dtype']} | {r['provider']} "
            f"| {ms(r['median'])} | {ms(r['p20'])}-{ms(r['p80'])} | {vs} | {mem} | {r['rounds']} |"
        )
    return "\n".join(lines)


def skipped_table(run: dict) -> str:
    """Markdown: the skip reasons of a run, one line per distinct reason with the cases it covers."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for item in run["skipped"]:
        by_reason[item["reason"]].append(item["case"])
    lines = []
    for reason, names in by_reason.items():
        providers = sorted({n.rsplit("-", 1)[-1] for n in names})
        lines.append(f"- not timed ({len(names)} cases; {', '.join(providers)}): {reason}")
    return "\n".join(lines)


def kernel_table(rows: list[dict], dtype: str | None = "bf16", D: int | None = 64) -> str:
    head = (
        "| kernel | target | dtype | config | warps | registers | spills (B) | shared (B) | shared limit (B) "
        "| blocks/SM | occupancy | limited by |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if dtype and r["dtype"] != dtype:
            continue
        if D is not None and f"D={D}" not in r["config"]:
            continue
        lines.append(
            f"| {r['kernel']} | {r['target']} | {r['dtype']} | {r['config']} | {r['num_warps']} | {r['registers']} "
            f"| {r['spill_bytes']} | {r['shared_bytes']} | {r['shared_limit']} | {r['blocks_per_sm']} "
            f"| {r['occupancy']:.0%} | {r['limited_by']} |"
        )
    return "\n".join(lines)


#: Targets for the fused path under the expected model, whole MixSTE at the longest full-scale T:
#: (mode, peer, minimum ratio, level the target is read at).
TARGETS = (("train", "eager", 2.2, "expected"), ("train", "sdpa", 1.5, "expected"),
           ("train", "compile", 1.3, "expected"), ("train", "compile", 1.15, "pessimistic"),
           ("forward", "sdpa", 1.3, "expected"))  # fmt: skip
LEVELS = (("seconds", "peak"), ("seconds_expected", "expected"), ("seconds_pessimistic", "pessimistic"))


def _ratio(rows: dict, mode: str, peer: str, dev: str, field: str = "seconds") -> float:
    return rows[mode][peer]["modelled"][dev][field] / rows[mode]["triton"]["modelled"][dev][field]


def ratio_range(rows: dict, mode: str, peer: str, dev: str) -> str:
    """"expected (pessimistic-peak)" for triton's speed-up over ``peer`` on ``dev``."""
    exp, pes, peak = (_ratio(rows, mode, peer, dev, f) for f in ("seconds_expected", "seconds_pessimistic", "seconds"))
    lo, hi = min(pes, peak), max(pes, peak)
    return f"{exp:.2f}x ({lo:.2f}-{hi:.2f})"


def targets_block(proxies: dict) -> str:
    """Whole-model ms per provider (training step and forward) per modelled device and efficiency level, and the
    fused path's ratios against the targets (expected model, with the pessimistic-peak range); a missed target
    says by how much."""
    T = longest_full_scale_T(proxies)
    idx = index([r for r in proxies["results"] if r["full_scale"] and r["T"] == T and r["scope"] == "model"])
    rows = {mode: row for (scope, mode, _, _), row in idx.items()}
    if "train" not in rows or "forward" not in rows:
        return "(no whole-model rows in proxies.json)"
    batch = {mode: next(b for (_, m, b, _) in idx if m == mode) for mode in ("train", "forward")}
    providers = [p for p in PROVIDER_ORDER if p in rows["train"]]
    lines = [f"Whole MixSTE, T = {T}, {proxies.get('precision', 'bf16')}: training step (B = {batch['train']}) and "
             f"forward (B = {batch['forward']}), modelled ms (peak: every kernel at 100% of peak; expected and "
             f"pessimistic: per-kernel-class efficiencies from published measurements, padded attention tiles, "
             f"launch overhead):", "",
             "| device | mode | model | " + " | ".join(providers) + " |", "|---|---|---|" + "---|" * len(providers)]
    for dev, spec in proxies["devices"].items():
        for mode in ("train", "forward"):
            for field, label in LEVELS:
                t = {p: rows[mode][p]["modelled"][dev].get(field) for p in providers if p in rows[mode]}
                lines.append(f"| {spec['name']} | {mode} | {label} | " + " | ".join(ms(t.get(p)) for p in providers)
                             + " |")
    lines += ["", "| fused (triton) vs | target (expected model) | "
              + " | ".join(f"{s['name']}: expected (pessimistic-peak)" for s in proxies["devices"].values()) + " |",
              "|---|---|" + "---|" * len(proxies["devices"])]
    for mode, peer, goal, level in TARGETS:
        if peer not in rows[mode]:
            continue
        cells = []
        for dev in proxies["devices"]:
            x = _ratio(rows, mode, peer, dev, f"seconds_{level}")
            cell = ratio_range(rows, mode, peer, dev) if level == "expected" else f"{x:.2f}x"
            cells.append(cell + ("" if x >= goal else f" (missed by {1 - x / goal:.1%})"))
        what = "training step" if mode == "train" else "forward"
        lines.append(f"| {peer}, {what}{'' if level == 'expected' else ', ' + level} | >= {goal:g}x {level} | "
                     + " | ".join(cells) + " |")
    if proxies.get("calibration"):
        lines += ["", f"Calibrated: {proxies['calibration']}."]
    return "\n".join(lines)


def glance_block(proxies: dict) -> str:
    """README's first table: the fused model's modelled ratios and memory per sequence, both GPUs."""
    T = longest_full_scale_T(proxies)
    idx = index([r for r in proxies["results"] if r["full_scale"] and r["T"] == T and r["scope"] == "model"])
    rows = {mode: row for (_, mode, _, _), row in idx.items()}
    devs = proxies["devices"]

    def ratio(mode: str, peer: str) -> str:
        cells = [ratio_range(rows, mode, peer, d) for d in devs]
        return " / ".join(f"**{c.split(' ')[0]}** {c.split(' ')[1]}" if i == 0 else c for i, c in enumerate(cells))

    names = " / ".join(spec["name"] for spec in devs.values())
    lines = ["| what | number | where it comes from |", "|---|---|---|"]
    for mode, peer in (("train", "eager"), ("train", "sdpa"), ("train", "compile"), ("forward", "sdpa")):
        if peer in rows.get(mode, {}):
            what = "training step" if mode == "train" else "forward"
            lines.append(f"| fused vs {peer}, whole-model {what}, T = {T}, bf16 autocast | {ratio(mode, peer)} "
                         f"({names}; expected model, pessimistic-peak range) | **modelled** (counted bytes and "
                         f"FLOPs at published per-kernel efficiencies), see "
                         f"[Performance](#performance) |")
    train = rows.get("train", {})
    if "eager" in train and "triton" in train:
        lines.append(f"| bytes moved / saved for backward, eager : fused | "
                     f"{train['eager']['bytes'] / train['triton']['bytes']:.2f}x / "
                     f"{train['eager']['saved_bytes'] / train['triton']['saved_bytes']:.2f}x | counted on the meta "
                     f"device at full scale |")
    mem = {r["recompute"]: r for r in proxies.get("memory", []) if r.get("provider") == "triton" and r.get("available")}
    if "none" in mem and "full" in mem:
        lines.append(f"| kept for backward per 243-frame sequence, fused: none / full recompute | "
                     f"{mem['none']['saved_per_sequence'] / 1e9:.2f} GB / {mem['full']['saved_per_sequence'] / 1e9:.2f}"
                     f" GB ({mem['none']['rtx4090_max_batch']} / {mem['full']['rtx4090_max_batch']} sequences per "
                     f"24 GB card) | modelled, see [Memory](#memory) |")
    return "\n".join(lines)


def memory_block(proxies: dict) -> str:
    """Per 243-frame sequence and recompute policy: bytes kept for backward, modelled time cost, largest batch."""
    rows = [r for r in proxies.get("memory", []) if r.get("available")]
    if not rows:
        return "(no memory rows in proxies.json)"
    gb = 1e9
    lines = ["| provider | recompute | kept for backward / sequence | peak / sequence | time cost, RTX 4090, peak "
             "/ expected | largest batch, RTX 4090 24 GB | largest batch, H100 80 GB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        exp = r.get("rtx4090_time_cost_expected")
        lines.append(f"| {r['provider']} | {r['recompute']} | {r['saved_per_sequence'] / gb:.3f} GB | "
                     f"{r['peak_per_sequence'] / gb:.3f} GB | +{r['rtx4090_time_cost']:.1%}"
                     + ("" if exp is None else f" / +{exp:.1%}") + f" | "
                     f"{r['rtx4090_max_batch']} | {r['h100_max_batch']} |")
    missing = [f"{r['provider']}/{r['recompute']}" for r in proxies.get("memory", []) if not r.get("available")]
    if missing:
        lines += ["", "Not counted: " + ", ".join(missing) + "."]
    return "\n".join(lines)
