"""Real-time numbers on this machine: the lifter alone per runtime and batch, the live pipeline with the real
detector, and streaming accuracy against offline.

    python -m benchmarks.realtime [--checkpoint CK] [--runtimes torch,onnx,pt2] [--batches 1,2,8,32] [--threads 1]
                                  [--clip-frames 300] [--accuracy] [--no-download] [--cuda-graphs]
                                  [--json benchmarks/results/realtime.json]

The model is the shipped one (``load_checkpoint("wild")``, what ``train.infer`` lifts with) unless ``--checkpoint``
names another.

- Lifter alone: one pass of B windows of the model's num_frame frames, the runtimes interleaved pass by pass (side
  by side, so a load change on a shared machine hits them alike); median and p95 per pass. In streaming one window
  gives one frame (B windows/pass = B frames); offline a window gives num_frame frames. ``onnx``/``pt2`` are the
  checkpoint exported now (fastmixste.deploy.export, sdpa path). ``--cuda-graphs`` (GPU only) adds eager PyTorch
  replayed from a captured CUDA graph; on a CPU it is skipped with the reason.
- Live pipeline (``benchmarks.realtime_live``): a 720p clip of a real person (the real-data check's recording),
  what the detector alone costs per frame, and decode -> MediaPipe -> stream-lift -> write per runtime at
  lookahead 0 and half the window, in one thread and in two, read flat out and paced like a camera at 25 fps
  (``--camera-fps``).
- ``--accuracy``: streaming at lookahead 0, 9, half the window and num_frame - 1 against the offline path (same
  model, flip on): MPJPE and P-MPJPE on the built-in test set (camera 0 of every S9/S11 sequence), the held-out
  motion (camera 0, one clip per pattern) and the real recording (``benchmarks.realdata``: 8 person-views against
  the 4-camera triangulation, the video path's 2D; at half the window also with the 2D made online, gaps held as
  a live stream must), with the root in the camera frame solved online against offline's. The streaming windows
  are those of StreamLifter (``stream_plan``), batched.
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


def _scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(N, 17, 3) metres -> (MPJPE, P-MPJPE) in mm."""
    from fastmixste.eval.metrics import mpjpe, p_mpjpe

    return 1000 * mpjpe(pred, truth), 1000 * p_mpjpe(pred, truth)


def bench_accuracy(model, lookaheads: list[int]) -> list[dict]:
    """Streaming vs offline on the built-in test set and the held-out motion (ground truth) -> rows per lookahead."""
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
        e_off, p_off = _scores(off, gt)
        for L in lookaheads:
            on = np.concatenate([stream_predictions(model, s.pose_2d, L) for s in seqs])
            e_on, p_on = _scores(on, gt)
            rows.append({"data": name, "frames": len(gt), "lookahead": L, "offline_mpjpe_mm": e_off,
                         "stream_mpjpe_mm": e_on, "difference_mm": e_on - e_off, "offline_p_mpjpe_mm": p_off,
                         "stream_p_mpjpe_mm": p_on, "p_difference_mm": p_on - p_off,
                         "stream_vs_offline_mm": float(np.linalg.norm(on - off, axis=-1).mean() * 1000)})
            print(f"{name} L={L}: stream {e_on:.2f} mm vs offline {e_off:.2f} mm ({e_on - e_off:+.2f}); P-MPJPE "
                  f"{p_on:.2f} vs {p_off:.2f}", flush=True)
    return rows


