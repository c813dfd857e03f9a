"""Export a MixSTE checkpoint for deployment (ONNX, AOTInductor ``.pt2``) and run the exported files.

    python -m fastmixste.deploy.export --checkpoint CK --format onnx|pt2 --out FILE [--frames T] [--overwrite]

Any checkpoint :func:`fastmixste.load_checkpoint` reads (this project's, upstream MixSTE ``.bin``) exports. The
graph takes ``pose_2d`` (B, T, 17, in_chans) float32 with the batch B dynamic and T fixed (``--frames``, default the
model's num_frame) and returns ``pose_3d`` (B, T, 17, 3). Flip averaging and windowing stay outside the graph (the
runtime does them, as ``train.infer`` does for PyTorch).

- ``onnx``: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), opset 18; should that exporter fail, the
  TorchScript exporter, and the file's metadata says which one made it. ONNX Runtime then runs the written graph on
  an input and its output is compared with PyTorch's on the same input: more than 1e-4 max abs (fp32) and nothing is
  written.
- ``pt2``: ``torch.export`` + AOTInductor compiled into a ``.pt2`` package for the CPU (a C++ compiler is needed;
  minutes for a small model on 2 cores) or, with ``--device cuda``, for a GPU; checked the same way after loading.

Both carry the input contract (``contract(...)``: layout, normalisation, frames, fps, the model config, a digest
of the weights, the exporter) in the file: ONNX ``metadata_props["fastmixste"]``, pt2 an extra file
``fastmixste.json`` in the package. The fused Triton attention cannot be exported into ONNX, nor compiled without
a GPU: asking for it exports the sdpa path (same weights) and says why.

Writes are atomic, and a file at ``--out`` that is not an export of this tool is never replaced (``--overwrite``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io.cli import UserInputError, add_debug_argument, run_cli
from ..model.attention import available_backends
from ..model.config import MixSTEConfig
from ..video.detectors import MissingExtraError, require

FORMATS: tuple[str, ...] = ("onnx", "pt2")
RUNTIMES: tuple[str, ...] = ("torch",) + FORMATS
CONTRACT_KEY = "fastmixste"
CONTRACT_FORMAT = "fastmixste-export"
CONTRACT_VERSION = 1
PT2_EXTRA = "fastmixste.json"
OPSET = 18
TOLERANCE = 1e-4  # max abs, fp32: exported vs PyTorch on the same input
MAX_BATCH = 4096  # the dynamic batch's upper bound in the exported graph
INPUT_NAME, OUTPUT_NAME = "pose_2d", "pose_3d"
#: the rate of the data the models are trained on (Human3.6M and the built-in stand-in are 50 fps)
TRAINED_FPS = 50.0


class ExportError(UserInputError):
    """An export that cannot be made or an exported file that cannot be used (exit 2 from the CLIs)."""


# ----------------------------------------------------------------------------------------------------------------
# The contract an exported file carries
# ----------------------------------------------------------------------------------------------------------------

def weights_digest(model: nn.Module) -> str:
    """sha256 over the state_dict (names, shapes, fp32 bytes): identifies the weights an export was made from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def contract(model: nn.Module, frames: int, *, backend: str, exporter: str, source: str,
             fps: float = TRAINED_FPS) -> dict[str, Any]:
    """The metadata an exported file carries: what goes in, what comes out, and which model made it."""
    cfg = model.config
    return {
        "format": CONTRACT_FORMAT,
        "format_version": CONTRACT_VERSION,
        "config": cfg.to_dict(),
        "frames": int(frames),
        "fps": float(fps),
        "input": {
            "name": INPUT_NAME,
            "layout": f"(B, {frames}, {cfg.num_joints}, {cfg.in_chans}) float32, B dynamic (1..{MAX_BATCH})",
            "joints": "Human3.6M 17 (fastmixste.data.skeleton.H36M_JOINT_NAMES)" if cfg.num_joints == 17 else
                      f"{cfg.num_joints} joints",
            "normalisation": "screen coordinates: x / w * 2 - 1, y / w * 2 - h / w (pixels, image width w, "
                             "height h; fastmixste.video.keypoints.normalize_screen)",
            "channels": "x, y" if cfg.in_chans == 2 else "x, y, confidence",
        },
        "output": {
            "name": OUTPUT_NAME,
            "layout": f"(B, {frames}, {cfg.num_joints}, 3) float32",
            "units": "metres, camera axes (x right, y down, z forward), root-relative (set the root joint to 0)",
        },
        "flip": "not in the graph: average the output with the un-flipped output of the flipped input "
                "(fastmixste.data.skeleton.flip_pose) as train.infer does",
        "windows": f"sequences longer than {frames} frames go in windows of {frames} (fastmixste.data.windows."
                   f"eval_windows); shorter ones are edge-padded to {frames}",
        "attention": backend,
        "exporter": exporter,
        "weights_sha256": weights_digest(model),
        "source": source,
        "torch": torch.__version__,
    }


