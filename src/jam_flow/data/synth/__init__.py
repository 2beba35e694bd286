"""Offline synthetic speech + lip-motion corpus (``jam-flow synth-corpus``); see docs/data.md.

Dimension legend: m motion frames (25 fps). ``mouth_opening(exp [..., 21, 3] | mouth [..., 4, 3] | [..., 12])``
returns the scalar opening ``[...]`` that the corpus's mouth keypoints were built from (0 = closed lips).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from jam_flow.data.synth.visemes import VISEME_NAMES, mouth_opening
from jam_flow.errors import InputError

__all__ = ["main", "mouth_opening", "VISEME_NAMES"]

_OUTPUTS = ("dataset.json", "manifest.jsonl", "stats.json")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jam-flow synth-corpus",
        description="Build the offline synthetic speech + lip-motion corpus (dataset format v1).",
    )
    p.add_argument("--out", type=Path, required=True, help="output dataset directory")
    p.add_argument("--n-clips", type=int, required=True, help="number of clips (2-8 s each)")
    p.add_argument(
        "--seed", type=int, default=0, help="corpus seed: the same seed writes the same bytes (default 0)"
    )
    p.add_argument(
        "--sentences",
        type=Path,
        default=None,
        help="text file, one sentence a line, replacing the bundled list",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: os.cpu_count())")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    return p


def main(argv: list[str]) -> int:
    from jam_flow.data.synth.corpus import build_corpus, load_sentences

    args = _parser().parse_args(argv)
    if args.n_clips < 1:
        raise InputError(f"--n-clips: expected a positive number of clips, got {args.n_clips}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers: expected at least 1, got {args.workers}")
    if args.seed < 0:
        raise InputError(f"--seed: expected a non-negative integer, got {args.seed}")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise InputError(f"--out: {out} is not empty (pass --overwrite to replace the dataset there)")
        if not (out / "dataset.json").is_file():
            raise InputError(f"--out: {out} is not empty and holds no dataset; refusing to delete it")
        shutil.rmtree(out / "clips", ignore_errors=True)
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
    sentences = load_sentences(args.sentences)
    start = time.perf_counter()
    records = build_corpus(out, args.n_clips, seed=args.seed, sentences=sentences, workers=args.workers)
    hours = sum(r.duration for r in records) / 3600
    print(
        f"synth-corpus: wrote {len(records)} clips ({hours:.2f} h of speech) to {out} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0
