"""Rendering speed of the LivePortrait talking-head pipeline (``jam-flow render``'s per-frame work).

Dimension legend: b frames per network call (batch size), k keypoints (21).

Per output frame this times exactly what ``jam_flow.render`` does after the one-off source extraction:
driving keypoints (mouth replaced, ``transform_keypoints``) -> stitching -> ``warp_decode`` (W + G, 512 x 512)
-> copy to the host -> paste-back into a 720 x 720 frame. Video encoding is not included. The published network
sizes are used with random weights (speed does not depend on the values).

    python benchmarks/render.py                       # CPU, batch sizes 1 and 8
    python benchmarks/render.py --device cuda --half  # GPU (fp16 autocast), results/render_cuda_half.json

Writes ``benchmarks/results/render_<device>[_half].json`` with a machine description.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from jam_flow.features import MotionSettings
from jam_flow.liveportrait import load_liveportrait
from jam_flow.liveportrait.face import crop_face, paste_back, rescale_crop_affine, warp_mask
from jam_flow.liveportrait.keypoints import transform_keypoints
from jam_flow.liveportrait.testing import write_random_weights
from jam_flow.render.animate import assemble_expression


def run(models, src, frame, m_c2o, motion, batch_size: int, feather: float = 0.12) -> dict:
    """Render ``len(motion)`` frames in batches; returns seconds per stage and frames/s."""
    device = models.device
    mouth = MotionSettings().mouth_indices
    stages = {"keypoints_stitch": 0.0, "warp_decode": 0.0, "to_host_paste": 0.0}
    mask = None
    t_all = time.perf_counter()
    for start in range(0, motion.shape[0], batch_size):
        chunk = motion[start : start + batch_size]
        b = chunk.shape[0]
        t = time.perf_counter()
        exp = assemble_expression(src["exp"], chunk, motion[0], src["exp"][0], mouth, False, False)
        x_d = transform_keypoints(
            src["kp"].expand(b, -1, -1), src["R"].expand(b, -1, -1), exp, src["scale"].expand(b, -1),
            src["t"].expand(b, -1),
        )  # fmt: skip
        x_d = models.stitch(src["x_s"], x_d)
        common.sync(device.type)
        stages["keypoints_stitch"] += time.perf_counter() - t
        t = time.perf_counter()
        faces = models.warp_decode(src["f_s"], src["x_s"], x_d)
        common.sync(device.type)
        stages["warp_decode"] += time.perf_counter() - t
        t = time.perf_counter()
        faces = faces.clamp(0, 1).cpu().numpy()
        if mask is None:
            size = faces.shape[-1]
            mask = warp_mask(rescale_crop_affine(m_c2o, 256, size), size, frame.shape[:2], feather)
        for face in faces:
            paste_back(frame, face, m_c2o, crop_size=256, mask=mask)
        stages["to_host_paste"] += time.perf_counter() - t
    seconds = time.perf_counter() - t_all
    n = int(motion.shape[0])
    return {
        "batch_size": batch_size,
        "frames": n,
        "seconds": round(seconds, 3),
        "frames_per_s": round(n / seconds, 4),
        "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--half", action="store_true", help="fp16 autocast on CUDA (no effect on CPU)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--frames", type=int, default=16, help="frames per batch size (at least one full batch)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument(
        "--weights", default=None, help="existing LivePortrait weights dir (default: random, in a temp dir)"
    )
    p.add_argument(
        "--out", default=None, help="result JSON (default: benchmarks/results/render_<device>.json)"
    )
    p.add_argument("--note", default="", help="free text stored with the result (e.g. machine load)")
    args = p.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            weights = Path(tmp) / "liveportrait"
            write_random_weights(weights, seed=0)
        models = load_liveportrait(weights, device=device, half=args.half)

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:720, 0:720]
    frame = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    crop, m_c2o = crop_face(frame, (230.0, 200.0, 490.0, 460.0), size=256)
    src = models.extract_source(torch.from_numpy(crop)[None])

    # warm-up: one frame (CPU: kernel selection) or one largest batch (CUDA: cudnn autotuning, allocator)
    warm = max(args.batch_sizes) if device.type == "cuda" else 1
    motion = torch.from_numpy(rng.normal(0, 0.02, (warm, 21, 3)).astype(np.float32)).to(device)
    run(models, src, frame, m_c2o, motion, warm)

    results = []
    for b in args.batch_sizes:
        n = max(args.frames, b)
        motion = torch.from_numpy(rng.normal(0, 0.02, (n, 21, 3)).astype(np.float32)).to(device)
        res = run(models, src, frame, m_c2o, motion, b)
        print(json.dumps(res))
        results.append(res)

    record = {
        "benchmark": "render",
        "what": "per-frame talking-head rendering: keypoints + stitching + warp_decode (512x512) + paste-back "
        "into a 720x720 frame; published LivePortrait sizes, random weights; encoding excluded",
        "device": str(device),
        "half": args.half,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": common.machine(device.type),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "note": args.note,
        "results": results,
    }
    out = common.write_json(
        Path(args.out)
        if args.out
        else common.RESULTS / f"render_{device.type}{'_half' if args.half else ''}.json",
        record,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
