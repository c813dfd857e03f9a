"""Turn the benchmark JSON into Markdown tables and PNG plots under benchmarks/results/.

    python -m benchmarks.report [--results DIR] [--kernels]

Reads ``proxies.json`` (MODELLED, meta device, full scale), every pytest-benchmark JSON in the folder (MEASURED,
one per run, device recorded) and ``kernel_resources.json`` (the AOT table of ``python -m fastmixste.kernels.report``;
generated when absent or with ``--kernels``). Writes ``report.md`` (everything), ``PERFORMANCE.md`` (the README's
Performance section) and the plots. Every number is labelled measured or modelled.

Loading lives in ``_results``, tables in ``_tables``, plots in ``_plots``, the two documents in ``_documents``;
``python -m benchmarks.readme`` copies the README's tables out of the same files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks._documents import headline_section, performance_document, report_document
from benchmarks._plots import (
    plot_measured,
    plot_modelled_memory,
    plot_modelled_speedup,
    plot_modelled_vs_measured,
)
from benchmarks._results import RESULTS, load_kernels, load_measured, load_proxies
from benchmarks._tables import (
    bytes_table,
    fused_not_winning,
    headline,
    kernel_table,
    measured_table,
    modelled_table,
    skipped_table,
)
from benchmarks.machine import spec_for

__all__ = [
    "build", "bytes_table", "fused_not_winning", "headline", "headline_section", "kernel_table", "load_kernels",
    "load_measured", "load_proxies", "measured_table", "modelled_table", "skipped_table",
]  # fmt: skip


def build(folder: Path = RESULTS, regenerate_kernels: bool = False) -> dict[str, Any]:
    """Write report.md, PERFORMANCE.md and the PNGs into ``folder``; returns the headline numbers."""
    proxies = load_proxies(folder)
    runs = load_measured(folder)
    kernels, kernel_note = load_kernels(folder, regenerate_kernels)
    images: list[tuple[str, str]] = []
    head: dict[str, Any] = {}
    if proxies:
        for dev, spec in proxies["devices"].items():
            plot_modelled_speedup(proxies, dev, folder / f"modelled_speedup_{dev}.png")
            images.append((f"Modelled speedup over eager, {spec['name']}", f"modelled_speedup_{dev}.png"))
        plot_modelled_memory(proxies, folder / "modelled_memory.png")
        images.append(("Modelled bytes saved for backward and bytes moved", "modelled_memory.png"))
        head = headline(proxies)
    measured_images = []
    for run in runs:
        stem = Path(run["file"]).stem
        plot_measured(run, folder / f"measured_{stem}.png")
        measured_images.append((f"Measured speedup over eager, {run['info']['device']}", f"measured_{stem}.png"))
        spec = spec_for(run["info"]["device"], proxies["devices"]) if proxies else None
        if spec and plot_modelled_vs_measured(run, proxies, spec, folder / f"modelled_vs_{stem}.png"):
            measured_images.append((f"Measured vs modelled, {run['info']['device']}", f"modelled_vs_{stem}.png"))
    losses = fused_not_winning(proxies, runs)
    (folder / "PERFORMANCE.md").write_text(
        performance_document(proxies, runs, kernels, kernel_note, head, images, measured_images, losses))
    (folder / "report.md").write_text(report_document(proxies, runs, kernels, kernel_note, losses))
    return head


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--kernels", action="store_true", help="re-run the AOT kernel resource report")
    args = parser.parse_args(argv)
    head = build(args.results, args.kernels)
    print(f"wrote {args.results / 'PERFORMANCE.md'} and {args.results / 'report.md'}")
    if head:
        print(json.dumps({k: v for k, v in head.items() if not isinstance(v, dict)}, indent=1))


if __name__ == "__main__":
    main()
