"""Benchmark the joint attention backends against each other and against the floor (paper §4.4 masks).

    python benchmarks/attention.py --device cpu --seconds 5 20 --json benchmarks/results/attention_cpu.json

For each clip length (n = seconds * sr / hop audio frames, m = seconds * fps motion frames) and the paper's head
layout (16 heads x 64, batch 1, motion window 4), times the forward (no grad) and forward+backward of every
backend and of the *floor*: unmasked ``scaled_dot_product_attention`` over the audio tokens alone (the least any
exact joint attention can cost: the motion stream and the masks should add almost nothing). The backends run
round-robin inside each repetition, so machine-load drift hits them alike; the median of ``--reps`` is reported.
Writes a list of records ``{"backend", "device", "seconds", "pass", "ms", "peak_mb", ...}`` plus ratios against
``reference`` and the floor, and prints a table. Peak memory: see ``benchmarks/common.py``; on the CPU each peak
is measured in a fresh process with glibc's mmap threshold pinned (so RSS follows tensor lifetimes), while the
timings run in this process with the default allocator (the pinned threshold makes every allocation fault in
fresh pages, which would distort the times).

On the CPU, FlexAttention has no backward (torch 2.14) and runs its unfused eager forward; its fwdbwd rows are
absent. Dimension legend: b batch, h heads, d head dim, n audio frames, m motion frames.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from jam_flow.nn.attention import BACKENDS, joint_attention  # noqa: E402

HEADS, HEAD_DIM, WINDOW = 16, 64, 4


def make_inputs(seconds: float, device: str, dtype: torch.dtype, grad: bool):
    n, m = int(seconds * 24000 / 256), int(seconds * 25)
    g = torch.Generator().manual_seed(0)
    ins = [
        torch.randn(1, HEADS, L, HEAD_DIM, generator=g).to(device, dtype).requires_grad_(grad)
        for L in (n, n, n, m, m, m)
    ]
    lens = (torch.tensor([n], device=device), torch.tensor([m], device=device))
    return ins, lens, n, m


def runner(backend: str, ins, lens, bwd: bool):
    """A closure running one pass of ``backend`` (``floor``: unmasked SDPA over the audio tokens alone)."""

    def run() -> None:
        with torch.set_grad_enabled(bwd):
            if backend == "floor":
                outs = [F.scaled_dot_product_attention(ins[0], ins[1], ins[2])]
            else:
                outs = list(joint_attention(*ins, *lens, WINDOW, backend=backend))
            if bwd:
                torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
                for t in ins:
                    t.grad = None

    return run


def peak(backend: str, seconds: float, pass_name: str, fn, args: argparse.Namespace) -> float:
    """Peak memory of one call: CUDA allocator peak here; on the CPU in a fresh process (see common.py)."""
    if args.device == "cuda":
        return common.peak_mb(fn, "cuda")
    cmd = [sys.executable, __file__, "--device", "cpu", "--peak-of", backend, str(seconds), pass_name]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.split("PEAK_MB")[-1].split()[0])


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--seconds", type=float, nargs="+", default=[5.0, 20.0])
    p.add_argument("--backends", nargs="+", default=["floor", *BACKENDS])
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="default: float32 on the CPU, bfloat16 on CUDA",
    )
    p.add_argument("--reps", type=int, default=5)
    p.add_argument(
        "--peak-of", nargs=3, metavar=("BACKEND", "SECONDS", "PASS"), default=None, help=argparse.SUPPRESS
    )  # internal: print one CPU peak measured in a fresh process
    args = common.parse_args(p, argv)
    dtype = getattr(torch, args.dtype or ("float32" if args.device == "cpu" else "bfloat16"))
    if args.peak_of is not None:
        common.ensure_malloc_env()
        backend, seconds, pass_name = args.peak_of[0], float(args.peak_of[1]), args.peak_of[2]
        ins, lens, _, _ = make_inputs(seconds, args.device, dtype, pass_name == "fwdbwd")
        fn = runner(backend, ins, lens, pass_name == "fwdbwd")
        fn()
        print(f"PEAK_MB {common.peak_mb(fn, args.device)}")
        return 0
    records: list[dict] = []
    for seconds in args.seconds:
        for pass_name, bwd in (("fwd", False), ("fwdbwd", True)):
            ins, lens, n, m = make_inputs(seconds, args.device, dtype, bwd)
            names = [b for b in args.backends if not (b == "flex" and bwd and args.device == "cpu")]
            fns = {b: runner(b, ins, lens, bwd) for b in names}
            for fn in fns.values():  # warm-up (compilation, allocator)
                fn()
            samples: dict[str, list[float]] = {b: [] for b in names}
            for _ in range(args.reps):  # round-robin: the backends share the machine's state
                for b, fn in fns.items():
                    samples[b].append(common.time_ms(fn, args.device, reps=1, warmup=0)[0])
            for b, fn in fns.items():
                s = sorted(samples[b])
                records.append(
                    {
                        "backend": b,
                        "device": args.device,
                        "seconds": seconds,
                        "pass": pass_name,
                        "ms": s[len(s) // 2],
                        "ms_min": s[0],
                        "ms_samples": samples[b],
                        "peak_mb": peak(b, seconds, pass_name, fn, args),
                        "n_audio": n,
                        "n_motion": m,
                        "heads": HEADS,
                        "head_dim": HEAD_DIM,
                        "window": WINDOW,
                        "batch": 1,
                        "dtype": str(dtype).replace("torch.", ""),
                    }
                )
    for r in records:
        same = {
            x["backend"]: x["ms"] for x in records if x["seconds"] == r["seconds"] and x["pass"] == r["pass"]
        }
        if "reference" in same:
            r["speedup_vs_reference"] = same["reference"] / r["ms"]
        if "floor" in same:
            r["ratio_vs_floor"] = r["ms"] / same["floor"]
    meta = common.machine(args.device)
    print(
        f"machine: {meta.get('gpu') or meta.get('cpu')} | torch {meta['torch']} | load {meta['loadavg_1_5_15']}"
    )
    print(
        common.table(
            records,
            [
                "seconds",
                "pass",
                "backend",
                "ms",
                "ms_min",
                "peak_mb",
                "speedup_vs_reference",
                "ratio_vs_floor",
            ],
        )
    )
    if args.json:
        for r in records:
            r["machine"] = meta
        common.write_json(args.json, records)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
