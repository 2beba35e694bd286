"""jam_flow.atomic: files and folders appear complete or not at all, with the usual modes; failures and killed
processes leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jam_flow.atomic import (
    atomic_file,
    check_out_dir,
    check_out_file,
    clean_stale,
    default_file_mode,
    replace_dir,
)
from jam_flow.errors import InputError


def _hidden(root):
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_atomic_file_replaces_or_keeps(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            assert tmp.suffix == ".json" and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and _hidden(tmp_path) == []
    with atomic_file(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as mkstemp-based writers do
        os.write(fd, b"new")
        os.close(fd)
    assert target.read_text() == "new" and _hidden(tmp_path) == []
    assert target.stat().st_mode & 0o777 == default_file_mode()


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.tmp-{dead_pid}-0123abcd"
    stale.mkdir()
    (stale / "audio.wav").write_bytes(b"partial")
    mine = tmp_path / f".out.tmp-{os.getpid()}-0123abcd"
    mine.mkdir()
    other = tmp_path / f".other.tmp-{dead_pid}-0123abcd"
    other.mkdir()
    assert clean_stale(tmp_path / "out") == [stale]
    assert _hidden(tmp_path) == sorted([mine.name, other.name])


def test_replace_dir_swaps_in_the_whole_set_or_nothing(tmp_path):
    out = tmp_path / "out"
    with replace_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "b.txt").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    with pytest.raises(InputError, match="--out: .* is not empty .*--overwrite"):
        with replace_dir(out):
            pass
    owned = lambda root: None  # noqa: E731
    with pytest.raises(ValueError, match="boom"):
        with replace_dir(out, overwrite=True, owned=owned) as tmp:
            (tmp / "a.txt").write_text("2")
            raise ValueError("boom")
    assert (out / "a.txt").read_text() == "1" and _hidden(tmp_path) == []
    with replace_dir(out, overwrite=True, owned=owned) as tmp:
        (tmp / "a.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["a.txt"] and (out / "a.txt").read_text() == "2"
    assert _hidden(tmp_path) == []
    with pytest.raises(InputError, match="refusing to replace .*: not mine"):
        with replace_dir(out, overwrite=True, owned=lambda root: "not mine"):
            pass
    assert (out / "a.txt").read_text() == "2"


def test_output_paths_are_checked(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for bad in (a_file, a_file / "sub"):
        with pytest.raises(InputError, match="--out: .*not a directory"):
            check_out_dir(bad, overwrite=True)
    with pytest.raises(InputError, match="--out: .*is a directory"):
        check_out_file(tmp_path)
    with pytest.raises(InputError, match="--out: .*not a directory"):
        check_out_file(a_file / "m.json")
    assert check_out_file(tmp_path / "new" / "m.json") == tmp_path / "new" / "m.json"
    assert check_out_dir(tmp_path / "new", overwrite=False) == tmp_path / "new"
