"""Atomic writes: every command that writes results goes through these two helpers (docs/development.md,
"Guarantees"). No tensors here (no dimension legend); no masks.

* :func:`atomic_file` yields a temporary sibling path (``.NAME.tmp-PID-TOKEN.SUFFIX``, same suffix so writers that
  pick a format from the extension keep working); on success it is renamed over ``NAME`` with ``os.replace``
  (readers never see a half-written file), on any failure (``KeyboardInterrupt`` included) it is removed.
* :func:`replace_dir` yields a temporary sibling *folder*; the command writes its whole output set there, and on
  success the folder is swapped in. ``out`` must be empty or absent, or ``overwrite=True`` and ``owned(out)`` must
  recognise it as this project's output (by its format, not a name). Both are checked before any work *and again at
  swap time*: without ``overwrite`` the new folder is renamed onto ``out`` with ``rename(2)``, which fails when
  ``out`` is not empty (a file written there meanwhile is never deleted); with ``overwrite`` the old folder is
  renamed aside, checked once more and only then deleted. A failure removes the temporary folder and leaves ``out``
  as it was.
* One writer per ``out``: ``replace_dir`` holds an exclusive ``flock`` on the hidden sibling ``.NAME.lock`` (holding
  the writer's pid) from before the work until the swap; a second writer is refused with one line naming the first
  process. The kernel releases the lock of a killed process.
* A symlinked ``out`` is resolved before any work: the output replaces the folder the link points to, and the link
  stays (a link to a non-folder is refused).
* SIGTERM (in the main thread) raises :class:`Terminated` inside ``replace_dir`` / ``atomic_file``, so the
  temporaries are removed as after Ctrl-C; the process then exits with status 143. Where Python swallows the
  exception (an at-fork callback of a library that forks), the signal is sent again every 0.5 s until a cleanup
  has caught it, and a pending SIGTERM is checked before any swap.
* Files keep the usual ``0o666 & ~umask`` mode (a library that writes through ``mkstemp`` would leave 0600).
* A process killed with SIGKILL cannot clean up: its temporaries stay, hidden, beside the target; the next call for
  the same target removes those whose process is gone (same machine).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from jam_flow.errors import InputError

__all__ = [
    "atomic_file",
    "replace_dir",
    "check_out_dir",
    "check_out_file",
    "clean_stale",
    "resolve_out",
    "default_file_mode",
    "Terminated",
    "terminate_cleanly",
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
    with terminate_cleanly():
        try:
            yield tmp
            _check_terminated()
            _fix_modes(tmp)
            os.replace(tmp, path)
        except BaseException as err:
            _unwinding(err)
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
    may replace it), else the reason it is not; without ``owned`` a non-empty folder is never replaced. A symlinked
    ``out`` is resolved (:func:`resolve_out`); the path checked is returned."""
    out = resolve_out(out, arg)
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


