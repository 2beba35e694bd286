"""``jam-flow data``: dataset tools.

* ``validate DIR_OR_URL``: check a dataset (format v1, a packed folder or an ``s3://`` packed dataset) and list
  every problem, one line each. Exit status 0 when the dataset is sound, 1 when problems were found.
* ``pack DIR --out URL [--shard-size-mb N]``: write the packed form (:mod:`jam_flow.data.packed`) to a folder or
  an ``s3://bucket/prefix``.
* ``stats DIR_OR_URL [--out FILE]``: merge ``preprocess --shard`` parts (:mod:`jam_flow.data.shards`), or
  recompute a dataset's statistics.

Bad arguments: one ``error:`` line, exit status 2 (via the CLI). No tensors here (no dimension legend needed).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from jam_flow.data.format import SPLITS, validate_dataset
from jam_flow.data.limits import loads_json
from jam_flow.data.text import Vocab
from jam_flow.errors import ArgumentParser, InputError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="jam-flow data", description="dataset tools")
    sub = p.add_subparsers(dest="action", required=True)
    v = sub.add_parser("validate", help="check a dataset directory and list every problem")
    v.add_argument(
        "dir",
        help="dataset directory (dataset.json, manifest.jsonl, stats.json, clips/), packed folder or s3:// URL",
    )
    v.add_argument("--no-audio", action="store_true", help="skip checking the optional wav files")
    v.add_argument(
        "--vocab",
        type=Path,
        default=None,
        help="the vocab.txt training will use (--data.vocab_path); default: the bundled vocabulary",
    )
    k = sub.add_parser("pack", help="write a dataset as litdata shards to a folder or an s3:// URL")
    k.add_argument("dir", type=Path, help="dataset directory (format v1)")
    k.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    k.add_argument("--shard-size-mb", type=int, default=64, help="bytes per shard, in MB (default 64)")
    k.add_argument("--workers", type=int, default=1, help="packing processes (default 1)")
    k.add_argument("--overwrite", action="store_true", help="replace an existing packed dataset at --out")
    st = sub.add_parser(
        "stats",
        help="merge `preprocess --shard` parts into the dataset files, or recompute a dataset's statistics",
    )
    st.add_argument("dir", help="dataset directory (with shards/ parts or clips), packed folder or s3:// URL")
    st.add_argument(
        "--out", type=Path, default=None, help="write the statistics here (default: DIR/stats.json)"
    )
    return p


def _split_counts(root: Path) -> Counter:
    counts: Counter = Counter()
    path = root / "manifest.jsonl"
    if not path.is_file():
        return counts
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = loads_json(line, str(path))
        except InputError:
            continue  # reported by validate_dataset
        if isinstance(obj, dict) and isinstance(obj.get("split"), str):
            counts[obj["split"]] += 1
    return counts


def _pack(args: argparse.Namespace) -> int:
    from jam_flow.data.packed import pack_dataset

    if not args.dir.is_dir():
        raise InputError(f"DIR: {args.dir} is not a directory")
    pack = pack_dataset(args.dir, args.out, args.shard_size_mb, args.workers, args.overwrite)
    failed = f", {pack['num_failed']} unreadable clip(s) packed as failed" if pack["num_failed"] else ""
    print(f"{args.out}: packed {pack['num_items']} clips ({', '.join(pack['arrays'])}){failed}")
    return 0


def _validate_packed(url: str) -> int:
    from jam_flow.data.packed import validate_packed

    problems = validate_packed(url)
    for p in problems:
        print(p)
    verdict = "OK" if not problems else f"{len(problems)} problem(s)"
    print(f"{url}: packed dataset: {verdict}")
    return 0 if not problems else 1


def _stats(args: argparse.Namespace) -> int:
    """Shard parts present: merge them (manifest, stats, dataset.json, failures). Otherwise recompute the
    statistics of the clips (clip folder or packed dataset) into ``--out`` / ``DIR/stats.json``."""
    from jam_flow.atomic import atomic_file
    from jam_flow.data.format import compute_stats
    from jam_flow.data.packed import is_packed, is_remote, packed_stats
    from jam_flow.data.shards import merge_shards

    url = str(args.dir)
    if not is_packed(url) and (Path(url) / "shards").is_dir():
        if args.out is not None:
            raise InputError("--out: merging shards writes DIR's own dataset files; leave --out out")
        summary = merge_shards(url)
        print(
            f"{url}: merged {summary['shards']} shards: {summary['clips']} clips, {summary['frames']} train mel "
            f"frames in the statistics, {summary['failures']} failure row(s)"
        )
        return 0
    if is_packed(url):
        stats = packed_stats(url)
        if args.out is None and is_remote(url):
            raise InputError("--out: a file for the statistics of an s3:// dataset is required")
    elif Path(url).is_dir():
        stats = compute_stats(url)
    else:
        raise InputError(f"DIR: {url} is not a directory")
    out = args.out or Path(url) / "stats.json"
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps(stats) + "\n", encoding="utf-8")
    print(f"{out}: statistics of {url}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.action == "pack":
        return _pack(args)
    if args.action == "stats":
        return _stats(args)
    from jam_flow.data.packed import is_packed

    if is_packed(args.dir):
        return _validate_packed(str(args.dir))
    root = Path(args.dir)
    if not root.is_dir():
        raise InputError(f"DIR: {root} is not a directory")
    vocab = Vocab.from_file(args.vocab) if args.vocab is not None else None
    problems = validate_dataset(root, check_audio=not args.no_audio, vocab=vocab)
    for p in problems:
        print(p)
    counts = _split_counts(root)
    split_text = ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
    verdict = "OK" if not problems else f"{len(problems)} problem(s)"
    print(f"{root}: {sum(counts.values())} clips ({split_text}): {verdict}")
    return 0 if not problems else 1
