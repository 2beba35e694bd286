"""Inference speed of every ``jam-flow generate`` task: model time and end-to-end time per clip length.

Dimension legend: n mel frames (93.75 / s), m motion frames (25 / s).

    python benchmarks/inference.py --configs tiny paper --seconds 5 20 --nfe 32 [--device cpu|cuda]
        [--measure-nfe K] [--out benchmarks/results/inference_cpu.json]

For each model size (random weights: speed does not depend on training) the model is exported with
``save_export`` and read back with ``load_bundle``, exactly as ``jam-flow generate`` does; then each task runs on
synthetic inputs of the requested length through its Python API (``jam_flow.inference.tasks``):

* ``model_s``: time inside the network's forward calls (the sampler's NFE evaluations, CFG batched);
* ``end_to_end_s``: the whole task call (input reading, mel, sampling, vocoder, motion de-normalisation), writing
  nothing. The vocoder is a randomly initialised Vocos of the published ``charactr/vocos-mel-24khz`` size, so its
  cost is the real one.

``--measure-nfe K`` (used for the paper size on CPU, where 32 NFE per task would take very long) runs K evaluations
and extrapolates linearly to ``--nfe``: ``model = model_K / K * nfe`` and ``end_to_end = end_to_end_K - model_K +
model``; each such row says ``"extrapolated": true`` with the measured K. Every row is one timed run; each model size
gets one untimed warm-up run (1 NFE) first.
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
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402  (benchmarks/common.py)

from jam_flow.data.vocoder import load_vocos
from jam_flow.flow.sampler import SamplerSettings
from jam_flow.inference import tasks
from jam_flow.inference.bundle import load_bundle
from jam_flow.inference.testing import joint_meta, vocos_config, write_random_export, write_random_vocos

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank. "
VOCOS_PUBLISHED = vocos_config(512, 1536, 8)  # charactr/vocos-mel-24khz


class ForwardTimer(torch.nn.Module):
    """Wraps the network and accumulates the wall time of its forward calls (synchronising CUDA)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seconds = 0.0
        self.calls = 0

    def forward(self, *args, **kwargs):
        sync(self.net)
        t0 = time.perf_counter()
        out = self.net(*args, **kwargs)
        sync(self.net)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def sync(net: torch.nn.Module) -> None:
    if next(net.parameters()).is_cuda:
        torch.cuda.synchronize()


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def model_config(name: str) -> dict:
    from jam_flow.models import paper_joint_config, tiny_joint_config

    return {"tiny": tiny_joint_config, "paper": paper_joint_config}[name]()


def build_export(name: str, root: Path) -> Path:
    return write_random_export(root / f"export_{name}", joint_meta(model_config(name)))