def read_contract(path: str | os.PathLike) -> dict[str, Any] | None:
    """The contract stored in an exported file (ONNX or pt2), or None when the file is not one of ours.

    Reads the metadata only (no model is loaded). Raises ExportError for a file that cannot be read at all.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such exported model file")
    text = None
    if zipfile.is_zipfile(path):  # a .pt2 package
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(f"extra/{PT2_EXTRA}")]
            if names:
                text = zf.read(names[0]).decode("utf-8", errors="replace")
    else:
        onnx = _try_import("onnx")
        if onnx is None:
            return None
        try:
            m = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001 (protobuf raises its own types: not an ONNX file)
            return None
        text = next((p.value for p in m.metadata_props if p.key == CONTRACT_KEY), None)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CONTRACT_FORMAT else None


def _try_import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


def _require_export_extra(*modules: str, what: str) -> None:
    for m in modules:
        require(m, "export", what)


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------

def example_input(config: MixSTEConfig, frames: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(batch, frames, J, in_chans) float32: a plausible normalised 2D input (screen coordinates within +-1)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, frames, config.num_joints, config.in_chans, generator=g) * 1.6 - 0.8)
    if config.in_chans == 3:
        x[..., 2] = x[..., 2].abs()  # a confidence channel is in [0, 1]
    return x


def choose_backend(requested: str, fmt: str, device: str) -> tuple[str, str | None]:
    """-> (attention backend the export uses, a note when it is not the requested one).

    The fused Triton kernels are not ONNX operators, and AOTInductor compiles them only with a GPU; elsewhere the
    sdpa path (same weights) is exported instead.
    """
    if requested in ("auto", "sdpa"):
        return "sdpa", None
    if requested == "eager":
        return "eager", None
    if requested == "triton":
        if fmt == "onnx":
            why = "ONNX has no operator for the fused Triton kernels (they stay CUDA code)"
        elif device != "cuda":
            reasons = available_backends("cpu")["triton"] or ["the kernels need a CUDA GPU"]
            why = "AOTInductor compiles Triton kernels only for a CUDA GPU (--device cuda): " + "; ".join(reasons)
        else:
            return "triton", None
        return "sdpa", f"the fused Triton path cannot be exported here ({why}); exported the sdpa path instead " \
                       f"(same weights, same outputs within {TOLERANCE:g})"
    raise ExportError(f"--backend {requested!r} cannot be exported; expected sdpa, eager or triton")


def _check_frames(config: MixSTEConfig, frames: int | None) -> int:
    frames = config.num_frame if frames is None else frames
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= config.num_frame:
        raise ExportError(f"--frames must be 1..{config.num_frame} (the model's num_frame), got {frames}")
    return frames


def check_replace(out: Path, overwrite: bool) -> None:
    """Refuse an --out that exists and is not an export of this tool, unless ``overwrite``; refuse folders."""
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file name")
    if not out.exists() or overwrite:
        return
    try:
        ours = read_contract(out) is not None
    except ExportError:
        ours = False
    if not ours:
        raise ExportError(f"--out {out} exists and is not a model this command exported; pass --overwrite to "
                          f"replace it, or choose another --out")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters log progress and warnings (torchvision ops missing, deprecations): keep them out of a CLI."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._inductor", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _dynamic_batch() -> Any:
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def _check_and_publish(model: nn.Module, lifter: nn.Module, frames: int, tmp: Path, out: Path, device: str) -> float:
    """Compare the exported file (loaded as ``lifter``) with PyTorch; within TOLERANCE rename it to ``out``."""
    diff = max_abs_diff(model, lifter, frames, device=device)
    if not diff <= TOLERANCE:
        raise ExportError(f"the exported {lifter.runtime} model differs from PyTorch by {diff:.3g} max abs on the "
                          f"same input (tolerance {TOLERANCE:g}); nothing written at {out}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return diff


def _first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message that says something."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    summary = next((line for line in lines if "No ONNX function" in line or "not supported" in line), None)
    return f"{type(exc).__name__}: {summary or (lines[0] if lines else '')}"


def export_onnx(model: nn.Module, out: Path, frames: int, meta: dict[str, Any], *, opset: int = OPSET) -> dict:
    """Export ``model`` (eval, CPU) to ONNX at ``out`` (atomic) with ``meta`` in metadata_props; -> {"exporter",
    "max_abs_diff"}. ONNX Runtime checks the written graph against PyTorch before the file appears."""
    _require_export_extra("onnx", "onnxscript", "onnxruntime", what="ONNX export")
    import onnx

    example = example_input(model.config, frames)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp.onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _quiet_exporter():
            try:
                torch.onnx.export(model, (example,), str(tmp), dynamo=True, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=False,
                                  dynamic_shapes=({0: _dynamic_batch()},), verbose=False)
                exporter = f"torch.onnx.export(dynamo=True) (torch.export + onnxscript), opset {opset}"
            except Exception as exc:  # noqa: BLE001 (any failure of the new exporter: try the TorchScript one)
                first = _first_line(exc)
                try:
                    torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
                except Exception as exc2:  # noqa: BLE001 (both exporters failed: say why, no traceback)
                    raise ExportError(f"neither ONNX exporter could export this model (torch.onnx.export with "
                                      f"dynamo=True: {first}; the TorchScript exporter: {_first_line(exc2)}); "
                                      f"--format pt2 exports any model torch.export can trace") from None
                exporter = f"TorchScript exporter (dynamo=False), opset {opset}; dynamo=True failed: {first}"
        m = onnx.load(str(tmp))
        meta = {**meta, "exporter": exporter}
        del m.metadata_props[:]
        entry = m.metadata_props.add()
        entry.key, entry.value = CONTRACT_KEY, json.dumps(meta)
        m.producer_name = "fastmixste.deploy.export"
        onnx.checker.check_model(m)
        tmp.write_bytes(m.SerializeToString())
        diff = _check_and_publish(model, OnnxLifter(tmp), frames, tmp, out, "cpu")
    finally:
        tmp.unlink(missing_ok=True)
    return {"exporter": exporter, "max_abs_diff": diff}


def export_pt2(model: nn.Module, out: Path, frames: int, meta: dict[str, Any], *, device: str = "cpu") -> dict:
    """torch.export + AOTInductor package at ``out`` (atomic) for ``device``, ``meta`` as an extra file of the
    package; -> {"exporter", "max_abs_diff"} (the loaded package against PyTorch on the same input)."""
    from torch._inductor import aot_compile
    from torch.export.pt2_archive._package import package_pt2

    model = model.to(device)
    example = example_input(model.config, frames).to(device)
    exporter = f"torch.export + AOTInductor ({device})"
    meta = {**meta, "exporter": exporter, "device": device}
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp.pt2")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory(prefix="fastmixste-aoti-") as build, _quiet_exporter():
            with torch.no_grad():
                ep = torch.export.export(model, (example,), dynamic_shapes=({0: _dynamic_batch()},))
            files = aot_compile(ep.module(check_guards=False), (example,),
                                options={"aot_inductor.package": True, "aot_inductor.output_path": build})
            package_pt2(str(tmp), aoti_files={"model": files}, extra_files={PT2_EXTRA: json.dumps(meta)})
        diff = _check_and_publish(model, Pt2Lifter(tmp), frames, tmp, out, device)
    finally:
        tmp.unlink(missing_ok=True)
    return {"exporter": exporter, "max_abs_diff": diff}


@torch.inference_mode()
def max_abs_diff(model: nn.Module, lifter: nn.Module, frames: int, *, batch: int = 3,
                 device: str | torch.device = "cpu") -> float:
    """Max abs difference between ``model`` and an exported ``lifter`` on one input (a batch size other than the
    one exported with, so the dynamic batch is exercised)."""
    x = example_input(model.config, frames, batch=batch, seed=1).to(device)
    return float((lifter(x).float() - model(x).float()).abs().max())


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *, frames: int | None = None,
                      backend: str = "sdpa", device: str = "cpu", fps: float = TRAINED_FPS, overwrite: bool = False,
                      num_heads: int | None = None) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` in ``fmt`` ("onnx" or "pt2") -> a summary (exporter, max_abs_diff, notes).

    Raises ExportError (bad options, a file in the way, outputs that differ), CheckpointError, MissingExtraError.
    """
    from ..model.checkpoint import load_checkpoint

    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    if device not in ("cpu", "cuda"):
        raise ExportError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and (fmt == "onnx" or not torch.cuda.is_available()):
        raise ExportError("--device cuda needs --format pt2 and a CUDA GPU (torch.cuda.is_available() is "
                          f"{torch.cuda.is_available()}); ONNX files are exported on the CPU and run anywhere")
    if not (fps > 0 and np.isfinite(fps)):
        raise ExportError(f"--fps must be a positive number, got {fps}")
    out = Path(out)
    want = ".onnx" if fmt == "onnx" else ".pt2"
    if out.suffix != want:
        raise ExportError(f"--out must end in {want} for --format {fmt}, got {out.name!r}")
    check_replace(out, overwrite)
    if fmt == "onnx":  # before the minutes of work: name the missing extra now
        _require_export_extra("onnx", "onnxscript", "onnxruntime", what="ONNX export")
    out.parent.mkdir(parents=True, exist_ok=True)
    used, note = choose_backend(backend, fmt, device)
    model = load_checkpoint(checkpoint, attn_backend=used, map_location="cpu", num_heads=num_heads).float().eval()
    if fmt == "onnx" and model.config.token_num is not None:
        raise ExportError(f"this checkpoint prunes tokens (HoT, token_num={model.config.token_num}): its frame "
                          "clustering uses torch.cdist, which neither ONNX exporter translates; export it with "
                          "--format pt2 (torch.export + AOTInductor carries it)")
    frames = _check_frames(model.config, frames)
    meta = contract(model, frames, backend=used, exporter="", source=Path(checkpoint).name, fps=fps)
    t0 = time.perf_counter()
    if fmt == "onnx":
        info = export_onnx(model, out, frames, meta)
    else:
        info = export_pt2(model, out, frames, meta, device=device)
    info.update({"out": str(out), "format": fmt, "frames": frames, "attention": used, "notes": [note] if note
                 else [], "seconds": time.perf_counter() - t0, "config": model.config.to_dict()})
    return info


