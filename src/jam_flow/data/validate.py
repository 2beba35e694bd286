"""``jam-flow data validate DIR``: check a dataset (format v1) and list every problem, one line each.

Exit status 0 when the dataset is sound, 1 when problems were found (2 for bad arguments, via the CLI).
No tensors here (no dimension legend needed beyond docs/data.md).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from jam_flow.data.format import SPLITS, validate_dataset
from jam_flow.errors import ArgumentParser, InputError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jam-flow data", description="dataset tools")
    sub = p.add_subparsers(dest="action", required=True)
    v = sub.add_parser("validate", help="check a dataset directory and list every problem")
    v.add_argument(
        "dir", type=Path, help="dataset directory (holds dataset.json, manifest.jsonl, stats.json, clips/)"
    )
    v.add_argument("--no-audio", action="store_true", help="skip checking the optional wav files")
    return p


def _split_counts(root: Path) -> Counter:
    counts: Counter = Counter()
    path = root / "manifest.jsonl"
    if not path.is_file():
        return counts
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("split"), str):
            counts[obj["split"]] += 1
    return counts


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    root: Path = args.dir
    if not root.is_dir():
        raise InputError(f"DIR: {root} is not a directory")
    problems = validate_dataset(root, check_audio=not args.no_audio)
    for p in problems:
        print(p)
    counts = _split_counts(root)
    split_text = ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
    verdict = "OK" if not problems else f"{len(problems)} problem(s)"
    print(f"{root}: {sum(counts.values())} clips ({split_text}): {verdict}")
    return 0 if not problems else 1
