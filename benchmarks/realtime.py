"""Real-time numbers on this machine: the lifter alone per runtime and batch, the streaming pipeline, and streaming
accuracy against offline.

    python -m benchmarks.realtime --checkpoint CK [--runtimes torch,onnx,pt2] [--batches 1,2,8,32] [--threads 1]
                                  [--accuracy] [--cuda-graphs] [--json benchmarks/results/realtime.json]

- Lifter alone: one pass of B windows of the model's num_frame frames, the runtimes interleaved pass by pass (side
  by side, so a load change on a shared machine hits them alike); median and p95 per pass. In streaming one window
  gives one frame (B windows/pass = B frames); offline a window gives num_frame frames. ``onnx``/``pt2`` are the
  checkpoint exported now (fastmixste.deploy.export, sdpa path). ``--cuda-graphs`` (GPU only) adds eager PyTorch
  replayed from a captured CUDA graph; on a CPU it is skipped with the reason.
- Pipeline: a 720p clip made here (PyAV) decoded frame by frame -> detect -> stream-lift -> write (StreamWriter),
  per runtime, lookahead 0 (latency = compute) and half the window. The detector is the MediaPipe one when it is
  installed, else a stand-in that returns a fixed pose (no model: the numbers then cover decode + lift + write).
- ``--accuracy``: MPJPE of streaming at lookahead 0, 9, half the window and num_frame - 1 against the offline path
  (same model, flip on), on the built-in test set (camera 0 of every S9/S11 sequence) and the held-out motion
  (camera 0, one clip per pattern). The streaming windows are those of StreamLifter (``stream_plan``), batched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _percentiles(ts: list[float]) -> tuple[float, float]:
    a = np.asarray(ts)
    return float(np.median(a)), float(np.percentile(a, 95))


def make_lifters(model: torch.nn.Module, runtimes: list[str], threads: int, workdir: Path) -> dict:
    """runtime -> module (torch: the model; onnx/pt2: exported into ``workdir`` now)."""
    from fastmixste.deploy.export import contract, export_onnx, export_pt2, open_exported

    out = {}
    for rt in runtimes:
        if rt == "torch":
            out[rt] = model
            continue
        path = workdir / f"model.{rt}"
        meta = contract(model, model.config.num_frame, backend="sdpa", exporter="", source="benchmarks.realtime")
        t0 = time.perf_counter()
        (export_onnx if rt == "onnx" else export_pt2)(model, path, model.config.num_frame, meta)
        print(f"exported {rt} in {time.perf_counter() - t0:.0f} s", flush=True)
        out[rt] = open_exported(path, threads=threads)
    return out


class CudaGraphLifter(torch.nn.Module):
    """Eager PyTorch replayed from one captured CUDA graph per batch size (GPU only)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.config, self.graphs = model, model.config, {}

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key not in self.graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up outside the graph (allocations, kernel selection)
                    self.model(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


def bench_lifter(lifters: dict, config, batches: list[int], repeats: int, device: torch.device) -> list[dict]:
    rows = []
    F, J, C = config.num_frame, config.num_joints, config.in_chans
    for b in batches:
        x = torch.from_numpy(np.random.default_rng(b).uniform(-0.8, 0.8, (b, F, J, C)).astype(np.float32))
        times: dict[str, list[float]] = {rt: [] for rt in lifters}
        with torch.inference_mode():
            for m in lifters.values():  # warm-up
                for _ in range(3):
                    m(x.to(device))
            for _ in range(repeats):
                for rt, m in lifters.items():
                    xin = x.to(device)
                    t0 = time.perf_counter()
                    y = m(xin)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    y.cpu()
                    times[rt].append(time.perf_counter() - t0)
        for rt, ts in times.items():
            med, p95 = _percentiles(ts)
            rows.append({"runtime": rt, "batch": b, "median_ms": 1e3 * med, "p95_ms": 1e3 * p95,
                         "stream_frames_per_s": b / med, "offline_frames_per_s": b * F / med})
    return rows


def make_clip(path: Path, frames: int, size: tuple[int, int] = (1280, 720), fps: int = 30) -> None:
    """A synthetic 720p H.264/MPEG-4 clip (a moving bright box) written with PyAV."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            a = np.zeros((h, w, 3), np.uint8)
            x0 = (40 + 7 * i) % (w - 200)
            a[200:600, x0:x0 + 150] = 220
            for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


class FixedPose:
    """Stand-in detector (no model): one person, a fixed H36M pose swaying a little, confidence 1."""

    name, version, layout = "fixed-pose stand-in", "", "h36m"

    def __init__(self) -> None:
        from fastmixste.data.skeleton import H36M_PARENTS

        rng = np.random.default_rng(0)
        self.pose = np.zeros((17, 2), np.float32)
        for j, p in enumerate(H36M_PARENTS):
            if p >= 0:
                self.pose[j] = self.pose[p] + rng.normal(0, 40, 2)
        self.pose += (640, 360)
        self.t = 0

    def detect(self, frames: np.ndarray) -> np.ndarray:
        out = np.ones((len(frames), 1, 17, 3), np.float32)
        for i in range(len(frames)):
            out[i, 0, :, :2] = self.pose + 10 * np.sin(0.1 * self.t)
            self.t += 1
        return out

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "layout": self.layout}


def make_detector():
    try:
        from fastmixste.video.detectors import MediaPipePose

        return MediaPipePose(), "mediapipe"
    except ImportError:  # MissingExtraError: not installed here
        return FixedPose(), "fixed-pose stand-in (mediapipe not installed: decode + lift + write only)"


def bench_pipeline(lifters: dict, clip: Path, lookaheads: list[int], workdir: Path) -> list[dict]:
    from fastmixste.deploy.stream import detected_stream, run_stream, video_frames
    from fastmixste.video.decode import open_video

    rows = []
    for L in lookaheads:
        for rt, m in lifters.items():
            source = open_video(clip)
            detector, what = make_detector()
            frames = detected_stream(video_frames(source), detector, source.width, source.height)
            t0 = time.perf_counter()
            meta = run_stream(m, frames, workdir / f"stream_{rt}_{L}.npz", lookahead=L)
            wall = time.perf_counter() - t0
            rows.append({"runtime": rt, "lookahead": L, "frames": meta["num_frames"],
                         "frames_per_s": meta["num_frames"] / wall, "latency_median_ms": 1e3 * meta["latency_median_s"],
                         "latency_p95_ms": 1e3 * meta["latency_p95_s"], "detector": what,
                         "video": f"{source.width}x{source.height} {source.codec} {source.fps:g} fps"})
            print(f"pipeline {rt} L={L}: {rows[-1]['frames_per_s']:.1f} frames/s, latency median "
                  f"{rows[-1]['latency_median_ms']:.1f} ms p95 {rows[-1]['latency_p95_ms']:.1f} ms", flush=True)
    return rows


def stream_predictions(model, x: np.ndarray, lookahead: int, batch: int = 256) -> np.ndarray:
    """(T, 17, C) -> (T, 17, 3): what StreamLifter outputs (flip on), computed in batches of windows."""
    from fastmixste.data.skeleton import H36M_LEFT, H36M_RIGHT, flip_pose
    from fastmixste.deploy.stream import stream_plan

    idx, pos = stream_plan(len(x), model.config.num_frame, lookahead)
    out = np.empty((len(x), 17, 3), np.float32)
    with torch.inference_mode():
        for lo in range(0, len(x), batch):
            w = torch.from_numpy(x[idx[lo:lo + batch]])
            n = len(w)
            p = model(torch.cat([w, flip_pose(w, H36M_LEFT, H36M_RIGHT)]))
            p = (p[:n] + flip_pose(p[n:], H36M_LEFT, H36M_RIGHT)) / 2
            out[lo:lo + n] = p[torch.arange(n), torch.from_numpy(pos[lo:lo + n])].numpy()
    return out


def bench_accuracy(model, lookaheads: list[int]) -> list[dict]:
    from fastmixste.data.builtin import builtin_data_dir
    from fastmixste.data.h36m import TEST_SUBJECTS, load_h36m
    from fastmixste.data.motion import heldout_sequences
    from fastmixste.eval.evaluation import predict_sequences

    sets = {
        "built-in test set (S9/S11, camera 0)":
            [s for s in load_h36m(builtin_data_dir()).sequences(TEST_SUBJECTS) if s.camera == 0],
        "held-out motion (camera 0, 1 clip per pattern)":
            [s for s in heldout_sequences(clips_per_pattern=1) if s.camera == 0],
    }
    rows = []
    for name, seqs in sets.items():
        gt = np.concatenate([s.pose_3d for s in seqs])
        off, _ = predict_sequences(model, [s.pose_2d for s in seqs], flip=True, batch_size=256, progress=False)
        off = np.concatenate(off)
        e_off = float(np.linalg.norm(off - gt, axis=-1).mean() * 1000)
        for L in lookaheads:
            on = np.concatenate([stream_predictions(model, s.pose_2d, L) for s in seqs])
            e_on = float(np.linalg.norm(on - gt, axis=-1).mean() * 1000)
            rows.append({"data": name, "frames": len(gt), "lookahead": L, "offline_mpjpe_mm": e_off,
                         "stream_mpjpe_mm": e_on, "difference_mm": e_on - e_off,
                         "stream_vs_offline_mm": float(np.linalg.norm(on - off, axis=-1).mean() * 1000)})
            print(f"{name} L={L}: stream {e_on:.2f} mm vs offline {e_off:.2f} mm ({e_on - e_off:+.2f})", flush=True)
    return rows


def tables(result: dict) -> str:
    lines = [f"Lifter alone ({result['where']}; {result['model']}), per pass of B windows, runtimes interleaved:", "",
             "| runtime | B | median ms | p95 ms | stream frames/s | offline frames/s | vs torch |",
             "|---|---|---|---|---|---|---|"]
    torch_fps = {r["batch"]: r["stream_frames_per_s"] for r in result["lifter"] if r["runtime"] == "torch"}
    for r in result["lifter"]:
        ratio = r["stream_frames_per_s"] / torch_fps[r["batch"]] if r["batch"] in torch_fps else float("nan")
        lines.append(f"| {r['runtime']} | {r['batch']} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | "
                     f"{r['stream_frames_per_s']:.0f} | {r['offline_frames_per_s']:.0f} | {ratio:.2f}x |")
    if result.get("cuda_graphs"):
        lines += ["", f"CUDA graphs: {result['cuda_graphs']}"]
    if result.get("pipeline"):
        p0 = result["pipeline"][0]
        lines += ["", f"Pipeline decode -> detect -> lift -> write ({p0['video']}, detector: {p0['detector']}):", "",
                  "| runtime | lookahead | frames | frames/s | latency median ms | latency p95 ms |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['runtime']} | {r['lookahead']} | {r['frames']} | {r['frames_per_s']:.1f} | "
                  f"{r['latency_median_ms']:.1f} | {r['latency_p95_ms']:.1f} |" for r in result["pipeline"]]
    if result.get("accuracy"):
        lines += ["", "Streaming vs offline (flip on, MPJPE against the ground truth):", "",
                  "| data | frames | lookahead | offline mm | stream mm | difference mm | stream vs offline mm |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['data']} | {r['frames']} | {r['lookahead']} | {r['offline_mpjpe_mm']:.2f} | "
                  f"{r['stream_mpjpe_mm']:.2f} | {r['difference_mm']:+.2f} | {r['stream_vs_offline_mm']:.2f} |"
                  for r in result["accuracy"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.realtime", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--runtimes", default="torch,onnx,pt2")
    p.add_argument("--batches", default="1,2,8,32")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (default 1)")
    p.add_argument("--clip-frames", type=int, default=150, help="frames of the synthetic 720p clip (0: no pipeline)")
    p.add_argument("--accuracy", action="store_true", help="streaming vs offline MPJPE per lookahead")
    p.add_argument("--cuda-graphs", action="store_true", help="GPU: add eager PyTorch replayed from CUDA graphs")
    p.add_argument("--json", default=str(RESULTS / "realtime.json"))
    args = p.parse_args(argv)
    from fastmixste import load_checkpoint
    from fastmixste.io.files import atomic_write

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    model = load_checkpoint(args.checkpoint, attn_backend="sdpa").float().eval()
    cfg = model.config
    runtimes = [r for r in args.runtimes.split(",") if r]
    result = {"where": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
                       f"jobs, {args.threads} thread(s), torch {torch.__version__}",
              "model": f"{args.checkpoint}: {cfg.num_frame} frames, width {cfg.embed_dim_ratio}, depth {cfg.depth}, "
                       f"{model.num_parameters():,} parameters",
              "command": "python -m benchmarks.realtime " + " ".join(argv if argv is not None else sys.argv[1:])}
    with tempfile.TemporaryDirectory(prefix="fastmixste-realtime-") as tmp:
        work = Path(tmp)
        lifters = make_lifters(model, runtimes, args.threads, work)
        if args.cuda_graphs:
            if torch.cuda.is_available():
                device = torch.device("cuda")
                gpu = model.to(device)
                lifters = {"torch (cuda)": gpu, "torch (cuda graphs)": CudaGraphLifter(gpu)}
                result["cuda_graphs"] = f"measured on {torch.cuda.get_device_name()}"
            else:
                result["cuda_graphs"] = "skipped: no CUDA GPU here (torch.cuda.is_available() is False)"
                print(f"--cuda-graphs {result['cuda_graphs']}", flush=True)
        result["lifter"] = bench_lifter(lifters, cfg, [int(b) for b in args.batches.split(",")], args.repeats,
                                        device)
        if args.clip_frames > 0 and device.type == "cpu":
            clip = work / "clip.mp4"
            make_clip(clip, args.clip_frames)
            result["pipeline"] = bench_pipeline(lifters, clip, [0, cfg.num_frame // 2], work)
    if args.accuracy:
        looks = sorted({0, min(9, cfg.num_frame - 1), cfg.num_frame // 2, cfg.num_frame - 1})
        result["accuracy"] = bench_accuracy(model, looks)
    text = tables(result)
    print(text)
    out = Path(args.json)
    with atomic_write(out, "w", encoding="utf-8") as f:
        json.dump({**result, "table": text}, f, indent=2)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
