"""``jam-flow dub-video`` and ``jam-flow animate``: argument parsing, model loading and the progress bar.

Argument handling only; the work is :mod:`jam_flow.video.pipeline`.

    jam-flow dub-video --video IN --text T | --script F --out OUT.mp4 --ckpt CKPT
        (--motion-extractor PTH | --liveportrait DIR) [--ref-audio WAV --ref-text T] [--rerender]
        [--window-s 20] [--context-s 2] [--vocoder DIR] [--nfe N] [--cfg G] [--seed S] [--overwrite]
    jam-flow animate --source IMG_OR_VIDEO (--audio WAV | --text T) --liveportrait DIR --out OUT.mp4 --ckpt CKPT
        [same model options]
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch

from jam_flow.errors import ArgumentParser, InputError

__all__ = ["build_dub_parser", "build_animate_parser", "dub_main", "animate_main"]

MAX_SEED = 2**64 - 1


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, metavar="OUT.mp4", help="output video (.mp4)")
    p.add_argument(
        "--ckpt", required=True, type=Path, metavar="CKPT", help="Lightning .ckpt or an export directory"
    )
    p.add_argument("--vocoder", type=Path, metavar="DIR", help="local Vocos directory (default: Griffin-Lim)")
    p.add_argument("--ref-audio", type=Path, metavar="WAV", help="reference voice (any rate / channels)")
    p.add_argument("--ref-text", metavar="T", help="transcript of --ref-audio")
    p.add_argument(
        "--window-s", type=float, default=20.0, help="longest model window in seconds (default 20)"
    )
    p.add_argument(
        "--context-s",
        type=float,
        default=2.0,
        help="seconds of the previous window given to the next one (default 2)",
    )
    p.add_argument("--nfe", type=int, default=32, help="network evaluations per window (default 32)")
    p.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale (default 2)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default: drawn and recorded)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument(
        "--face-detector",
        default=None,
        help="YuNet .onnx / Haar .xml, or 'full-frame' (default: OpenCV's Haar cascade)",
    )
    p.add_argument(
        "--crop-size",
        type=int,
        default=256,
        help="face crop side for LivePortrait (256 for the published weights)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="frames per LivePortrait call (default 8)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier run of this command"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")


def build_dub_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="jam-flow dub-video",
        description="Dub a talking video with a new script: speech timed to the lips the video already has, in "
        "its own voice by default, muxed onto the original video stream (copied bit-exact).",
    )
    p.add_argument(
        "--video", required=True, type=Path, metavar="IN", help="talking-face video with its speech"
    )
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="T", help="the new script")
    text.add_argument("--script", type=Path, metavar="F", help="a UTF-8 text file holding the new script")
    p.add_argument(
        "--motion-extractor",
        type=Path,
        metavar="PTH",
        help="LivePortrait motion_extractor.pth (or its weights directory); default: from --liveportrait",
    )
    p.add_argument("--liveportrait", type=Path, metavar="DIR", help="LivePortrait weights directory")
    p.add_argument(
        "--rerender",
        action="store_true",
        help="also regenerate the mouth from the new speech and re-render the face (needs --liveportrait)",
    )
    _model_options(p)
    return p


def build_animate_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="jam-flow animate",
        description="A talking head from a face image or video and speech (audio -> motion) or text (text -> "
        "speech + motion), rendered with LivePortrait and pasted back into the full frame.",
    )
    p.add_argument("--source", required=True, type=Path, metavar="IMG_OR_VIDEO", help="face image or video")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--audio", type=Path, metavar="WAV", help="speech to animate")
    what.add_argument("--text", metavar="T", help="text to speak")
    p.add_argument(
        "--liveportrait", required=True, type=Path, metavar="DIR", help="LivePortrait weights directory"
    )
    _model_options(p)
    return p


def _check_common(args: argparse.Namespace) -> None:
    if args.nfe < 1 or args.nfe > 1000:
        raise InputError(f"--nfe: expected 1-1000, got {args.nfe}")
    if not math.isfinite(args.cfg) or args.cfg < 0:
        raise InputError(f"--cfg: expected a finite number >= 0, got {args.cfg}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise InputError(f"--seed: expected an integer in [0, 2**64 - 1], got {args.seed}")
    if not math.isfinite(args.window_s) or not 1.0 <= args.window_s <= 28.0:
        raise InputError(
            f"--window-s: expected 1-28 s (a model window holds at most 30 s), got {args.window_s}"
        )
    if not math.isfinite(args.context_s) or not 0.0 <= args.context_s <= args.window_s / 2:
        raise InputError(
            f"--context-s: expected 0 to half of --window-s ({args.window_s / 2:g} s), got {args.context_s}"
        )
    if args.batch_size < 1:
        raise InputError(f"--batch-size: expected at least 1, got {args.batch_size}")
    if args.crop_size < 32:
        raise InputError(f"--crop-size: expected at least 32 pixels, got {args.crop_size}")
    for name in ("ref_audio", "audio", "video", "source", "script"):
        path = getattr(args, name, None)
        if path is not None and not path.is_file():
            raise InputError(f"--{name.replace('_', '-')}: {path} does not exist")
    if args.ref_text is not None and args.ref_audio is None:
        raise InputError("--ref-text: given without --ref-audio")
    if args.vocoder is not None and not args.vocoder.is_dir():
        raise InputError(
            f"--vocoder: {args.vocoder} is not a directory (expected config.yaml + pytorch_model.bin)"
        )
    if not args.ckpt.exists():
        raise InputError(f"--ckpt: {args.ckpt} does not exist")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device: {args.device} requested but no CUDA device is available")


@contextlib.contextmanager
def _progress_bar(quiet: bool) -> Iterator:
    """A rich progress bar on stderr with one row per stage (windows, render frames, ...); None when quiet."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    rows: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in rows:
            rows[stage] = bar.add_task(stage, total=total)
        bar.update(rows[stage], completed=done, total=total)

    with bar:
        yield update


