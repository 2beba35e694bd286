"""Atomic writes: every command that writes results goes through these two helpers (docs/development.md,
"Guarantees"). No tensors here (no dimension legend); no masks.

* :func:`atomic_file` yields a temporary sibling path (``.NAME.tmp-PID-TOKEN.SUFFIX``, same suffix so writers that
  pick a format from the extension keep working); on success it is renamed over ``NAME`` with ``os.replace``
  (readers never see a half-written file), on any failure (``KeyboardInterrupt`` included) it is removed.
* :func:`replace_dir` yields a temporary sibling *folder*; the command writes its whole output set there, and on
  success the folder is swapped in: an existing ``out`` is renamed aside, the new folder renamed into place, the old
  one removed. A failure removes the temporary folder and leaves ``out`` as it was. ``out`` must be empty or absent,
  or ``overwrite=True`` and ``owned(out)`` must recognise it as this project's output (by its format, not a name).
* Files keep the usual ``0o666 & ~umask`` mode (a library that writes through ``mkstemp`` would leave 0600).
* A process killed with SIGKILL cannot clean up: its temporaries stay, hidden, beside the target; the next call for
  the same target removes those whose process is gone (same machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from jam_flow.errors import InputError

__all__ = [
    "atomic_file",
    "replace_dir",
    "check_out_dir",
    "check_out_file",
    "clean_stale",
    "default_file_mode",
]

_TMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}(?:\..*)?$")


def default_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open(path, "w")`` gives a new file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_name(target: Path, kind: str) -> Path:
    suffix = target.suffix if kind == "tmp" else ""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale(target: Path) -> list[Path]:
    """Remove the temporaries of ``target`` left by killed processes (their pid is gone); returns them."""
    target = Path(target)
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TMP.match(entry.name)
        if match and match["name"] == target.name and not _alive(int(match["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed


def _fix_modes(root: Path) -> None:
    mode = default_file_mode()
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for p in paths:
        if p.stat().st_mode & 0o777 != mode:
            os.chmod(p, mode)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """``with atomic_file(p) as tmp: write(tmp)`` -> ``p`` appears complete or not at all."""
    path = Path(path)
    clean_stale(path)
    tmp = _temp_name(path, "tmp")
    try:
        yield tmp
        _fix_modes(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def check_out_file(path: str | Path, arg: str = "--out") -> Path:
    """Check, before any work, that the file ``path`` can be written (not a folder; its first existing parent is
    a writable folder); ``InputError`` naming ``arg`` otherwise. Write it later with :func:`atomic_file`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{arg}: {path} is a directory (expected a file path)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{arg}: {path} cannot be created ({parent} is not a directory)")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"{arg}: {path} cannot be created ({parent} is not writable)")
            break
    return path


def check_out_dir(
    out: str | Path,
    overwrite: bool,
    owned: Callable[[Path], str | None] | None = None,
    arg: str = "--out",
) -> Path:
    """Check that ``out`` may receive a new output set; ``InputError`` naming ``arg`` otherwise.

    ``owned(out)`` returns None when a non-empty ``out`` is recognisably this project's output (so ``--overwrite``
    may replace it), else the reason it is not; without ``owned`` a non-empty folder is never replaced."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise InputError(f"{arg}: {out} exists and is not a directory")
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InputError(f"{arg}: {out} cannot be created ({parent} is not a directory)")
                break
        entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    except PermissionError as err:
        raise InputError(f"{arg}: {out} is not accessible ({err.strerror})") from err
    if entries:
        if not overwrite:
            raise InputError(f"{arg}: {out} is not empty (pass --overwrite to replace its contents)")
        reason = owned(out) if owned is not None else "its contents were not written by this command"
        if reason is not None:
            raise InputError(f"{arg}: refusing to replace {out}: {reason}")
    return out


@contextlib.contextmanager
def replace_dir(
    out: str | Path,
    overwrite: bool = False,
    owned: Callable[[Path], str | None] | None = None,
    arg: str = "--out",
) -> Iterator[Path]:
    """``with replace_dir(out, overwrite, owned) as tmp: write everything into tmp`` -> ``out`` holds exactly the
    new output set, or (on any failure) what it held before. The checks of :func:`check_out_dir` run first, and
    the temporary folder is created before the body runs, so an unwritable ``out`` fails before any work."""
    out = check_out_dir(out, overwrite, owned, arg)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out)
        tmp = _temp_name(out, "tmp")
        tmp.mkdir()
    except OSError as err:
        raise InputError(f"{arg}: cannot write to {out} ({err.strerror or err})") from err
    try:
        yield tmp
        _fix_modes(tmp)
        if out.is_dir() and any(out.iterdir()):
            old = _temp_name(out, "old")
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            _remove(old)
        else:
            if out.is_dir():
                out.rmdir()
            os.rename(tmp, out)
    except BaseException:
        _remove(tmp)
        raise
