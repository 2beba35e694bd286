"""Offline synthetic speech + lip-motion corpus (``jam-flow synth-corpus``); see docs/data.md.

Dimension legend: m motion frames (25 fps). ``mouth_opening(exp [..., 21, 3] | mouth [..., 4, 3] | [..., 12])``
returns the scalar opening ``[...]`` that the corpus's mouth keypoints were built from (0 = closed lips).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jam_flow.data.synth.corpus import (
    MAX_SECONDS,
    MAX_SENTENCES_PER_CLIP,
    MIN_SECONDS,
    SINGLE_SENTENCE_MIN_SECONDS,
    SPEAKERS,
)
from jam_flow.data.synth.visemes import VISEME_NAMES, mouth_opening
from jam_flow.errors import ArgumentParser, InputError

__all__ = ["main", "mouth_opening", "VISEME_NAMES", "dataset_owned"]

# what a dataset folder written by this project may hold (failures.jsonl: `jam-flow preprocess`'s report)
_TOP_LEVEL = {"dataset.json", "manifest.jsonl", "stats.json", "clips", "failures.jsonl"}
MAX_SEED = 2**64 - 1


def dataset_owned(root: Path) -> str | None:
    """None when ``root`` is a dataset this project wrote (format v1: a valid dataset.json and manifest.jsonl,
    nothing else at the top level, and ``clips/`` holding only the manifest's files); else why it is not.
    Only such a folder may be replaced by ``synth-corpus --overwrite``."""
    from jam_flow.data.format import read_dataset_json, read_manifest

    try:
        read_dataset_json(root)
        records = read_manifest(root)
    except InputError as err:
        return f"it is not a jam-flow dataset ({err})"
    foreign = sorted(p.name for p in root.iterdir() if p.name not in _TOP_LEVEL)
    if foreign:
        return f"it holds files that are not part of a jam-flow dataset: {', '.join(foreign[:5])}"
    clips = root / "clips"
    if clips.exists():
        known = {Path(f).name for r in records for f in (r.features, r.audio) if f and f.startswith("clips/")}
        if not clips.is_dir():
            return f"{clips} is not a directory"
        extra = sorted(p.name for p in clips.iterdir() if p.name not in known and not p.name.endswith(".tmp"))
        if extra:
            return f"{clips} holds files the manifest does not list: {', '.join(extra[:5])}"
    return None


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
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
    p.add_argument(
        "--words",
        type=Path,
        default=None,
        help="text file, one word a line: sentences of 2-4 of these words instead of a sentence list; a "
        "fixed share of the word combinations (by --seed) is only said in the val and test clips",
    )
    p.add_argument(
        "--heldout-fraction",
        type=float,
        default=0.1,
        help="with --words: share of the word combinations held out of training (default 0.1)",
    )
    p.add_argument(
        "--voices",
        nargs="+",
        default=None,
        help=f"eSpeak NG voices to draw the speaker from (default: all of {', '.join(SPEAKERS)})",
    )
    p.add_argument("--rate", type=int, default=None, help="fixed speaking rate, words per minute (80-450)")
    p.add_argument("--pitch", type=int, default=None, help="fixed pitch, 0-100")
    p.add_argument(
        "--sentences-per-clip",
        type=int,
        default=MAX_SENTENCES_PER_CLIP,
        help=f"at most this many sentences a clip (default {MAX_SENTENCES_PER_CLIP}; 1: one utterance a clip)",
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        help=f"shortest clip (default {MIN_SECONDS}, or {SINGLE_SENTENCE_MIN_SECONDS} with --sentences-per-clip 1)",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: os.cpu_count())")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    return p


def _config(args: argparse.Namespace):
    """The ``SynthConfig`` of the narrowing options (checked; the seed is set by ``build_corpus``)."""
    from jam_flow.data.synth.corpus import SynthConfig

    voices = tuple(args.voices) if args.voices else SPEAKERS
    unknown = [v for v in voices if v not in SPEAKERS]
    if unknown:
        raise InputError(f"--voices: unknown voice {unknown[0]!r}; expected some of {', '.join(SPEAKERS)}")
    if args.rate is not None and not 80 <= args.rate <= 450:
        raise InputError(f"--rate: expected 80-450 words per minute, got {args.rate}")
    if args.pitch is not None and not 0 <= args.pitch <= 100:
        raise InputError(f"--pitch: expected 0-100, got {args.pitch}")
    if not 1 <= args.sentences_per_clip <= MAX_SENTENCES_PER_CLIP:
        raise InputError(
            f"--sentences-per-clip: expected 1-{MAX_SENTENCES_PER_CLIP}, got {args.sentences_per_clip}"
        )
    min_seconds = args.min_seconds
    if min_seconds is None:
        min_seconds = SINGLE_SENTENCE_MIN_SECONDS if args.sentences_per_clip == 1 else MIN_SECONDS
    if not 0.1 <= min_seconds < MAX_SECONDS:
        raise InputError(f"--min-seconds: expected a number in [0.1, {MAX_SECONDS}), got {min_seconds}")
    return SynthConfig(
        min_seconds=min_seconds,
        voices=voices,
        rate=args.rate,
        pitch=args.pitch,
        sentences_per_clip=args.sentences_per_clip,
    )


def main(argv: list[str]) -> int:
    from jam_flow.atomic import replace_dir
    from jam_flow.data.synth.corpus import build_corpus, load_sentences
    from jam_flow.data.synth.world import WordWorld, load_words

    args = _parser().parse_args(argv)
    if args.n_clips < 1:
        raise InputError(f"--n-clips: expected a positive number of clips, got {args.n_clips}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers: expected at least 1, got {args.workers}")
    if not 0 <= args.seed <= MAX_SEED:
        raise InputError(f"--seed: expected an integer in [0, 2**64 - 1], got {args.seed}")
    cfg = _config(args)
    out: Path = args.out
    # every input is checked before anything is written; the corpus is built in a temporary sibling folder and
    # swapped in only when complete, so a failure leaves the previous dataset untouched
    if args.words is not None:
        if args.sentences is not None:
            raise InputError("--words: give either --words or --sentences, not both")
        sentences = WordWorld(load_words(args.words), args.seed, args.heldout_fraction)
    else:
        sentences = load_sentences(args.sentences)
    start = time.perf_counter()
    with replace_dir(out, args.overwrite, dataset_owned) as tmp:
        records = build_corpus(
            tmp, args.n_clips, seed=args.seed, sentences=sentences, workers=args.workers, cfg=cfg
        )
    hours = sum(r.duration for r in records) / 3600
    print(
        f"synth-corpus: wrote {len(records)} clips ({hours:.2f} h of speech) to {out} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0