def online_2d(kps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A person's detections (``Keypoints2D``: joints the detector saw are the ones not ``filled``) made online as a
    live stream makes them (``OnlinePose``: unsure joints held at their last position, frames before the first
    detection given the first pose) -> ((T, 17, 2) normalised input, (T, 17, 2) pixels, (T, 17) root weights)."""
    from fastmixste.deploy.stream import OnlinePose

    track = OnlinePose(kps.width, kps.height, min_confidence=0.0)
    seen = np.where(kps.filled, 0.0, np.nan_to_num(kps.confidence, nan=0.0))
    people = np.concatenate([np.where(kps.filled[..., None], np.nan, kps.pose), seen[..., None]], axis=-1)
    xs, px, weights, before = [], [], [], 0
    for t in range(len(people)):
        x, conf, filled = track.update(people[t][None] if np.isfinite(people[t, :, :2]).any() else people[t][:0])
        if x is None:  # nobody yet: these frames get the first pose (as detected_stream does)
            before += 1
            continue
        for _ in range(before + 1):
            xs.append(x)
            px.append(track.last.copy())
        weights += [np.full(17, 1e-3)] * before + [np.where(filled, 0.0, conf) + 1e-3]
        before = 0
    return np.stack(xs), np.stack(px), np.stack(weights)


def real_recording_accuracy(model, lookaheads: list[int], download: bool = True) -> list[dict]:
    """Streaming vs offline on the real-data check's recording (``benchmarks.realdata``): per lookahead, MPJPE and
    P-MPJPE of the 8 person-views against the triangulated reference (root-relative, camera frame), and the root
    error of the online root (``OnlineRoot`` from each frame's pose and 2D, the camera's intrinsics) beside
    offline's (``root_trajectory`` over the whole clip). At half the window also with the 2D made online. Then the
    same with the detector's 3D blended in (``OnlineFusion`` frame by frame, against the offline blend of
    ``train.infer --video``)."""
    from benchmarks.realdata import load_scene, model_predictor, score_predictions
    from fastmixste.deploy.stream import OnlineRoot
    from fastmixste.video.fusion import OnlineFusion

    scene = load_scene(download=download, progress=False)
    lifted: dict = {}  # one offline lift per view for both
    offline = {fuse: score_predictions(scene, model_predictor(model, detector_3d=fuse, lifted=lifted))
               for fuse in (False, True)}

    def online_blend(pose: np.ndarray, world: np.ndarray, fps: float, L: int) -> np.ndarray:
        fusion, out = OnlineFusion(fps, L), np.empty_like(pose)
        for t in range(len(pose) + L):  # frame t - L is fused once frame t's detector 3D has come
            if t < len(pose):
                fusion.add(world[t])
            if t >= L:
                out[t - L] = fusion.fuse(t - L, pose[t - L])
        return out

    def streaming(L: int, live_2d: bool, fuse: bool):
        def predict(view):
            if live_2d:
                x, px, w = online_2d(view.kps)
            else:
                x, px = view.kps.normalized(), view.kps.pose
                w = np.where(view.kps.filled, 0.0, np.nan_to_num(view.kps.confidence, nan=0.0)) + 1e-3
            pose = stream_predictions(model, x, L)
            pose[:, 0] = 0.0
            if fuse:
                pose = online_blend(pose, view.world, view.fps, L)
            roots = OnlineRoot(view.camera.focal, view.camera.centre)
            return pose, np.stack([roots.update(pose[t], px[t], w[t]) for t in range(len(pose))])

        return predict

    frames = int(sum(v.valid.sum() for v in scene.inputs))
    name = f"real recording ({len(scene.inputs)} person-views, {scene.fps:g} fps)"
    half = model.config.num_frame // 2
    runs = ([(L, False, False) for L in lookaheads] + [(half, True, False)]
            + [(L, False, True) for L in lookaheads] + [(half, True, True)])
    rows = []
    for L, live, fuse in runs:
        on = score_predictions(scene, streaming(L, live, fuse))
        o, n = offline[fuse]["pose"]["mean"], on["pose"]["mean"]
        label = name + (", 2D online" if live else "") + (", blended with MediaPipe's 3D" if fuse else "")
        rows.append({"data": label, "frames": frames, "lookahead": L,
                     "offline_mpjpe_mm": o["mpjpe"], "stream_mpjpe_mm": n["mpjpe"],
                     "difference_mm": n["mpjpe"] - o["mpjpe"], "offline_p_mpjpe_mm": o["p_mpjpe"],
                     "stream_p_mpjpe_mm": n["p_mpjpe"], "p_difference_mm": n["p_mpjpe"] - o["p_mpjpe"],
                     "offline_root_error_mm": offline[fuse]["root"]["mean"]["root_error"],
                     "stream_root_error_mm": on["root"]["mean"]["root_error"],
                     "offline_speed_ratio": o["speed_ratio"], "stream_speed_ratio": n["speed_ratio"]})
        print(f"{rows[-1]['data']} L={L}: MPJPE {n['mpjpe']:.2f} vs offline {o['mpjpe']:.2f} "
              f"({rows[-1]['difference_mm']:+.2f}); P-MPJPE {n['p_mpjpe']:.2f} vs {o['p_mpjpe']:.2f}; root "
              f"{rows[-1]['stream_root_error_mm']:.0f} vs {rows[-1]['offline_root_error_mm']:.0f} mm", flush=True)
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
    if result.get("detector"):
        lines += ["", f"Detector alone, per frame ({result['clip']}):", "",
                  "| decoded at | decode median ms | decode CPU ms | detect median ms | detect p95 ms | detect CPU ms "
                  "| keypoints vs full size | load |", "|---|---|---|---|---|---|---|---|"]
        for r in result["detector"]:
            s = r.get("keypoint_shift_px")
            shift = f"{s['median']:.1f} px median, {s['p95']:.1f} p95" if s else "-"
            lines.append(f"| {r['decode_size']} | {r['decode']['median_ms']:.1f} | {r['decode']['cpu_ms']:.1f} | "
                         f"{r['detect']['median_ms']:.1f} | {r['detect']['p95_ms']:.1f} | {r['detect']['cpu_ms']:.1f} "
                         f"| {shift} | {r['load_average'][0]:.1f} |")
    if result.get("pipeline"):
        p0 = result["pipeline"][0]
        lines += ["", f"Pipeline decode -> detect -> lift -> write ({result['clip']}; detector: {p0['detector']}):", "",
                  "| runtime | lookahead | threads | source | frames/s | CPU ms/frame | latency median ms | "
                  "latency p95 ms | same output | load |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["pipeline"]:
            same = r.get("same_output_as_one_thread")
            source = f"paced {r['paced']:g} fps" if r["paced"] else "flat out"
            lines.append(f"| {r['runtime']} | {r['lookahead']} | {r['threads']} | "
                         f"{source} | {r['frames_per_s']:.1f} | "
                         f"{r['cpu_ms_per_frame']:.1f} | {r['latency_median_ms']:.1f} | {r['latency_p95_ms']:.1f} | "
                         f"{'-' if same is None else ('yes' if same else 'NO')} | {r['load_average'][0]:.1f} |")
    if result.get("accuracy"):
        lines += ["", "Streaming vs offline (flip on; MPJPE / P-MPJPE in mm against the ground truth or reference):",
                  "", "| data | frames | lookahead | offline | stream | difference | P-MPJPE offline | stream | "
                  "difference | root offline | root stream |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["accuracy"]:
            root = (f"{r['offline_root_error_mm']:.0f} | {r['stream_root_error_mm']:.0f}"
                    if "stream_root_error_mm" in r else "- | -")
            lines.append(f"| {r['data']} | {r['frames']} | {r['lookahead']} | {r['offline_mpjpe_mm']:.2f} | "
                         f"{r['stream_mpjpe_mm']:.2f} | {r['difference_mm']:+.2f} | {r['offline_p_mpjpe_mm']:.2f} | "
                         f"{r['stream_p_mpjpe_mm']:.2f} | {r['p_difference_mm']:+.2f} | {root} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.realtime", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="wild", help="checkpoint or shipped model name (default: 'wild')")
    p.add_argument("--runtimes", default="torch,onnx,pt2")
    p.add_argument("--batches", default="1,2,8,32")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (default 1)")
    p.add_argument("--clip-frames", type=int, default=300, help="frames of the 720p clip (0: no pipeline)")
    p.add_argument("--camera-fps", type=float, default=25.0,
                   help="rate the paced pipeline runs get their frames at, as from a camera (default 25: the target)")
    p.add_argument("--accuracy", action="store_true", help="streaming vs offline MPJPE per lookahead")
    p.add_argument("--no-download", action="store_true",
                   help="use the real recording only if it is cached (~/.cache/fastmixste/realdata)")
    p.add_argument("--cuda-graphs", action="store_true", help="GPU: add eager PyTorch replayed from CUDA graphs")
    p.add_argument("--json", default=str(RESULTS / "realtime.json"))
    args = p.parse_args(argv)
    from benchmarks import realtime_live as live
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
                       f"input_norm {cfg.input_norm}, {model.num_parameters():,} parameters",
              "command": "python -m benchmarks.realtime " + " ".join(argv if argv is not None else sys.argv[1:]),
              "load_average_start": list(os.getloadavg())}
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
            clip, result["clip"], real = live.prepare_clip(work, args.clip_frames, not args.no_download)
            result["detector"] = live.bench_detector(clip, real)
            result["pipeline"] = live.bench_pipeline(lifters, clip, [0, cfg.num_frame // 2], work, real,
                                                     args.camera_fps)
    if args.accuracy:
        looks = sorted({0, min(9, cfg.num_frame - 1), cfg.num_frame // 2, cfg.num_frame - 1})
        result["accuracy"] = bench_accuracy(model, looks) + real_recording_accuracy(model, looks,
                                                                                     not args.no_download)
    result["load_average_end"] = list(os.getloadavg())
    text = tables(result)
    print(text)
    out = Path(args.json)
    with atomic_write(out, "w", encoding="utf-8") as f:
        json.dump({**result, "table": text}, f, indent=2)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
