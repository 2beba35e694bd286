"""``jam-flow generate``: run one JAM-Flow task from a checkpoint or an export directory and write its files; a thin
layer over :class:`jam_flow.api.JamFlow` (the options, their parser and checks: :mod:`jam_flow.inference.cli`).

No tensors here (argument handling only; dimension legend: see :mod:`jam_flow.inference.tasks`).

    jam-flow generate --task T --ckpt CKPT_OR_EXPORT_DIR --out DIR [--text STR] [--ref-audio WAV --ref-text STR]
        [--audio WAV] [--motion NPY] [--duration SECONDS] [--nfe 32] [--cfg 2.0] [--seed S] [--vocoder DIR]
        [--method euler|midpoint] [--sway -1] [--audio-cfg G] [--motion-cfg G] [--guidance joint|f5|all]
        [--edit-start S --edit-end S --edit-streams audio|motion|both] [--device cpu|cuda]
        [--source IMAGE --liveportrait LP_DIR] [--no-preview] [--overwrite]

Writes ``DIR/audio.wav`` (speech generated or given), ``DIR/motion.npy`` + ``DIR/motion.json`` (motion generated or
given), ``DIR/preview.mp4`` when both exist, and ``DIR/talking_head.mp4`` with ``--source`` + ``--liveportrait``.
``DIR`` must be absent or empty; ``--overwrite`` replaces the output set of an earlier run (a folder holding only
these files), never anything else. Every output is written into a temporary sibling folder that replaces ``DIR``
only when the whole set is complete and finite (:mod:`jam_flow.atomic`).
Bad input raises ``InputError``; the dispatcher prints ``error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jam_flow.api.model import JamFlow
from jam_flow.atomic import replace_dir
from jam_flow.inference.cli import INPUT_OPTIONS, SAMPLING_OPTIONS, TASK_OPTIONS, parse_args, render_outputs
from jam_flow.inference.outputs import outputs_owned
from jam_flow.inference.result import GenerationResult

__all__ = ["main", "run_task", "task_options"]


def task_options(args: argparse.Namespace) -> dict:
    """The :meth:`JamFlow.run` keyword arguments of checked ``generate`` arguments (the task's own options that
    were given, and every sampling option)."""
    given = {name: getattr(args, name) for name in INPUT_OPTIONS if name in TASK_OPTIONS[args.task]}
    given = {name: value for name, value in given.items() if value is not None}
    return {**given, **{name: getattr(args, name) for name in SAMPLING_OPTIONS}}


def run_task(
    args: argparse.Namespace, jf: JamFlow, out_dir: Path
) -> tuple[GenerationResult, dict[str, Path]]:
    """Run the task of checked ``args`` (:func:`jam_flow.inference.cli.parse_args`) with ``jf`` and write its files
    into ``out_dir`` (a folder being assembled). Returns ``(result, {name: path})``. Shared by ``jam-flow
    generate`` and ``jam-flow demo``."""
    result = jf.run(args.task, **task_options(args))
    result.meta["sources"]["ckpt"] = str(args.ckpt)
    if args.vocoder is not None:
        result.meta["sources"]["vocoder"] = str(args.vocoder)
    paths = result.write(out_dir, preview=not args.no_preview)
    rendered = render_outputs(args, paths, out_dir)
    if rendered is not None:
        paths["talking_head"] = rendered
    return result, paths


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # the whole output set is written into a temporary sibling of --out (created now, so an unwritable --out fails
    # before any work) and swapped in only when complete: a failure leaves --out as it was
    with replace_dir(args.out, args.overwrite, outputs_owned) as tmp:
        # a given vocoder is loaded now, so a bad directory fails before sampling; without one the tasks fall back
        # to Griffin-Lim (with its warning) only once they have speech to decode
        jf = JamFlow.load(args.ckpt, device=args.device, vocoder=args.vocoder)
        _, paths = run_task(args, jf, tmp)
    for name, path in paths.items():
        print(f"{name}: {args.out / path.relative_to(tmp)}")
    return 0
