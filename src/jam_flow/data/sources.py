"""Discovery of source videos for ``jam-flow preprocess``: CelebV-Dub, HDTF and plain folders.

No tensors here. Every discovered video becomes a :class:`SourceClip` with a dataset-unique id, a split, a
speaker and a transcript (empty when there is none).

* ``celebv-dub``: ``<root>/<split>/<speaker>/<clip>.mp4`` + ``<clip>.txt`` holding ``Text: <TRANSCRIPT>``
  (and ``Conf: N``). Split folders named train / val / valid / validation / dev / test are used as they are;
  any other folder name falls back to the hash split.
* ``hdtf``: ``*.mp4`` named ``{RD|WDA|WRA}_<video>_<idx>.mp4`` anywhere under the root; speaker
  ``<subset>_<video>``; transcript from an optional sidecar ``.txt``; hash split by speaker, so that no speaker
  appears in two splits. Files that do not follow the naming are reported, not guessed.
* ``folder``: every ``*.mp4|*.mov|*.mkv|*.webm|*.avi`` under the root; speaker = the parent folder relative to
  the root (``default`` at the top level); transcript from an optional sidecar ``.txt``; hash split by clip.

The hash split: ``sha1(key)`` as an integer modulo 100: below 5 -> val, below 10 -> test, else train.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from jam_flow.errors import InputError

__all__ = ["DATASETS", "SourceClip", "discover", "hash_split", "read_transcript"]

DATASETS = ("celebv-dub", "hdtf", "folder")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
_SPLIT_DIRS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
}
_HDTF_NAME = re.compile(r"^(RD|WDA|WRA)_(.+)_(\d+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SourceClip:
    id: str
    path: Path
    split: str
    speaker: str
    text: str


def hash_split(key: str) -> str:
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "val" if bucket < 5 else "test" if bucket < 10 else "train"


def _safe(name: str) -> str:
    return _UNSAFE.sub("-", name).strip("-") or "x"


def read_transcript(video: Path) -> str:
    """Transcript of a sidecar ``<video>.txt``: the ``Text:`` line when there is one, else the whole file
    (whitespace collapsed). No sidecar -> ``""``."""
    path = video.with_suffix(".txt")
    if not path.is_file():
        return ""
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: transcript is not UTF-8 ({err})") from err
    for line in content.splitlines():
        if line.startswith("Text:"):
            return " ".join(line[len("Text:") :].split())
    if any(line.startswith("Conf:") for line in content.splitlines()):
        return ""
    return " ".join(content.split())


def discover(dataset: str, root: str | Path) -> tuple[list[SourceClip], list[tuple[Path, str]]]:
    """-> (clips sorted by id, [(path, reason)] for files that could not be interpreted)."""
    root = Path(root)
    if dataset not in DATASETS:
        raise InputError(f"--dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    if not root.is_dir():
        raise InputError(f"--root: {root} is not a directory")
    clips: list[SourceClip] = []
    skipped: list[tuple[Path, str]] = []
    if dataset == "celebv-dub":
        for path in sorted(root.glob("*/*/*.mp4")):
            split_dir, speaker = path.parent.parent.name, path.parent.name
            split = _SPLIT_DIRS.get(split_dir.lower()) or hash_split(f"{speaker}")
            cid = f"{_safe(split_dir)}__{_safe(speaker)}__{_safe(path.stem)}"
            clips.append(SourceClip(cid, path, split, speaker, read_transcript(path)))
        if not clips:
            raise InputError(
                f"--root: no <split>/<speaker>/<clip>.mp4 files under {root} (CelebV-Dub layout)"
            )
    elif dataset == "hdtf":
        for path in sorted(root.rglob("*.mp4")):
            match = _HDTF_NAME.match(path.stem)
            if not match:
                skipped.append((path, "name does not follow HDTF's {RD|WDA|WRA}_<video>_<idx>.mp4"))
                continue
            speaker = f"{match.group(1)}_{match.group(2)}"
            clips.append(
                SourceClip(_safe(path.stem), path, hash_split(speaker), speaker, read_transcript(path))
            )
        if not clips:
            raise InputError(f"--root: no HDTF clips ({{RD|WDA|WRA}}_<video>_<idx>.mp4) under {root}")
    else:
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        for path in paths:
            rel = path.relative_to(root)
            speaker = "/".join(rel.parent.parts) or "default"
            cid = "__".join(_safe(part) for part in rel.with_suffix("").parts)
            clips.append(SourceClip(cid, path, hash_split(cid), speaker, read_transcript(path)))
        if not clips:
            raise InputError(f"--root: no video files ({', '.join(VIDEO_SUFFIXES)}) under {root}")
    ids: dict[str, Path] = {}
    unique = []
    for clip in sorted(clips, key=lambda c: c.id):
        if clip.id in ids:
            skipped.append((clip.path, f"clip id {clip.id!r} collides with {ids[clip.id]}"))
            continue
        ids[clip.id] = clip.path
        unique.append(clip)
    return unique, skipped
