"""Checks that run before a user file is read into memory: what a file *declares* is bounded before anything is
allocated for it, and a malformed file is one ``InputError`` line.

Dimension legend: arrays are described by their declared ``shape`` only (no tensors here); s samples. No masks.

* JSON (:func:`loads_json`, :func:`read_json`): a document nested too deeply (Python's parser would raise
  ``RecursionError``) or not JSON at all is one line naming the file.
* ``.npy`` (:func:`npy_header`): shape and dtype from the header alone (``numpy.lib.format.read_magic`` /
  ``read_array_header_*``), no data read.
* ``.npz`` (:func:`npz_members`): every member's uncompressed size (``zipfile`` ``infolist``) and its ``.npy`` header
  (only the header bytes are decompressed).
* Audio (:func:`audio_seconds`): the duration ``soundfile.info`` or the container (PyAV) states; the decoder
  itself stops at a bound (``jam_flow.data.audio.load_audio(max_seconds=...)``) for containers that state none.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from jam_flow.errors import InputError

__all__ = [
    "ArrayHeader",
    "loads_json",
    "read_json",
    "npy_header",
    "npz_members",
    "audio_seconds",
    "check_array_size",
]


def loads_json(text: str, where: str) -> Any:
    """``json.loads(text)``; a syntax error or a document nested too deeply for the parser is one ``InputError``
    line naming ``where`` (a file, or ``file:line``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{where}: not valid JSON ({err.msg}: line {err.lineno} column {err.colno})"
        ) from err
    except RecursionError as err:
        raise InputError(f"{where}: JSON nested too deeply (more levels than the parser allows)") from err


def read_json(path: str | Path, where: str | None = None) -> Any:
    """The JSON document in ``path`` (UTF-8); a missing file, bad encoding, syntax or nesting is one line."""
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise InputError(f"{where}: file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise InputError(f"{where}: cannot read ({err.strerror or err})") from err
    return loads_json(text, where)


@dataclass(frozen=True)
class ArrayHeader:
    """What a ``.npy`` header declares, and (for an ``.npz`` member) the member's uncompressed size in bytes."""

    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int  # declared data size: prod(shape) * itemsize
    stored: int | None = None  # uncompressed zip member size (npz only)


def _read_header(fp: IO[bytes], where: str) -> ArrayHeader:
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):  # 3.0 differs only in the header's text encoding
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"{where}: not a readable .npy array ({first})") from err
    shape = tuple(int(d) for d in shape)
    return ArrayHeader(shape, np.dtype(dtype), math.prod(shape) * np.dtype(dtype).itemsize)


def npy_header(path: str | Path, where: str) -> ArrayHeader:
    """Shape, dtype and data size a ``.npy`` file declares; reads only its header."""
    try:
        with open(path, "rb") as fp:
            return _read_header(fp, where)
    except OSError as err:
        raise InputError(f"{where}: cannot read {path} ({err.strerror or err})") from err


def npz_members(path: str | Path, where: str) -> dict[str, ArrayHeader]:
    """``{array name: header}`` of every ``.npy`` member of an ``.npz`` (name without ``.npy``); reads the zip
    directory and each member's header only."""
    out: dict[str, ArrayHeader] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fp:
                    head = _read_header(fp, f"{where}: member {info.filename}")
                out[info.filename[:-4]] = ArrayHeader(head.shape, head.dtype, head.nbytes, info.file_size)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        raise InputError(f"{where}: cannot read {path} as an .npz archive ({err})") from err
    return out


def check_array_size(head: ArrayHeader, max_bytes: int, where: str, name: str = "array") -> None:
    """``InputError`` when an array declares (or its zip member holds) more than ``max_bytes``."""
    size = max(head.nbytes, head.stored or 0)
    if size > max_bytes:
        raise InputError(
            f"{where}: {name} declares shape {head.shape} {head.dtype} ({size / 2**20:.1f} MiB); at most "
            f"{max_bytes / 2**20:.1f} MiB is read"
        )


def audio_seconds(path: str | Path) -> float | None:
    """The duration an audio (or video) file states, in seconds, without decoding it: ``soundfile.info`` for what
    libsndfile reads, else the container's (PyAV); None when neither states one (the decoder bounds it)."""
    import soundfile as sf

    path = Path(path)
    try:
        info = sf.info(str(path))
        if info.samplerate > 0 and info.frames >= 0:
            return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        pass
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if streams and streams[0].duration is not None and streams[0].time_base is not None:
                return float(streams[0].duration * streams[0].time_base)
            if container.duration is not None:
                return container.duration / 1_000_000  # av.time_base
    except (av.error.FFmpegError, OSError, ValueError):
        return None  # the decoder says what is wrong with it
    return None
