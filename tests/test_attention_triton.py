"""The Triton kernel, interpreted on the CPU: runs tests/interpreted/attention_triton_cases.py in a subprocess.

``TRITON_INTERPRET=1`` has to be set before Triton is imported, so the cases run in their own interpreter and
the rest of the suite keeps the normal (compiled) Triton. Dimension legend and mask convention: see that file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "interpreted" / "attention_triton_cases.py"


def test_triton_kernel_interpreted_on_cpu():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::UserWarning",
            str(CASES),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    summary = re.findall(r"^.*\d+ passed.*$", proc.stdout, flags=re.M)
    assert summary and "skipped" not in summary[-1], report  # the cases ran, none skipped
