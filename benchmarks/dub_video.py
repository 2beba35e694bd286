"""Seconds of output per second of wall time of ``jam-flow dub-video`` (and a ``--rerender`` row) on this machine.

Each input length runs in a fresh process (``--case SECONDS``) through :func:`jam_flow.video.dub_video` on a
generated talking-face video (H.264 + AAC speech with pauses), so its peak RSS (``ru_maxrss``) is its own: a 2-minute
input must not need much more memory than a 20 s one (frames stream from disk, windows are generated one at a time).
Reported separately: motion extraction, model (all windows), vocoder, render (0 without ``--rerender``: the original
frames are kept) and mux.

Models are random: the tiny JointDiT (``tiny_joint_config``), a published-size Vocos and LivePortrait's motion
extractor at toy width (ConvNeXt-V2 atto) on ``--crop`` px crops, so a 2-minute run fits a shared 2-core CPU. The
published extractor at 256 px is timed on 16 crops and an extrapolated total (``"extrapolated": true``) is given
beside each measured one. The ``--rerender`` row uses toy-width LivePortrait networks at 128 px on a short input
(the published networks take ~100 s per frame on this CPU: benchmarks/results/render_cpu.json).

    nice -n 10 python benchmarks/dub_video.py --json benchmarks/results/dub_video_cpu.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_mb, write_json  # noqa: E402

SR, FPS = 24000, 25


def make_video(path: Path, seconds: float, size: int, seed: int = 0) -> Path:
    """A synthetic face (moving mouth) with speech-like audio: 2-5 s phrases separated by 0.3-0.6 s pauses."""
    import av

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.2 * np.sin(2 * np.pi * 140 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    pos = 0.0
    while pos < seconds:
        pos += rng.uniform(2.0, 5.0)
        gap = rng.uniform(0.3, 0.6)
        wave[int(pos * SR) : int((pos + gap) * SR)] = 0.0
        pos += gap
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    face = ((xx - c) / (0.32 * size)) ** 2 + ((yy - c) / (0.42 * size)) ** 2 < 1
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=SR)
        a.layout = "mono"
        for i in range(int(round(seconds * FPS))):
            img = np.full((size, size, 3), 90, np.uint8)
            img[face] = (220, 180, 150)
            h = 0.02 * size * (1 + 2 * abs(np.sin(i / 3)))
            img[(abs(xx - c) < 0.12 * size) & (abs(yy - 0.68 * size) < h)] = (120, 20, 20)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        w = wave.astype(np.float32)
        for k in range(0, w.size, 1024):
            fr = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(w[None, k : k + 1024]), format="fltp", layout="mono"
            )
            fr.sample_rate, fr.pts = SR, k
            for pkt in a.encode(fr):
                out.mux(pkt)
        for pkt in a.encode(None):
            out.mux(pkt)
    return path


def script(seconds: float) -> str:
    """Sentences of the bundled list, about 12 characters per second of video (a typical speaking rate)."""
    from importlib.resources import files

    lines = [s.strip() for s in files("jam_flow.assets").joinpath("sentences.txt").read_text().splitlines()]
    lines = [s if s.endswith((".", "!", "?")) else s + "." for s in lines if s]
    out: list[str] = []
    while sum(len(s) + 1 for s in out) < 12 * seconds:
        out.append(lines[len(out) % len(lines)])
    return " ".join(out)


def run_case(seconds: float, args: argparse.Namespace) -> dict:
    from jam_flow.data.preprocess import PreprocessConfig
    from jam_flow.data.vocoder import load_vocoder
    from jam_flow.flow.sampler import SamplerSettings
    from jam_flow.inference.bundle import load_bundle
    from jam_flow.inference.testing import joint_meta, vocos_config, write_random_export, write_random_vocos
    from jam_flow.liveportrait import MotionExtractor
    from jam_flow.liveportrait.testing import tiny_models
    from jam_flow.models import tiny_joint_config
    from jam_flow.video import dub_video

    with tempfile.TemporaryDirectory(prefix="bench-dub-") as tmp:
        root = Path(tmp)
        bundle = load_bundle(write_random_export(root / "export", joint_meta(tiny_joint_config())))
        write_random_vocos(root / "vocos", vocos_config(512, 1536, 8))
        vocoder = load_vocoder(root / "vocos", bundle.mel)
        t0 = time.perf_counter()
        video = make_video(root / "in.mp4", seconds, args.size)
        make_s = time.perf_counter() - t0
        rerender = args.rerender
        models = tiny_models() if rerender else None
        torch.manual_seed(0)
        extractor = models.M if rerender else MotionExtractor(backbone="convnextv2_atto").eval()
        cfg = PreprocessConfig(
            motion_extractor="",
            face_detector="full-frame",
            crop_size=128 if rerender else args.crop,
            batch_size=16,
        )
        records: list[dict] = []
        during = peak_mb(
            lambda: records.append(
                dub_video(
                    bundle,
                    video,
                    script(seconds),
                    root / "out" / "dubbed.mp4",
                    extractor=extractor,
                    models=models,
                    rerender=rerender,
                    window_s=args.window_s,
                    context_s=2.0,
                    settings=SamplerSettings(nfe=args.nfe, cfg=args.cfg),
                    seed=0,
                    vocoder=vocoder,
                    cfg=cfg,
                    batch_size=8,
                )
            ),
            "cpu",
        )
    record = records[0]
    wall = record["wall_seconds"]
    return {
        "input_seconds": seconds,
        "rerender": rerender,
        "windows": len(record["windows"]),
        "output_seconds": record["seconds"],
        "frames": record["frames"],
        "wall_seconds": wall,
        "output_seconds_per_wall_second": record["output_seconds_per_wall_second"],
        "peak_rss_growth_during_dub_mb": during,
        "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "video_generation_seconds_not_counted": make_s,
    }


def published_extractor_seconds_per_frame(threads: int | None) -> float:
    from jam_flow.liveportrait import MotionExtractor
    from jam_flow.liveportrait.keypoints import refine_kp_info

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = MotionExtractor().eval()
    x = torch.rand(16, 3, 256, 256)
    with torch.no_grad():
        refine_kp_info(net(x[:2]))
        t0 = time.perf_counter()
        refine_kp_info(net(x))
    return (time.perf_counter() - t0) / 16


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[20.0, 120.0])
    p.add_argument(
        "--rerender-seconds", type=float, default=4.0, help="input length of the --rerender row (0: none)"
    )
    p.add_argument("--nfe", type=int, default=8)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--window-s", type=float, default=20.0)
    p.add_argument("--crop", type=int, default=64, help="extractor crop side of the measured runs")
    p.add_argument("--size", type=int, default=256, help="video frame side")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--case", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--rerender", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case is not None:  # one input, in this (fresh) process
        print(json.dumps(run_case(args.case, args)))
        return 0
    me_s = published_extractor_seconds_per_frame(args.threads)
    rows = []
    cases = [(s, False) for s in args.seconds] + (
        [(args.rerender_seconds, True)] if args.rerender_seconds else []
    )
    for seconds, rerender in cases:
        cmd = [
            sys.executable,
            __file__,
            "--case",
            str(seconds),
            "--nfe",
            str(args.nfe),
            "--cfg",
            str(args.cfg),
            "--window-s",
            str(args.window_s),
            "--crop",
            str(args.crop),
            "--size",
            str(args.size),
        ]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += ["--rerender"] if rerender else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        w = row["wall_seconds"]
        if not rerender:  # the same run with the published extractor's measured per-frame time
            total = w["total"] - w["extract_motion"] + me_s * row["frames"]
            rows.append(
                {
                    **{
                        k: row[k]
                        for k in ("input_seconds", "rerender", "windows", "output_seconds", "frames")
                    },
                    "extrapolated": True,
                    "note": "extract_motion replaced by frames x the published extractor's seconds per 256 px frame",
                    "wall_seconds": {**w, "extract_motion": me_s * row["frames"], "total": total},
                    "output_seconds_per_wall_second": row["output_seconds"] / total,
                }
            )
        print(
            f"{seconds:6.1f} s input{' rerender' if rerender else ''}: {row['windows']} windows, extract "
            f"{w['extract_motion']:.1f} s, model {w['model']:.1f} s, vocoder {w['vocoder']:.1f} s, render "
            f"{w['render']:.1f} s, mux {w['mux'] or 0:.2f} s, total {w['total']:.1f} s -> "
            f"{row['output_seconds_per_wall_second']:.3f} s output / s wall, RSS growth {row['peak_rss_growth_during_dub_mb']:.0f} MB",
            flush=True,
        )
    payload = {
        "benchmark": "dub_video",
        "machine": machine("cpu"),
        "settings": {
            "model": "tiny JointDiT (random weights)",
            "nfe": args.nfe,
            "cfg": args.cfg,
            "window_s": args.window_s,
            "context_s": 2.0,
            "vocoder": "Vocos, published size (random weights)",
            "extractor": f"LivePortrait MotionExtractor, ConvNeXt-V2 atto (toy width), {args.crop} px crops",
            "rerender": "toy-width LivePortrait networks, 128 px crops",
            "video": f"{args.size}x{args.size} H.264 25 fps + AAC",
            "published_extractor_seconds_per_frame_256px": me_s,
        },
        "rows": rows,
    }
    if args.json:
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