class Terminated(SystemExit):
    """Raised by the SIGTERM handler of :func:`terminate_cleanly`: unwinds like Ctrl-C (every ``finally`` and
    ``except BaseException`` cleanup runs), then exits quietly with status 143 (128 + SIGTERM)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class _TermState:
    """SIGTERM bookkeeping: ``requested`` once the signal came; ``unwinding`` once a cleanup has caught it (later
    signals are then ignored, so the cleanup itself is never interrupted)."""

    requested = threading.Event()
    unwinding = threading.Event()
    resender: threading.Thread | None = None


def _resend() -> None:
    # the Terminated exception can be swallowed where Python only reports exceptions (an at-fork callback, a
    # __del__): the signal is sent again until a cleanup has caught it
    while not _TermState.unwinding.wait(0.5):
        os.kill(os.getpid(), signal.SIGTERM)


def _raise_terminated(signum, frame) -> None:
    if _TermState.unwinding.is_set():
        return
    _TermState.requested.set()
    if _TermState.resender is None:
        _TermState.resender = threading.Thread(target=_resend, name="jam-flow-sigterm", daemon=True)
        _TermState.resender.start()
    raise Terminated()


def _unwinding(err: BaseException | None = None) -> None:
    """Called by a cleanup: stop resending SIGTERM (a Terminated is on its way out)."""
    if _TermState.requested.is_set() or isinstance(err, Terminated):
        _TermState.unwinding.set()


def _check_terminated() -> None:
    """Before a result is swapped in: a SIGTERM whose exception was swallowed still ends the command."""
    if _TermState.requested.is_set():
        raise Terminated()


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only, and only where SIGTERM still has its
    default action: a handler someone else installed is kept). The previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # not the main interpreter
        yield
        return
    if previous not in (signal.SIG_DFL, None):
        yield
        return
    if (
        _TermState.resender is None or not _TermState.resender.is_alive()
    ):  # a fresh start (a long-lived process)
        _TermState.requested.clear()
        _TermState.unwinding.clear()
        _TermState.resender = None
    signal.signal(signal.SIGTERM, _raise_terminated)
    hook = sys.unraisablehook

    def quiet_terminated(
        unraisable,
    ) -> None:  # swallowed, so sent again (_resend): no "Exception ignored" report
        if not isinstance(unraisable.exc_value, Terminated):
            hook(unraisable)

    sys.unraisablehook = quiet_terminated
    try:
        yield
    finally:
        _unwinding()  # a pending SIGTERM is on its way out: no more resending once the default action is back
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = hook


def _lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def _acquire(out: Path, arg: str) -> tuple[int, Path]:
    """An exclusive ``flock`` on ``.NAME.lock`` beside ``out`` (the pid written into it); ``InputError`` naming the
    holder when another process has it. The file is unlinked on release, so a lock that was unlinked between our
    open and our flock is retried on the new file."""
    lock = _lock_path(out)
    for _ in range(100):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, default_file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"{arg}: {out} is being written by another jam-flow command ({_holder(lock)}); wait for it to "
                f"finish or choose another {arg}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            return fd, lock
        os.close(fd)  # released and unlinked meanwhile: lock the file now in its place
    raise InputError(f"{arg}: cannot lock {lock} (it keeps changing)")


def _release(fd: int, lock: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)
    os.close(fd)


def resolve_out(out: str | Path, arg: str = "--out") -> Path:
    """``out`` with a symlink in its last component resolved (the output replaces the link's target, and the link
    stays); a link to a non-folder is refused. Other paths are returned as given."""
    out = Path(out)
    if not out.is_symlink():
        return out
    target = Path(os.path.realpath(out))
    if target.exists() and not target.is_dir():
        raise InputError(f"{arg}: {out} is a symlink to {target}, which is not a directory")
    return target


def _changed(out: Path, arg: str, what: str) -> InputError:
    return InputError(
        f"{arg}: {out} {what} while this command ran; it was left as it is and the new output was discarded "
        "(run again)"
    )


def _swap(
    tmp: Path, out: Path, overwrite: bool, owned: Callable[[Path], str | None] | None, arg: str
) -> None:
    """Move ``tmp`` into place, checking ``out`` again now: nothing that this project did not write is deleted."""
    try:
        os.rename(tmp, out)  # succeeds onto an absent or empty folder only (rename(2))
        return
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise InputError(f"{arg}: cannot move the new output to {out} ({err.strerror})") from err
    if not out.is_dir() or out.is_symlink():
        raise _changed(out, arg, "was replaced by a file or a link")
    if not overwrite:
        raise _changed(out, arg, "received new files")
    reason = owned(out) if owned is not None else "its contents were not written by this command"
    if reason is not None:
        raise InputError(
            f"{arg}: refusing to replace {out} at the end of the run: {reason}; nothing was deleted"
        )
    old = _temp_name(out, "old")
    os.rename(out, old)
    reason = owned(old) if owned is not None else "changed"
    if reason is not None:  # written into between the check and the rename: put it back untouched
        os.rename(old, out)
        raise InputError(
            f"{arg}: refusing to replace {out} at the end of the run: {reason}; nothing was deleted"
        )
    try:
        os.rename(tmp, out)
    except OSError as err:
        try:
            os.rename(old, out)
        except OSError:
            raise InputError(
                f"{arg}: {out} was created again while this command ran; the previous output is kept in {old}"
            ) from err
        raise _changed(out, arg, "was created again") from err
    _remove(old)


@contextlib.contextmanager
def replace_dir(
    out: str | Path,
    overwrite: bool = False,
    owned: Callable[[Path], str | None] | None = None,
    arg: str = "--out",
) -> Iterator[Path]:
    """``with replace_dir(out, overwrite, owned) as tmp: write everything into tmp`` -> ``out`` holds exactly the
    new output set, or (on any failure) what it held before. A symlinked ``out`` is resolved
    (:func:`resolve_out`), the checks of :func:`check_out_dir` run first, the lock is taken (one writer per
    ``out``) and the temporary folder is created before the body runs, so an unwritable or busy ``out`` fails before
    any work. At the end ``out`` is checked again (see the module docstring)."""
    out = check_out_dir(resolve_out(out, arg), overwrite, owned, arg)
    with terminate_cleanly():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            lock = _acquire(out, arg)
        except OSError as err:
            raise InputError(f"{arg}: cannot write to {out} ({err.strerror or err})") from err
        try:
            try:
                check_out_dir(out, overwrite, owned, arg)  # again, now that no other writer can start
                clean_stale(out)
                tmp = _temp_name(out, "tmp")
                tmp.mkdir()
            except OSError as err:
                raise InputError(f"{arg}: cannot write to {out} ({err.strerror or err})") from err
            try:
                yield tmp
                _check_terminated()
                _fix_modes(tmp)
                _swap(tmp, out, overwrite, owned, arg)
            except BaseException as err:
                _unwinding(err)
                _remove(tmp)
                raise
        finally:
            _release(*lock)