def make_inputs(root: Path, seconds: float) -> dict:
    """Synthetic speech-like audio, a reference voice, motion and a text long enough for ``seconds``."""
    sr = 24000
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    speech = (0.2 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    speech += 0.01 * rng.standard_normal(speech.shape).astype(np.float32)
    sf.write(root / "speech.wav", speech, sr)
    sf.write(root / "ref.wav", speech[: 3 * sr] if seconds >= 3 else np.tile(speech, 3)[: 3 * sr], sr)
    m = int(round(seconds * 25))
    np.save(root / "motion.npy", (0.02 * rng.standard_normal((m, 21, 3))).astype(np.float32))
    chars = int(seconds * tasks.CHARS_PER_SECOND)
    text = (SENTENCE * (chars // len(SENTENCE) + 1))[:chars].strip()
    return {
        "speech": root / "speech.wav",
        "ref": root / "ref.wav",
        "motion": root / "motion.npy",
        "text": text,
        "ref_text": SENTENCE[:40].strip(),
    }


def run_task(task: str, bundle, inputs: dict, seconds: float, settings: SamplerSettings, vocoder):
    common = {"settings": settings, "seed": 0}
    if task == "tts":
        return tasks.tts(
            bundle,
            inputs["text"],
            inputs["ref"],
            inputs["ref_text"],
            duration=seconds,
            vocoder=vocoder,
            **common,
        )
    if task == "text2av":
        return tasks.text2av(bundle, inputs["text"], duration=seconds, vocoder=vocoder, **common)
    if task == "audio2motion":
        return tasks.audio2motion(bundle, inputs["speech"], **common)
    if task == "dub":
        return tasks.dub(bundle, inputs["motion"], inputs["text"], vocoder=vocoder, **common)
    if task == "motion2audio":
        return tasks.motion2audio(bundle, inputs["motion"], vocoder=vocoder, **common)
    if task == "edit":
        return tasks.edit(
            bundle,
            inputs["speech"],
            seconds / 3,
            2 * seconds / 3,
            motion=inputs["motion"],
            streams="both",
            vocoder=vocoder,
            **common,
        )
    raise ValueError(task)


def write_results(out: Path, args: argparse.Namespace, rows: list[dict]) -> None:
    """Write the JSON (called after every row, so an interrupted run keeps what it measured)."""
    kept: list[dict] = []
    if args.merge and out.is_file():
        kept = [
            r
            for r in json.loads(out.read_text(encoding="utf-8"))["results"]
            if r["config"] not in args.configs
        ]
    result = {
        "benchmark": "jam-flow inference",
        "machine": machine(),
        "nfe": args.nfe,
        "method": "euler",
        "cfg": 2.0,
        "vocoder": "random Vocos, charactr/vocos-mel-24khz size",
        "notes": (
            "model_s = time in network forward calls (CFG batched); end_to_end_s = whole task call without "
            "writing files. Rows with extrapolated=true ran measured_nfe evaluations and were scaled "
            "linearly to nfe. Timings on a shared machine are noisy."
        ),
        "results": kept + rows,
    }
    write_json(out, result)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "paper"], choices=["tiny", "paper"])
    p.add_argument("--seconds", nargs="+", type=float, default=[5.0, 20.0])
    p.add_argument("--nfe", type=int, default=32)
    p.add_argument("--tasks", nargs="+", default=list(tasks.TASKS), choices=list(tasks.TASKS))
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--measure-nfe",
        type=int,
        default=None,
        help="evaluations actually run for the paper size (default: 2 on CPU, all on GPU)",
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of other configs already in --out (run tiny and paper separately)",
    )
    args = p.parse_args(argv)
    device = torch.device(args.device)
    out = args.out or Path(__file__).parent / "results" / f"inference_{device.type}.json"
    measure_paper = (
        args.measure_nfe if args.measure_nfe is not None else (2 if device.type == "cpu" else args.nfe)
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vocos_dir = root / "vocos"
        write_random_vocos(vocos_dir, VOCOS_PUBLISHED)
        vocoder = load_vocos(vocos_dir, device)
        for name in args.configs:
            export = build_export(name, root)
            t0 = time.perf_counter()
            bundle = load_bundle(export, device=device)
            load_s = time.perf_counter() - t0
            params = sum(p.numel() for p in bundle.model.parameters())
            timer = ForwardTimer(bundle.model)
            bundle.model = timer
            measured = args.nfe if name == "tiny" else min(args.nfe, measure_paper)
            with torch.no_grad():  # one untimed warm-up (allocator, kernels, lazy imports)
                first = min(args.seconds)
                run_task(
                    args.tasks[0], bundle, make_inputs(root, first), first, SamplerSettings(nfe=1), vocoder
                )
            for seconds in args.seconds:
                inputs = make_inputs(root, seconds)
                for task in args.tasks:
                    with torch.no_grad():
                        timer.seconds, timer.calls = 0.0, 0
                        t0 = time.perf_counter()
                        run_task(task, bundle, inputs, seconds, SamplerSettings(nfe=measured), vocoder)
                        sync(timer.net)
                        e2e = time.perf_counter() - t0
                    model_s = timer.seconds
                    row = {
                        "config": name,
                        "params": params,
                        "task": task,
                        "seconds": seconds,
                        "nfe": args.nfe,
                        "device": str(device),
                        "model_s": model_s,
                        "end_to_end_s": e2e,
                        "extrapolated": measured != args.nfe,
                        "measured_nfe": measured,
                        "forward_calls": timer.calls,
                    }
                    if measured != args.nfe:
                        row["model_s"] = model_s / measured * args.nfe
                        row["end_to_end_s"] = e2e - model_s + row["model_s"]
                    row["realtime_factor"] = row["end_to_end_s"] / seconds
                    rows.append(row)
                    write_results(out, args, rows)
                    print(
                        f"{name:>5} {task:>12} {seconds:5.1f}s  model {row['model_s']:8.2f}s  "
                        f"e2e {row['end_to_end_s']:8.2f}s"
                        + ("  (extrapolated)" if row["extrapolated"] else ""),
                        flush=True,
                    )
            rows.append({"config": name, "params": params, "load_s": load_s})
            write_results(out, args, rows)
            del bundle, timer
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
