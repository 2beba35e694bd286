"""benchmarks/gpu_check.sh in its CPU dry-run mode: steps run under the budget, a step with no time left is skipped
and the summary is still written, every result is JSON. The full dry run (every step) is slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "pytest_gpu", "triton_compiled", "attention", "train_step", "sample"]


def _run(out: Path, *args: str, timeout: int = 900) -> dict:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "gpu_check.log").is_file()
    return json.loads((out / "gpu_check.json").read_text())


def test_no_time_left_skips_every_step_and_still_writes_the_summary(tmp_path):
    summary = _run(tmp_path, "--budget", "1")
    assert summary["dry_run"] is True and summary["budget_s"] == 1.0
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert all(s["status"] == "skipped" for s in summary["steps"])
    assert summary["all_ok"] is False and summary["machine"]["torch"]


def test_dry_run_sample_step_writes_its_benchmark_json(tmp_path):
    summary = _run(tmp_path, "--only", "sample", "--budget", "600")
    (step,) = summary["steps"]
    assert step["step"] == "sample" and step["status"] == "ok", step
    assert step["result"] == "sample_cpu_dry.json"
    records = json.loads((tmp_path / step["result"]).read_text())["records"]
    assert records and all(r["device"] == "cpu" and r["size"] == "tiny" for r in records)
    assert all(r["vocoder_ms"] > 0 and r["end_to_end_ms"] > r["ms"] for r in records)


def test_unknown_argument_is_refused(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown argument --bogus" in proc.stderr


@pytest.mark.slow
def test_full_dry_run_every_step_ok(tmp_path):
    summary = _run(tmp_path, "--budget", "900", timeout=1200)
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert summary["all_ok"], summary["steps"]
    for s in summary["steps"][1:]:
        assert json.loads((tmp_path / s["result"]).read_text()), s
