"""Ship a trained run's best model inside the package: ``fastmixste/weights/NAME.pt`` and its record ``NAME.json``.

    python -m train.ship --run runs/wild --name wild --command "python -m train.run --config wild --out runs/wild"
                         [--realdata realdata.json] [--overwrite]

The weights are the run's ``checkpoints/best.pt`` (model config, weights, the stage and step, the run's resolved
config), re-saved through ``save_checkpoint`` and loaded back to check them. The record holds the file's size and
sha256 (``load_checkpoint(NAME)`` refuses a file that does not match), the model config, the command that trained
it, the training time and the run's own scores, and optionally a real-data check's summary. At most 25 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from fastmixste import load_checkpoint, read_checkpoint, save_checkpoint
from fastmixste.io.cli import UserInputError
from fastmixste.io.files import atomic_write
from fastmixste.model.checkpoint import WEIGHTS_DIR

MAX_BYTES = 25 * 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.ship", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished run folder (checkpoints/best.pt, results.json)")
    p.add_argument("--name", required=True, help="the shipped model's name (load_checkpoint(NAME))")
    p.add_argument("--command", required=True, help="the command that trained the run, recorded as given")
    p.add_argument("--realdata", default=None, help="a benchmarks.realdata JSON to record beside the model")
    p.add_argument("--weights-dir", default=str(WEIGHTS_DIR), help="where shipped models live (the package's)")
    p.add_argument("--overwrite", action="store_true", help="replace a shipped model of the same name")
    return p.parse_args(argv)


def _finite(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserInputError(f"{what} {path} is missing")
    if path.stat().st_size > 16 * 1024 * 1024:
        raise UserInputError(f"{what} {path} is {path.stat().st_size} bytes; expected a small JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{what} {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"{what} {path}: expected a JSON object, got {type(data).__name__}")
    return data


def ship(run: Path, name: str, command: str, weights_dir: Path, realdata: Path | None = None,
         overwrite: bool = False) -> dict[str, Any]:
    """Copy ``run``'s best model into ``weights_dir`` as NAME.pt + NAME.json -> the record written."""
    if not name.isidentifier():
        raise UserInputError(f"--name must be a plain identifier (letters, digits, _), got {name!r}")
    best = run / "checkpoints" / "best.pt"
    if not best.is_file():
        raise UserInputError(f"{run} has no checkpoints/best.pt: is it a finished training run?")
    results = _read_json(run / "results.json", "the run's results")
    checked = _read_json(realdata, "--realdata") if realdata is not None else None
    pt, card = weights_dir / f"{name}.pt", weights_dir / f"{name}.json"
    for path in (pt, card):
        if path.exists() and not overwrite:
            raise UserInputError(f"{path} exists: pass --overwrite to replace the shipped model {name!r}")
    raw = read_checkpoint(best)
    model = load_checkpoint(best)
    extra = {k: raw[k] for k in ("stage", "step", "val_mpjpe", "run_config") if k in raw}
    weights_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(pt, model, **extra)
    size = pt.stat().st_size
    if size > MAX_BYTES:
        pt.unlink()
        raise UserInputError(f"the model is {size / 2**20:.1f} MB, above the {MAX_BYTES // 2**20} MB a shipped "
                             f"model may take")
    load_checkpoint(pt)  # loads back
    record = {
        "name": name,
        "file": pt.name,
        "bytes": size,
        "sha256": hashlib.sha256(pt.read_bytes()).hexdigest(),
        "parameters": model.num_parameters(),
        "config": model.config.to_dict(),
        "command": command,
        "train_seconds": results.get("train_seconds"),
        "trained_on": results.get("data"),
        "builtin_test": {"mpjpe_mm": results.get("protocol1", {}).get("Avg"),
                         "p_mpjpe_mm": results.get("protocol2", {}).get("Avg")},
        "heldout_motion": {k: (results.get("heldout") or {}).get(k) for k in ("speed_ratio", "speed_ratio_5f")}
        | {"mpjpe_mm": ((results.get("heldout") or {}).get("protocol1") or {}).get("Avg"),
           "p_mpjpe_mm": ((results.get("heldout") or {}).get("protocol2") or {}).get("Avg")},
        "realdata": checked.get("summary", checked) if checked is not None else None,
        "environment": results.get("environment"),
    }
    with atomic_write(card, "w") as f:
        json.dump(_finite(record), f, indent=1)
        f.write("\n")
    return record


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    rec = ship(Path(a.run), a.name, a.command, Path(a.weights_dir),
               Path(a.realdata) if a.realdata else None, a.overwrite)
    print(f"shipped {a.name!r}: {Path(a.weights_dir) / rec['file']} ({rec['bytes'] / 1024:.0f} KB, "
          f"{rec['parameters']:,} parameters, sha256 {rec['sha256'][:16]}...)")
    return 0


if __name__ == "__main__":
    from fastmixste.io.cli import run_cli

    sys.exit(run_cli(main))
