"""Benchmark sampling one clip with both streams (text + silence -> mel and lip motion), per attention backend.

    python benchmarks/sample.py --device cuda --size paper --backend auto reference flex --json OUT
    python benchmarks/sample.py --device cpu --size paper tiny --measure-nfe 2 --json OUT
    python benchmarks/sample.py --device cuda --size paper --compile off on --vocoder --json OUT
    python benchmarks/sample.py --device cpu --threads 1 --size tiny --seconds 5 --measure-nfe 8 --text-cache-ab 5 --json OUT

The joint ODE sampler (:func:`jam_flow.flow.sampler.sample`, Euler, sway sampling) integrates both streams of a
20 s clip (n = 1875 mel frames, m = 500 motion frames) with classifier-free guidance batched (conditional and
unconditional rows in one batch of 2), 32 NFE, as at inference (paper appendix A). Reported time is model time
on the device (rendering is not included); ``--vocoder`` adds the time of decoding the clip's mel with a random
Vocos of the published size (``end_to_end_ms`` = model + vocoder). ``--compile on`` wraps the network in
``torch.compile`` (the warm-up run compiles; compile time is not in ``ms``). CUDA runs bf16 autocast, the CPU fp32.

On the CPU the paper-size model is slow: ``--measure-nfe K`` (CPU default: 1 for paper, 4 for tiny) integrates
with K evaluations and the 32-NFE time is extrapolated linearly (``ms_32nfe = ms_measured * 32 / K``; every
evaluation costs the same); the JSON says so (``extrapolated: true``). The paper-size CPU run is timed once
without warm-up and its peak memory is not measured (it would cost another run of minutes).

``--text-cache-ab R`` measures the sampler's text-embedding cache instead (before/after in one run): the same model
and conditions are sampled with the cache (``cache_text=True``: the text embedding once per sample) and without it
(``cache_text=False``: once per evaluation, as before the cache), alternating in ``R`` rounds (the order flips every
round so drift from a loaded machine hits both); the record holds every sample of both (wall and process CPU
time), their medians, the speed-ups and whether the two outputs were identical (``torch.equal``). It also times the
parts in process CPU time (median of ``--parts-reps``): one text-embedding call and one sampler step (a 1-NFE
sample), and the speed-up they imply at 32 NFE (``32 step / (32 step - 31 text)``); ``--text-cache-ab 0`` times only
the parts (for the paper size on a CPU, where whole runs take minutes).
Dimension legend: b batch, n audio frames, m motion frames.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

from jam_flow.flow.sampler import JointConditions, SamplerSettings, sample  # noqa: E402
from jam_flow.models import JointDiT, paper_joint_config, tiny_joint_config  # noqa: E402

CONFIGS = {"tiny": tiny_joint_config, "paper": paper_joint_config}


def conditions(model: JointDiT, seconds: float, device: str) -> JointConditions:
    n, m = int(seconds * 24000 / 256), int(seconds * 25)
    vocab = model.init_args["audio"]["text_num_embeds"]
    g = torch.Generator().manual_seed(0)
    return JointConditions(
        audio_cond=torch.zeros(1, n, model.init_args["audio"]["mel_dim"], device=device),
        audio_known=torch.zeros(1, n, dtype=torch.bool, device=device),
        text=torch.randint(0, vocab, (1, max(1, int(seconds * 12))), generator=g).to(device),
        motion_cond=torch.zeros(1, m, 12, device=device),
        motion_known=torch.zeros(1, m, dtype=torch.bool, device=device),
        motion_rest=torch.zeros(1, m, 51, device=device),
    )


def vocoder_ms(mel_frames: int, device: str, reps: int) -> float:
    """Median ms of decoding ``mel_frames`` with a random Vocos of the published size (charactr/vocos-mel-24khz:
    dim 512, intermediate 1536, 8 layers), written and loaded through the real loader (``load_vocoder``)."""
    import tempfile

    from jam_flow.data.vocoder import load_vocoder
    from jam_flow.inference.testing import vocos_config, write_random_vocos

    with tempfile.TemporaryDirectory() as tmp:
        write_random_vocos(tmp, vocos_config(512, 1536, 8))
        vocoder = load_vocoder(tmp, device=device)
    mel = torch.randn(mel_frames, 100, generator=torch.Generator().manual_seed(0)) - 5.0
    return common.time_ms(lambda: vocoder.decode(mel), device, reps=reps, warmup=1)[0]


def measure(size: str, backend: str, compiled: str, args: argparse.Namespace) -> dict:
    """One (model size, backend, torch.compile off/on) measurement."""
    dev = args.device
    cpu_default = {"paper": 1, "tiny": 4}[size] if dev == "cpu" else args.nfe
    measure_nfe = args.measure_nfe or cpu_default
    reps = args.reps or (3 if dev == "cuda" else 1)
    torch.manual_seed(0)
    model = JointDiT(**CONFIGS[size](), attention_backend=backend).to(dev).eval()
    cond = conditions(model, args.seconds, dev)
    net = torch.compile(model) if compiled == "on" else model  # the warm-up run compiles
    settings = SamplerSettings(nfe=measure_nfe, cfg=args.cfg)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda")

    def run():
        with autocast:
            return sample(net, cond, settings, seed=0)

    ms, samples = common.time_ms(run, dev, reps=reps, warmup=0 if (dev == "cpu" and size == "paper") else 1)
    voc = vocoder_ms(cond.audio_cond.shape[1], dev, reps) if args.vocoder else None
    return {
        "size": size,
        "backend": backend,
        "compile": compiled == "on",
        "device": dev,
        "seconds": args.seconds,
        "dtype": "bf16-autocast" if dev == "cuda" else "float32",
        "nfe": args.nfe,
        "cfg": args.cfg,
        "cfg_batched": args.cfg > 0,
        "measured_nfe": measure_nfe,
        "extrapolated": measure_nfe != args.nfe,
        "ms_measured": ms,
        "ms_samples": samples,
        "ms": ms * args.nfe / measure_nfe,
        "ms_per_nfe": ms / measure_nfe,
        "threads": torch.get_num_threads(),
        "peak_mb": common.peak_mb(run, dev) if dev == "cuda" or size != "paper" else None,
        "vocoder": "random Vocos, published size (512 x 8)" if args.vocoder else None,
        "vocoder_ms": voc,
        "end_to_end_ms": None if voc is None else ms * args.nfe / measure_nfe + voc,
    }


def _cpu_ms(fn) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1e3


def measure_text_cache(size: str, backend: str, args: argparse.Namespace) -> dict:
    """Cached vs uncached text embedding, alternating in ``args.text_cache_ab`` rounds on one model."""
    import statistics

    dev = args.device
    measure_nfe = args.measure_nfe or ({"paper": 1, "tiny": 4}[size] if dev == "cpu" else args.nfe)
    torch.manual_seed(0)
    model = JointDiT(**CONFIGS[size](), attention_backend=backend).to(dev).eval()
    cond = conditions(model, args.seconds, dev)
    settings = SamplerSettings(nfe=measure_nfe, cfg=args.cfg)
    outputs = {}

    def run(cache: bool):
        out = sample(model, cond, settings, seed=0, cache_text=cache)
        outputs[cache] = out
        return out

    # the parts, in process CPU time: one text-embedding call, and one sampler step (a 1-NFE sample: one text
    # embedding + one guided forward); the cache saves nfe - 1 text-embedding calls per sample
    n = cond.audio_cond.shape[1]
    text = torch.cat([cond.text, cond.text])  # the guided batch: conditional + unconditional rows
    drop = torch.tensor([False, True], device=dev)
    with torch.no_grad():
        text_cpu = statistics.median(
            _cpu_ms(lambda: model.text_features(text, n, None, drop)) for _ in range(args.parts_reps)
        )
    one_step = SamplerSettings(nfe=1, cfg=args.cfg)
    step_cpu = statistics.median(
        _cpu_ms(lambda: sample(model, cond, one_step, seed=0)) for _ in range(args.parts_reps)
    )
    samples = {True: [], False: []}
    if not args.text_cache_ab:
        return {
            "size": size, "device": dev, "seconds": args.seconds, "mel_frames": n,
            "text_conv_layers": model.init_args["audio"].get("conv_layers", 0), "cfg": args.cfg,
            "text_embedding_cpu_ms": text_cpu, "step_cpu_ms": step_cpu, "text_share_of_step": text_cpu / step_cpu,
            "expected_speedup_32nfe": 32 * step_cpu / (32 * step_cpu - 31 * text_cpu),
            "threads": torch.get_num_threads(),
        }  # fmt: skip
    sample(model, cond, settings, seed=0)  # warm-up
    cpu = {
        True: [],
        False: [],
    }  # process CPU time: less sensitive than wall time to other jobs on a loaded machine
    for r in range(args.text_cache_ab):
        for cache in (True, False) if r % 2 == 0 else (False, True):
            c0 = time.process_time()
            samples[cache].append(common.time_ms(lambda c=cache: run(c), dev, reps=1, warmup=0)[0])
            cpu[cache].append((time.process_time() - c0) * 1e3)
    with torch.no_grad():
        text_ms = common.time_ms(lambda: model.text_features(text, n, None, drop), dev, reps=3)[0]
    cached, plain = statistics.median(samples[True]), statistics.median(samples[False])
    identical = torch.equal(outputs[True].audio, outputs[False].audio) and torch.equal(
        outputs[True].motion, outputs[False].motion
    )
    return {
        "size": size,
        "backend": backend,
        "device": dev,
        "seconds": args.seconds,
        "mel_frames": n,
        "text_conv_layers": model.init_args["audio"].get("conv_layers", 0),
        "nfe": measure_nfe,
        "cfg": args.cfg,
        "rounds": args.text_cache_ab,
        "ms_cached_samples": samples[True],
        "ms_uncached_samples": samples[False],
        "ms_cached": cached,
        "ms_uncached": plain,
        "speedup": plain / cached,
        "cpu_ms_cached_samples": cpu[True],
        "cpu_ms_uncached_samples": cpu[False],
        "cpu_speedup": statistics.median(cpu[False]) / statistics.median(cpu[True]),
        "saved_ms_per_nfe": (plain - cached) / measure_nfe,
        "text_embedding_ms": text_ms,
        "text_embedding_cpu_ms": text_cpu,
        "step_cpu_ms": step_cpu,
        "text_share_of_step": text_cpu / step_cpu,
        "expected_speedup": measure_nfe * step_cpu / (measure_nfe * step_cpu - (measure_nfe - 1) * text_cpu),
        "expected_speedup_32nfe": 32 * step_cpu / (32 * step_cpu - 31 * text_cpu),
        "identical": identical,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--size", nargs="+", choices=sorted(CONFIGS), default=["paper"])
    p.add_argument("--backend", nargs="+", default=["auto", "reference"])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--nfe", type=int, default=32)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument(
        "--measure-nfe",
        type=int,
        default=None,
        help="evaluate this many NFE and extrapolate to --nfe (default: all on CUDA; CPU: 1 paper, 4 tiny)",
    )
    p.add_argument(
        "--reps", type=int, default=None, help="timed repetitions (default: 3 on CUDA, 1 on the CPU)"
    )
    p.add_argument(
        "--compile",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="torch.compile the network (on: warm-up compiles)",
    )
    p.add_argument(
        "--vocoder",
        action="store_true",
        help="also time decoding the clip with a random Vocos of the published size",
    )
    p.add_argument(
        "--text-cache-ab",
        type=int,
        default=None,
        metavar="ROUNDS",
        help="time the text-embedding cache: cached vs uncached sampling, alternating, ROUNDS rounds (0: only "
        "its parts: one text-embedding call and one sampler step, in process CPU time)",
    )
    p.add_argument("--parts-reps", type=int, default=3, help="--text-cache-ab: repetitions of each part")
    args = common.parse_args(p, argv)
    dev = args.device
    if args.text_cache_ab is not None:
        records = [measure_text_cache(size, backend, args) for size in args.size for backend in args.backend]
        columns = ["size", "seconds", "nfe", "ms_cached", "ms_uncached", "speedup", "cpu_speedup"]
        columns += ["text_embedding_cpu_ms", "step_cpu_ms", "text_share_of_step", "expected_speedup_32nfe"]
        common.report(records, [*columns, "identical"], dev, args.json)
        return 0
    records = [
        measure(size, backend, compiled, args)
        for size in args.size
        for backend in args.backend
        for compiled in args.compile
    ]
    common.report(
        records,
        [
            "size",
            "backend",
            "compile",
            "seconds",
            "nfe",
            "measured_nfe",
            "ms",
            "ms_per_nfe",
            "vocoder_ms",
            "peak_mb",
        ],
        dev,
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
