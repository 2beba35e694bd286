"""What the recipes share: paths and command lines as results record them, the machine record, subprocesses
with a fixed thread count, atomic result files and the ``python -m`` entry (one ``error:`` line for bad input).
No tensors here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from jam_flow.atomic import atomic_file
from jam_flow.errors import InputError

__all__ = [
    "rel",
    "shown",
    "machine",
    "jam_flow_command",
    "spawn",
    "run_env",
    "write_json",
    "run_cli",
    "add_speech_eval_options",
]


def rel(path: str | Path) -> str:
    """``path`` relative to the working directory (the repository) when it lies below it, else as given: result
    files hold no machine-specific paths."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def shown(cmd: list[str]) -> str:
    """A ``jam-flow`` command line as recorded in results (without this machine's interpreter path)."""
    return shlex.join(["jam-flow", *cmd[3:]])


def machine(threads: int) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host_cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads_per_run": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def jam_flow_command() -> list[str]:
    return [sys.executable, "-m", "jam_flow.cli"]


def spawn(cmd: list[str], log_path: Path, threads: int) -> tuple[subprocess.Popen, Any]:
    """Start ``cmd`` (in the working directory) with its output in ``log_path``; returns the process and the open log
    (the caller closes it when the process ends). Each process gets its own session: on a shared machine with
    autogroup scheduling, each then gets a session's CPU share."""
    logf = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller when the process ends
    proc = subprocess.Popen(
        cmd, env=run_env(threads), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, logf


def run_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def write_json(out: Path, obj: Any) -> None:
    """Write a result file atomically (its folder created): a killed run leaves the previous file intact."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def run_cli(main_fn: Any) -> None:
    """``python -m`` entry of a recipe: the CLI convention for bad input (one line, exit 2, no traceback)."""
    try:
        raise SystemExit(main_fn())
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def add_speech_eval_options(
    p: argparse.ArgumentParser, *, judge_minutes: float, eval_clips: int, max_lag: bool = False
) -> None:
    """The judge, learning-curve and sampling options both speech recipes take (the same names and meanings):
    ``--judge-steps/--judge-minutes``, ``--eval-clips``, ``--curve-clips``, ``--curve-every``, ``--eval-batch``,
    ``--nfe``, ``--cfg``, (``--max-lag``), ``--seed`` and ``--pocketsphinx``."""
    p.add_argument("--judge-steps", type=int, default=1500, help="train-judge --steps")
    p.add_argument("--judge-minutes", type=float, default=judge_minutes, help="train-judge --max-minutes")
    p.add_argument(
        "--eval-clips", type=int, default=eval_clips, help="held-out clips of the final evaluations"
    )
    p.add_argument("--curve-clips", type=int, default=16, help="held-out clips per learning-curve point")
    p.add_argument("--curve-every", type=int, default=500, help="evaluate every N-th step's checkpoint")
    p.add_argument("--eval-batch", type=int, default=8, help="clips generated together")
    p.add_argument("--nfe", type=int, default=32, help="sampler NFE (default 32, the paper's)")
    p.add_argument("--cfg", type=float, default=2.0, help="guidance scale γ (default 2, the paper's)")
    if max_lag:
        p.add_argument("--max-lag", type=int, default=10, help="A/V offset search range in motion frames")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed")
    p.add_argument(
        "--pocketsphinx",
        choices=("auto", "on", "off"),
        default="auto",
        help="final evaluations: pocketsphinx WER",
    )
