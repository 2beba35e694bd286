"""Executes notebooks/attention_masks.ipynb (its own asserts check the masks and RoPE alignment) and
notebooks/quickstart.ipynb (the Python API on a tiny random model, with its own asserts), so they cannot rot.

The notebooks are committed with outputs stripped; this test checks that too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "attention_masks.ipynb"
QUICKSTART = NOTEBOOK.with_name("quickstart.ipynb")


def _kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The registered ``python3`` kernel if there is one; else a kernelspec for this interpreter, registered here."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" in KernelSpecManager().find_kernel_specs():
        return "python3"  # jupyter_client runs a spec whose argv[0] is "python" with sys.executable
    spec_dir = tmp_path / "kernels" / "jam-flow-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jam-flow test",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path) + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
    return "jam-flow-test"


@pytest.mark.parametrize("path", [NOTEBOOK, QUICKSTART], ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the notebook has no code cells"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)


def _execute(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the notebook in a kernel (working directory ``tmp_path``); returns everything its cells printed."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name=_kernel_name(tmp_path, monkeypatch),
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def test_attention_masks_notebook_executes(tmp_path, monkeypatch):
    printed = _execute(NOTEBOOK, tmp_path, monkeypatch)
    assert "n = 376 audio frames, m = 100 motion frames" in printed
    assert "largest angle gap" in printed


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    """The quickstart uses ``from jam_flow import JamFlow`` on a tiny model it builds; its cells assert the
    shapes, the dub timing and the edit's kept frames."""
    printed = _execute(QUICKSTART, tmp_path, monkeypatch)
    assert "motion (30, 21, 3)" in printed and "audio.wav" in printed
    assert "edit: motion outside the span kept exactly" in printed
    assert "error: --nfe: expected 1-1000, got 0" in printed
