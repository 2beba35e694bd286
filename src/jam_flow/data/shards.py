"""Preprocessing across machines: ``jam-flow preprocess --shard I/N`` writes one shard's part of a dataset, and
``jam-flow data stats DIR`` merges the parts (exactly: per-shard moments, Chan et al.'s parallel merge).

No tensors here. A shard run writes its clips into ``OUT/clips/`` (disjoint ids: a source video belongs to exactly
one shard, ``crc32(id) % N``) and, instead of the dataset files, these parts:

```
OUT/shards/manifest-I-of-N.jsonl   the shard's clip records
OUT/shards/moments-I-of-N.json     {"format": "jam-flow-shard", "version": 1, "shard": [I, N], "dataset": {dataset.json
                                    of the shard}, "moments": StatsAccumulator.moments() of its train clips (all
                                    clips when none is in train)}
OUT/shards/failures-I-of-N.jsonl   the shard's failure rows
```
Shards run on other machines are copied into one ``OUT`` (``clips/`` and ``shards/`` side by side) before merging.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

from jam_flow.atomic import atomic_file
from jam_flow.data.format import (
    SPLITS,
    ClipRecord,
    DatasetInfo,
    StatsAccumulator,
    accumulate_stats,
    write_dataset_json,
    write_manifest,
    write_stats,
)
from jam_flow.errors import InputError
from jam_flow.features import MelSettings, MotionSettings

__all__ = [
    "SHARD_FORMAT",
    "parse_shard",
    "in_shard",
    "write_failures",
    "write_shard",
    "merge_shards",
    "shard_files",
]

SHARD_FORMAT = "jam-flow-shard"
_SHARD = re.compile(r"^(\d+)/(\d+)$")
_MOMENTS = re.compile(r"^moments-(\d+)-of-(\d+)\.json$")


def parse_shard(text: str, arg: str = "--shard") -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    match = _SHARD.match(text.strip())
    if not match:
        raise InputError(f"{arg}: expected I/N (e.g. 0/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 0 <= index < count:
        raise InputError(f"{arg}: need 0 <= I < N, got {text!r}")
    return index, count


def in_shard(source_id: str, index: int, count: int) -> bool:
    """A source video's shard: ``crc32(id) % N`` (stable across machines, runs and Python versions)."""
    return zlib.crc32(source_id.encode("utf-8")) % count == index


def write_failures(path: Path, rows: list[dict]) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def shard_files(root: Path, index: int, count: int) -> dict[str, Path]:
    base = Path(root) / "shards"
    return {
        "manifest": base / f"manifest-{index}-of-{count}.jsonl",
        "moments": base / f"moments-{index}-of-{count}.json",
        "failures": base / f"failures-{index}-of-{count}.jsonl",
    }


def write_shard(
    root: Path, index: int, count: int, records: list[ClipRecord], failures: list[dict], info: DatasetInfo
) -> Path:
    """Write one shard's parts (its statistics from its clips' ``mel`` / ``exp``); returns the failure report."""
    files = shard_files(root, index, count)
    files["manifest"].parent.mkdir(parents=True, exist_ok=True)
    acc = accumulate_stats(root, records) if records else StatsAccumulator()
    lines = [json.dumps(r.to_json(), ensure_ascii=False, sort_keys=True) + "\n" for r in records]
    with atomic_file(files["manifest"]) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    part = {
        "format": SHARD_FORMAT,
        "version": 1,
        "shard": [index, count],
        "dataset": info.to_json(),
        "moments": acc.moments(),
    }
    with atomic_file(files["moments"]) as tmp:
        tmp.write_text(json.dumps(part) + "\n", encoding="utf-8")
    return write_failures(files["failures"], failures)


def _read_part(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(obj, dict) or obj.get("format") != SHARD_FORMAT or obj.get("version") != 1:
        raise InputError(f"{path}: not a jam-flow shard part (format {SHARD_FORMAT!r}, version 1)")
    return obj


def merge_shards(root: str | Path) -> dict[str, Any]:
    """Merge ``ROOT/shards/*`` into ``manifest.jsonl``, ``stats.json``, ``dataset.json`` and ``failures.jsonl``;
    every shard ``0 .. N-1`` must be present. Returns a summary."""
    root = Path(root)
    found = {}
    for path in sorted((root / "shards").glob("moments-*-of-*.json")):
        match = _MOMENTS.match(path.name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = path
    if not found:
        raise InputError(f"{root / 'shards'}: no shard parts (moments-I-of-N.json) to merge")
    counts = {n for _, n in found}
    if len(counts) != 1:
        raise InputError(f"{root / 'shards'}: parts of different shard counts {sorted(counts)}")
    count = counts.pop()
    missing = [i for i in range(count) if (i, count) not in found]
    if missing:
        raise InputError(
            f"{root / 'shards'}: shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing; run "
            f"`jam-flow preprocess ... --shard I/{count}` for them (or copy their output here) first"
        )
    acc = StatsAccumulator()
    records: list[ClipRecord] = []
    failures: list[dict] = []
    info = None
    for index in range(count):
        files = shard_files(root, index, count)
        part = _read_part(files["moments"])
        acc.merge(StatsAccumulator.from_moments(part.get("moments"), str(files["moments"])))
        dataset = part.get("dataset") or {}
        if info is None:
            try:
                info = DatasetInfo(
                    mel=MelSettings(**dataset["mel"]),
                    motion=MotionSettings(**dataset["motion"]),
                    num_clips=0,
                    source=str(dataset["source"]),
                )
            except (KeyError, TypeError, ValueError) as err:
                raise InputError(f"{files['moments']}: field 'dataset' is not a dataset.json object") from err
        if files["manifest"].is_file():
            records += _read_shard_manifest(files["manifest"])
        if files["failures"].is_file():
            failures += [
                json.loads(line)
                for line in files["failures"].read_text(encoding="utf-8").splitlines()
                if line
            ]
    if not records:
        raise InputError(f"{root / 'shards'}: the shards hold no clip")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise InputError(f"{root / 'shards'}: a clip id appears in two shards")
    order = {s: i for i, s in enumerate(SPLITS)}
    records.sort(key=lambda r: (order[r.split], r.id))
    assert info is not None
    info = DatasetInfo(mel=info.mel, motion=info.motion, num_clips=len(records), source=info.source)
    write_manifest(root, records)
    write_stats(root, acc.result())
    write_dataset_json(root, info)
    write_failures(
        root / "failures.jsonl", sorted(failures, key=lambda f: (f.get("id") or "", f.get("path", "")))
    )
    return {"shards": count, "clips": len(records), "failures": len(failures), "frames": int(acc.mel.count)}


def _read_shard_manifest(path: Path) -> list[ClipRecord]:
    """Parse a shard manifest with the dataset reader (same checks, errors naming ``path``)."""
    text = path.read_text(encoding="utf-8")
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
        records.append(ClipRecord.from_json(obj, f"{path}:{lineno}"))
    return records