# ----------------------------------------------------------------------------------------------------------------
# Running exported files: modules that look like the model to the lifting code
# ----------------------------------------------------------------------------------------------------------------

class ExportedLifter(nn.Module):
    """An exported file as a module: (B, frames, J, C) float32 tensor -> (B, frames, J, 3).

    ``config`` is the exported model's, with ``num_frame`` set to the exported frames (the window the runtime
    cuts), so :func:`fastmixste.video.decode.lift` and :func:`fastmixste.eval.evaluation.predict_sequences` use it as
    a model.
    It holds one empty parameter for the code that asks a model for its device and dtype (CPU, float32).
    """

    runtime = "exported"

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        meta = meta if meta is not None else read_contract(self.path)
        if meta is None:
            raise ExportError(f"{self.path}: not a model exported by fastmixste.deploy.export (no {CONTRACT_KEY!r} "
                              f"metadata); export one with python -m fastmixste.deploy.export")
        self.contract = meta
        try:
            cfg = MixSTEConfig.from_dict(dict(meta["config"]))
            self.frames = int(meta["frames"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{self.path}: its stored contract is invalid ({exc})") from exc
        self.config = replace(cfg, num_frame=self.frames)
        self._anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def resolved_backend(self, x: torch.Tensor | None = None) -> str:
        return f"{self.runtime} ({self.contract.get('attention', '?')} path, {self.path.name})"

    def _check(self, x: torch.Tensor) -> None:
        c = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.frames, c.num_joints, c.in_chans):
            raise ValueError(f"{self.path.name} takes (B, {self.frames}, {c.num_joints}, {c.in_chans}), got "
                             f"{tuple(x.shape)}")
        if not 1 <= x.shape[0] <= MAX_BATCH:
            raise ValueError(f"{self.path.name} takes a batch of 1..{MAX_BATCH}, got {x.shape[0]}")


class OnnxLifter(ExportedLifter):
    """An exported ONNX file run by ONNX Runtime on the CPU."""

    runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        ort = require("onnxruntime", "export", "the onnx runtime")
        super().__init__(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own exception types)
            raise ExportError(f"{self.path}: onnxruntime cannot load this model ({exc})") from exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, frames, J, C) -> (B, frames, J, 3)."""
        self._check(x)
        a = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: a})[0]).to(x.device)


class Pt2Lifter(ExportedLifter):
    """An AOTInductor package (``.pt2``) loaded with ``torch._inductor.aoti_load_package``."""

    runtime = "aoti"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        import torch._inductor

        try:
            with _quiet_exporter():
                self.runner = torch._inductor.aoti_load_package(str(self.path))
        except Exception as exc:  # noqa: BLE001 (a package for another machine/torch fails in C++)
            raise ExportError(f"{self.path}: this torch ({torch.__version__}) cannot load the package "
                              f"({type(exc).__name__}: {exc})") from exc
        self.device = torch.device(self.contract.get("device", "cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, frames, J, C) -> (B, frames, J, 3)."""
        self._check(x)
        with torch.inference_mode():
            return self.runner(x.to(self.device, torch.float32).contiguous()).to(x.device)