def _load(args: argparse.Namespace, need_lp: bool):
    from jam_flow.data.vocoder import load_vocoder
    from jam_flow.flow.sampler import SamplerSettings
    from jam_flow.inference.bundle import load_bundle

    models = None
    if need_lp:
        import jam_flow.liveportrait as lp

        models = lp.load_liveportrait(args.liveportrait, device=args.device)
    bundle = load_bundle(args.ckpt, device=args.device)
    vocoder = load_vocoder(args.vocoder, bundle.mel, device=args.device) if args.vocoder is not None else None
    return bundle, vocoder, models, SamplerSettings(nfe=args.nfe, cfg=args.cfg)


def _cfg(args: argparse.Namespace):
    from jam_flow.data.preprocess import PreprocessConfig

    return PreprocessConfig(
        motion_extractor=str(args.motion_extractor or args.liveportrait or ""),
        face_detector=args.face_detector,
        device=args.device,
        batch_size=args.batch_size,
        crop_size=args.crop_size,
    )


def _run_options(args: argparse.Namespace, settings, vocoder, progress) -> dict:
    """The keyword arguments ``dub_video`` and ``animate`` share, from the parsed options."""
    return {
        "ref_audio": args.ref_audio,
        "ref_text": args.ref_text,
        "window_s": args.window_s,
        "context_s": args.context_s,
        "settings": settings,
        "seed": args.seed,
        "vocoder": vocoder,
        "cfg": _cfg(args),
        "batch_size": args.batch_size,
        "overwrite": args.overwrite,
        "progress": progress,
    }


def _summary(kind: str, args: argparse.Namespace, record: dict) -> None:
    if args.quiet:
        return
    wall = record["wall_seconds"]
    print(
        f"wrote {args.out} ({record['seconds']:.2f} s, {len(record['windows'])} window(s)) and "
        f"{kind}.json beside it; wall {wall['total']:.1f} s "
        f"({record['output_seconds_per_wall_second']:.3f} s of output per second)"
    )


def dub_main(argv: list[str]) -> int:
    args = build_dub_parser().parse_args(argv)
    _check_common(args)
    if args.motion_extractor is None and args.liveportrait is None:
        raise InputError("--motion-extractor / --liveportrait: one is needed to extract the video's motion")
    if args.motion_extractor is not None and not args.motion_extractor.exists():
        raise InputError(f"--motion-extractor: {args.motion_extractor} does not exist")
    if args.rerender and args.liveportrait is None:
        raise InputError("--rerender: needs --liveportrait (the LivePortrait weights to render with)")
    if args.rerender and args.crop_size % 128:
        raise InputError(
            f"--crop-size: rendering needs a multiple of 128 (256 for LivePortrait's weights), got {args.crop_size}"
        )
    text = args.text
    if args.script is not None:
        try:
            text = args.script.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--script: cannot read {args.script} as UTF-8 text ({err})") from err
    if not text or not text.strip():
        raise InputError(f"--{'script' if args.script else 'text'}: the text is empty")
    from jam_flow.render.video import OutputSet
    from jam_flow.video.pipeline import DUB_FORMAT, dub_video

    OutputSet(
        args.out, ("audio.wav", "motion.npy", "motion.json"), "dub.json", DUB_FORMAT, args.overwrite
    )  # checked before any model loads
    bundle, vocoder, models, settings = _load(
        args, need_lp=args.liveportrait is not None and (args.rerender or args.motion_extractor is None)
    )
    if args.motion_extractor is not None:
        from jam_flow.liveportrait import load_motion_extractor

        extractor = load_motion_extractor(args.motion_extractor, args.device)
    else:
        extractor = models.M
    with _progress_bar(args.quiet) as progress:
        record = dub_video(
            bundle,
            args.video,
            text,
            args.out,
            extractor=extractor,
            models=models,
            rerender=args.rerender,
            **_run_options(args, settings, vocoder, progress),
        )
    _summary("dub", args, record)
    return 0


def animate_main(argv: list[str]) -> int:
    args = build_animate_parser().parse_args(argv)
    _check_common(args)
    if args.text is not None and not args.text.strip():
        raise InputError("--text: the text is empty")
    if args.audio is not None and (args.ref_audio is not None or args.ref_text is not None):
        raise InputError(
            "--ref-audio / --ref-text: only used with --text (the voice of the generated speech)"
        )
    if args.crop_size % 128:
        raise InputError(
            f"--crop-size: LivePortrait needs a multiple of 128 (256 for its weights), got {args.crop_size}"
        )
    from jam_flow.render.video import OutputSet
    from jam_flow.video.pipeline import ANIMATE_FORMAT, animate

    OutputSet(
        args.out, ("audio.wav", "motion.npy", "motion.json"), "animate.json", ANIMATE_FORMAT, args.overwrite
    )
    bundle, vocoder, models, settings = _load(args, need_lp=True)
    args.motion_extractor = None
    with _progress_bar(args.quiet) as progress:
        record = animate(
            bundle,
            args.source,
            args.out,
            models=models,
            audio=args.audio,
            text=args.text,
            **_run_options(args, settings, vocoder, progress),
        )
    _summary("animate", args, record)
    return 0
