"""Shared helpers of the benchmarks: machine description, timing (median of N), peak memory, JSON output.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (bytes held by tensors
above what was allocated before the call). On the CPU torch has no allocator statistics, so a thread polls the
process's resident set size (``/proc/self/statm``) every 0.5 ms while the call runs and reports the high-water
mark minus the RSS before the call. For RSS to follow tensor lifetimes, glibc must return large blocks to the OS
when they are freed: ``benchmarks/attention.py`` measures each CPU peak in a fresh process that re-executes itself
with ``MALLOC_MMAP_THRESHOLD_=65536`` (:func:`ensure_malloc_env`; it also switches off glibc's dynamic threshold).
``train_step.py`` and ``sample.py`` run with the default allocator, so their CPU ``peak_mb`` is the growth of the
RSS during the call (freed memory that glibc keeps and reuses is not counted again): a lower bound of the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parents[1]

# dense bf16 tensor-core peak (FLOP/s), from the vendors' data sheets (SXM parts, without sparsity)
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every model benchmark shares: ``--device``, ``--threads``, ``--json``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, default=None)
    return p


def parse_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and apply ``--threads``."""
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def ensure_malloc_env() -> None:
    """Re-exec this script with glibc's mmap threshold pinned low, so that RSS tracks freed tensors (CPU peaks)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def machine(device: str) -> dict:
    """What the numbers were measured on (with the load average: the CPU machine is shared)."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    return info


def peak_flops(device: str) -> float | None:
    """Dense bf16 peak of the GPU from :data:`PEAK_BF16_FLOPS`, or None (CPU / unknown GPU)."""
    if device != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, reps: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` in ms over ``reps`` runs (after ``warmup`` runs), and all the samples."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), samples


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_mb(fn: Callable[[], object], device: str) -> float:
    """Peak extra memory of one call of ``fn`` in MiB (CUDA allocator peak, or polled RSS on the CPU)."""
    if device == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = _rss_bytes()
    high = [base]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            high[0] = max(high[0], _rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    high[0] = max(high[0], _rss_bytes())
    return (high[0] - base) / 2**20


def repo_relative(payload: object, root: Path = REPO) -> object:
    """``payload`` with every absolute path below the repository ``root`` made relative to it (result files hold
    no machine-specific paths); ``sys.executable`` is written as ``python``."""
    if isinstance(payload, dict):
        return {k: repo_relative(v, root) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [repo_relative(v, root) for v in payload]
    if isinstance(payload, Path):
        payload = str(payload)
    if isinstance(payload, str):
        payload = payload.replace(sys.executable, "python")
        return payload.replace(f"{root}{os.sep}", "").replace(str(root), ".")
    return payload


def write_json(path: str | Path, payload: object) -> Path:
    """Write ``payload`` (paths made repository-relative, see :func:`repo_relative`) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(repo_relative(payload), indent=2) + "\n")
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text (Markdown) table of ``rows`` restricted to ``columns``."""

    def fmt(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def report(records: list[dict], columns: list[str], device: str, json_path: str | Path | None) -> None:
    """Print the machine line and a table of ``records``; write ``{"machine", "records"}`` to ``json_path``."""
    meta = machine(device)
    print(
        f"machine: {meta.get('gpu') or meta.get('cpu')} | torch {meta['torch']} | load {meta['loadavg_1_5_15']}"
    )
    print(table(records, columns))
    if json_path:
        write_json(json_path, {"machine": meta, "records": records})
        print(f"wrote {json_path}")
