"""The jam-flow checkpoint / export format (docs/CONVENTIONS.md "Checkpoints and exported models"): how a file is
read safely. No tensor dimensions of its own (state dicts only).

Every read of a ``.ckpt`` / ``.pt`` goes through :func:`read_torch_file`: ``torch.load(weights_only=True)`` (tensors
and plain Python values only; a file that needs more, e.g. a pickled ``__reduce__``, is refused with one line
before anything in it runs).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from jam_flow.errors import InputError

__all__ = ["read_torch_file", "plain", "CONVERT_HINT"]

CONVERT_HINT = "if you trust the file, convert it once as docs/training.md 'Checkpoint safety' shows"


def _refusal(err: Exception) -> str:
    """The one-line reason of a ``weights_only`` refusal (torch's own message spans several lines)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w.]+)", text)
    if found:
        return f"unpickling it would call {found.group(1)}"
    found = re.search(r"Unsupported operand \d+", text)
    if found:
        return f"it is not a tensor/plain-value pickle ({found.group(0).lower()})"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def read_torch_file(path: str | Path, what: str, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; every failure is one ``InputError`` line naming ``what``
    (the argument) and the file: missing, not a file, truncated / corrupt, or needing code to unpickle.
    ``mmap`` maps the tensors of a zip checkpoint instead of reading them (a cheap check of a large file)."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what}: {path} does not exist")
    if not path.is_file():
        raise InputError(f"{what}: {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")  # refused below when it matters
            lazy = {"mmap": True} if mmap and zipfile.is_zipfile(path) else {}
            return torch.load(str(path), map_location="cpu", weights_only=True, **lazy)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"{what}: {path} refused: {_refusal(err)}; jam-flow only loads tensors and plain values "
            f"(torch.load weights_only=True); {CONVERT_HINT}"
        ) from err
    except Exception as err:  # noqa: BLE001 - truncated zip, bad magic number, ... : not a checkpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(
            f"{what}: {path} is not a readable PyTorch checkpoint (truncated or corrupt? {type(err).__name__}: "
            f"{first})"
        ) from err


def plain(obj: Any) -> Any:
    """Dataclasses -> dicts, enums -> their values, tuples -> lists, numpy/tensor values -> Python numbers, recursively:
    what ``weights_only=True`` and YAML both read back (checkpoint hyper-parameters, export ``config.yaml``)."""
    import dataclasses
    import enum

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return plain(obj.value)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
