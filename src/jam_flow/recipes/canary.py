"""The learnability canary (``make canary`` = ``python -m jam_flow.recipes.canary``): can the text path learn at all?

No tensor dimensions of its own. It writes the toy corpus of :mod:`jam_flow.data.synth.canary` (each token a fixed
spectrum held for a fixed time, so the text alone determines the mel), trains ``configs/canary.yaml`` through the
project's own ``fit`` path (LightningCLI) for ``--steps`` steps, then validates once more and reads the text-use
probe's ``val/text_gain`` (:mod:`jam_flow.flow.probe`: relative loss gain of each clip's own text over another
clip's, all drops off, fixed draws) overall and per flow-time bin. Exit status 0 when the gain reaches
``--threshold`` (:data:`THRESHOLD`, chosen from measured runs: docs/training.md "The learnability canary"), 1 when
it does not; ``OUT/canary.json`` holds the numbers. Run it first after changing anything on the text path
(vocabulary, text embedding, masks, dropout, the objective, batching of text).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import torch

from jam_flow.errors import ArgumentParser, InputError
from jam_flow.recipes.common import run_cli, write_json

__all__ = ["main", "run_canary", "THRESHOLD", "STEPS"]

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "configs" / "canary.yaml"
STEPS = 300
# relative gain the run must reach by STEPS steps: well below every measured seed, far above a run without text
THRESHOLD = 0.2


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_canary(
    out: Path,
    seed: int = 0,
    steps: int = STEPS,
    threshold: float = THRESHOLD,
    config: Path = CONFIG,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """Build the corpus (corpus seed = ``seed``), train, validate; returns what ``canary.json`` holds."""
    from jam_flow.data.synth.canary import build_canary_corpus
    from jam_flow.flow.probe import TIME_BINS
    from jam_flow.lightning.cli import run_cli as run_lightning_cli

    start, cpu0 = time.perf_counter(), _cpu_seconds()
    data = out / f"data_seed{seed}"
    if not (data / "manifest.jsonl").is_file():
        build_canary_corpus(data, seed=seed)
    run_dir = out / f"run_seed{seed}"
    args = ["--config", str(config), "--data.data_dir", str(data), "--trainer.default_root_dir", str(run_dir)]
    args += ["--trainer.max_steps", str(steps), "--seed_everything", str(seed), "--model.seed", str(seed)]
    cli = run_lightning_cli("fit", args + list(extra or []))
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    gain = float(metrics["val/text_gain"])
    result = {
        "seed": seed,
        "steps": int(cli.trainer.global_step),
        "threshold": threshold,
        "text_gain": gain,
        "text_gain_bins": {name: float(metrics[f"val/text_gain_{name}"]) for name, _, _ in TIME_BINS},
        "val_loss": float(metrics["val/loss"]),
        "passed": gain >= threshold,
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(_cpu_seconds() - cpu0, 1),
        "torch_threads": torch.get_num_threads(),
        "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
        "extra_args": list(extra or []),
    }
    write_json(out / "canary.json", result)
    return result


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m jam_flow.recipes.canary",
        description="Learnability canary: train a tiny Audio-DiT on a toy corpus where the text determines the "
        "mel, and check that the text-use probe (val/text_gain) shows a clear gain.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/canary"), help="work folder (default runs/canary)")
    p.add_argument("--seed", type=int, default=0, help="corpus and training seed (default 0)")
    p.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS})")
    p.add_argument(
        "--threshold", type=float, default=THRESHOLD, help=f"val/text_gain to reach (default {THRESHOLD})"
    )
    p.add_argument(
        "--config", type=Path, default=CONFIG, help="training config (default configs/canary.yaml)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for this size)")
    return p


def main(argv: list[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if args.steps < 1 or args.threads < 1:
        raise InputError(f"--steps / --threads: expected >= 1, got {args.steps} / {args.threads}")
    if not args.config.is_file():
        raise InputError(f"--config: {args.config} does not exist")
    torch.set_num_threads(args.threads)
    res = run_canary(args.out, args.seed, args.steps, args.threshold, args.config, extra)
    bins = ", ".join(f"{k} {v:+.3f}" for k, v in res["text_gain_bins"].items())
    verdict = "PASS" if res["passed"] else "FAIL"
    print(
        f"canary {verdict}: val/text_gain {res['text_gain']:+.3f} after {res['steps']} steps "
        f"(threshold {res['threshold']}; per time bin: {bins}); {res['wall_s']} s wall, {res['cpu_s']} s CPU; "
        f"{args.out / 'canary.json'}"
    )
    if not res["passed"]:
        print(
            "the model does not use its text: something on the text path is broken (vocabulary, text embedding, "
            "masks, dropout, objective, text batching); see docs/training.md 'The learnability canary'"
        )
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    run_cli(main)
