"""Benchmark one training step of JointDiT: tokens/s, peak memory and model FLOPs utilisation (MFU).

    python benchmarks/train_step.py --device cuda --size paper tiny --backend auto reference --json OUT
    python benchmarks/train_step.py --device cpu --size tiny paper --seconds 2 --no-optimizer --json OUT

One step = the flow-matching objective (:class:`jam_flow.flow.objective.FlowObjective`, both streams generated,
scenario BOTH, no dropout) forward, backward and an AdamW update (``--no-optimizer`` leaves the update out). On the CPU the paper-size
model runs a ``--cpu-paper-seconds`` clip (default 2 s), one timed repetition and no optimizer (its Adam state
does not fit a small machine); the JSON records the clip length and ``optimizer`` of every row. CUDA runs bf16 autocast over fp32 weights
(``bf16-mixed``), the CPU fp32. Tokens = audio frames + motion frames of the batch.

Model FLOPs (the MFU numerator) are counted analytically, never measured: one forward is

    F = sum over Linear calls 2 * in * out * rows  +  sum over Conv1d calls 2 * out_len * out_ch * in_ch/groups * k * b
        + sum over attention calls 4 * h * d * P

where the Linear / Conv1d terms come from forward hooks on one probe forward (exact for the shapes used), and
``P`` is the number of (query, key) pairs that the attention masks allow (paper §4.4: audio queries see
``n + 1`` keys in a joint layer, motion queries their ``2W+1`` motion and about ``3.75 (2W+1)`` audio keys; the
dense ``reference`` does more work than this, and that is not counted). A training step is ``3 F`` (backward =
2 x forward). MFU = ``3 F / (step time * peak)`` with the vendor's dense bf16 peak (``common.PEAK_BF16_FLOPS``);
on the CPU there is no meaningful peak, so achieved GFLOP/s is reported instead (``mfu`` is null).
Dimension legend: b batch, n audio frames, m motion frames, h heads, d head dim, W motion window.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from jam_flow.flow.masking import BOTH, DropFlags, TrainingMasks  # noqa: E402
from jam_flow.flow.objective import FlowBatch, FlowObjective  # noqa: E402
from jam_flow.models import JointDiT, paper_joint_config, tiny_joint_config  # noqa: E402
from jam_flow.nn.masks import joint_attention_masks, local_window_mask  # noqa: E402

CONFIGS = {"tiny": tiny_joint_config, "paper": paper_joint_config}


def make_batch(
    model: JointDiT, b: int, seconds: float, device: str
) -> tuple[FlowBatch, TrainingMasks, DropFlags]:
    n, m = int(seconds * 24000 / 256), int(seconds * 25)
    vocab = model.init_args["audio"]["text_num_embeds"]
    g = torch.Generator().manual_seed(0)
    nt = max(1, int(seconds * 12))  # about 12 characters per second of speech
    batch = FlowBatch(
        audio=torch.randn(b, n, model.init_args["audio"]["mel_dim"], generator=g).to(device),
        audio_mask=torch.ones(b, n, dtype=torch.bool, device=device),
        text=torch.randint(0, vocab, (b, nt), generator=g).to(device),
        motion=torch.randn(b, m, 12, generator=g).to(device),
        motion_rest=torch.randn(b, m, 51, generator=g).to(device),
        motion_mask=torch.ones(b, m, dtype=torch.bool, device=device),
    )
    masks = TrainingMasks(
        audio_gen=torch.ones(b, n, dtype=torch.bool),
        motion_gen=torch.ones(b, m, dtype=torch.bool),
        scenario=torch.full((b,), BOTH, dtype=torch.long),
    )
    off = torch.zeros(b, dtype=torch.bool)
    return batch, masks, DropFlags(off, off, off, off, ~off, ~off)


def attention_pairs(model: JointDiT, b: int, n: int, m: int) -> tuple[int, int, int]:
    """Allowed (query, key) pairs of one joint, one audio-only and one motion-only attention call."""
    lens_a, lens_m = torch.full((b,), n), torch.full((b,), m)
    mask_a, mask_m = joint_attention_masks(
        lens_a,
        lens_m,
        n,
        m,
        model.window,
        sample_rate=model.sample_rate,
        hop_length=model.hop_length,
        fps=model.fps,
    )
    joint = int(mask_a.sum()) + int(mask_m.sum())
    return joint, b * n * n, int(local_window_mask(lens_m, m, model.window).sum())


def forward_flops(model: JointDiT, run_forward, b: int, n: int, m: int) -> dict:
    """Analytic model FLOPs of one forward (Linear + Conv1d from hooks on a probe forward, attention from masks)."""
    counts = {"linear": 0, "conv": 0}

    def on_linear(mod: nn.Linear, inp, out) -> None:
        counts["linear"] += 2 * mod.in_features * mod.out_features * (inp[0].numel() // mod.in_features)

    def on_conv(mod: nn.Conv1d, inp, out) -> None:
        k = mod.kernel_size[0]
        counts["conv"] += (
            2 * out.shape[0] * out.shape[-1] * mod.out_channels * (mod.in_channels // mod.groups) * k
        )

    hooks = [
        mod.register_forward_hook(on_linear if isinstance(mod, nn.Linear) else on_conv)
        for mod in model.modules()
        if isinstance(mod, nn.Linear | nn.Conv1d)
    ]
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for h in hooks:
            h.remove()
    cfg = model.init_args
    heads, dh = cfg["audio"]["heads"], cfg["audio"]["dim_head"]
    joint, audio_self, motion_self = attention_pairs(model, b, n, m)
    n_joint = len(model.joint_layers)
    attn_pairs = (
        n_joint * joint
        + (cfg["audio"]["depth"] - n_joint) * audio_self
        + (cfg["motion"]["depth"] - n_joint) * motion_self
    )
    counts["attention"] = 4 * heads * dh * attn_pairs
    counts["total"] = counts["linear"] + counts["conv"] + counts["attention"]
    return counts


def measure(size: str, backend: str, checkpointing: str, args: argparse.Namespace) -> dict:
    """One (model size, backend, activation checkpointing off/on) measurement."""
    dev = args.device
    small_cpu = (
        dev == "cpu" and size == "paper"
    )  # Adam state of 670 M params does not fit a small CPU machine
    seconds = args.cpu_paper_seconds if small_cpu else args.seconds
    torch.manual_seed(0)
    model = JointDiT(**CONFIGS[size](), attention_backend=backend).to(dev).train()
    model.audio.checkpoint_activations = model.motion.checkpoint_activations = checkpointing == "on"
    batch, masks, drops = make_batch(model, args.batch, seconds, dev)
    n, m = batch.audio.shape[1], batch.motion.shape[1]
    objective = FlowObjective()
    use_opt = not (args.no_optimizer or small_cpu)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev == "cuda") if use_opt else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda")

    def forward():
        with autocast:
            return objective(model, batch, masks, drops, generator=torch.Generator().manual_seed(1))

    def step():
        loss = forward()
        loss.total.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)

    flops = forward_flops(model, forward, args.batch, n, m)
    ms, samples = common.time_ms(step, dev, reps=1 if small_cpu else args.reps, warmup=1)
    peak = common.peak_mb(step, dev)
    train_flops = 3 * flops["total"]
    peak_flops = common.peak_flops(dev)
    record = {
        "size": size,
        "backend": backend,
        "checkpointing": checkpointing == "on",
        "device": dev,
        "dtype": "bf16-mixed" if dev == "cuda" else "float32",
        "batch": args.batch,
        "seconds": seconds,
        "n_audio": n,
        "n_motion": m,
        "params_m": sum(t.numel() for t in model.parameters()) / 1e6,
        "optimizer": opt is not None,
        "ms": ms,
        "ms_samples": samples,
        "tokens_per_s": args.batch * (n + m) / (ms / 1e3),
        "peak_mb": peak,
        "model_flops_per_step": train_flops,
        "flops_breakdown_fwd": flops,
        "achieved_tflops": train_flops / (ms / 1e3) / 1e12,
        "peak_tflops": None if peak_flops is None else peak_flops / 1e12,
        "mfu": None if peak_flops is None else train_flops / (ms / 1e3) / peak_flops,
        "threads": torch.get_num_threads(),
    }
    return record


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument("--size", nargs="+", choices=sorted(CONFIGS), default=["tiny", "paper"])
    p.add_argument("--backend", nargs="+", default=["auto"], help="attention backends to compare")
    p.add_argument("--seconds", type=float, default=20.0, help="clip length of every sample")
    p.add_argument(
        "--cpu-paper-seconds",
        type=float,
        default=2.0,
        help="clip length for the paper-size model on the CPU (20 s takes minutes per step there)",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--no-optimizer",
        action="store_true",
        help="forward + backward only (no AdamW update; always so for the paper-size model on the CPU)",
    )
    p.add_argument(
        "--checkpointing",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="activation checkpointing of both branches (recompute in backward)",
    )
    args = common.parse_args(p, argv)
    dev = args.device
    records = [
        measure(size, backend, ckpt, args)
        for size in args.size
        for backend in args.backend
        for ckpt in args.checkpointing
    ]
    common.report(
        records,
        [
            "size",
            "backend",
            "checkpointing",
            "batch",
            "seconds",
            "ms",
            "tokens_per_s",
            "peak_mb",
            "achieved_tflops",
            "mfu",
        ],
        dev,
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