def open_exported(path: str | os.PathLike, threads: int | None = None) -> ExportedLifter:
    """An exported file (ONNX or pt2, told by its contents) -> the module that runs it."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"--model-file {path}: no such file")
    if zipfile.is_zipfile(path):
        return Pt2Lifter(path)
    return OnnxLifter(path, threads=threads)


def runtime_model(model: nn.Module, runtime: str, *, model_file: str | os.PathLike | None = None,
                  threads: int | None = None, log: Any = None) -> nn.Module:
    """The module that lifts on ``runtime``: ``model`` itself for "torch"; for "onnx"/"pt2" the exported
    ``model_file``, checked to hold ``model``'s weights (digest) and to be that format, or — without a file —
    ``model`` exported now (sdpa path, its num_frame) into a temporary folder that is gone once the file is loaded.
    """
    if runtime not in RUNTIMES:
        raise ExportError(f"--runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        if model_file is not None:
            raise ExportError("--model-file is run by --runtime onnx or pt2; with --runtime torch the checkpoint runs")
        return model
    what = f"--runtime {runtime}"
    _require_export_extra(*(("onnx", "onnxscript", "onnxruntime") if runtime == "onnx" else ()), what=what)
    if model_file is None:
        cpu = model.to("cpu").float().eval()
        used, _ = choose_backend(cpu.config.attn_backend, runtime, "cpu")
        cpu.set_attn_backend(used)
        meta = contract(cpu, cpu.config.num_frame, backend=used, exporter="", source="train.infer --runtime")
        if log is not None:
            log(f"exporting the checkpoint for {what} into a temporary folder"
                + (" (AOTInductor compiles C++: minutes)" if runtime == "pt2" else ""))
        with tempfile.TemporaryDirectory(prefix="fastmixste-runtime-") as tmp:
            path = Path(tmp) / f"model.{runtime}"
            (export_onnx if runtime == "onnx" else export_pt2)(cpu, path, cpu.config.num_frame, meta)
            return open_exported(path, threads=threads)
    lifter = open_exported(model_file, threads=threads)
    kind = "pt2" if isinstance(lifter, Pt2Lifter) else "onnx"
    if kind != runtime:
        raise ExportError(f"--model-file {model_file} is a {kind} export; --runtime is {runtime}")
    if lifter.contract.get("weights_sha256") != weights_digest(model):
        raise ExportError(f"--model-file {model_file} was exported from other weights than --checkpoint "
                          f"(its weights_sha256 differs); export this checkpoint or give the matching file")
    return lifter


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fastmixste.deploy.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="fastmixste checkpoint or upstream MixSTE .bin")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx (ONNX Runtime) or pt2 (AOTInductor)")
    p.add_argument("--out", required=True, help="output file (.onnx or .pt2)")
    p.add_argument("--frames", type=int, default=None, help="frames per window in the graph (default num_frame)")
    p.add_argument("--backend", default="sdpa", choices=("sdpa", "eager", "triton"),
                   help="attention path to export (triton: only pt2 on a GPU; elsewhere sdpa is exported)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="pt2: compile for this device")
    p.add_argument("--fps", type=float, default=TRAINED_FPS,
                   help=f"frame rate stored in the contract (the rate the model expects; default {TRAINED_FPS:g})")
    p.add_argument("--num-heads", type=int, default=None, help="heads of an upstream checkpoint (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace a file at --out that this tool did not make")
    add_debug_argument(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = export_checkpoint(args.checkpoint, args.format, args.out, frames=args.frames, backend=args.backend,
                                 device=args.device, fps=args.fps, overwrite=args.overwrite, num_heads=args.num_heads)
    except MissingExtraError as exc:  # an ImportError: the CLI boundary would call it a bug
        raise ExportError(str(exc)) from exc
    for note in info["notes"]:
        print(f"note: {note}")
    c = info["config"]
    print(f"exported {args.checkpoint} ({c['depth']} block pairs, width {c['embed_dim_ratio']}, {info['frames']} "
          f"frames, {info['attention']} attention) with {info['exporter']} in {info['seconds']:.1f} s")
    print(f"max abs diff vs PyTorch on the same input: {info['max_abs_diff']:.3g} (tolerance {TOLERANCE:g}) "
          f"-> {info['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))


__all__ = [
    "ExportError", "ExportedLifter", "FORMATS", "MissingExtraError", "OnnxLifter", "Pt2Lifter", "RUNTIMES",
    "contract", "export_checkpoint", "open_exported", "read_contract", "runtime_model", "weights_digest",
]  # fmt: skip
